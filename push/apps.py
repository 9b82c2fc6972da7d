from django.apps import AppConfig


class PushConfig(AppConfig):
    name = "push"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from push.providers import apns

        # One APNs client per process (one HTTP/2 connection per credential, host and port).
        apns.configure(ca_file=settings.PUSHER_APNS_CA_FILE, jwt_max_age=settings.PUSHER_APNS_JWT_MAX_AGE_S)
