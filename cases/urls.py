from django.urls import path

from cases import views

app_name = "cases"

urlpatterns = [
    path("new/", views.case_file_view, name="new"),
    path("track/", views.case_track_view, name="track"),
    path("<str:token>/verify/", views.case_verify_view, name="verify"),
    path("<str:token>/resend/", views.case_code_resend_view, name="resend"),
    path("<str:token>/respond/", views.case_respond_view, name="respond"),
    path("<str:token>/withdraw/", views.case_withdraw_view, name="withdraw"),
    path(
        "<str:token>/returns/<int:return_id>/ship/",
        views.device_return_ship_view,
        name="return_ship",
    ),
    path(
        "<str:token>/returns/<int:return_id>/lost/",
        views.device_return_lost_view,
        name="return_lost",
    ),
    path("<str:token>/", views.case_detail_view, name="detail"),
]
