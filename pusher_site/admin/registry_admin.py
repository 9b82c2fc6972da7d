import json
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from core.errors import PusherError
from core.jsonlimits import json_object_problem
from kazoo import sync
from kazoo.uatest import user_agent_test
from push.models import DeliverySource, DeliveryStatus
from push.services import delivery_outcome_text, push_test_send
from pusher_site.admin.jsonfield import JSON_FORMFIELD_OVERRIDES, JSONTextField
from pusher_site.admin.kazoo_admin import DeviceReconcileFields
from registry import reporting, services, syncstate
from registry.models import Device, PushToken, ReporterAuth, SyncStatus, TokenReporter, UserAgentRule
from registry.reporter import acrobits_url_template

# A test push rings a real phone: a mis-click on "select all" must not ring every user.
TEST_PUSH_MAX_DEVICES = 20


class UserAgentTestForm(forms.Form):
    user_agent = forms.CharField(label="User-Agent", max_length=500, widget=forms.TextInput(attrs={"size": 90}))
    contact = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90}),
        help_text="The REGISTER's Contact header value, parameters included.",
    )
    extra_fields = JSONTextField(
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
        problem = json_object_problem(value)  # the API's match takes what its JSONObjectField takes
        if problem:
            raise forms.ValidationError(f"Give a JSON object of reg_success fields: {problem}.")
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
    formfield_overrides = JSON_FORMFIELD_OVERRIDES

    # Every write, list_editable's included (the changelist saves each changed row with save_model),
    # goes through registry.services: its checks, and the rule cache every process reads cleared.
    def save_model(self, request, obj, form, change):
        cleaned = form.cleaned_data
        if change:
            changes = {name: cleaned[name] for name in form.changed_data if name in services.USER_AGENT_RULE_FIELDS}
            rule = services.user_agent_rule_update(rule=obj, **changes)
        else:
            rule = services.user_agent_rule_create(
                **{name: cleaned[name] for name in services.USER_AGENT_RULE_FIELDS if name in cleaned}
            )
        obj.pk = rule.pk

    def delete_model(self, request, obj):
        services.user_agent_rule_delete(rule=obj)

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            services.user_agent_rule_delete(rule=rule)

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


DEVICE_FIELDS = (
    "account_id", "device_id", "username", "realm", "push", "push_changed_at", "rule_name", "registration_digest",
    "sync_status", "push_synced_at", "sync_attempts", "sync_next_at", "sync_error", "last_user_agent",
    "last_contact", "last_proxy_path", "last_registration_at", "last_seen_at", "created_at",
)


@admin.register(Device)
class DeviceAdmin(DeviceReconcileFields, admin.ModelAdmin):
    """Devices come from registrations: their identity (Kazoo's account and device id), push object and
    digest are read-only; the SIP username and realm may be corrected (registry.services.device_update)."""

    list_display = ["account_id", "device_id", "username", "realm", "rule_name", "sync_status",
                    "last_registration_at"]
    list_filter = ["sync_status", "rule_name"]
    search_fields = ["account_id", "device_id", "username", "realm", "tokens__token"]
    fields = (*DEVICE_FIELDS, "kazoo_drift_check")
    readonly_fields = (*(name for name in DEVICE_FIELDS if name not in services.DEVICE_EDITABLE), "kazoo_drift_check")
    inlines = [PushTokenInline]
    date_hierarchy = "last_registration_at"
    actions = ["sync_to_kazoo", "send_test_push"]

    def has_add_permission(self, request) -> bool:
        return False  # a device is what a registration created

    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in services.DEVICE_EDITABLE}
        if changes:
            services.device_update(device=obj, **changes)

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # A device's tokens go with it (device_delete), as through the API with delete_device alone;
        # tokens are never deleted on their own, so their admin grants no delete permission to ask for.
        perms_needed.discard(PushToken._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj):
        services.device_delete(device=obj)

    def delete_queryset(self, request, queryset):
        for device in queryset:
            services.device_delete(device=device)

    def has_send_push_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("push.send_push")

    @admin.action(description="Sync to Kazoo now")
    def sync_to_kazoo(self, request: HttpRequest, queryset: Any) -> None:
        if not syncstate.kazoo_configured():
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
    """Tokens come from registrations: shown (masked), never added or edited here; deactivated and
    reactivated with the actions, the same services as the API's tokens/{id}/deactivate|reactivate."""

    list_display = ["token_masked", "device", "token_type", "app", "kind", "active", "last_seen_at"]
    list_filter = ["active", "token_type", "kind", "sandbox"]
    search_fields = ["token", "app", "device__account_id", "device__device_id", "device__username"]
    list_select_related = ["device"]
    fields = readonly_fields = ("device", "token_masked", "token_type", "app", "kind", "sandbox", "proxy", "active",
                                "deactivated_at", "deactivated_reason", "first_seen_at", "last_seen_at")
    actions = ["deactivate", "reactivate"]

    def has_add_permission(self, request) -> bool:
        return False  # a token is what a registration carried (the form could never be valid)

    def has_change_permission(self, request, obj=None) -> bool:
        # The actions need it on the list; a token's own page is read-only.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deactivate instead: the API has no token deletion either

    @admin.action(description="Deactivate selected tokens (stop pushing to them)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: Any) -> None:
        tokens = list(queryset.filter(active=True))
        for token in tokens:
            services.push_token_deactivate(token=token, reason=f"deactivated by {request.user.get_username()}")
        self.message_user(request, f"{len(tokens)} token(s) deactivated.", messages.SUCCESS)

    @admin.action(description="Reactivate selected tokens", permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: Any) -> None:
        tokens = list(queryset.filter(active=False))
        for token in tokens:
            services.push_token_reactivate(token=token)
        self.message_user(request, f"{len(tokens)} token(s) reactivated.", messages.SUCCESS)


class TokenReporterForm(forms.ModelForm):
    """The secret is write-only: a new reporter's form offers a fresh one (copy it before saving:
    it is never shown again); an existing one's field is empty, and stays so unless changed."""

    new_secret = forms.CharField(
        label="Secret", required=False, strip=True,
        widget=forms.TextInput(attrs={"size": 60, "autocomplete": "off", "spellcheck": "false"}),
        help_text="24 to 128 letters, digits, '-' or '_'. It goes in the app's report URL (or signs its requests): "
        "copy it now, it is not shown after saving. Leave empty to keep the stored one.",
    )

    class Meta:
        model = TokenReporter
        fields = ["slug", "enabled", "description", "auth", "parameters", "fixed", "token_encoding",
                  "user_agent_regex", "proxy"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As typed: stripped, a regex of spaces became "" ("any device") instead of the model's refusal.
        cast(forms.CharField, self.fields["user_agent_regex"]).strip = False
        if self.instance.pk is None:
            self.fields["new_secret"].required = True
            self.fields["new_secret"].initial = reporting.token_reporter_secret_new()

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        # The services' own checks, asked here so that a refusal shows on the form (save_model calls
        # the service, which checks again).
        try:
            if cleaned.get("new_secret"):
                reporting.token_reporter_secret_check(secret=cleaned["new_secret"])
            if "parameters" in cleaned and "fixed" in cleaned:
                reporting.token_reporter_mapping_check(parameters=cleaned["parameters"], fixed=cleaned["fixed"] or {},
                                                       token_encoding=cleaned.get("token_encoding", ""))
        except PusherError as exc:
            raise forms.ValidationError(exc.message) from exc
        return cleaned


@admin.register(TokenReporter)
@method_decorator(sensitive_post_parameters("new_secret"), name="changeform_view")
class TokenReporterAdmin(admin.ModelAdmin):
    """Apps that report their push token over HTTP (Acrobits' Push Token Reporter); every write
    through registry.reporting, the API's services."""

    form = TokenReporterForm
    formfield_overrides = JSON_FORMFIELD_OVERRIDES
    list_display = ["slug", "enabled", "auth", "user_agent_regex", "token_encoding", "updated_at"]
    list_filter = ["enabled", "auth"]
    search_fields = ["slug", "description", "user_agent_regex"]
    readonly_fields = ["url_template", "created_at", "updated_at"]

    def get_fields(self, request, obj=None):
        return ["slug", "enabled", "description", "auth", "new_secret", "parameters", "fixed", "token_encoding",
                "user_agent_regex", "proxy", *(["url_template", "created_at", "updated_at"] if obj else [])]

    @admin.display(description="Acrobits pushTokenReporterUrl")
    def url_template(self, obj: TokenReporter) -> str:
        return acrobits_url_template(slug=obj.slug, parameters=obj.parameters or {},
                                     signed=obj.auth == ReporterAuth.SIGNATURE, base="https://<pusher host>")

    def save_model(self, request, obj, form, change):
        cleaned = form.cleaned_data
        secret = cleaned.get("new_secret") or None
        if change:
            changes = {name: cleaned[name] for name in form.changed_data if name in reporting.TOKEN_REPORTER_FIELDS}
            reporter = reporting.token_reporter_update(reporter=obj, secret=secret, **changes)
        else:
            fields = {name: cleaned[name] for name in reporting.TOKEN_REPORTER_FIELDS if name in cleaned}
            reporter = reporting.token_reporter_create(secret=secret or "", **fields)
        obj.pk = reporter.pk

    def delete_model(self, request, obj):
        reporting.token_reporter_delete(reporter=obj)

    def delete_queryset(self, request, queryset):
        for reporter in queryset:
            reporting.token_reporter_delete(reporter=reporter)
