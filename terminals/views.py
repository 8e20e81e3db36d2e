"""Merchant-facing registry pages."""

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.throttling import throttle
from terminals.forms import BindingStatusForm
from terminals.selectors import binding_status_check
from terminals.validators import normalise_code


def _merchant_throttle_key(request: HttpRequest, kwargs: dict) -> list[str]:
    # Spreading guesses for one merchant over many addresses does not help.
    merchant_id = normalise_code(request.GET.get("merchant_id", ""))[:40]
    return [f"merchant:{merchant_id}"] if merchant_id else []


@never_cache
@require_GET
@throttle("binding_status", extra_keys=_merchant_throttle_key)
def binding_status(request: HttpRequest) -> HttpResponse:
    """Tell whether a serial number is bound to a merchant number, and nothing else."""
    submitted = "merchant_id" in request.GET or "serial_number" in request.GET
    form = BindingStatusForm(request.GET if submitted else None)
    bound = None
    if form.is_valid():
        bound = binding_status_check(**form.cleaned_data)
    prefill = ""
    if bound:
        prefill = urlencode(
            {
                "merchant_id": form.cleaned_data["merchant_id"],
                "serial_numbers": form.cleaned_data["serial_number"],
            }
        )
    return render(
        request,
        "terminals/status.html",
        {"form": form, "bound": bound, "prefill": prefill},
    )
