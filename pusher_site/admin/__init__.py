"""API tokens in the admin: made here, shown once, masked ever after."""

from django.contrib import admin, messages
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from core.text import mask_token

# The one place the admin's titles are set (the header, the browser tab, the index page).
admin.site.site_header = "pusher"
admin.site.site_title = "pusher"
admin.site.index_title = "pusher"

admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    list_display = ("key_masked", "user", "created")

    @admin.display(description="key")
    def key_masked(self, obj: TokenProxy) -> str:
        return mask_token(obj.key)

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request,
            f"API token for {obj.user}: {obj.key} — copy it now, it will not be shown again.",
            messages.WARNING,
        )
        return super().response_add(request, obj, post_url_continue)


# The admin of the domain apps lives here, with the other faces; imported for its registrations.
from pusher_site.admin import hooks_admin, push_admin, registry_admin, tenancy_admin  # noqa: E402, F401
