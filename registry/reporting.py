"""Token reporters (registry.models.TokenReporter): their configuration's writes, and the way of a
report to its device's push object, which is the reg_success path's own
(registry.services.registration_apply): same checks, digest, token retirement, events and Kazoo
sync; only the push object and tokens are read from the report instead of from a Contact."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from core.errors import PusherError, UnknownDevice
from core.fields import is_undecryptable, rows_reencrypt
from core.text import mask_token
from registry import selectors, services
from registry.models import Device, ReporterAuth, TokenEncoding, TokenReporter, reporter_parameters_default
from registry.pushobject import REASON_OK, PushBuild, Rule, rule_match
from registry.reporter import (
    Report,
    ReporterConfig,
    report_account,
    report_map,
    reporter_config_problems,
    secret_problem,
)

log = logging.getLogger(__name__)

TOKEN_REPORTER_FIELDS = frozenset({
    "slug", "enabled", "description", "auth", "parameters", "fixed", "token_encoding", "user_agent_regex", "proxy",
})
# What a device's rule_name says when its push object came from a report.
REPORT_RULE_PREFIX = "token reporter "


def token_reporter_secret_new() -> str:
    """A fresh secret: 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def token_reporter_mapping_check(*, parameters: object, fixed: object, token_encoding: str) -> None:
    """Raise PusherError (code reporter_invalid) for a mapping a report could not use (the admin's
    form asks this before saving; create and update ask it again)."""
    problems = reporter_config_problems(parameters=parameters, fixed=fixed, token_encoding=token_encoding)
    if problems:
        raise PusherError("; ".join(problems), code="reporter_invalid")


def token_reporter_secret_check(*, secret: object) -> None:
    """Raise PusherError (code reporter_invalid) for a secret too short or not URL-safe."""
    problem = secret_problem(secret)
    if problem:
        raise PusherError(problem, code="reporter_invalid")


def _reporter_check(reporter: TokenReporter) -> None:
    """A reporter is saved only if a report can use it: the model's validators (the User-Agent
    regex compiled as a rule's, choices, lengths) and the mapping's own checks."""
    problems: list[str] = []
    try:
        reporter.full_clean(exclude=["secret"])
    except ValidationError as exc:
        problems += [f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()]
    problems += reporter_config_problems(
        parameters=reporter.parameters, fixed=reporter.fixed, token_encoding=reporter.token_encoding
    )
    if problems:
        raise PusherError(f"token reporter {reporter.slug!r}: {'; '.join(problems)}", code="reporter_invalid")




@transaction.atomic
def token_reporter_create(
    *,
    slug: str,
    secret: str,
    parameters: Mapping[str, str] | None = None,
    fixed: Mapping[str, str] | None = None,
    auth: str = ReporterAuth.URL_SECRET,
    enabled: bool = True,
    description: str = "",
    token_encoding: str = TokenEncoding.AS_SENT,
    user_agent_regex: str = "",
    proxy: str = "",
) -> TokenReporter:
    """Add a token reporter. Raises PusherError (code reporter_invalid) for a mapping a report could
    not use, a regex that does not compile, a slug taken, or a secret too short or not URL-safe."""
    token_reporter_secret_check(secret=secret)
    reporter = TokenReporter(
        slug=slug, secret=secret, parameters=dict(parameters if parameters is not None else
                                                  reporter_parameters_default()),
        fixed=dict(fixed or {}), auth=auth, enabled=enabled, description=description, token_encoding=token_encoding,
        user_agent_regex=user_agent_regex, proxy=proxy,
    )
    _reporter_check(reporter)
    reporter.save()
    selectors.rules_cache_clear_now_and_on_commit()
    log.info("token reporter %r created (%s)", reporter.slug, reporter.auth)
    return reporter


@transaction.atomic
def token_reporter_update(*, reporter: TokenReporter, secret: str | None = None, **changes: Any) -> TokenReporter:
    """Change a reporter's fields (names: TOKEN_REPORTER_FIELDS) and, when given, its secret.
    Raises PusherError as create does."""
    unknown = sorted(set(changes) - TOKEN_REPORTER_FIELDS)
    if unknown:
        raise PusherError(f"unknown token reporter field(s): {', '.join(unknown)}", code="reporter_invalid")
    reporter = TokenReporter.objects.select_for_update().get(pk=reporter.pk)
    for name, value in changes.items():
        if name == "fixed" and value is None:
            value = {}  # (a form's empty JSON field)
        setattr(reporter, name, dict(value) if isinstance(value, Mapping) else value)
    if secret is not None:
        token_reporter_secret_check(secret=secret)
        reporter.secret = secret
    _reporter_check(reporter)
    reporter.save()
    selectors.rules_cache_clear_now_and_on_commit()
    named = sorted(changes) + (["secret"] if secret is not None else [])
    log.info("token reporter %r updated (%s)", reporter.slug, ", ".join(named) or "no change")
    return reporter


