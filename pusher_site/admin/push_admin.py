from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from core.errors import PusherError
from push import services
from push.models import Credential, CredentialKind, Delivery, DeliverySource, DeliveryStatus, PushApp


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
        data: bytes | str = upload.read() if upload else (cleaned.get("pasted") or "")
        self.parsed = None
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
        try:
            self.parsed = services.credential_parse(
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
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialForm
    list_display = ["name", "kind", "subject_short", "expiry", "key_id", "team_id", "project_id", "usable_shown"]
    list_filter = ["kind", "usable", "environment"]
    search_fields = ["name", "subject", "key_id", "team_id", "project_id", "fingerprint_sha256"]
    readonly_fields = [
        "subject", "topics", "environment", "not_before", "not_after", "expiry", "fingerprint_sha256",
        "project_id", "client_email", "usable_shown", "unusable_reason_shown", "warnings", "created_at", "updated_at",
    ]

    def get_fieldsets(self, request, obj=None):
        secret = ("Secret (write-only)", {"fields": ["upload", "pasted", "password"]})
        main = (None, {"fields": ["name", "kind", "key_id", "team_id"]})
        if obj is None:
            return [main, secret]
        return [main, secret, ("Parsed facts", {"fields": self.readonly_fields})]

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
        if form.parsed is not None:
            saved = services.credential_save(name=obj.name, parsed=form.parsed, credential=obj)
            obj.pk = saved.pk
            for warning in saved.warnings:
                self.message_user(request, warning, messages.WARNING)
        else:
            services.credential_update(credential=obj, name=obj.name)


@admin.register(PushApp)
class PushAppAdmin(admin.ModelAdmin):
    list_display = ["app_id", "provider", "enabled", "credential", "host", "effective_topic", "flagged_reason"]
    list_filter = ["provider", "enabled"]
    search_fields = ["app_id", "description", "topic", "project_id"]
    autocomplete_fields = ["credential"]
    fieldsets = [
        (None, {"fields": ["app_id", "provider", "enabled", "credential", "description"]}),
        ("Apple", {"fields": ["host", "port", "topic", "push_type", "priority", "expiration", "collapse_id",
                              "extra_headers"]}),
        ("Firebase", {"fields": ["project_id", "android_priority", "ttl_s"]}),
        ("Health", {"fields": ["flagged_reason", "bad_device_token_count"]}),
    ]
    readonly_fields = ["bad_device_token_count"]
    actions = ["send_test_push"]

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


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "status", "provider", "app_id", "account_id", "device_id", "token_masked",
                    "call_id", "http_status", "reason", "attempts", "latency_ms"]
    list_filter = ["status", "provider", "source", "push_type"]
    search_fields = ["call_id", "account_id", "device_id", "app_id", "msg_id", "token"]
    date_hierarchy = "created_at"
    list_select_related = ["push_app"]
    readonly_fields = [f.name for f in Delivery._meta.fields if f.name != "token"] + ["token_masked"]
    exclude = ["token"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
