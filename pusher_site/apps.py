from django.apps import AppConfig


class PusherSiteConfig(AppConfig):
    name = "pusher_site"
    verbose_name = "pusher"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rest_framework.authtoken.models import Token

        from core.text import mask_token

        # DRF's Token prints its key, and Django prints objects everywhere: change-page titles,
        # delete confirmations (a user's, listing the token), the admin log's object_repr.
        # An API token is a secret: it is shown once, when made (pusher_site.admin), never again.
        def token_str(self: Token) -> str:
            return f"API token {mask_token(self.key)}"

        Token.__str__ = token_str  # type: ignore[method-assign,assignment]  # a patch, for Token only