@transaction.atomic
def token_reporter_delete(*, reporter: TokenReporter) -> None:
    """Forget a reporter; the push objects its reports stored stay (a phone's push object is the
    phone's), and its devices' later REGISTERs are no longer remembered for it."""
    slug = reporter.slug
    reporter.delete()
    selectors.rules_cache_clear_now_and_on_commit()
    log.info("token reporter %r deleted", slug)


def token_reporter_secret_matches(*, reporter: TokenReporter, given: str) -> bool:
    """Whether `given` is the reporter's secret, compared in constant time. Raises PusherError (code
    reporter_unusable) when the stored secret cannot be decrypted (FIELD_ENCRYPTION_KEY changed)."""
    return hmac.compare_digest(token_reporter_secret(reporter).encode(), given.encode("utf-8", "replace"))


def token_reporter_secret(reporter: TokenReporter) -> str:
    """The decrypted secret (to check a signature with). PusherError when it cannot be decrypted."""
    if is_undecryptable(reporter.secret) or not reporter.secret:
        raise PusherError(f"token reporter {reporter.slug!r}: its secret cannot be decrypted with "
                          "FIELD_ENCRYPTION_KEY; set it again", code="reporter_unusable")
    return str(reporter.secret)


def token_reporters_reencrypt() -> tuple[int, tuple[str, ...]]:
    """Rewrite every reporter's secret with the first FIELD_ENCRYPTION_KEY (key rotation, with the
    credentials: push.services.credentials_reencrypt). Returns (count, slugs no key decrypts)."""
    return rows_reencrypt(TokenReporter, field="secret", label="slug")


# --- A report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenReportResult:
    outcome: str  # registry.services.RegistrationResult's: "created", "updated", "unchanged", "refreshed"
    reason: str
    device: Device
    report: Report


def _config(reporter: TokenReporter) -> ReporterConfig:
    return ReporterConfig(slug=reporter.slug, parameters=dict(reporter.parameters or {}),
                          fixed=dict(reporter.fixed or {}), token_encoding=reporter.token_encoding)


def token_report_account(*, reporter: TokenReporter, params: Mapping[str, str]) -> tuple[str, str]:
    """(username, realm) the report names, normalised as `token_report_apply` reads them."""
    return report_account(config=_config(reporter), params=params)


def token_report_apply(*, reporter: TokenReporter, params: Mapping[str, str]) -> TokenReportResult:
    """Store what a report says for the device its SIP username and realm name, exactly as a
    reg_success carrying those tokens would: the push object (Token-Proxy: the reporter's, else
    where the device last registered) and tokens, written only when they changed, Kazoo synced.

    Raises InvalidInput (code report_invalid) for a malformed report, UnknownDevice when no device
    this reporter may write answers to the account (one answer, whatever the reason), PusherError
    (code device_unroutable) when the device's registrar is not known yet."""
    report = report_map(config=_config(reporter), params=params)
    device = _report_device(reporter, report)
    proxy = reporter.proxy or device.last_proxy_path or (device.push or {}).get("Token-Proxy", "")
    if not proxy:
        # Kazoo routes the call to a push device through its Token-Proxy (kz_endpoint's fs_path):
        # a push object without one would break the call instead of waking the phone.
        raise PusherError("the device has not registered through a known proxy yet: register, then report",
                          code="device_unroutable")
    build = PushBuild(
        rule=f"{REPORT_RULE_PREFIX}{reporter.slug}", push={**report.push, "Token-Proxy": proxy},
        tokens=report.tokens, reason=REASON_OK, account_id=device.account_id, device_id=device.device_id,
    )
    # The device's own registration details: a report changes its push object, not who it is.
    fields = {"Username": device.username, "Realm": device.realm, "User-Agent": device.last_user_agent,
              "Contact": device.last_contact, "Proxy-Path": device.last_proxy_path}
    result = services.registration_apply(fields=fields, build=build)
    log.info("token report via %r for %s@%s%s: device %s/%s %s, %s", reporter.slug, report.username, report.realm,
             f" (selector {report.selector})" if report.selector else "", device.account_id, device.device_id,
             result.outcome, ", ".join(f"{t.kind or 'plain'} {mask_token(t.token)}" for t in report.tokens))
    return TokenReportResult(outcome=result.outcome, reason=result.reason, device=result.device or device,
                             report=report)


def _report_device(reporter: TokenReporter, report: Report) -> Device:
    """The device the report names and this reporter may write: registered as username@realm and,
    when the reporter has a User-Agent regex, registering with a User-Agent it matches."""
    devices = selectors.devices_for_account(username=report.username, realm=report.realm)
    if reporter.user_agent_regex:
        rules = [Rule(name=reporter.slug, regex=reporter.user_agent_regex, properties={})]
        devices = [d for d in devices
                   if rule_match(rules, d.last_user_agent, timeout=settings.PUSHER_REGEX_TIMEOUT_S) is not None]
    if not devices:
        raise UnknownDevice("no device answers to this account")
    return devices[0]
