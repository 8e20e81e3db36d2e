"""Merchant-facing forms: the unbinding request, the code, the reply to staff."""

import re

from crispy_forms.helper import FormHelper
from crispy_forms.layout import HTML, Div, Fieldset, Layout, Submit
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from cases import serial_upload
from cases.models import Document, Reason, required_document_kinds
from cases.services import intake
from cases.tokens import is_submission_key
from cases.uploads import CleanUpload, upload_clean, uploads_total_size
from config.forms import DecodedTextMixin
from terminals import validators

MAX_TERMINALS_PER_REQUEST = 50
ACCEPT = ".pdf,.jpg,.jpeg,.png,application/pdf,image/jpeg,image/png"

# Form field → document kind, in the order they are shown.
FILE_FIELDS = {
    "business_licence": Document.Kind.BUSINESS_LICENCE,
    "legal_rep_id": Document.Kind.LEGAL_REP_ID,
    "device_evidence": Document.Kind.DEVICE_EVIDENCE,
    "contract": Document.Kind.CONTRACT,
    "bank_statement": Document.Kind.BANK_STATEMENT,
    "replacement_documents": Document.Kind.REPLACEMENT_DOCUMENTS,
    "authorisation_letter": Document.Kind.AUTHORISATION_LETTER,
    "other_documents": Document.Kind.OTHER,
}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that takes several files (Django's documented recipe)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ACCEPT}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data if d]
        return [single(data, initial)] if data else []


def _file_field(label, help_text, *, multiple=False):
    if multiple:
        return MultipleFileField(label=label, help_text=help_text, required=False)
    return forms.FileField(
        label=label,
        help_text=help_text,
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}),
    )


def parse_serial_numbers(text: str) -> list[str]:
    """Split serial numbers typed one per line (commas, semicolons, tabs also work).

    Spaces inside a line belong to the serial, as a label prints "AB 1234".
    """
    seen: list[str] = []
    for raw in re.split(r"[\n\r\t,;，；、]+", text or ""):
        value = validators.normalise_serial_number(raw)
        if value and value not in seen:
            seen.append(value)
    return seen


class UploadsMixin:
    """Clean uploaded files through ``cases.uploads`` and keep the results.

    ``self.uploads`` holds (kind, CleanUpload) pairs; call ``discard_uploads``
    when the form is not used, so no temporary file is left behind.
    """

    def _clean_files(self, field_name: str, kind: str) -> list[CleanUpload]:
        files = self.cleaned_data.get(field_name) or []
        if not isinstance(files, list):
            files = [files]
        cleaned, errors = [], []
        for uploaded in files:
            try:
                clean = upload_clean(uploaded)
            except ValidationError as exc:
                name = getattr(uploaded, "name", "") or ""
                errors.extend(f"{_display_name(name)}: {m}" for m in exc.messages)
            else:
                cleaned.append(clean)
                self.uploads.append((kind, clean))
        if errors:
            raise ValidationError(errors)
        return cleaned

    def discard_uploads(self) -> None:
        for _kind, clean in self.uploads:
            clean.discard()
        self.uploads = []


def _display_name(name: str) -> str:
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:80] or "?"


