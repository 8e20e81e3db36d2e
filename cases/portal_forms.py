"""Forms of the merchant page: the sign-in request and the code."""

from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms
from django.utils.translation import gettext_lazy as _

from cases.forms import OneTimeCodeField
from cases.models import MerchantSignIn
from config.forms import DecodedTextMixin


class MerchantSignInForm(DecodedTextMixin, forms.Form):
    merchant_id = forms.CharField(
        label=_("Merchant number (商户号)"),
        max_length=20,
        help_text=_(
            "15 digits, printed on your merchant agreement and on terminal receipts."
        ),
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "username"}
        ),
    )
    channel = forms.ChoiceField(
        label=_("Send the code to"),
        choices=MerchantSignIn.Channel.choices,
        initial=MerchantSignIn.Channel.SMS,
        widget=forms.RadioSelect,
        help_text=_(
            "The mobile number or e-mail address we have on file for your "
            "merchant. To change them, contact your account manager."
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_id = "merchant-sign-in-form"
        self.helper.add_input(Submit("submit", _("Send me a code")))

    def clean_merchant_id(self) -> str:
        return "".join(self.cleaned_data["merchant_id"].split())


class MerchantCodeForm(DecodedTextMixin, forms.Form):
    code = OneTimeCodeField(label=_("Sign-in code"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_id = "merchant-code-form"
        self.helper.add_input(Submit("submit", _("Sign in")))
