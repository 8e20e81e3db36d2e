"""Admin for the notification outbox and execution steps (owned by the execution work).

``cases/admin.py`` imports ``ExecutionStepInline`` and ``NotificationInline`` from here.
"""

from django.contrib import admin

from cases.models import ExecutionStep, Notification


class ExecutionStepInline(admin.TabularInline):
    model = ExecutionStep
    extra = 0
    can_delete = False
    fields = ("position", "step", "status", "attempts", "error", "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class NotificationInline(admin.TabularInline):
    model = Notification
    extra = 0
    can_delete = False
    fields = ("kind", "status", "attempts", "sent_at", "last_error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
