"""REST API of the delivery log: one row per push, newest first, at any size (bench.retention
measures it with ten million rows): counts exact up to COUNT_EXACT_MAX and estimated above, pages
that cost the same at any depth, sorting by another field only for a bounded selection."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rest_framework import serializers, viewsets
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from push import selectors as push_selectors
from push.models import Delivery, DeliverySource, DeliveryStatus, Provider
from push.selectors import COUNT_EXACT_MAX, rows_count, rows_exceed
from pusher_site.api.auth import ScopedAccess
from pusher_site.api.conventions import (
    AccountRowsMixin,
    FilteredListMixin,
    Pagination,
    StrictCharField,
    api_schema,
)
from tenancy.scope import AccountScope

# --- Deliveries ----------------------------------------------------------------------------------


class DeliverySerializer(serializers.ModelSerializer):
    """One push attempt chain and its outcome. The token is masked, as in the admin: the delivery
    log is for diagnosis, the device API is where provisioning reads full tokens."""

    token_masked = serializers.CharField(read_only=True)
    # Blank when the push_req named no known Token-Type.
    provider = serializers.ChoiceField(choices=Provider.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id", "created_at", "finished_at", "deadline_at", "source", "msg_id", "call_id", "account_id",
            "device_id", "push_app", "app_id", "provider", "token_masked", "token_type", "push_type", "status",
            "http_status", "reason", "provider_message_id", "attempts", "latency_ms", "error",
        ]
        read_only_fields = fields


class DeliveryFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    provider = serializers.ChoiceField(choices=Provider.choices, required=False)
    # DRF's metaclass takes declared fields out of the class, so none shadows Field.source or Serializer.data.
    source = serializers.ChoiceField(choices=DeliverySource.choices, required=False)  # type: ignore[assignment]
    app = StrictCharField(required=False, max_length=255, help_text="Token-App (app id), exact")
    account = StrictCharField(required=False, max_length=64, help_text="Account-ID, exact")
    device = StrictCharField(required=False, max_length=64, help_text="Endpoint-ID (device id), exact")
    call_id = StrictCharField(required=False, max_length=255, help_text="Call-ID, exact")
    token = StrictCharField(required=False, max_length=1024, help_text="Full device token, exact")
    created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601)")
    created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601)")


# Deeper than this, OFFSET reads and throws away every row before the page: `next` pages by time.
DELIVERY_OFFSET_MAX = 10_000


class DeliveryPagination(Pagination):
    """`count` is exact up to COUNT_EXACT_MAX deliveries and PostgreSQL's estimate above: a COUNT(*)
    of the whole log costs seconds at ten million rows (bench.retention). Pages by offset up to
    DELIVERY_OFFSET_MAX; a `next` beyond it pages by time instead (created_before, or created_after
    when sorted oldest first, at the last row shown), so every page costs the same at any depth."""

    def get_count(self, queryset: Any) -> int:
        return rows_count(queryset)[0]

    def get_offset(self, request: Request) -> int:
        offset = super().get_offset(request)
        if offset > DELIVERY_OFFSET_MAX:
            raise serializers.ValidationError({self.offset_query_param: [
                f"At most {DELIVERY_OFFSET_MAX:,}: a deeper offset reads every delivery before the page. Follow "
                "`next` (past that depth it pages by created_before), or narrow the list with "
                "created_before/created_after."
            ]})
        return offset

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        """As DRF's, but the page and `next` go by the rows themselves (one more is read to know
        whether a page follows), never by `count`: an estimate below the real number would end the
        list early, and one above it would offer an empty next page."""
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.offset = self.get_offset(request)
        self.count = self.get_count(queryset)
        rows = list(queryset[self.offset:self.offset + self.limit + 1])
        self._more = len(rows) > self.limit
        self._page = rows[:self.limit]
        self._order = tuple(queryset.query.order_by)
        return self._page

    def get_next_link(self) -> str | None:
        if not self._more or self.request is None or self.limit is None:
            return None
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.limit_query_param, self.limit)
        next_offset = (self.offset or 0) + self.limit
        if next_offset > DELIVERY_OFFSET_MAX and self._order in TIME_ORDERS:
            # From the last row shown: the rows of its instant not shown yet come first (id breaks ties).
            last = self._page[-1].created_at
            shown = sum(1 for row in self._page if row.created_at == last)
            if self._order[0] == "-created_at":
                url = replace_query_param(url, "created_before", (last + timedelta(microseconds=1)).isoformat())
            else:
                url = replace_query_param(url, "created_after", last.isoformat())
            next_offset = shown
        return replace_query_param(url, self.offset_query_param, next_offset)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        answer = super().get_paginated_response_schema(schema)
        answer["properties"]["count"]["description"] = (
            f"Exact up to {COUNT_EXACT_MAX:,} deliveries; above, the database's estimate (on PostgreSQL), "
            "so that a page costs the same however long the log: follow `next` rather than counting pages."
        )
        return answer


TIME_ORDERS = {("-created_at", "-id"), ("created_at", "id")}


class DeliveryOrdering(OrderingFilter):
    """Newest first, or `created_at` either way, at any size (an index). Any other field sorts every
    delivery the filters select: allowed when they select at most COUNT_EXACT_MAX (an account, a
    device, a call, a day...), refused otherwise: sorting ten million rows by latency took 9 s
    (bench.retention), on every page."""

    INDEXED = frozenset({"created_at", "id"})

    def filter_queryset(self, request: Request, queryset: Any, view: Any) -> Any:
        ordering = self.get_ordering(request, queryset, view) or []
        unindexed = [field.lstrip("-") for field in ordering if field.lstrip("-") not in self.INDEXED]
        if unindexed and rows_exceed(queryset):
            raise serializers.ValidationError({"ordering": [
                f"ordering by {', '.join(unindexed)} needs filters that select at most "
                f"{push_selectors.COUNT_EXACT_MAX:,} deliveries (account, device, call_id, token, app with a "
                "created_after/created_before window...); these "
                "select more. Without `ordering` (or with created_at) any selection is served, newest first."
            ]})
        return super().filter_queryset(request, queryset, view)

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> list[str]:
        """Sorted by time, ties go by id the same way: pages never overlap or skip a row."""
        ordering = list(super().get_ordering(request, queryset, view) or [])
        if ordering and ordering[0].lstrip("-") == "created_at" and len(ordering) == 1:
            ordering.append("-id" if ordering[0].startswith("-") else "id")
        return ordering


class DeliveryViewSet(FilteredListMixin, AccountRowsMixin, viewsets.ReadOnlyModelViewSet):
    """The delivery log, newest first: one row per push, with the provider's answer."""

    queryset = Delivery.objects.all()
    serializer_class = DeliverySerializer
    filter_serializer_class = DeliveryFilterSerializer
    filter_lookups = {
        "status": "status", "provider": "provider", "source": "source", "app": "app_id",
        "account": "account_id", "device": "device_id", "call_id": "call_id", "token": "token",
        "created_after": "created_at__gte", "created_before": "created_at__lt",
    }
    pagination_class = DeliveryPagination
    filter_backends = [DeliveryOrdering]
    schema = api_schema()
    ordering_fields = ["created_at", "finished_at", "status", "provider", "app_id", "latency_ms", "attempts"]
    ordering = ["-created_at", "-id"]
    scoped_access = ScopedAccess()

    def rows_in_scope(self, queryset: Any, scope: AccountScope) -> Any:
        return push_selectors.deliveries_in_scope(scope=scope, queryset=queryset)
