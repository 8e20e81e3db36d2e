"""The product's URLs plus the ceiling view at /ceiling/upload/."""

from django.urls import path

from bench.ceiling import views
from config.urls import urlpatterns as product_urlpatterns

urlpatterns = [
    path("ceiling/upload/", views.upload, name="ceiling-upload"),
    *product_urlpatterns,
]
