from django.apps import AppConfig


class TenancyConfig(AppConfig):
    """Account scopes and the scoped API tokens of resellers' provisioning systems."""

    name = "tenancy"
    verbose_name = "Tenancy"
    default_auto_field = "django.db.models.BigAutoField"
