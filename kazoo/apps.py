from django.apps import AppConfig


class KazooConfig(AppConfig):
    """The adapter to Kazoo: the AMQP consumer, the wire format, Crossbar and system_config."""

    name = "kazoo"
    verbose_name = "Kazoo"
    default_auto_field = "django.db.models.BigAutoField"
