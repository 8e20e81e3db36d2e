from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def binding_status(request: HttpRequest) -> HttpResponse:
    return render(request, "terminals/status.html", {})
