"""Retention of devices and tokens (registry.retention through push.services.retention_prune and
`manage.py prune`): only what is already dead goes; a device merely not seen for long stays."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from kazoo.models import DeviceReconcile, ReconcileResult
from push.services import retention_prune
from registry.models import Device, PushToken, SyncStatus
from registry.services import registration_apply
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

NOW = timezone.now()
OLD = timedelta(days=100)
RECENT = timedelta(days=3)
DAYS = 30
ACCOUNT = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
PUSH = {"Token-App": "com.acme.phone.voip.prod", "Token-Type": "apple", "Token-ID": "ab" * 32}


@dataclass(frozen=True)
class Tok:
    active: bool
    seen: timedelta = OLD
    deactivated: timedelta | None = OLD  # ago; None: never (deactivated_at null)


@dataclass(frozen=True)
class Case:
    name: str
    gone: bool  # the device is deleted
    push: dict | None = None
    sync: str = SyncStatus.SYNCED
    seen: timedelta | None = OLD  # last_seen_at this long ago; None: never seen (created_at counts)
    changed: timedelta | None = OLD  # push_changed_at
    tokens: tuple[Tok, ...] = ()
    tokens_kept: tuple[int, ...] = field(default=())  # indexes of `tokens` left when the device stays


CASES = [
    Case("dead: no push object, synced, no tokens", gone=True),
    Case("dead: kept locally (no Kazoo), old inactive tokens", gone=True, sync=SyncStatus.LOCAL,
         tokens=(Tok(False), Tok(False, deactivated=None))),
    Case("dead even with an inactive token deactivated lately (it goes with its device)", gone=True,
         tokens=(Tok(False, deactivated=RECENT),)),
    Case("never seen and created long ago", gone=True, seen=None, changed=None),
    Case("not seen for long but holding a push object: Kazoo still pushes to it", gone=False, push=PUSH,
         tokens=(Tok(True),), tokens_kept=(0,)),
    Case("push object but no token row", gone=False, push=PUSH),
    Case("an active token", gone=False, tokens=(Tok(True), Tok(False)), tokens_kept=(0,)),
    Case("cleared push object not yet written to Kazoo", gone=False, sync=SyncStatus.PENDING),
    Case("cleared push object whose sync to Kazoo fails", gone=False, sync=SyncStatus.FAILED),
    Case("seen lately", gone=False, seen=RECENT, tokens=(Tok(False), Tok(False, seen=RECENT, deactivated=OLD)),
         tokens_kept=(1,)),
    Case("push object cleared lately", gone=False, changed=RECENT,
         tokens=(Tok(False, deactivated=RECENT), Tok(False, deactivated=OLD)), tokens_kept=(0,)),
]


def make(case: Case, n: int) -> tuple[Device, list[PushToken]]:
    device = Device.objects.create(
        account_id=ACCOUNT, device_id=f"{n:032x}", push=case.push, sync_status=case.sync,
        last_seen_at=NOW - case.seen if case.seen else None,
        push_changed_at=NOW - case.changed if case.changed else None,
    )
    Device.objects.filter(pk=device.pk).update(created_at=NOW - OLD)  # (auto_now_add on create)
    tokens = [
        PushToken.objects.create(
            device=device, token=f"{n:02x}{i:062x}", token_type="apple", app="com.acme.phone.voip.prod",
            active=tok.active, last_seen_at=NOW - tok.seen,
            deactivated_at=None if tok.active or tok.deactivated is None else NOW - tok.deactivated,
        )
        for i, tok in enumerate(case.tokens)
    ]
    return device, tokens


def test_only_dead_devices_and_tokens_go():
    made = [(case, *make(case, n)) for n, case in enumerate(CASES)]
    DeviceReconcile.objects.create(device=made[0][1], checked_at=NOW - OLD, result=ReconcileResult.OK)

    dry = retention_prune(deliveries_days=0, devices_days=DAYS, dry_run=True, now=NOW)
    summary = retention_prune(deliveries_days=0, devices_days=DAYS, now=NOW)

    for case, device, tokens in made:
        assert Device.objects.filter(pk=device.pk).exists() != case.gone, case.name
        left = set(PushToken.objects.filter(device_id=device.pk).values_list("pk", flat=True))
        assert left == ({tokens[i].pk for i in case.tokens_kept} if not case.gone else set()), case.name
    devices_gone = sum(case.gone for case in CASES)
    tokens_gone = sum(len(case.tokens) - (0 if case.gone else len(case.tokens_kept)) for case in CASES)
    assert (summary.devices, summary.tokens) == (devices_gone, tokens_gone) == (4, 6)
    assert (dry.devices, dry.tokens) == (summary.devices, summary.tokens)
    assert not DeviceReconcile.objects.exists()  # the deleted device's drift state went with it
    assert summary.as_line().startswith(
        f"prune: deleted {devices_gone} devices and {tokens_gone} tokens dead for {DAYS} days in "
    )


def test_device_retention_zero_deletes_nothing(settings):
    settings.PUSHER_DEVICE_RETENTION_DAYS = 0
    for n, case in enumerate(CASES):
        make(case, n)
    before = (Device.objects.count(), PushToken.objects.count())

    summary = retention_prune(deliveries_days=0, now=NOW)

    assert (Device.objects.count(), PushToken.objects.count()) == before
    assert (summary.devices, summary.tokens, summary.batches) == (0, 0, 0)


def test_batches_are_bounded():
    for n in range(7):
        make(CASES[0], n)  # dead devices
    alive = make(CASES[6], 99)[0]  # an active token and an old inactive one
    for i in range(5):
        PushToken.objects.create(device=alive, token=f"dead{i}", token_type="apple", app="a", active=False,
                                 last_seen_at=NOW - OLD, deactivated_at=NOW - OLD)

    summary = retention_prune(deliveries_days=0, devices_days=DAYS, batch_size=3, now=NOW)

    # devices 3 + 3 + 1; tokens 3 + 3 (the old inactive one and five more), then an empty one
    assert (summary.devices, summary.tokens, summary.batches) == (7, 6, 6)
    assert list(Device.objects.values_list("pk", flat=True)) == [alive.pk]
    assert list(PushToken.objects.values_list("active", flat=True)) == [True]


def test_command_reports_devices_and_tokens(settings):
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 0
    settings.PUSHER_DEVICE_RETENTION_DAYS = DAYS
    for n, case in enumerate(CASES):
        make(case, n)

    out = io.StringIO()
    call_command("prune", "--dry-run", stdout=out)
    assert out.getvalue() == (f"dry run: prune: would delete 4 devices and 6 tokens dead for {DAYS} days; "
                              "deliveries kept forever (retention 0)\n")
    assert Device.objects.count() == len(CASES)

    out = io.StringIO()
    call_command("prune", "--devices-days", "200", stdout=out)  # nothing that old
    assert out.getvalue().startswith("prune: deleted 0 devices and 0 tokens dead for 200 days in 1 batch, ")
    assert Device.objects.count() == len(CASES)


def test_a_pruned_phone_that_registers_again_comes_back(acme_rule):
    device = registration_apply(fields=sample("reg_success_kamailio_master.json")["body"]).device
    assert device is not None
    PushToken.objects.filter(device=device).update(active=False, deactivated_at=NOW - OLD, last_seen_at=NOW - OLD)
    Device.objects.filter(pk=device.pk).update(push=None, push_changed_at=NOW - OLD, last_seen_at=NOW - OLD,
                                               sync_status=SyncStatus.LOCAL)

    assert retention_prune(deliveries_days=0, devices_days=DAYS, now=NOW).devices == 1
    again = registration_apply(fields=sample("reg_success_kamailio_master.json")["body"]).device

    assert again is not None and again.pk != device.pk
    assert (again.account_id, again.device_id, again.push) == (device.account_id, device.device_id, device.push)
    assert PushToken.objects.filter(device=again, active=True).count() == 1


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="row locks: PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_a_device_a_registration_holds_is_skipped_not_waited_for():
    held, free = make(CASES[0], 1)[0], make(CASES[0], 2)[0]
    locked, release = threading.Event(), threading.Event()

    def registration_in_progress() -> None:
        with transaction.atomic():
            Device.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=registration_in_progress)
    thread.start()
    try:
        assert locked.wait(10)
        summary = retention_prune(deliveries_days=0, devices_days=DAYS, now=NOW)
    finally:
        release.set()
        thread.join(10)

    assert summary.devices == 1
    assert list(Device.objects.values_list("pk", flat=True)) == [held.pk]
    assert not Device.objects.filter(pk=free.pk).exists()
