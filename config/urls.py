from django.contrib import admin
from django.urls import include, path

from config import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz/", views.healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("terminals/", include("terminals.urls")),
    path("requests/", include("cases.urls")),
    path("merchant/", include("cases.portal_urls")),
    path("api/core/", include("cases.connectors.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
]
