"""Drift repair state (kazoo.reconcile) in the admin: read-only, on each device and as a list."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from kazoo.models import DeviceReconcile
from registry.models import Device

RECONCILE_FIELDS = ("checked_at", "result", "detail", "drifted_at", "drift_count")


class DeviceReconcileFields:
    """For the device admin: the device's last drift check as one read-only field (a field, not an
    inline, so the device form needs nothing more posted)."""

    @admin.display(description="Kazoo drift check")
    def kazoo_drift_check(self, obj: Device) -> str:
        state = DeviceReconcile.objects.filter(device_id=obj.pk).first()
        if state is None:
            return "not checked yet (manage.py kazoo_reconcile, or the consumer every PUSHER_RECONCILE_INTERVAL_S)"
        text = f"{state.get_result_display()}, checked {timezone.localtime(state.checked_at):%Y-%m-%d %H:%M:%S}"
        if state.detail:
            text += f": {state.detail}"
        if state.drifted_at is not None:
            text += (f" (drift found {state.drift_count} time(s), last "
                     f"{timezone.localtime(state.drifted_at):%Y-%m-%d %H:%M:%S})")
        return text


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
