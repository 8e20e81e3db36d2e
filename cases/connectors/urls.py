from django.urls import path

from cases.connectors import views

app_name = "core"

urlpatterns = [
    path("callback/", views.core_callback, name="callback"),
]
