"""Counting what became of every published message: in the database (deliveries, devices and
their tokens), at the fakes (requests per Call-ID) and in the dead-letter queue.

  handled        a final outcome is recorded: the device and its token are stored (reg_success),
                 the delivery is sent/failed/expired/... (push_req)
  dead-lettered  in the scenario's dead-letter queue
  pushes sent    Call-IDs the provider fake accepted at least once
  duplicates     accepted requests beyond the first for the same Call-ID (a push sent twice);
                 `duplicates_after_reset` of them followed an acceptance on a connection the
                 fake killed (the answer may never have arrived: see fakes.Receipt)
  lost           the effect never happened: no device stored, or a push neither accepted by the
                 fake nor recorded as expired/failed
  stuck          deliveries left `queued` (half-written: nobody will finish them)
  unsent         pushes no fake accepted that did not expire either (recorded failed, or lost): a
                 missed call when the push was a VoIP one
  late           provider requests received after the delivery's deadline
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from soak.fakes import Fakes
from soak.traffic import Sent


@dataclass
class Figures:
    scenario: str
    sent: int = 0
    handled: int = 0
    dead_lettered: int = 0
    pushes_sent: int = 0
    duplicates: int = 0
    duplicates_after_reset: int = 0  # of which the earlier acceptance's answer may have died with its connection
    lost: int = 0
    lost_registrations: int = 0
    stuck: int = 0
    unsent: int = 0
    expired: int = 0
    late: int = 0
    seconds: float = 0.0
    verdict: str = "?"
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # Msg-IDs of a few lost or stuck messages

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def close(self) -> Figures:
        self.verdict = "FAIL" if self.problems else "ok"
        return self


@dataclass
class Outcome:
    statuses: Counter[str]
    deliveries: dict[str, Any]  # msg_id -> Delivery
    devices_ok: set[str]  # device ids whose push object and token were stored


def outcome(sent: Sequence[Sent]) -> Outcome:
    from django.db import close_old_connections

    from push.models import Delivery
    from registry.models import PushToken

    close_old_connections()
    push_ids = [s.msg_id for s in sent if s.kind == "push"]
    deliveries = {d.msg_id: d for d in Delivery.objects.filter(msg_id__in=push_ids)}
    regs = {s.key: s.token for s in sent if s.kind == "reg"}
    stored = PushToken.objects.filter(device__device_id__in=list(regs), active=True).values_list(
        "device__device_id", "token", "device__push")
    devices_ok = {device for device, token, push in stored
                  if regs.get(device) == token and (push or {}).get("Token-ID") == token}
    return Outcome(Counter(d.status for d in deliveries.values()), deliveries, devices_ok)


def settled(sent: Sequence[Sent], *, queue_empty: Callable[[], bool], timeout: float, quiet: float = 10.0) -> None:
    """Wait until every message has an outcome, or nothing has changed for `quiet` seconds with
    the queue empty (what is missing by then is lost or stuck), or `timeout`."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    expected = len({s.msg_id for s in sent})
    while time.monotonic() < deadline:
        state = outcome(sent)
        done = sum(state.statuses.values()) - state.statuses.get("queued", 0) + len(state.devices_ok)
        if done >= expected and queue_empty():
            return
        if done != last:
            last, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > quiet and queue_empty():
            return
        time.sleep(0.5)


def count(name: str, sent: Sequence[Sent], fakes: Fakes, *, dead_lettered: int, seconds: float) -> Figures:
    """The figures of one scenario. A message published twice (same Msg-ID) is two messages sent
    and handled, but one push: push figures are per Call-ID."""
    state = outcome(sent)
    receipts = fakes.receipts()
    figures = Figures(name, sent=len(sent), dead_lettered=dead_lettered, seconds=seconds)
    pushes: dict[str, Sent] = {}
    for message in sent:
        if message.kind == "reg":
            applied = message.key in state.devices_ok
            figures.handled += applied
            figures.lost += not applied
            figures.lost_registrations += not applied
            if not applied and len(figures.examples) < 6:
                figures.examples.append(f"lost {message.msg_id}")
            continue
        pushes[message.key] = message
        delivery = state.deliveries.get(message.msg_id)
        final = delivery is not None and delivery.status != "queued"
        accepted = any(r.accepted for r in receipts.get(message.key, []))
        figures.handled += final
        if not accepted and not (final and delivery.status in ("expired", "failed", "token_invalid")):
            figures.lost += 1
            if len(figures.examples) < 6:
                figures.examples.append(f"lost {message.msg_id} ({delivery.status if delivery else 'no delivery'})")
    for call_id, message in pushes.items():
        delivery = state.deliveries.get(message.msg_id)
        accepted = [r for r in receipts.get(call_id, []) if r.accepted]
        figures.pushes_sent += bool(accepted)
        figures.duplicates += max(0, len(accepted) - 1)
        figures.duplicates_after_reset += sum(1 for earlier in accepted[:-1] if earlier.answer_maybe_lost)
        figures.unsent += not accepted and (delivery is None or delivery.status != "expired")
        if delivery is None:
            continue
        figures.stuck += delivery.status == "queued"
        figures.expired += delivery.status == "expired"
        if delivery.deadline_at is not None:
            deadline = delivery.deadline_at.timestamp()
            figures.late += sum(1 for r in receipts.get(call_id, []) if r.received_at > deadline)
    return figures


def statuses(sent: Sequence[Sent]) -> dict[str, int]:
    return dict(outcome(sent).statuses)
