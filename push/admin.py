from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from push import services
from push.models import Credential, Delivery, PushApp
from pusher_site.errors import PusherError


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

    def clean(self) -> dict:
        cleaned = super().clean()
        upload = cleaned.get("upload")
        data: bytes | str = upload.read() if upload else (cleaned.get("pasted") or "")
        self.parsed = None
        if not data:
            if not self.instance.pk:
                raise forms.ValidationError("Upload a file or paste the credential.")
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
    list_display = ["name", "kind", "subject_short", "expiry", "key_id", "team_id", "project_id", "usable"]
    list_filter = ["kind", "usable", "environment"]
    search_fields = ["name", "subject", "key_id", "team_id", "project_id", "fingerprint_sha256"]
    readonly_fields = [
        "subject", "topics", "environment", "not_before", "not_after", "expiry", "fingerprint_sha256",
        "project_id", "client_email", "usable", "unusable_reason", "warnings", "created_at", "updated_at",
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
            obj.save(update_fields=["name", "key_id", "team_id", "updated_at"])


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
