from django.contrib import admin

from registry.models import Device, PushToken, UserAgentRule


@admin.register(UserAgentRule)
class UserAgentRuleAdmin(admin.ModelAdmin):
    list_display = ["position", "name", "enabled", "regex", "properties", "updated_at"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "regex", "description"]
    ordering = ["position", "name"]


class PushTokenInline(admin.TabularInline):
    model = PushToken
    extra = 0
    fields = ["token_masked", "token_type", "app", "kind", "sandbox", "proxy", "active", "deactivated_at",
              "deactivated_reason", "first_seen_at", "last_seen_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["account_id", "device_id", "username", "realm", "rule_name", "sync_status",
                    "last_registration_at"]
    list_filter = ["sync_status", "rule_name"]
    search_fields = ["account_id", "device_id", "username", "realm", "tokens__token"]
    readonly_fields = ["push", "push_changed_at", "push_synced_at", "sync_status", "sync_attempts",
                       "sync_next_at", "sync_error", "last_user_agent", "last_contact", "last_registration_at",
                       "last_seen_at", "created_at", "rule_name"]
    inlines = [PushTokenInline]
    date_hierarchy = "last_registration_at"


@admin.register(PushToken)
class PushTokenAdmin(admin.ModelAdmin):
    list_display = ["token_masked", "device", "token_type", "app", "kind", "active", "last_seen_at"]
    list_filter = ["active", "token_type", "kind", "sandbox"]
    search_fields = ["token", "app", "device__account_id", "device__device_id", "device__username"]
    list_select_related = ["device"]
    readonly_fields = ["device", "token", "first_seen_at", "last_seen_at", "deactivated_at"]