class CaseFilingForm(DecodedTextMixin, UploadsMixin, forms.Form):
    """The public unbinding request (/requests/new/)."""

    submission_key = forms.CharField(widget=forms.HiddenInput, required=False)

    merchant_id = forms.CharField(
        label=_("Merchant number (商户号)"),
        max_length=20,
        help_text=_(
            "15 digits, printed on your merchant agreement and on terminal receipts."
        ),
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"}),
    )
    uscc = forms.CharField(
        label=_("Unified social credit code (统一社会信用代码)"),
        max_length=24,
        required=False,
        help_text=_(
            "18 characters, on your business licence. A micro-merchant (小微商户) without a licence leaves it empty."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    legal_rep_name = forms.CharField(
        label=_("Legal representative (法人)"),
        max_length=100,
        help_text=_("As written on the business licence."),
    )
    applicant_name = forms.CharField(label=_("Your name"), max_length=100)
    applicant_is_legal_rep = forms.BooleanField(
        label=_("I am the legal representative"),
        required=False,
        help_text=_(
            "If not, attach an authorisation letter (授权委托书) signed by the legal representative."
        ),
    )
    applicant_phone = forms.CharField(
        label=_("Your mobile number"),
        max_length=20,
        widget=forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "tel"}),
    )
    applicant_email = forms.EmailField(
        label=_("Your e-mail"),
        help_text=_(
            "We send the receipt and updates here too. The identity code goes only to the contact e-mail we have on file for the merchant."
        ),
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    serial_numbers = forms.CharField(
        label=_("Terminal serial numbers (SN)"),
        widget=forms.Textarea(
            attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}
        ),
        help_text=_("One per line, as printed on the device label."),
        # Or a file, below: clean_serial_numbers asks for one of the two.
        required=False,
    )
    serial_numbers_file = forms.FileField(
        label=_("Or upload the serial numbers (CSV or XLSX)"),
        required=False,
        help_text=format_lazy(
            _(
                "For chains with many terminals: one serial number per row in the first column; a header row is allowed. Up to {rows} rows."
            ),
            rows=f"{serial_upload.MAX_ROWS:,}",
        ),
        widget=forms.ClearableFileInput(
            attrs={
                "accept": ".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
        ),
    )
    reason = forms.ChoiceField(label=_("Reason for unbinding"), choices=Reason.choices)
    reason_detail = forms.CharField(
        label=_("Details"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Required when the reason is “Other”."),
    )
    close_account = forms.BooleanField(
        label=_("Also close my merchant account (注销原账户)"),
        required=False,
        help_text=_(
            "Every terminal bound to the merchant must be in this request. Needs the contract and a bank statement."
        ),
    )
    replacement_serial_number = forms.CharField(
        label=_("Replacement device serial number"),
        required=False,
        max_length=40,
        help_text=_(
            "If a new device from us should be bound in place of the old one (激活新设备). Required for a device replacement."
        ),
    )

    business_licence = _file_field(
        _("Business licence copy (营业执照副本)"),
        _(
            "Required, except for a micro-merchant without a licence. A scan or photo of the whole page, PDF, JPEG or PNG."
        ),
    )
    legal_rep_id = _file_field(
        _("Legal representative's ID (法人身份证明)"),
        _("Always required. Front and back; you can select several files."),
        multiple=True,
    )
    device_evidence = _file_field(
        _("Device evidence (原POS机设备及相关资料)"),
        _("Always required. Serial number label, purchase proof, installation record."),
        multiple=True,
    )
    contract = _file_field(
        _("Contract or service agreement (合同或协议)"),
        _("Required when closing the account."),
    )
    bank_statement = _file_field(
        _("Bank statement or account information (银行对账单或账户信息)"),
        _("Required when closing the account."),
    )
    replacement_documents = _file_field(
        _("New device documents (新POS机设备及相关资料)"),
        _(
            "Required with a replacement device: model, purchase and installation documents."
        ),
        multiple=True,
    )
    authorisation_letter = _file_field(
        _("Authorisation letter (授权委托书)"),
        _("Required when you are not the legal representative."),
    )
    other_documents = _file_field(
        _("Other documents (其他相关文件)"),
        _("Optional."),
        multiple=True,
    )
    declaration = forms.BooleanField(
        label=_(
            "I declare that the information and documents are true and that I am authorised to make this request."
        ),
        required=True,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uploads: list[tuple[str, CleanUpload]] = []
        self.merchant = None
        self.terminals = []
        self.replacement_terminal = None
        self.stale_case_ids: list[int] | None = None
        self.serial_sheet: serial_upload.SerialSheet | None = None
        self.helper = FormHelper()
        self.helper.form_tag = True
        self.helper.form_method = "post"
        self.helper.attrs = {"enctype": "multipart/form-data", "novalidate": ""}
        self.helper.form_id = "request-form"
        self.helper.layout = Layout(
            "submission_key",
            Fieldset(_("Merchant"), "merchant_id", "uscc", "legal_rep_name"),
            Fieldset(
                _("Applicant"),
                "applicant_name",
                "applicant_is_legal_rep",
                "applicant_phone",
                "applicant_email",
            ),
            Fieldset(_("Terminals"), "serial_numbers", "serial_numbers_file"),
            Fieldset(
                _("Reason"),
                "reason",
                "reason_detail",
                "close_account",
                "replacement_serial_number",
            ),
            Fieldset(
                _("Documents"),
                HTML('{% include "cases/_required_documents.html" %}'),
                *FILE_FIELDS,
            ),
            Fieldset(_("Declaration"), "declaration"),
            Div(
                Submit("submit", _("Submit request"), css_class="btn-lg"),
                css_class="d-grid d-sm-block mt-3",
            ),
        )

    @property
    def merchant_kind(self) -> str | None:
        """The registry's kind of merchant, once the identity matched; else None.

        Only known after the merchant number, USCC and legal representative
        matched, so the page never tells a stranger what kind a merchant is.
        """
        return self.merchant.kind if self.merchant is not None else None

    # --- field cleaning ------------------------------------------------------

    def clean_submission_key(self) -> str:
        key = self.cleaned_data.get("submission_key") or ""
        return key if is_submission_key(key) else ""

    def clean_merchant_id(self) -> str:
        value = re.sub(r"\s", "", self.cleaned_data["merchant_id"])
        validators.validate_merchant_id(value)
        return value

    def clean_uscc(self) -> str:
        value = validators.normalise_code(self.cleaned_data["uscc"])
        if value:
            # Empty is for micro-merchants; case_filing_check decides by the registry.
            validators.validate_uscc(value)
        return value

    def clean_legal_rep_name(self) -> str:
        return " ".join(self.cleaned_data["legal_rep_name"].split())

    def clean_applicant_name(self) -> str:
        return " ".join(self.cleaned_data["applicant_name"].split())

    def clean_applicant_phone(self) -> str:
        value = validators.normalise_mobile(self.cleaned_data["applicant_phone"])
        validators.validate_mobile(value)
        return value

    def clean_serial_numbers(self) -> list[str]:
        typed = (self.cleaned_data["serial_numbers"] or "").strip()
        if self.files.get(self.add_prefix("serial_numbers_file")):
            if typed:
                raise ValidationError(
                    _("Type the serial numbers or upload a file of them, not both.")
                )
            return []  # clean_serial_numbers_file puts the file's here
        if not typed:
            raise ValidationError(
                self.fields["serial_numbers"].error_messages["required"],
                code="required",
            )
        serials = parse_serial_numbers(self.cleaned_data["serial_numbers"])
        if not serials:
            raise ValidationError(_("Enter at least one serial number."))
        if len(serials) > MAX_TERMINALS_PER_REQUEST:
            raise ValidationError(
                _("At most %(max)d terminals per request.")
                % {"max": MAX_TERMINALS_PER_REQUEST}
            )
        bad = []
        for serial in serials:
            try:
                validators.validate_serial_number(serial)
            except ValidationError:
                bad.append(serial[:40])
        if bad:
            raise ValidationError(
                _("These are not valid serial numbers: %(serials)s")
                % {"serials": ", ".join(bad)}
            )
        return serials

    def clean_serial_numbers_file(self):
        uploaded = self.cleaned_data.get("serial_numbers_file")
        if not uploaded:
            return None
        self.serial_sheet = serial_upload.serial_sheet_read(uploaded)
        if "serial_numbers" in self.cleaned_data:
            self.cleaned_data["serial_numbers"] = self.serial_sheet.serials
        return uploaded

    def clean_replacement_serial_number(self) -> str:
        value = validators.normalise_serial_number(
            self.cleaned_data.get("replacement_serial_number", "")
        )
        if value:
            validators.validate_serial_number(value)
        return value

    def clean_reason_detail(self) -> str:
        return (self.cleaned_data.get("reason_detail") or "").strip()

    # --- cross-field rules ---------------------------------------------------

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            # Don't look anything up or inspect files while basic fields are wrong.
            return cleaned

        if cleaned.get("reason") == Reason.OTHER and not cleaned.get("reason_detail"):
            self.add_error("reason_detail", _("Tell us the reason in a few words."))
        if cleaned.get("reason") == Reason.DEVICE_REPLACEMENT and not cleaned.get(
            "replacement_serial_number"
        ):
            self.add_error(
                "replacement_serial_number",
                _("A device replacement needs the serial number of the new device."),
            )

        try:
            found = intake.case_filing_check(
                merchant_id=cleaned["merchant_id"],
                uscc=cleaned["uscc"],
                legal_rep_name=cleaned["legal_rep_name"],
                serial_numbers=cleaned["serial_numbers"],
                close_account=cleaned.get("close_account", False),
                replacement_serial_number=cleaned.get("replacement_serial_number", ""),
            )
        except intake.IntakeRejected as exc:
            errors = dict(exc.errors)
            if self.serial_sheet is not None and exc.serial_problems:
                # An uploaded file: report each refused serial by its line.
                errors.pop("serial_numbers", None)
                errors["serial_numbers_file"] = serial_upload.line_errors(
                    exc.serial_problems, sheet=self.serial_sheet
                )
            for field, messages in errors.items():
                for message in messages:
                    self.add_error(field, message)
            return cleaned
        self.merchant = found.merchant
        self.terminals = found.terminals
        self.replacement_terminal = found.replacement_terminal
        self.stale_case_ids = found.stale_case_ids

        required = required_document_kinds(
            close_account=cleaned.get("close_account", False),
            replacement=self.replacement_terminal is not None,
            applicant_is_legal_rep=cleaned.get("applicant_is_legal_rep", False),
            # The registry's kind, never what the form claims.
            merchant_kind=self.merchant.kind,
        )
        for field in FILE_FIELDS:
            if not cleaned.get(field) and FILE_FIELDS[field] in required:
                self.add_error(field, _("This document is required for your request."))
        if self.errors:
            return cleaned

        total = uploads_total_size(
            f for field in FILE_FIELDS for f in _as_list(cleaned.get(field))
        )
        if total > settings.UPLOAD_MAX_REQUEST_SIZE:
            raise ValidationError(
                _("The documents are %(size)d MB in total; the limit is %(limit)d MB.")
                % {
                    "size": total // (1024 * 1024),
                    "limit": settings.UPLOAD_MAX_REQUEST_SIZE // (1024 * 1024),
                }
            )
        for field, kind in FILE_FIELDS.items():
            if cleaned.get(field):
                try:
                    self._clean_files(field, kind)
                except ValidationError as exc:
                    self.add_error(field, exc)
        if self.errors:
            self.discard_uploads()
        return cleaned

    def filing(
        self,
        *,
        language: str,
        client_ip: str | None,
        submission_key: str = "",
        channel: str = "web",
        filed_by=None,
    ) -> intake.CaseFiling:
        """Return what was filed, for ``intake.case_file`` (a valid form).

        ``channel`` and ``filed_by`` name how it reached us and the staff member
        who filed it for the merchant (phone, branch, agent); the web form and
        the API leave the defaults.
        """
        data = self.cleaned_data
        return intake.CaseFiling(
            merchant=self.merchant,
            terminals=self.terminals,
            uscc=data["uscc"],
            legal_rep_name=data["legal_rep_name"],
            applicant_name=data["applicant_name"],
            applicant_is_legal_rep=data["applicant_is_legal_rep"],
            applicant_phone=data["applicant_phone"],
            applicant_email=data["applicant_email"],
            reason=data["reason"],
            reason_detail=data["reason_detail"],
            close_account=data["close_account"],
            replacement_terminal=self.replacement_terminal,
            language=language,
            client_ip=client_ip,
            submission_key=submission_key,
            uploads=self.uploads,
            channel=channel,
            filed_by=filed_by,
            stale_case_ids=self.stale_case_ids,
        )


def _as_list(value) -> list:
    if not value:
        return []
    return value if isinstance(value, list) else [value]


class OneTimeCodeField(forms.CharField):
    """The 6-digit code sent to a contact on file (identity check, sign-in)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_length", 6)
        kwargs.setdefault("max_length", 6)
        kwargs.setdefault(
            "widget",
            forms.TextInput(
                attrs={
                    "inputmode": "numeric",
                    "autocomplete": "one-time-code",
                    "pattern": "[0-9]{6}",
                    "autofocus": True,
                }
            ),
        )
        super().__init__(**kwargs)

    def clean(self, value) -> str:
        code = super().clean(value)
        if not re.fullmatch(r"\d{6}", code):
            raise ValidationError(_("The code is 6 digits."))
        return code


class VerifyForm(DecodedTextMixin, forms.Form):
    code = OneTimeCodeField(
        label=_("Verification code"),
        help_text=_(
            "The 6 digits we e-mailed to the merchant's contact address on file."
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_id = "verify-form"
        self.helper.add_input(Submit("submit", _("Verify")))


class RespondForm(DecodedTextMixin, UploadsMixin, forms.Form):
    """The merchant's answer to a request for information."""

    message = forms.CharField(
        label=_("Your answer"),
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
    )
    document_kind = forms.ChoiceField(
        label=_("The documents are"),
        choices=[
            (k.value, k.label) for k in Document.Kind if k != Document.Kind.DATA_EXPORT
        ],
        initial=Document.Kind.OTHER,
        required=False,
    )
    documents = MultipleFileField(
        label=_("Documents"),
        help_text=_("PDF, JPEG or PNG; you can select several files."),
        required=False,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uploads = []
        self.helper = FormHelper()
        self.helper.form_id = "respond-form"
        self.helper.attrs = {"enctype": "multipart/form-data"}
        self.helper.add_input(Submit("submit", _("Send answer")))

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        message = (cleaned.get("message") or "").strip()
        cleaned["message"] = message
        files = cleaned.get("documents") or []
        if not message and not files:
            raise ValidationError(_("Write an answer or attach at least one document."))
        if uploads_total_size(files) > settings.UPLOAD_MAX_REQUEST_SIZE:
            raise ValidationError(_("The documents are too large in total."))
        kind = cleaned.get("document_kind") or Document.Kind.OTHER
        if files:
            try:
                self._clean_files("documents", kind)
            except ValidationError as exc:
                self.add_error("documents", exc)
                self.discard_uploads()
        return cleaned


class TrackForm(DecodedTextMixin, forms.Form):
    link = forms.CharField(
        label=_("Tracking link or code"),
        max_length=300,
        help_text=_("Paste the link from your receipt or verification e-mail."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_method = "get"
        self.helper.add_input(Submit("submit", _("Open")))

    def clean_link(self) -> str:
        value = self.cleaned_data["link"].strip().rstrip("/")
        match = re.search(r"/requests/([A-Za-z0-9_-]{20,64})", value)
        token = match.group(1) if match else value
        if not re.fullmatch(r"[A-Za-z0-9_-]{20,64}", token):
            raise ValidationError(_("This does not look like a tracking link."))
        return token


class DeviceShipForm(DecodedTextMixin, forms.Form):
    """The merchant's courier and tracking number for one device on its way back."""

    courier = forms.CharField(label=_("Courier"), max_length=60)
    tracking_number = forms.RegexField(
        label=_("Tracking number"),
        regex=r"^[A-Za-z0-9-]{6,40}$",
        max_length=40,
        error_messages={
            "invalid": _(
                "Enter the tracking number: 6 to 40 letters, digits or dashes."
            )
        },
    )


class DeviceLostForm(DecodedTextMixin, UploadsMixin, forms.Form):
    """A lost or stolen device: the police report replaces it."""

    police_report = forms.FileField(
        label=_("Police report"), help_text=_("PDF, JPEG or PNG.")
    )
    note = forms.CharField(
        label=_("What happened"),
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uploads = []

    def clean(self):
        cleaned = super().clean()
        if not self.errors and cleaned.get("police_report"):
            try:
                self._clean_files("police_report", Document.Kind.POLICE_REPORT)
            except ValidationError as exc:
                self.add_error("police_report", exc)
                self.discard_uploads()
        return cleaned

    @property
    def upload(self) -> CleanUpload:
        return self.uploads[0][1]
