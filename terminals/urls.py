from django.urls import path

from terminals import views

app_name = "terminals"

urlpatterns = [
    path("status/", views.binding_status, name="status"),
]
