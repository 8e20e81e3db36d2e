from django.urls import path, re_path

from api import docs, views
from api.problems import not_found

app_name = "api"

urlpatterns = [
    path("schema/", docs.SchemaView.as_view(), name="schema"),
    path("docs/", docs.DocsView.as_view(), name="docs"),
    path("v1/cases/", views.CaseListView.as_view(), name="case-list"),
    path(
        "v1/cases/<str:reference>/", views.CaseDetailView.as_view(), name="case-detail"
    ),
    path(
        "v1/cases/<str:reference>/verify/",
        views.CaseVerifyView.as_view(),
        name="case-verify",
    ),
    path(
        "v1/cases/<str:reference>/resend-code/",
        views.CaseResendCodeView.as_view(),
        name="case-resend-code",
    ),
    path(
        "v1/cases/<str:reference>/actions/<str:name>/",
        views.CaseActionView.as_view(),
        name="case-action",
    ),
    path(
        "v1/cases/<str:reference>/returns/<str:return_id>/ship/",
        views.DeviceReturnShipView.as_view(),
        name="device-return-ship",
    ),
    path(
        "v1/finance-items/",
        views.FinanceItemListView.as_view(),
        name="finance-item-list",
    ),
    path(
        "v1/finance-items/<str:item_id>/pay/",
        views.FinanceItemPayView.as_view(),
        name="finance-item-pay",
    ),
    path(
        "v1/finance-items/<str:item_id>/confirm/",
        views.FinanceItemConfirmView.as_view(),
        name="finance-item-confirm",
    ),
    path(
        "v1/terminals/<str:serial_number>/binding/",
        views.BindingView.as_view(),
        name="binding",
    ),
    path("v1/registry/sync/", views.RegistrySyncView.as_view(), name="registry-sync"),
    # Only under v1/, so that other apps' /api/... routes are never shadowed.
    re_path(r"^v1/", not_found),
]
