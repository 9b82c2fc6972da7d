"""The delivery log's lists at any size (bench.retention measures them with ten million rows): counts
exact up to COUNT_EXACT_MAX and estimated above on PostgreSQL, ids searched exactly, and no list
query that reads the whole log (a DISTINCT over a column, a date hierarchy, an unbounded COUNT)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from push import selectors
from push.models import Delivery, DeliverySource, DeliveryStatus, PushApp
from push.selectors import deliveries_search, delivery_push_types, rows_count

pytestmark = pytest.mark.django_db

NOW = timezone.now()
ON_POSTGRESQL = connection.vendor == "postgresql"


def log(n: int, **values: object) -> list[Delivery]:
    rows = [
        Delivery(created_at=NOW - timedelta(seconds=i), source=DeliverySource.AMQP, status=DeliveryStatus.SENT,
                 call_id=f"call-{i}@acme", msg_id=f"msg-{i}", account_id=f"acct{i % 3}", device_id=f"dev{i % 5}",
                 token=f"{i:064x}", app_id="com.acme.phone.voip.prod", provider="apple", push_type="voip")
        for i in range(n)
    ]
    for row in rows:
        for name, value in values.items():
            setattr(row, name, value)
    return Delivery.objects.bulk_create(rows)


def test_counts_are_exact_up_to_the_limit():
    log(12)

    assert rows_count(Delivery.objects.all(), exact_up_to=12) == (12, False)
    assert rows_count(Delivery.objects.filter(account_id="acct0"), exact_up_to=5) == (4, False)


def test_counts_beyond_the_limit_are_estimated_on_postgresql():
    log(40)
    with connection.cursor() as cursor:
        if ON_POSTGRESQL:
            cursor.execute("ANALYZE push_delivery")

    count, estimated = rows_count(Delivery.objects.all(), exact_up_to=10)

    if ON_POSTGRESQL:  # the planner's figure, never below the limit + 1
        assert estimated and count >= 11
    else:  # SQLite has no estimate: it counts
        assert (count, estimated) == (40, False)


def test_the_count_query_is_bounded():
    log(30)

    with CaptureQueriesContext(connection) as queries:
        rows_count(Delivery.objects.filter(status=DeliveryStatus.SENT), exact_up_to=10)

    statements = [q["sql"] for q in queries.captured_queries]
    assert "COUNT(" in statements[0] and "LIMIT 11" in statements[0]
    if ON_POSTGRESQL:  # then the planner's estimate
        assert len(statements) == 2 and statements[1].startswith("EXPLAIN (FORMAT JSON) SELECT")
    else:  # then SQLite counts in full
        assert len(statements) == 2 and statements[1].startswith("SELECT COUNT(*)") and "LIMIT" not in statements[1]


def test_search_matches_ids_exactly():
    rows = log(10)

    def found(term: str) -> set[int]:
        return set(deliveries_search(Delivery.objects.all(), term=term).values_list("pk", flat=True))

    assert found("call-3@acme") == {rows[3].pk}
    assert found(" msg-7 ") == {rows[7].pk}
    assert found("acct1") == {rows[i].pk for i in (1, 4, 7)}
    assert found("dev2") == {rows[2].pk, rows[7].pk}
    assert found(f"{9:064x}") == {rows[9].pk}
    assert found("call-3") == set()  # no substring search: it would read the whole log
    assert found("  ") == {r.pk for r in rows}


def test_push_types_come_from_the_apps_not_the_log():
    PushApp.objects.create(app_id="com.acme.loc", provider="apple", push_type="location")
    log(2, push_type="liveactivity")  # in the log only: not listed (nothing reads the log for it)

    with CaptureQueriesContext(connection) as queries:
        types = delivery_push_types()

    assert types == ["alert", "background", "data", "location", "notification", "voip"]
    assert all("push_delivery" not in q["sql"] for q in queries.captured_queries)


# --- the admin and the API ---------------------------------------------------------------------------------


def delivery_reads(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if '"push_delivery"' in q["sql"]]


def assert_bounded(sql: str) -> None:
    """A read of the delivery log that stops early: a LIMIT (the page, or a count's cap) or the
    planner's estimate; never DISTINCT over the log or a COUNT of all of it (but on SQLite, which
    has no estimate, past the cap)."""
    assert "DISTINCT" not in sql, sql
    sqlite_full_count = not ON_POSTGRESQL and sql.startswith("SELECT COUNT(*)")
    assert re.search(r"\bLIMIT \d+", sql) or sql.startswith("EXPLAIN") or sqlite_full_count, sql


@pytest.mark.parametrize("params", [
    {}, {"status__exact": "sent"}, {"push_type__exact": "voip"}, {"q": "acct1"},
    {"created_at__gte": str(NOW - timedelta(days=7))}, {"o": "1"},
])
def test_the_admin_changelist_reads_the_log_boundedly(staff_client, monkeypatch: pytest.MonkeyPatch,
                                                      params: dict[str, str]):
    monkeypatch.setattr(selectors, "COUNT_EXACT_MAX", 5)
    # (A list shorter than a page is read whole; the log is not, so neither here.)
    monkeypatch.setattr(admin.site._registry[Delivery], "list_per_page", 3)
    log(12)

    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(reverse("admin:push_delivery_changelist"), params)

    assert response.status_code == 200
    reads = delivery_reads(queries)
    assert reads
    for sql in reads:
        assert_bounded(sql)


def test_the_admin_says_about_when_the_count_is_estimated(staff_client, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(selectors, "COUNT_EXACT_MAX", 5)
    log(12)
    url = reverse("admin:push_delivery_changelist")

    html = staff_client.get(url).content.decode()
    exact = staff_client.get(url, {"q": "acct1"}).content.decode()

    if ON_POSTGRESQL:
        assert re.search(r"about \d+ deliveries", html)
    else:
        assert "12 deliveries" in html and "about" not in html
    assert "4 deliveries" in exact and "about 4" not in exact
    assert "An exact Call-ID, Msg-ID, account id, device id or full device token." in html


@pytest.mark.parametrize("params", [{}, {"status": "failed"}, {"account": "acct1"}, {"device": "dev2"}])
def test_the_api_list_reads_the_log_boundedly(staff_user, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]):
    monkeypatch.setattr(selectors, "COUNT_EXACT_MAX", 5)
    log(12)
    api = APIClient()
    api.force_authenticate(staff_user)

    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/deliveries/", params)

    assert response.status_code == 200
    for sql in delivery_reads(queries):
        assert_bounded(sql)
    expected = {(): 12, ("status",): 0, ("account",): 4, ("device",): 2}[tuple(params)]
    body = response.json()
    if expected > 5 and ON_POSTGRESQL:
        assert body["count"] >= 6  # an estimate
    else:
        assert body["count"] == expected
    assert len(body["results"]) == min(expected, 50)


def test_the_admin_sorts_by_time_only(staff_client):
    log(3)

    with CaptureQueriesContext(connection) as queries:
        html = staff_client.get(reverse("admin:push_delivery_changelist"), {"o": "6.-1"}).content.decode()

    page = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('SELECT "push_delivery"."id"')]
    assert page and page[-1].endswith('ORDER BY "push_delivery"."created_at" DESC, "push_delivery"."id" DESC')
    assert 'class="sortable column-latency' not in html and 'class="sortable column-created_at' in html


def test_the_api_sorts_by_another_field_only_a_bounded_selection(staff_user, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(selectors, "COUNT_EXACT_MAX", 5)
    rows = log(12)
    for i, row in enumerate(rows):
        row.latency_ms = float(i * 7 % 12)
    Delivery.objects.bulk_update(rows, ["latency_ms"])
    api = APIClient()
    api.force_authenticate(staff_user)

    refused = api.get("/api/v1/deliveries/", {"ordering": "-latency_ms"})
    assert refused.status_code == 400
    assert refused.json()["ordering"] == [
        "ordering by latency_ms needs filters that select at most 5 deliveries (account, device, call_id, token, app "
        "with a created_after/created_before window...); these select more. Without `ordering` (or with created_at) "
        "any selection is served, newest first."
    ]
    by_time = api.get("/api/v1/deliveries/", {"ordering": "created_at"}).json()["results"]
    assert [d["id"] for d in by_time] == [r.pk for r in reversed(rows)]

    one_account = api.get("/api/v1/deliveries/", {"ordering": "-latency_ms", "account": "acct1"})
    assert one_account.status_code == 200
    latencies = [d["latency_ms"] for d in one_account.json()["results"]]
    assert latencies == sorted(latencies, reverse=True) and len(latencies) == 4


@pytest.mark.parametrize("estimate", [3, 40])
def test_the_api_pages_follow_the_rows_not_an_estimated_count(staff_user, monkeypatch: pytest.MonkeyPatch,
                                                                estimate: int):
    """An estimate below the real number must not end the list early (nor one above it offer an
    empty page): `next` is there exactly while rows follow, and following it reaches every row."""
    import pusher_site.api.delivery_api as delivery_api

    monkeypatch.setattr(delivery_api, "rows_count", lambda queryset, **_: (estimate, True))
    log(12)
    api = APIClient()
    api.force_authenticate(staff_user)

    seen, url, pages = [], "/api/v1/deliveries/?limit=5", 0
    while url:
        body = api.get(url).json()
        assert body["count"] == estimate  # the count is reported as it is
        seen += [row["id"] for row in body["results"]]
        url, pages = body["next"], pages + 1
    assert pages == 3 and len(seen) == len(set(seen)) == 12


def test_a_deep_offset_is_refused_with_the_way_to_page_further(staff_user):
    from pusher_site.api.delivery_api import DELIVERY_OFFSET_MAX

    log(2)
    api = APIClient()
    api.force_authenticate(staff_user)

    assert api.get("/api/v1/deliveries/", {"offset": DELIVERY_OFFSET_MAX}).status_code == 200
    answer = api.get("/api/v1/deliveries/", {"offset": DELIVERY_OFFSET_MAX + 1})
    assert answer.status_code == 400
    assert answer.json()["offset"] == [
        "At most 10,000: a deeper offset reads every delivery before the page. Follow `next` (past that depth it "
        "pages by created_before), or narrow the list with created_before/created_after."
    ]


@pytest.mark.parametrize("ordering", [None, "-created_at", "created_at"])
def test_following_next_past_the_offset_limit_pages_by_time_and_reaches_every_row_once(
    staff_user, monkeypatch: pytest.MonkeyPatch, ordering: str | None
):
    """Past DELIVERY_OFFSET_MAX, `next` carries created_before (created_after oldest first) at the last
    row shown and an offset of that instant's rows already shown: ties in time neither repeat nor drop."""
    import pusher_site.api.delivery_api as delivery_api

    monkeypatch.setattr(delivery_api, "DELIVERY_OFFSET_MAX", 4)
    rows = log(13)
    for i, row in enumerate(rows):  # instants shared by two or three rows, across page boundaries
        row.created_at = NOW - timedelta(seconds=i // 3)
    Delivery.objects.bulk_update(rows, ["created_at"])
    newest_first = [r.pk for r in sorted(rows, key=lambda r: (r.created_at, r.pk), reverse=True)]
    api = APIClient()
    api.force_authenticate(staff_user)

    seen, links = [], []
    url = "/api/v1/deliveries/?limit=3" + (f"&ordering={ordering}" if ordering else "")
    while url:
        body = api.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
        links.append(url)
    assert seen == (newest_first[::-1] if ordering == "created_at" else newest_first)
    by_time = "created_after=" if ordering == "created_at" else "created_before="
    assert any(by_time in link for link in links if link)  # the cap was passed, and paged by time
    assert all("offset=" in link for link in links if link)
