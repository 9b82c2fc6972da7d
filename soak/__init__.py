"""The fault-injection soak (`make soak`, docs/reliability.md): the real consumer (`manage.py
runconsumer` subprocesses) against the real RabbitMQ and PostgreSQL and the fake APNs/FCM, while
the broker connection is cut, the consumer is killed, PostgreSQL restarts and the providers misbehave.

Loopback only, bounded in time, and isolated from everyone else on the machine: its own RabbitMQ
vhost (so its messages reach no other queue bound to `registrar`/`pushes`), its own queue and
dead-letter names, its own database, its own fakes; everything is removed at the end.
"""
