"""registry.reporting and the registration path's side of it: a token-less REGISTER of a reporting
app is remembered, a report stores its push object as a reg_success would (one path), and the
reporters' configuration is checked on every write."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from core import fields
from core.errors import InvalidInput, PusherError, UnknownDevice
from registry import reporting
from registry.models import Device, PushToken, SyncStatus, TokenReporter
from registry.services import registration_apply, registration_apply_batch

pytestmark = pytest.mark.django_db

ACCOUNT, DEVICE = "4fd0ba7a2f5e3c4d8e9f0a1b2c3d4e5f", "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
PROXY = "sip:10.20.30.40:5060;transport=udp"
VOIP = "9f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
VOIP_2 = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f9"
SECRET = "gw-secret-0123456789abcdefghij"


def register(user_agent: str = "Groundwire/6.2.1 (iOS 17)", contact: str = "<sip:1001@192.0.2.7:5060>",
             account: str = ACCOUNT, device: str = DEVICE, username: str = "1001", proxy: str = PROXY, **more):
    return registration_apply(fields={
        "Event-Category": "directory", "Event-Name": "reg_success", "Username": username, "Realm": "acme.example.com",
        "User-Agent": user_agent, "Contact": contact, "Expires": 600, "Proxy-Path": proxy,
        "Custom-Channel-Vars": {"Account-ID": account, "Authorizing-ID": device}, **more,
    })


@pytest.fixture
def groundwire() -> TokenReporter:
    return reporting.token_reporter_create(slug="groundwire", secret=SECRET, fixed={"Token-Type": "apple"},
                                           user_agent_regex="^Groundwire")


def report(reporter: TokenReporter, **params: str) -> reporting.TokenReportResult:
    base = {"username": "1001", "realm": "acme.example.com", "pushTokenIncomingCall": VOIP,
            "pushappid_incoming_call": "cz.acrobits.groundwire.voip"}
    return reporting.token_report_apply(reporter=reporter, params={**base, **params})


# --- The registration path remembers the reporting apps ------------------------------------------------


def test_a_tokenless_register_of_a_reporting_app_is_remembered_without_a_push_object(groundwire) -> None:
    result = register()
    assert result.outcome == "learned" and "groundwire" in result.reason
    device = Device.objects.get()
    assert (device.account_id, device.device_id, device.username, device.realm) == (ACCOUNT, DEVICE, "1001",
                                                                                    "acme.example.com")
    assert device.push is None and device.last_proxy_path == PROXY and device.sync_status == SyncStatus.LOCAL
    # Unchanged re-REGISTERs cost no write; a new proxy is written.
    assert register().outcome == "unchanged"
    assert register(proxy="sip:10.20.30.41:5060;transport=udp").outcome == "learned"
    assert Device.objects.get().last_proxy_path == "sip:10.20.30.41:5060;transport=udp"


def test_other_apps_without_a_token_are_ignored_as_before(groundwire) -> None:
    assert register(user_agent="Yealink SIP-T46S 66.85").outcome == "ignored"
    assert register(user_agent="Groundwire/6", Expires=0).outcome == "ignored"  # an un-REGISTER teaches nothing
    assert not Device.objects.exists()
    reporting.token_reporter_update(reporter=groundwire, enabled=False)
    assert register().outcome == "ignored"


def test_the_reporter_cache_follows_edits_at_once(groundwire) -> None:
    register()  # warms the cache of reporters' regexes
    reporting.token_reporter_update(reporter=groundwire, user_agent_regex="^Acrobits")
    assert register(account="b" * 32).outcome == "ignored"
    assert register(user_agent="Acrobits Softphone/6", account="c" * 32).outcome == "learned"


def test_the_learned_register_leaves_a_reported_push_object_and_its_tokens_alone(groundwire) -> None:
    register()
    assert report(groundwire).outcome == "updated"
    stored = Device.objects.get().push
    for _ in range(2):
        assert register(contact="<sip:1001@192.0.2.8:5062>").outcome in ("learned", "unchanged")
    device = Device.objects.get()
    assert device.push == stored and device.rule_name == "token reporter groundwire"
    assert list(device.tokens.values_list("token", "active")) == [(VOIP, True)]


def test_a_batch_learns_and_stores_side_by_side(groundwire, acme_rule) -> None:
    acme = {"Username": "2002", "Realm": "acme.example.com", "User-Agent": "AcmePhone iOS 3.2.1", "Expires": 600,
            "Contact": f"<sip:2002@192.0.2.9;app-id=com.acme.phone.voip.prod;pn-type=apple;pn-tok={VOIP_2}>",
            "Proxy-Path": PROXY, "Custom-Channel-Vars": {"Account-ID": ACCOUNT, "Authorizing-ID": "e" * 32}}
    gw = {**acme, "Username": "1001", "User-Agent": "Groundwire/6", "Contact": "<sip:1001@192.0.2.7>",
          "Custom-Channel-Vars": {"Account-ID": ACCOUNT, "Authorizing-ID": DEVICE}}
    results = registration_apply_batch(fields=[acme, gw, gw])
    assert [r.outcome for r in results] == ["created", "learned", "unchanged"]
    assert Device.objects.get(device_id="e" * 32).push["Token-ID"] == VOIP_2


# --- A report stores its push object as a reg_success would ----------------------------------------------


def test_a_report_stores_the_push_object_with_the_registrations_proxy(groundwire) -> None:
    register()
    result = report(groundwire, selector="ABC:1")
    assert result.outcome == "updated" and result.device.device_id == DEVICE
    device = Device.objects.get()
    assert device.push == {"Token-ID": VOIP, "Token-App": "cz.acrobits.groundwire.voip", "Token-Type": "apple",
                           "Token-Proxy": PROXY}
    assert device.push_changed_at is not None and device.last_user_agent.startswith("Groundwire")
    token = device.tokens.get()
    assert (token.kind, token.app, token.proxy, token.active) == ("voip", "cz.acrobits.groundwire.voip", PROXY, True)


def test_the_same_report_again_writes_nothing_and_a_new_token_retires_the_old(groundwire) -> None:
    register()
    report(groundwire)
    changed_at = Device.objects.get().push_changed_at
    assert report(groundwire).outcome == "unchanged"
    assert Device.objects.get().push_changed_at == changed_at
    assert report(groundwire, pushTokenIncomingCall=VOIP_2).outcome == "updated"
    assert Device.objects.get().push["Token-ID"] == VOIP_2
    assert dict(PushToken.objects.values_list("token", "active")) == {VOIP: False, VOIP_2: True}


def test_a_reported_push_object_is_synced_to_kazoo_like_a_registered_one(groundwire, settings) -> None:
    settings.KAZOO_CROSSBAR_URL, settings.KAZOO_API_KEY = "http://127.0.0.1:9", "k" * 64
    register()
    assert Device.objects.get().sync_status == SyncStatus.LOCAL  # no push object yet: nothing to sync
    report(groundwire)
    device = Device.objects.get()
    assert device.sync_status == SyncStatus.PENDING and device.sync_next_at is not None


def test_the_reporters_proxy_wins_over_the_registrations(groundwire) -> None:
    register()
    groundwire = reporting.token_reporter_update(reporter=groundwire, proxy="sip:kamailio.acme.example.com:5060")
    report(groundwire)
    assert Device.objects.get().push["Token-Proxy"] == "sip:kamailio.acme.example.com:5060"


def test_a_device_known_by_its_contact_tokens_takes_reports_from_a_reporter_without_regex(acme_rule) -> None:
    open_reporter = reporting.token_reporter_create(slug="any", secret=SECRET, fixed={"Token-Type": "apple"})
    register(user_agent="AcmePhone iOS 3.2.1",
             contact=f"<sip:1001@192.0.2.7;app-id=com.acme.phone.voip.prod;pn-type=apple;pn-tok={VOIP_2}>")
    assert report(open_reporter).outcome == "updated"
    assert Device.objects.get().push["Token-Proxy"] == PROXY


@pytest.mark.parametrize("case", ["unknown user", "other realm", "other app's device", "fixed realm elsewhere"])
def test_no_device_this_reporter_may_write_is_one_answer(groundwire, case: str) -> None:
    register()
    register(user_agent="Linphone/5", account="b" * 32, device="c" * 32, username="1002")
    params = {"unknown user": {"username": "9999"}, "other realm": {"realm": "globex.example.com"},
              "other app's device": {"username": "1002"}, "fixed realm elsewhere": {}}[case]
    if case == "fixed realm elsewhere":
        groundwire = reporting.token_reporter_update(reporter=groundwire, fixed={"Token-Type": "apple",
                                                                                 "Realm": "globex.example.com"})
    with pytest.raises(UnknownDevice) as caught:
        report(groundwire, **params)
    assert caught.value.message == "no device answers to this account" and caught.value.code == "device_unknown"
    assert Device.objects.get(device_id=DEVICE).push is None


def test_a_device_without_a_known_proxy_is_refused(groundwire) -> None:
    register(proxy="")
    with pytest.raises(PusherError) as caught:
        report(groundwire)
    assert caught.value.code == "device_unroutable"
    assert Device.objects.get().push is None


def test_the_most_recent_registration_wins_when_two_devices_share_the_account(groundwire) -> None:
    register(device="a" * 32)
    register(device="b" * 32)
    assert report(groundwire).device.device_id == "b" * 32


def test_a_malformed_report_writes_nothing(groundwire) -> None:
    register()
    with pytest.raises(InvalidInput):
        report(groundwire, pushTokenIncomingCall="not a token")
    assert Device.objects.get().push is None and not PushToken.objects.exists()


# --- The reporters' configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"slug": "has space"}, "slug"),
    ({"secret": "short"}, "24 to 128"),
    ({"secret": "a" * 30 + "/x"}, "letters, digits"),
    ({"user_agent_regex": "(unclosed"}, "user_agent_regex"),
    ({"parameters": {"Token-ID": "t"}}, "Username is required"),
    ({"fixed": {}}, "Token-Type: map it"),
    ({"auth": "password"}, "auth"),
    ({"token_encoding": "hex"}, "token encoding"),
])
def test_a_reporter_that_cannot_work_is_refused(changes: dict, message: str) -> None:
    values = {"slug": "gw", "secret": SECRET, "fixed": {"Token-Type": "apple"}, **changes}
    with pytest.raises(PusherError) as caught:
        reporting.token_reporter_create(**values)
    assert message in caught.value.message and caught.value.code == "reporter_invalid"
    assert not TokenReporter.objects.exists()


def test_updates_are_checked_and_the_secret_changes_only_when_given(groundwire) -> None:
    with pytest.raises(PusherError):
        reporting.token_reporter_update(reporter=groundwire, parameters={"Token-ID": "t"})
    with pytest.raises(PusherError, match="unknown token reporter field"):
        reporting.token_reporter_update(reporter=groundwire, secret_hash="x")
    reporting.token_reporter_update(reporter=groundwire, description="Groundwire iOS")
    assert reporting.token_reporter_secret_matches(reporter=TokenReporter.objects.get(), given=SECRET)
    reporting.token_reporter_update(reporter=groundwire, secret="n" * 40)
    reporter = TokenReporter.objects.get()
    assert reporting.token_reporter_secret_matches(reporter=reporter, given="n" * 40)
    assert not reporting.token_reporter_secret_matches(reporter=reporter, given=SECRET)


def test_the_secret_is_encrypted_at_rest(groundwire) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM registry_tokenreporter")
        (stored,) = cursor.fetchone()
    assert stored.startswith("fernet:") and SECRET not in stored


def test_reencryption_rewrites_the_secrets_and_names_those_no_key_reads(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    fields._fernet.cache_clear()
    reporting.token_reporter_create(slug="kept", secret=SECRET, fixed={"Token-Type": "apple"})
    settings.FIELD_ENCRYPTION_KEY = [new, old]
    fields._fernet.cache_clear()
    assert reporting.token_reporters_reencrypt() == (1, ())
    settings.FIELD_ENCRYPTION_KEY = [new]
    fields._fernet.cache_clear()
    kept = TokenReporter.objects.get()
    assert reporting.token_reporter_secret_matches(reporter=kept, given=SECRET)
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    fields._fernet.cache_clear()
    assert reporting.token_reporters_reencrypt() == (0, ("kept",))
    with pytest.raises(PusherError) as caught:
        reporting.token_reporter_secret_matches(reporter=TokenReporter.objects.get(), given=SECRET)
    assert caught.value.code == "reporter_unusable"
    fields._fernet.cache_clear()


def test_deleting_a_reporter_keeps_the_push_objects_it_stored(groundwire) -> None:
    register()
    report(groundwire)
    reporting.token_reporter_delete(reporter=groundwire)
    assert Device.objects.get().push["Token-ID"] == VOIP
    assert register(account="f" * 32).outcome == "ignored"  # no longer remembered for it


def test_credentials_reencrypt_rewrites_the_reporters_secrets_too(settings) -> None:
    import io

    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    fields._fernet.cache_clear()
    reporting.token_reporter_create(slug="kept", secret=SECRET, fixed={"Token-Type": "apple"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM registry_tokenreporter")
        (before,) = cursor.fetchone()
    settings.FIELD_ENCRYPTION_KEY = [new, old]
    fields._fernet.cache_clear()
    out, err = io.StringIO(), io.StringIO()
    call_command("credentials_reencrypt", stdout=out, stderr=err)
    assert "re-encrypted 1 token reporter secret(s)" in out.getvalue() and not err.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM registry_tokenreporter")
        (after,) = cursor.fetchone()
    assert after != before
    settings.FIELD_ENCRYPTION_KEY = [new]
    fields._fernet.cache_clear()
    assert reporting.token_reporter_secret_matches(reporter=TokenReporter.objects.get(), given=SECRET)
    fields._fernet.cache_clear()
