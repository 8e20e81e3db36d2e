"""Forms of the merchant-facing registry pages."""

from crispy_forms.bootstrap import StrictButton
from crispy_forms.helper import FormHelper
from crispy_forms.layout import Layout
from django import forms
from django.utils.translation import gettext_lazy as _

from config.forms import DecodedTextMixin
from terminals import validators


class BindingStatusForm(DecodedTextMixin, forms.Form):
    """Merchant number and serial number to check (submitted by GET)."""

    merchant_id = forms.CharField(
        label=_("Merchant number (商户号)"),
        max_length=40,
        help_text=_("15 digits, as on your merchant agreement."),
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "off", "spellcheck": "false"}
        ),
    )
    serial_number = forms.CharField(
        label=_("Terminal serial number (SN)"),
        max_length=64,
        help_text=_("Printed on the label on the back or bottom of the device."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_method = "get"
        self.helper.form_id = "binding-status-form"
        self.helper.disable_csrf = True
        self.helper.layout = Layout(
            "merchant_id",
            "serial_number",
            # A <button> without a name keeps the query string to the two fields.
            StrictButton(_("Check"), type="submit", css_class="btn-primary"),
        )

    def clean_merchant_id(self) -> str:
        value = validators.normalise_code(self.cleaned_data["merchant_id"])
        validators.validate_merchant_id(value)
        return value

    def clean_serial_number(self) -> str:
        value = validators.normalise_serial_number(self.cleaned_data["serial_number"])
        validators.validate_serial_number(value)
        return value
