from django.urls import path

from cases import portal

app_name = "merchant"

urlpatterns = [
    path("", portal.merchant_home_view, name="home"),
    path("login/", portal.merchant_login_view, name="login"),
    path("login/code/", portal.merchant_code_view, name="code"),
    path("logout/", portal.merchant_logout_view, name="logout"),
]
