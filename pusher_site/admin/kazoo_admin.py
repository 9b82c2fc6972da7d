"""Drift repair state (kazoo.reconcile) in the admin: read-only, on each device and as a list."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from kazoo.models import DeviceReconcile

RECONCILE_FIELDS = ("checked_at", "result", "detail", "drifted_at", "drift_count")


class DeviceReconcileInline(admin.StackedInline):
    """On the device page: the last check of Kazoo's device document against pusher's push object."""

    model = DeviceReconcile
    verbose_name = verbose_name_plural = "Kazoo drift check (manage.py kazoo_reconcile, or the consumer hourly)"
    fields = RECONCILE_FIELDS
    readonly_fields = RECONCILE_FIELDS
    can_delete = False
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeviceReconcile)
class DeviceReconcileAdmin(admin.ModelAdmin):
    list_display = ["device", "result", "checked_at", "drifted_at", "drift_count", "detail"]
    list_filter = ["result"]
    search_fields = ["device__account_id", "device__device_id", "device__username"]
    list_select_related = ["device"]
    fields = ("device", *RECONCILE_FIELDS)
    readonly_fields = ("device", *RECONCILE_FIELDS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
