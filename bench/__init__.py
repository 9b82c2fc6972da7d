"""Benchmarks of the two message paths: `python -m bench.registration`, `python -m bench.push`.

They print figures and never assert timings. Both run against PostgreSQL (`DATABASE_URL`,
default `postgres://postgres@127.0.0.1:5432/pusher_bench`, created and migrated if missing)
and the local RabbitMQ, on bench-only queue names that are deleted at the end.
"""
