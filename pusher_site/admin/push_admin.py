from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

from core.errors import PusherError
from core.text import duration_ms_text
from push import services
from push.credentials import credential_secret_given
from push.models import Credential, CredentialKind, Delivery, DeliverySource, DeliveryStatus, PushApp
from push.selectors import deliveries_search, delivery_push_types, rows_count
from pusher_site.admin.jsonfield import JSON_FORMFIELD_OVERRIDES


def warnings_html(warnings: tuple[str, ...]) -> str:
    if not warnings:
        return "—"
    return format_html('<ul style="margin:0;padding-left:1em">{}</ul>',
                       format_html_join("", '<li style="color:#ba2121">{}</li>', ((w,) for w in warnings)))


class CredentialForm(forms.ModelForm):
    """Secret material is write-only: uploaded or pasted, parsed on save, never rendered back."""

    upload = forms.FileField(
        required=False, help_text="PEM (certificate + unencrypted key), .p12, .p8 or service-account JSON"
    )
    pasted = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "autocomplete": "off"}),
        help_text="…or paste the PEM / JSON / legacy key here. Leave both empty to keep the stored secret.",
    )
    password = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="PKCS#12 password, if any"
    )

    class Meta:
        model = Credential
        fields = ["name", "kind", "key_id", "team_id"]
        help_texts = {"key_id": "APNs token key only (10 characters)", "team_id": "APNs token key only"}

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns (its type allows None)
        upload = cleaned.get("upload")
        try:
            given = credential_secret_given(uploaded=upload.read() if upload else None, text=cleaned.get("pasted"))
        except PusherError as exc:
            raise forms.ValidationError(exc.message) from exc
        data: bytes | str = given or ""
        # The secret as given, for the service save_model calls (credential_create/credential_update).
        self.secret_data = given
        if not data:
            if not self.instance.pk:
                raise forms.ValidationError("Upload a file or paste the credential.")
            changed = set(self.changed_data)
            if self.instance.kind == CredentialKind.APNS_TOKEN:
                changed &= {"kind", "key_id", "team_id"}
            else:  # a certificate's or service account's ids are read from the file, not typed
                changed &= {"kind"}
            if changed:
                # These are facts of the secret: they are validated with it, never alone.
                raise forms.ValidationError("To change the kind, key id or team id, upload the credential again.")
            return cleaned
        # The services' own checks, asked here so that a refusal shows on the form (save_model
        # calls the service, which checks again).
        try:
            if self.instance.pk:
                services.credential_kind_check(credential=self.instance, kind=cleaned.get("kind", ""))
            services.credential_parse(
                kind=cleaned.get("kind", ""),
                data=data,
                password=cleaned.get("password"),
                key_id=cleaned.get("key_id", ""),
                team_id=cleaned.get("team_id", ""),
            )
        except PusherError as exc:
            raise forms.ValidationError(exc.message) from exc
        return cleaned


@admin.register(Credential)
@method_decorator(sensitive_post_parameters("pasted", "password"), name="changeform_view")
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialForm
    list_display = ["name", "kind", "subject_short", "expiry", "key_id", "team_id", "project_id", "usable_shown"]
    list_filter = ["kind", "usable", "environment"]
    search_fields = ["name", "subject", "key_id", "team_id", "project_id", "fingerprint_sha256"]
    readonly_fields = [
        "subject", "topics", "environment", "not_before", "not_after", "expiry", "fingerprint_sha256",
        "project_id", "client_email", "usable_shown", "unusable_reason_shown", "warnings", "created_at", "updated_at",
        "apps_using",
    ]

    def get_fieldsets(self, request, obj=None):
        secret = ("Secret (write-only)", {"fields": ["upload", "pasted", "password"]})
        main = (None, {"fields": ["name", "kind", "key_id", "team_id"]})
        if obj is None:
            return [main, secret]
        facts = [name for name in self.readonly_fields if name != "apps_using"]
        return [main, ("Push apps", {"fields": ["apps_using"]}), secret, ("Parsed facts", {"fields": facts})]

    @admin.display(description="used by")
    def apps_using(self, obj: Credential) -> str:
        apps = list(obj.apps.order_by("app_id", "provider"))
        if not apps:
            return "no push app (it can be deleted)"
        return format_html_join(
            ", ", '<a href="{}">{}</a>',
            ((reverse("admin:push_pushapp_change", args=[app.pk]), str(app)) for app in apps),
        )

    @admin.display(description="subject")
    def subject_short(self, obj: Credential) -> str:
        return obj.subject[:60]

    # Also false, with the reason, when the stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY.
    @admin.display(description="usable", boolean=True, ordering="usable")
    def usable_shown(self, obj: Credential) -> bool:
        return obj.effectively_usable

    @admin.display(description="unusable reason")
    def unusable_reason_shown(self, obj: Credential) -> str:
        return obj.effective_unusable_reason

    @admin.display(description="expires", ordering="not_after")
    def expiry(self, obj: Credential) -> str:
        days = obj.days_to_expiry
        if days is None:
            return "—"
        text = f"{obj.not_after:%Y-%m-%d} ({days} days)"
        if days < 30:
            return format_html('<strong style="color:#ba2121">{}</strong>', text)
        return text

    def save_model(self, request, obj, form, change):
        cleaned, data = form.cleaned_data, form.secret_data
        secret = {
            "kind": cleaned["kind"], "data": data, "password": cleaned.get("password") or None,
            "key_id": cleaned.get("key_id", ""), "team_id": cleaned.get("team_id", ""),
        }
        if not change:
            saved = services.credential_create(name=cleaned["name"], **secret)
        elif data is not None:
            saved = services.credential_update(credential=obj, name=cleaned["name"], **secret)
        else:
            saved = services.credential_update(credential=obj, name=cleaned["name"])
        obj.pk = saved.pk
        if data is not None:
            for warning in saved.warnings:
                self.message_user(request, warning, messages.WARNING)
            for app in saved.apps.select_related("credential"):
                for warning in services.push_app_warnings(app=app):
                    self.message_user(request, f"{app}: {warning}", messages.WARNING)

    def delete_model(self, request, obj):
        services.credential_delete(credential=obj)

    def delete_queryset(self, request, queryset):
        for credential in queryset:
            services.credential_delete(credential=credential)


