"""The sync of push objects to Kazoo when several sync loops run (one per consumer process, maybe on
several hosts): each change reaches Kazoo once, a loop that dies leaves the device to another, and
a change made during a PATCH is sent again."""

from __future__ import annotations

import copy
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from kazoo.sync import device_sync_due, sync_loop
from registry import selectors, syncstate
from registry.models import Device, SyncStatus
from registry.services import device_push_clear
from tests.fakes.crossbar import FakeCrossbar

ACCOUNT = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
PUSH = {
    "Token-App": "com.acme.phone.voip.prod",
    "Token-Type": "apple",
    "Token-ID": "a" * 64,
    "Token-Proxy": "sip:10.0.0.5:5060;transport=udp",
}


@pytest.fixture
def kazoo(settings, fake_crossbar: FakeCrossbar, monkeypatch) -> FakeCrossbar:
    monkeypatch.setattr("kazoo.sync._client", None)  # the fake forgets earlier tests' auth tokens
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key
    return fake_crossbar


def pending_device(device_id: str) -> Device:
    now = timezone.now()
    return Device.objects.create(
        account_id=ACCOUNT, device_id=device_id, push=PUSH, push_changed_at=now,
        sync_status=SyncStatus.PENDING, sync_next_at=now,
    )


def patched_devices(fake: FakeCrossbar) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in fake.requests if r.method == "PATCH"]


@pytest.mark.django_db
def test_two_loops_that_read_the_same_rows_claim_each_device_once(kazoo, monkeypatch):
    for n in range(3):
        pending_device(f"{n:032x}")
    read = selectors.devices_sync_due(limit=50)
    assert len(read) == 3

    # Both loops read the rows before either claimed them.
    monkeypatch.setattr(selectors, "devices_sync_due", lambda *, limit: [copy.copy(d) for d in read])
    first = syncstate.devices_sync_claim(limit=50)
    second = syncstate.devices_sync_claim(limit=50)

    assert sorted(d.device_id for d in first) == sorted(d.device_id for d in read)
    assert second == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_sync_loops_patch_each_device_once(kazoo):
    ids = [f"{n:032x}" for n in range(40)]
    for device_id in ids:
        pending_device(device_id)
    barrier = threading.Barrier(2)
    tried: list[int] = []

    def loop() -> None:
        from django.db import connection
        barrier.wait()
        try:
            tried.append(device_sync_due(limit=50))
        finally:
            connection.close()

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(patched_devices(kazoo)) == ids  # each once, none twice
    assert sum(tried) == len(ids)
    assert set(Device.objects.values_list("sync_status", flat=True)) == {SyncStatus.SYNCED}


@pytest.mark.django_db
def test_a_claim_whose_loop_died_is_tried_again_after_the_lease(kazoo, monkeypatch):
    device = pending_device("d1" * 16)
    assert [d.pk for d in syncstate.devices_sync_claim(limit=50)] == [device.pk]  # ... and the loop dies

    assert device_sync_due() == 0  # leased: nobody else takes it yet
    later = timezone.now() + syncstate.SYNC_LEASE + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert device_sync_due() == 1
    assert patched_devices(kazoo) == [device.device_id]
    assert Device.objects.get(pk=device.pk).sync_status == SyncStatus.SYNCED


@pytest.mark.django_db
def test_a_change_made_while_kazoo_is_patched_is_sent_again(kazoo, monkeypatch):
    device = pending_device("d2" * 16)
    client_patch = type(kazoo_client_of()).device_push_set

    def patch_then_clear(self, account_id, device_id, push):
        client_patch(self, account_id, device_id, push)
        if push:  # the phone's token died while the PATCH was on its way
            device_push_clear(device=Device.objects.get(device_id=device_id), reason="test")

    monkeypatch.setattr(type(kazoo_client_of()), "device_push_set", patch_then_clear)
    assert device_sync_due() == 1
    assert Device.objects.get(pk=device.pk).sync_status == SyncStatus.PENDING  # not marked synced

    assert device_sync_due() == 1
    assert kazoo.devices[(ACCOUNT, device.device_id)].get("push") in (None, {})
    assert Device.objects.get(pk=device.pk).sync_status == SyncStatus.SYNCED


def kazoo_client_of():
    from kazoo.sync import kazoo_client
    client = kazoo_client()
    assert client is not None
    return client


@pytest.mark.django_db(transaction=True)
def test_a_stopped_loop_woken_by_a_change_does_not_sync_it(kazoo):
    stop = threading.Event()
    thread = threading.Thread(target=sync_loop, args=(stop,))
    thread.start()
    try:
        threading.Event().wait(0.2)  # the loop waits for a change
        pending_device("d3" * 16)
        stop.set()
        syncstate.sync_wake()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert patched_devices(kazoo) == []  # the next consumer's loop will do it
