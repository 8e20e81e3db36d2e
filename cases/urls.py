from django.urls import path

from cases import views

app_name = "cases"

urlpatterns = [
    path("new/", views.request_new, name="new"),
    path("track/", views.request_track, name="track"),
    path("<str:token>/verify/", views.request_verify, name="verify"),
    path("<str:token>/resend/", views.request_resend, name="resend"),
    path("<str:token>/respond/", views.request_respond, name="respond"),
    path("<str:token>/withdraw/", views.request_withdraw, name="withdraw"),
    path("<str:token>/", views.request_detail, name="detail"),
]
