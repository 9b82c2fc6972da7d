import json
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from core.errors import PusherError
from kazoo import sync
from kazoo.config import user_agent_test
from push.models import DeliverySource, DeliveryStatus
from push.services import delivery_outcome_text, push_test_send
from pusher_site.admin.kazoo_admin import DeviceReconcileInline
from registry import services
from registry.models import Device, PushToken, SyncStatus, UserAgentRule

# A test push rings a real phone: a mis-click on "select all" must not ring every user.
TEST_PUSH_MAX_DEVICES = 20


class UserAgentTestForm(forms.Form):
    user_agent = forms.CharField(label="User-Agent", max_length=500, widget=forms.TextInput(attrs={"size": 90}))
    contact = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90}),
        help_text="The REGISTER's Contact header value, parameters included.",
    )
    extra_fields = forms.JSONField(
        required=False,
        label="Other reg_success fields",
        widget=forms.Textarea(attrs={"rows": 4, "cols": 90}),
        help_text='Optional JSON object, e.g. {"Proxy-Path": "sip:10.0.0.5:5060;transport=udp"} (the source of '
        "Token-Proxy) or Custom-Channel-Vars. Account-ID and Authorizing-ID default to placeholders.",
    )

    def clean_extra_fields(self) -> dict[str, Any]:
        value = self.cleaned_data["extra_fields"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Give a JSON object of reg_success fields.")
        return value


@admin.register(UserAgentRule)
class UserAgentRuleAdmin(admin.ModelAdmin):
    # regex and properties are checked when saved by the model's validators (registry.models).
    list_display = ["position", "name", "enabled", "regex", "properties", "updated_at"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "regex", "description"]
    ordering = ["position", "name"]

    def get_urls(self) -> list[URLPattern]:
        # Before the default URLs: their "<path:object_id>/" would swallow "test/".
        name = f"{self.opts.app_label}_{self.opts.model_name}_test"
        return [path("test/", self.admin_site.admin_view(self.test_view), name=name), *super().get_urls()]

    def test_view(self, request: HttpRequest) -> HttpResponse:
        """Test a User-Agent: what a registration with this User-Agent and Contact would do."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = UserAgentTestForm(request.POST or None)
        result = None
        if request.method == "POST" and form.is_valid():
            try:
                result = user_agent_test(
                    user_agent=form.cleaned_data["user_agent"],
                    contact=form.cleaned_data["contact"],
                    fields=form.cleaned_data["extra_fields"],
                )
            except PusherError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Test a User-Agent",
            "form": form,
            "result": result,
            "push_json": json.dumps(result.push, indent=2) if result and result.push is not None else "",
            "result_json": json.dumps(result.as_dict(), indent=2) if result else "",
        }
        return TemplateResponse(request, "admin/registry/useragentrule/test_user_agent.html", context)


class PushTokenInline(admin.TabularInline):
    model = PushToken
    extra = 0
    fields = ["token_masked", "token_type", "app", "kind", "sandbox", "proxy", "active", "deactivated_at",
              "deactivated_reason", "first_seen_at", "last_seen_at"]
    readonly_fields = cast(list[str], fields)  # (typed by the base class as any field groups)
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
    inlines = [PushTokenInline, DeviceReconcileInline]
    date_hierarchy = "last_registration_at"
    actions = ["sync_to_kazoo", "send_test_push"]

    def has_send_push_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("push.send_push")

    @admin.action(description="Sync to Kazoo now")
    def sync_to_kazoo(self, request: HttpRequest, queryset: Any) -> None:
        if not services.kazoo_configured():
            self.message_user(request, "Kazoo is not configured (KAZOO_CROSSBAR_URL, KAZOO_API_KEY): nothing to "
                              "sync to.", messages.WARNING)
            return
        synced = [sync.device_sync(device=device) for device in queryset]
        failed = [d for d in synced if d.sync_status == SyncStatus.FAILED]
        ok = len(synced) - len(failed)
        if ok:
            self.message_user(request, f"{ok} device(s) synced to Kazoo.", messages.SUCCESS)
        if failed:
            details = "; ".join(f"{device}: {device.sync_error}" for device in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            self.message_user(request, f"{len(failed)} device(s) failed to sync: {details}{more}", messages.ERROR)

    @admin.action(description="Send test push", permissions=["send_push"])
    def send_test_push(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() > TEST_PUSH_MAX_DEVICES:
            self.message_user(request, f"Select at most {TEST_PUSH_MAX_DEVICES} devices: every one of them rings.",
                              messages.ERROR)
            return
        for device in queryset:
            try:
                delivery = push_test_send(device=device, source=DeliverySource.ADMIN)
            except PusherError as exc:
                self.message_user(request, f"{device}: {exc.message}", messages.ERROR)
                continue
            level = messages.SUCCESS if delivery.status == DeliveryStatus.SENT else messages.ERROR
            self.message_user(request, f"{device}: {delivery_outcome_text(delivery=delivery)}", level)


@admin.register(PushToken)
class PushTokenAdmin(admin.ModelAdmin):
    list_display = ["token_masked", "device", "token_type", "app", "kind", "active", "last_seen_at"]
    list_filter = ["active", "token_type", "kind", "sandbox"]
    search_fields = ["token", "app", "device__account_id", "device__device_id", "device__username"]
    list_select_related = ["device"]
    readonly_fields = ["device", "token", "first_seen_at", "last_seen_at", "deactivated_at"]
