from django.apps import AppConfig


class HooksConfig(AppConfig):
    """Webhooks and alerts: the outbox of events operators subscribed to, its sender, and the alerts
    (raised once until they clear) that feed it."""

    name = "hooks"
    verbose_name = "Webhooks and alerts"
    default_auto_field = "django.db.models.BigAutoField"