class PushAppForm(forms.ModelForm):
    class Meta:
        model = PushApp
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        """The services' checks, asked here so a refusal shows on the form; save_model's service
        checks again. A `host:port` typed as the host is split as every face splits it."""
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns (its type allows None)
        if cleaned.get("host"):
            typed_port = cleaned.get("port") if "port" in self.changed_data else None
            try:
                host, port = services.push_app_address(host=cleaned["host"], port=typed_port)
            except PusherError as exc:
                self.add_error("host", exc.message)
            else:
                cleaned["host"] = host
                if port is not None:
                    cleaned["port"] = port
        if cleaned.get("provider"):
            try:
                services.credential_provider_check(credential=cleaned.get("credential"), provider=cleaned["provider"])
            except PusherError as exc:
                self.add_error("credential", exc.message)
        return cleaned


@admin.register(PushApp)
class PushAppAdmin(admin.ModelAdmin):
    form = PushAppForm
    formfield_overrides = JSON_FORMFIELD_OVERRIDES
    list_display = ["app_id", "provider", "enabled", "credential", "host", "effective_topic", "flagged_reason"]
    list_filter = ["provider", "enabled"]
    search_fields = ["app_id", "description", "topic", "project_id"]
    autocomplete_fields = ["credential"]
    fieldsets = [
        (None, {"fields": ["app_id", "provider", "enabled", "credential", "description"]}),
        ("Apple", {"fields": ["host", "port", "topic", "push_type", "priority", "expiration", "collapse_id",
                              "extra_headers"]}),
        ("Firebase", {"fields": ["project_id", "android_priority", "ttl_s"]}),
        ("Health", {"fields": ["warnings_shown", "flagged_reason", "bad_device_token_count"]}),
    ]
    readonly_fields = ["bad_device_token_count", "warnings_shown"]
    actions = ["send_test_push"]

    @admin.display(description="warnings")
    def warnings_shown(self, obj: PushApp) -> str:
        return warnings_html(services.push_app_warnings(app=obj)) if obj.pk else "—"

    def save_model(self, request, obj, form, change):
        cleaned = form.cleaned_data
        if change:
            # Every field of the form, so a host:port split reaches the port too; the health flag
            # only when edited (clearing it restarts the BadDeviceToken count).
            changes = {name: value for name, value in cleaned.items() if name in services.PUSH_APP_EDITABLE
                       and (name != "flagged_reason" or name in form.changed_data)}
            app = services.push_app_update(app=obj, **changes)
        else:
            app_settings = {name: value for name, value in cleaned.items() if name in services.PUSH_APP_SETTINGS}
            app = services.push_app_upsert(app_id=cleaned["app_id"], provider=cleaned["provider"],
                                           credential=cleaned.get("credential"), **app_settings)
        obj.pk = app.pk
        for warning in services.push_app_warnings(app=app):
            self.message_user(request, f"{app}: {warning}", messages.WARNING)

    def delete_model(self, request, obj):
        services.push_app_delete(app=obj)

    def delete_queryset(self, request, queryset):
        for app in queryset:
            services.push_app_delete(app=app)

    def has_send_push_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("push.send_push")

    @admin.action(description="Send test push…", permissions=["send_push"])
    def send_test_push(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        """An intermediate page asks for the device token (an app alone has none), then sends."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one app to send a test push from.", messages.ERROR)
            return None
        app = queryset.get()
        form = TestPushForm(request.POST if "send" in request.POST else None)
        if form.is_valid():
            try:
                delivery = services.push_app_test_send(
                    app=app, token=form.cleaned_data["token"], source=DeliverySource.ADMIN
                )
            except PusherError as exc:
                self.message_user(request, f"{app}: {exc.message}", messages.ERROR)
                return None
            level = messages.SUCCESS if delivery.status == DeliveryStatus.SENT else messages.ERROR
            self.message_user(request, f"{app}: {services.delivery_outcome_text(delivery=delivery)}", level)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Send a test push from {app}",
            "app": app,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/push/pushapp/test_push.html", context)


class TestPushForm(forms.Form):
    token = forms.CharField(
        label="Device token",
        max_length=1024,
        widget=forms.TextInput(attrs={"size": 90, "autocomplete": "off"}),
        help_text="The APNs device token (hex) or FCM registration token of a phone running this app.",
    )


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to push.selectors.COUNT_EXACT_MAX rows, estimates above (PostgreSQL): a
    COUNT(*) of the whole delivery log costs seconds at ten million rows. The page says "about"."""

    estimated = False

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):  # (the admin always hands a queryset)
            return len(self.object_list)
        count, self.estimated = rows_count(self.object_list)
        return count


