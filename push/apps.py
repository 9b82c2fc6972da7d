from django.apps import AppConfig


class PushConfig(AppConfig):
    name = "push"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from push.providers import apns
        from push.services.apns_tokens import DatabaseTokenStore

        # One APNs client per process (one HTTP/2 connection per credential, host and port); its
        # provider tokens shared with every process on this database.
        apns.configure(ca_file=settings.PUSHER_APNS_CA_FILE, jwt_max_age=settings.PUSHER_APNS_JWT_MAX_AGE_S,
                       token_store=DatabaseTokenStore())
