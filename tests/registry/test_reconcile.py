"""Drift repair (kazoo.reconcile, manage.py kazoo_reconcile) against the fake Crossbar."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from kazoo.models import DeviceReconcile, ReconcileResult
from kazoo.reconcile import devices_reconcile, reconcile_loop
from kazoo.sync import device_sync_due
from registry.models import Device, SyncStatus
from tests.fakes.crossbar import FakeCrossbar

pytestmark = pytest.mark.django_db

ACCOUNT = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
OTHER_ACCOUNT = "aa0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
PUSH = {
    "Token-App": "com.acme.phone.voip.prod",
    "Token-Type": "apple",
    "Token-ID": "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081",
    "Token-Proxy": "sip:10.0.0.5:5060;transport=udp",
}


@pytest.fixture
def kazoo(settings, fake_crossbar: FakeCrossbar) -> FakeCrossbar:
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key
    return fake_crossbar


def synced_device(device_id: str, push: dict | None = PUSH, *, account_id: str = ACCOUNT) -> Device:
    now = timezone.now()
    return Device.objects.create(
        account_id=account_id, device_id=device_id, push=push, push_changed_at=now,
        sync_status=SyncStatus.SYNCED, push_synced_at=now,
    )


def patches(fake: FakeCrossbar) -> list:
    return [r for r in fake.requests if r.method == "PATCH"]


def state(device: Device) -> DeviceReconcile:
    return DeviceReconcile.objects.get(device=device)


def test_push_object_changed_in_kazoo_is_repaired(kazoo: FakeCrossbar):
    device = synced_device("d1" * 16)
    kazoo.add_device(ACCOUNT, device.device_id, {"name": "phone", "push": {**PUSH, "Token-ID": "stale", "X-Old": "1"}})

    summary = devices_reconcile()

    assert [o.result for o in summary.outcomes] == [ReconcileResult.DRIFTED]
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.PENDING
    assert state(device).result == ReconcileResult.DRIFTED
    assert "Token-ID" in state(device).detail and "X-Old" in state(device).detail
    assert state(device).drift_count == 1

    assert device_sync_due() == 1  # the sync loop's turn
    assert kazoo.devices[(ACCOUNT, device.device_id)]["push"] == PUSH
    assert kazoo.devices[(ACCOUNT, device.device_id)]["name"] == "phone"
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.SYNCED

    assert [o.result for o in devices_reconcile().outcomes] == [ReconcileResult.OK]
    assert state(device).result == ReconcileResult.OK
    assert state(device).drift_count == 1  # the last drift is remembered


def test_push_object_removed_in_kazoo_is_put_back(kazoo: FakeCrossbar):
    device = synced_device("d2" * 16)
    kazoo.add_device(ACCOUNT, device.device_id, {"name": "phone"})

    (outcome,) = devices_reconcile().outcomes

    assert outcome.result == ReconcileResult.DRIFTED
    assert outcome.detail == "push object missing in Kazoo"
    device_sync_due()
    assert kazoo.devices[(ACCOUNT, device.device_id)]["push"] == PUSH


def test_push_object_cleared_by_pusher_but_back_in_kazoo_is_cleared_again(kazoo: FakeCrossbar):
    device = synced_device("d3" * 16, push=None)
    kazoo.add_device(ACCOUNT, device.device_id, {"push": PUSH})

    (outcome,) = devices_reconcile().outcomes

    assert outcome.result == ReconcileResult.DRIFTED
    device_sync_due()
    assert kazoo.devices[(ACCOUNT, device.device_id)]["push"] == {}


def test_in_sync_devices_are_left_alone(kazoo: FakeCrossbar):
    device = synced_device("d4" * 16)
    cleared = synced_device("d5" * 16, push=None)
    kazoo.add_device(ACCOUNT, device.device_id, {"push": dict(reversed(list(PUSH.items())))})  # key order differs
    kazoo.add_device(ACCOUNT, cleared.device_id, {"push": {}})

    summary = devices_reconcile()

    assert [o.result for o in summary.outcomes] == [ReconcileResult.OK, ReconcileResult.OK]
    assert device_sync_due() == 0
    assert patches(kazoo) == []
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.SYNCED
    assert state(device).result == ReconcileResult.OK and state(device).drifted_at is None


def test_devices_waiting_to_sync_and_without_push_history_are_not_checked(kazoo: FakeCrossbar):
    synced_device("d6" * 16).__class__.objects.filter(device_id="d6" * 16).update(sync_status=SyncStatus.PENDING)
    Device.objects.create(account_id=ACCOUNT, device_id="d7" * 16, sync_status=SyncStatus.SYNCED)

    assert devices_reconcile().checked == 0
    assert kazoo.requests == []


def test_dry_run_changes_nothing(kazoo: FakeCrossbar):
    device = synced_device("d8" * 16)
    kazoo.add_device(ACCOUNT, device.device_id, {"push": {**PUSH, "Token-ID": "stale"}})

    summary = devices_reconcile(dry_run=True)

    assert [o.result for o in summary.outcomes] == [ReconcileResult.DRIFTED]
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.SYNCED
    assert not DeviceReconcile.objects.exists()
    assert device_sync_due() == 0
    assert patches(kazoo) == []
    assert kazoo.devices[(ACCOUNT, device.device_id)]["push"]["Token-ID"] == "stale"


def test_crossbar_error_and_missing_document_are_recorded(kazoo: FakeCrossbar):
    failing = synced_device("d9" * 16)
    missing = synced_device("da" * 16)
    kazoo.add_device(ACCOUNT, failing.device_id, {"push": PUSH})
    kazoo.auto_create = False
    kazoo.fail_next(1, 500, message="datastore_fault", only=failing.device_id)

    results = {o.device.pk: o.result for o in devices_reconcile().outcomes}

    assert results == {failing.pk: ReconcileResult.ERROR, missing.pk: ReconcileResult.MISSING}
    assert "HTTP 500" in state(failing).detail and "datastore_fault" in state(failing).detail
    assert state(missing).result == ReconcileResult.MISSING
    for device in (failing, missing):
        device.refresh_from_db()
        assert device.sync_status == SyncStatus.SYNCED
    assert patches(kazoo) == []


def test_limit_takes_the_least_recently_checked_first(kazoo: FakeCrossbar):
    devices = [synced_device(f"{n:02x}" * 16) for n in range(3)]
    for device in devices:
        kazoo.add_device(ACCOUNT, device.device_id, {"push": PUSH})

    first = [o.device.pk for o in devices_reconcile(limit=2).outcomes]
    second = [o.device.pk for o in devices_reconcile(limit=2).outcomes]

    assert first == [devices[0].pk, devices[1].pk]
    assert second == [devices[2].pk, devices[0].pk]


def test_command_prints_summary_and_filters_by_account(kazoo: FakeCrossbar):
    drifted = synced_device("db" * 16)
    synced_device("dc" * 16, account_id=OTHER_ACCOUNT)
    kazoo.add_device(ACCOUNT, drifted.device_id, {"push": {**PUSH, "Token-ID": "stale"}})

    out = StringIO()
    call_command("kazoo_reconcile", "--account", ACCOUNT, stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == f"drifted: {ACCOUNT}/{drifted.device_id}: push object differs in Kazoo: Token-ID"
    assert lines[-1] == ("1 device(s) checked against Kazoo: 0 ok, 1 drifted, 0 missing, 0 error; "
                         "1 queued for sync")
    drifted.refresh_from_db()
    assert drifted.sync_status == SyncStatus.PENDING

    out = StringIO()
    call_command("kazoo_reconcile", "--dry-run", "--limit", "5", stdout=out)
    assert out.getvalue().splitlines()[-1].startswith("dry run: 1 device(s) checked against Kazoo: 0 ok, 0 drifted, ")


def test_command_refuses_without_kazoo_or_with_bad_options(settings):
    settings.KAZOO_CROSSBAR_URL = ""
    with pytest.raises(CommandError, match="not configured"):
        call_command("kazoo_reconcile")
    with pytest.raises(CommandError, match="--account"):
        call_command("kazoo_reconcile", "--account", "../x")
    with pytest.raises(CommandError, match="--limit"):
        call_command("kazoo_reconcile", "--limit", "0")


def test_reconcile_loop_off_at_zero_and_stops(settings):
    settings.PUSHER_RECONCILE_INTERVAL_S = 0
    reconcile_loop(threading.Event())  # returns at once

    settings.PUSHER_RECONCILE_INTERVAL_S = 3600
    stop = threading.Event()
    stop.set()
    reconcile_loop(stop)  # returns at once when stopping


def test_admin_shows_the_reconcile_state(kazoo: FakeCrossbar, staff_client):
    from django.urls import reverse

    device = synced_device("dd" * 16)
    kazoo.add_device(ACCOUNT, device.device_id, {"push": {**PUSH, "Token-ID": "stale"}})
    devices_reconcile()

    page = staff_client.get(reverse("admin:registry_device_change", args=[device.pk])).content.decode()
    assert "Kazoo drift check" in page
    assert "drifted (queued for sync), checked " in page
    assert "push object differs in Kazoo: Token-ID (drift found 1 time(s), last " in page
    never = synced_device("df" * 16)
    page = staff_client.get(reverse("admin:registry_device_change", args=[never.pk])).content.decode()
    assert "not checked yet" in page

    listing = staff_client.get(reverse("admin:kazoo_devicereconcile_changelist"), {"result__exact": "drifted"})
    assert listing.status_code == 200
    assert device.device_id in listing.content.decode()
    assert staff_client.get(reverse("admin:kazoo_devicereconcile_change", args=[device.pk])).status_code == 200


def test_push_object_changed_in_pusher_since_the_read_is_no_drift(kazoo: FakeCrossbar):
    device = synced_device("de" * 16)
    newer = {**PUSH, "Token-ID": "newer"}
    kazoo.add_device(ACCOUNT, device.device_id, {"push": newer})
    Device.objects.filter(pk=device.pk).update(push=newer)  # changed and synced after `device` was read

    from kazoo.reconcile import device_reconcile
    from kazoo.sync import kazoo_client

    client = kazoo_client()
    assert client is not None
    outcome = device_reconcile(device=device, client=client)

    assert outcome.result == ReconcileResult.OK
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.SYNCED


@pytest.mark.django_db(transaction=True)
def test_consumer_loop_repairs_a_batch_per_tick(kazoo: FakeCrossbar, settings):
    settings.PUSHER_RECONCILE_INTERVAL_S = 0.05
    settings.PUSHER_RECONCILE_BATCH = 1
    devices = [synced_device("e1" * 16), synced_device("e2" * 16)]
    for device in devices:
        kazoo.add_device(ACCOUNT, device.device_id, {"push": {**PUSH, "Token-ID": "stale"}})
    stop = threading.Event()
    thread = threading.Thread(target=reconcile_loop, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while DeviceReconcile.objects.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert set(DeviceReconcile.objects.values_list("result", flat=True)) == {ReconcileResult.DRIFTED}
    assert set(Device.objects.values_list("sync_status", flat=True)) == {SyncStatus.PENDING}


def test_a_batch_stops_after_errors_in_a_row(kazoo: FakeCrossbar):
    from kazoo.reconcile import ERRORS_IN_A_ROW_MAX

    for n in range(ERRORS_IN_A_ROW_MAX + 3):
        synced_device(f"{n:02x}" * 16)
    kazoo.fail_next(100, 503, message="crossbar down", only="/devices/")

    summary = devices_reconcile()

    assert summary.checked == ERRORS_IN_A_ROW_MAX
    assert summary.as_line().endswith(f"stopped early: {ERRORS_IN_A_ROW_MAX} errors in a row "
                                      "(last: Kazoo read device failed: HTTP 503 (crossbar down))")
    assert DeviceReconcile.objects.filter(result=ReconcileResult.ERROR).count() == ERRORS_IN_A_ROW_MAX