class PushTypeFilter(admin.SimpleListFilter):
    """The push types a delivery can carry, listed without reading the log (Django's default for a
    plain column lists its distinct values: a scan of the whole delivery log on every page)."""

    title = "push type"
    parameter_name = "push_type__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in delivery_push_types()]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(push_type=self.value()) if self.value() else queryset


class SortableByOnlyChangeList(ChangeList):
    """A column outside `sortable_by` does not sort even when asked in the URL (`?o=`): Django only
    hides its header link."""

    def get_ordering_field(self, field_name: Any) -> Any:
        return super().get_ordering_field(field_name) if field_name in (self.sortable_by or ()) else None

    def get_ordering(self, request: HttpRequest, queryset: Any) -> list[Any]:
        ordering = super().get_ordering(request, queryset)
        if all(str(field).lstrip("-") in ("pk", "id") for field in ordering):  # each column asked was ignored
            ordering = [*(self.model_admin.get_ordering(request) or self.lookup_opts.ordering or ()), "-pk"]
        return ordering


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The delivery log: read-only (written by the push path alone), kept whole for diagnosis.

    Every query of its list is answered from an index at any size of the log (bench.retention
    measures it with ten million rows): counts are estimated past COUNT_EXACT_MAX, the filters list
    fixed values, dates are filtered by range (no date hierarchy, which reads every row's date), the
    search matches ids exactly, and the list sorts by time only."""

    # What fits a screen; the rest (account, device, call, HTTP status, attempts...) on the detail page.
    list_display = ["created_at", "status", "app_shown", "token_masked", "reason", "latency"]
    list_filter = ["status", "provider", "source", PushTypeFilter, ("created_at", admin.DateFieldListFilter)]
    search_fields = ["call_id", "msg_id", "account_id", "device_id", "token"]
    search_help_text = "An exact Call-ID, Msg-ID, account id, device id or full device token."
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # a second count of the whole log
    # Sorted by time only (an index): sorting the whole log by latency took 9 s at ten million rows.
    # The API sorts by other fields a selection of up to COUNT_EXACT_MAX deliveries.
    sortable_by = ("created_at",)
    fields = readonly_fields = (
        "created_at", "status", "reason", "latency", "source", "push_app", "app_id", "provider", "token_masked",
        "token_type", "push_type", "account_id", "device_id", "call_id", "msg_id", "http_status",
        "provider_message_id", "attempts", "error", "deadline_at", "finished_at", "claimed_at", "reply_to",
        "replied_at",
    )

    @admin.display(description="app")
    def app_shown(self, obj: Delivery) -> str:
        return f"{obj.app_id} ({obj.provider})" if obj.provider else obj.app_id

    @admin.display(description="latency")
    def latency(self, obj: Delivery) -> str:
        return duration_ms_text(obj.latency_ms)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SortableByOnlyChangeList

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        return deliveries_search(queryset, term=search_term), False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
