"""Scoped API tokens in the admin, for superusers: made here (the key shown once, on a page of its own,
never stored nor put in a message), listed, revoked. Made and revoked through tenancy.services, as
the API does."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from core.errors import PusherError
from tenancy import selectors, services
from tenancy.models import Grant, ScopedToken, TokenState

# Which form field shows which of the service's refusals.
_ERROR_FIELDS = {"name_invalid": "name", "owner_invalid": "owner", "account_id_invalid": "accounts",
                 "expiry_invalid": "expires_at"}


class ScopedTokenForm(forms.ModelForm):
    accounts = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="Kazoo account ids (32 lowercase hex digits), one per line or separated by commas or spaces",
    )

    class Meta:
        model = ScopedToken
        fields = ["name", "owner", "accounts", "grant_apps", "grant_credentials", "grant_rules_write", "expires_at"]

    def clean(self) -> dict[str, Any]:
        """The service's checks, asked here so a refusal shows on the form; save_model's service
        checks again."""
        super().clean()
        cleaned = self.cleaned_data
        try:
            self.params = services.scoped_token_params_check(
                name=cleaned.get("name", ""), owner=cleaned.get("owner"),
                account_ids=[a for a in re.split(r"[\s,;]+", cleaned.get("accounts", "")) if a],
                grants=[grant for grant in Grant.values if cleaned.get(f"grant_{grant}")],
                expires_at=cleaned.get("expires_at"),
            )
        except PusherError as exc:
            field = _ERROR_FIELDS.get(exc.code)
            if field is not None and field in self.fields and field not in self.errors:
                self.add_error(field, exc.message)
            elif field is None:
                raise forms.ValidationError(exc.message) from exc
        return cleaned


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(TokenState.choices)

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value not in TokenState.values:
            return queryset
        return selectors.scoped_tokens_in_state(state=value, queryset=queryset)


@admin.register(ScopedToken)
class ScopedTokenAdmin(admin.ModelAdmin):
    form = ScopedTokenForm
    list_display = ["name", "owner", "key_shown", "accounts_shown", "grants_shown", "state_shown", "created_at",
                    "last_used_at", "expires_at"]
    list_filter = [StateFilter, "grant_apps", "grant_credentials", "grant_rules_write"]
    search_fields = ["name", "key_prefix", "owner__username"]
    actions = ["revoke"]
    readonly_fields = ["key_shown", "accounts_shown", "grants_shown", "state_shown", "created_at", "last_used_at",
                       "revoked_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return list(ScopedTokenForm.Meta.fields)
        return ["name", "owner", "key_shown", "accounts_shown", "grants_shown", "state_shown", "created_at",
                "last_used_at", "expires_at", "revoked_at"]

    # Superusers only: a token opens accounts to whoever holds it. Made and revoked, never edited
    # (a changed scope would be a new token) nor deleted (a revoked token stays, for the record).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    @admin.display(description="key")
    def key_shown(self, obj: ScopedToken) -> str:
        return f"{obj.key_prefix}…"

    @admin.display(description="accounts")
    def accounts_shown(self, obj: ScopedToken) -> str:
        return ", ".join(obj.account_ids)

    @admin.display(description="grants")
    def grants_shown(self, obj: ScopedToken) -> str:
        return ", ".join(obj.grants) or "—"

    @admin.display(description="state")
    def state_shown(self, obj: ScopedToken) -> str:
        return obj.state()

    def save_model(self, request: HttpRequest, obj: ScopedToken, form: ScopedTokenForm, change: bool) -> None:
        params = form.params
        created = services.scoped_token_create(
            name=params.name, owner=params.owner, account_ids=params.account_ids, grants=params.grants,
            expires_at=params.expires_at,
        )
        # The admin logs and answers about `obj`: make it the row the service wrote.
        for name in ("pk", "key_prefix", "key_hash", "account_ids", "created_at"):
            setattr(obj, name, getattr(created.token, name))
        request.scoped_token_key = created.key  # type: ignore[attr-defined]  # for response_add, this request only

    def response_add(self, request: HttpRequest, obj: ScopedToken, post_url_continue: str | None = None
                     ) -> HttpResponse:
        """The key on a page of its own, this once: not in a message (messages are stored in the
        session or a cookie until shown)."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Scoped token {obj.name} made",
            "token": obj,
            "key": request.scoped_token_key,  # type: ignore[attr-defined]
        }
        # (The admin's views are never_cache: no-store, so no cache keeps the page.)
        return TemplateResponse(request, "admin/tenancy/scopedtoken/key_created.html", context)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        revoked = 0
        for token in queryset:
            if token.revoked_at is None:
                token = services.scoped_token_revoke(token=token)
                self.log_change(request, token, "Revoked.")
                revoked += 1
        already = queryset.count() - revoked
        self.message_user(request, f"{revoked} token(s) revoked" + (f"; {already} already were." if already else "."),
                          messages.SUCCESS)
