"""Phone-in, branch and agent filing: staff file a case for a merchant in the admin.

Two screens, reached from the admin index and wired into ``CaseAdmin.get_urls``:
the filing form (the public form's validation, upload checks and documents,
plus the channel) and the identity step (enter the code the merchant reads
out, or record an offline identity check with its evidence). Both call
services only: ``intake.case_file``, ``intake.case_verify`` and
``staff_filing.case_identity_check_record``.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from cases import roles
from cases.forms import CaseFilingForm, MultipleFileField, VerifyForm
from cases.models import AgentMerchant, Case, CaseChannel, CaseState, Document
from cases.services import intake, staff_filing
from cases.services.common import CaseActionError
from cases.uploads import upload_clean
from config.client_address import client_address


class StaffFilingForm(CaseFilingForm):
    """The public request form, filled in by staff for the merchant."""

    channel = forms.ChoiceField(
        label=gettext_lazy("How the request reached us"),
        choices=[(c.value, c.label) for c in staff_filing.STAFF_CHANNELS],
        initial=CaseChannel.PHONE,
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.helper.form_tag = False
        # Staff fill it in for the applicant: the labels say whose data it is.
        self.fields["applicant_name"].label = gettext_lazy("Applicant's name")
        self.fields["applicant_phone"].label = gettext_lazy("Applicant's mobile")
        self.fields["applicant_email"].label = gettext_lazy("Applicant's e-mail")
        self.fields["applicant_is_legal_rep"].label = gettext_lazy(
            "The applicant is the legal representative"
        )
        self.fields["declaration"].label = gettext_lazy(
            "The merchant declared that the information and documents are true "
            "and that the applicant is authorised to make this request."
        )
        if not roles.user_in_group(user, roles.SERVICE) and roles.is_agent(user):
            del self.fields["channel"]

    def clean(self):
        cleaned = super().clean()
        if self.merchant is not None and not staff_filing.merchant_may_be_filed_by(
            user=self.user, merchant=self.merchant
        ):
            self.discard_uploads()
            self.merchant = None
            raise ValidationError(
                _("You may file requests only for the merchants you are agent for.")
            )
        return cleaned


class IdentityCheckForm(forms.Form):
    note = forms.CharField(
        label=gettext_lazy("How you checked the identity"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy(
            "For example: original ID card seen at the branch, compared with the "
            "photo; called back the mobile number on file."
        ),
    )
    evidence = MultipleFileField(
        label=gettext_lazy("Evidence"),
        help_text=gettext_lazy(
            "A scan or photo of what you checked: PDF, JPEG or PNG."
        ),
    )


def _require_filer(request: HttpRequest) -> None:
    if not roles.may_file_for_merchants(request.user):
        raise PermissionDenied


def case_file_for_merchant_view(model_admin, request: HttpRequest):
    """File a case for a merchant who phoned in, came to a branch or an agent's."""
    _require_filer(request)
    if request.method == "POST":
        form = StaffFilingForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            filing = form.filing(
                language=request.LANGUAGE_CODE or settings.LANGUAGE_CODE,
                client_ip=client_address(request),
                channel=staff_filing.filing_channel_for(
                    user=request.user, chosen=form.cleaned_data.get("channel", "")
                ),
                filed_by=request.user,
            )
            try:
                case, _token = intake.case_file(filing=filing)
            except CaseActionError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(
                    request,
                    _(
                        "%(case)s is filed. The code went to the merchant's contact "
                        "on file; enter it below when the merchant reads it out, or "
                        "record an offline identity check."
                    )
                    % {"case": case.reference},
                )
                return HttpResponseRedirect(
                    reverse("admin:cases_case_identity", args=[case.pk])
                )
        form.discard_uploads()
    else:
        form = StaffFilingForm(
            user=request.user, initial={"applicant_is_legal_rep": True}
        )
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": _("File a request for a merchant"),
        "form": form,
        "is_agent": roles.is_agent(request.user),
    }
    return TemplateResponse(request, "admin/cases/case/file_for_merchant.html", context)


def case_identity_view(model_admin, request: HttpRequest, object_id: str):
    """Enter the code the merchant reads out, or record an offline identity check."""
    _require_filer(request)
    case = get_object_or_404(Case.objects.select_related("merchant"), pk=object_id)
    if case.channel == CaseChannel.WEB or not staff_filing.merchant_may_be_filed_by(
        user=request.user, merchant=case.merchant
    ):
        raise Http404
    code_form = VerifyForm(prefix="code")
    check_form = IdentityCheckForm(prefix="check")
    if case.state != CaseState.PENDING_VERIFICATION:
        messages.info(request, _("This request no longer needs a code."))
    elif request.method == "POST" and "code-code" in request.POST:
        code_form = VerifyForm(request.POST, prefix="code")
        if code_form.is_valid():
            result = intake.case_verify(
                case_id=case.pk,
                code=code_form.cleaned_data["code"],
                client_ip=client_address(request),
            )
            if result == intake.VerificationResult.OK:
                messages.success(
                    request, _("The code is right: the case is submitted.")
                )
                return HttpResponseRedirect(request.path)
            code_form.add_error(
                "code",
                {
                    intake.VerificationResult.WRONG: _("This code is not right."),
                    intake.VerificationResult.EXPIRED: _("This code has expired."),
                    intake.VerificationResult.MERCHANT_LIMIT: intake.MERCHANT_LIMIT_MESSAGE,
                }.get(result, _("Too many wrong codes.")),
            )
    elif request.method == "POST":
        check_form = IdentityCheckForm(request.POST, request.FILES, prefix="check")
        if check_form.is_valid():
            uploads = []
            try:
                for uploaded in check_form.cleaned_data["evidence"]:
                    uploads.append(upload_clean(uploaded))
            except ValidationError as exc:
                for upload in uploads:
                    upload.discard()
                check_form.add_error("evidence", exc)
            else:
                try:
                    staff_filing.case_identity_check_record(
                        case_id=case.pk,
                        actor=request.user,
                        note=check_form.cleaned_data["note"],
                        evidence=uploads,
                        client_ip=client_address(request),
                    )
                except CaseActionError as exc:
                    check_form.add_error(None, exc.message)
                else:
                    messages.success(
                        request,
                        _("The identity check is recorded: the case is submitted."),
                    )
                    return HttpResponseRedirect(request.path)
    case.refresh_from_db()
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": _("Identity of the merchant — %(case)s") % {"case": case.reference},
        "case": case,
        "code_form": code_form,
        "check_form": check_form,
        "evidence": case.documents.filter(kind=Document.Kind.IDENTITY_CHECK),
        "change_url": reverse("admin:cases_case_change", args=[case.pk])
        if request.user.has_perm("cases.view_case")
        else "",
    }
    return TemplateResponse(request, "admin/cases/case/identity.html", context)


@admin.register(AgentMerchant)
class AgentMerchantAdmin(admin.ModelAdmin):
    """Which merchants an agent (代理商) may file requests for."""

    list_display = ("agent", "merchant", "created_at")
    list_filter = ("agent",)
    list_select_related = ("agent", "merchant")
    search_fields = ("merchant__merchant_id", "merchant__name", "agent__username")
    raw_id_fields = ("merchant",)
    readonly_fields = ("created_at",)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "agent":
            kwargs["queryset"] = get_user_model().objects.filter(
                groups__name=roles.AGENT, is_active=True
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
