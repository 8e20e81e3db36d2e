"""What the API shows of a case: personal data masked as on the staff pages."""

from rest_framework import serializers

from cases.models import Case, CaseState, Reason
from terminals.masking import mask_email, mask_phone


class CaseSerializer(serializers.ModelSerializer):
    """A case as a calling system sees it (read-only)."""

    state = serializers.ChoiceField(choices=CaseState.choices, read_only=True)
    reason = serializers.ChoiceField(choices=Reason.choices, read_only=True)
    merchant_id = serializers.CharField(source="merchant.merchant_id", read_only=True)
    serial_numbers = serializers.SerializerMethodField()
    replacement_serial_number = serializers.SerializerMethodField()
    applicant_phone = serializers.SerializerMethodField()
    applicant_email = serializers.SerializerMethodField()

    class Meta:
        model = Case
        fields = [
            "reference",
            "state",
            "merchant_id",
            "serial_numbers",
            "reason",
            "close_account",
            "replacement_serial_number",
            "applicant_name",
            "applicant_phone",
            "applicant_email",
            "created_at",
            "submitted_at",
            "approved_at",
            "closed_at",
            "updated_at",
            "failure_step",
        ]
        read_only_fields = fields

    def get_serial_numbers(self, case: Case) -> list[str]:
        links = getattr(case, "prefetched_links", None)
        if links is None:
            links = case.case_terminals.select_related("terminal").order_by("pk")
        return [link.terminal.serial_number for link in links]

    def get_replacement_serial_number(self, case: Case) -> str | None:
        terminal = case.replacement_terminal
        return terminal.serial_number if terminal else None

    def get_applicant_phone(self, case: Case) -> str:
        return mask_phone(case.applicant_phone)

    def get_applicant_email(self, case: Case) -> str:
        return mask_email(case.applicant_email)


class BindingSerializer(serializers.Serializer):
    bound = serializers.BooleanField()


class BindingQuerySerializer(serializers.Serializer):
    merchant_id = serializers.CharField(max_length=40)


class VerifySerializer(serializers.Serializer):
    code = serializers.RegexField(r"^\d{6}$", max_length=6)


class ActionSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="")


class FiledSerializer(serializers.Serializer):
    """The answer to a filing: the case waits for the code sent to the contact on file."""

    reference = serializers.CharField()
    state = serializers.ChoiceField(choices=CaseState.choices)
    verify_url = serializers.CharField()


class CasePageSerializer(serializers.Serializer):
    """One page of the case list; follow ``next`` for the following one."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = CaseSerializer(many=True)


class FilingSerializer(serializers.Serializer):
    """The fields of a filing, for the OpenAPI document only.

    The request is validated by ``cases.forms.CaseFilingForm``, the form of
    /requests/new/, so that both channels apply the same rules.
    """

    merchant_id = serializers.CharField(help_text="15 digits")
    uscc = serializers.CharField(
        required=False, allow_blank=True, help_text="empty for a micro-merchant"
    )
    legal_rep_name = serializers.CharField()
    applicant_name = serializers.CharField()
    applicant_is_legal_rep = serializers.BooleanField(required=False)
    applicant_phone = serializers.CharField()
    applicant_email = serializers.EmailField()
    serial_numbers = serializers.CharField(
        required=False, help_text="one per line; or serial_numbers_file"
    )
    serial_numbers_file = serializers.FileField(required=False)
    reason = serializers.ChoiceField(choices=Reason.choices)
    reason_detail = serializers.CharField(required=False, allow_blank=True)
    close_account = serializers.BooleanField(required=False)
    replacement_serial_number = serializers.CharField(required=False, allow_blank=True)
    declaration = serializers.BooleanField()
    business_licence = serializers.FileField(required=False)
    legal_rep_id = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="front and back"
    )
    device_evidence = serializers.ListField(
        child=serializers.FileField(), required=False
    )
    contract = serializers.FileField(required=False)
    bank_statement = serializers.FileField(required=False)
    replacement_documents = serializers.ListField(
        child=serializers.FileField(), required=False
    )
    authorisation_letter = serializers.FileField(required=False)
    other_documents = serializers.ListField(
        child=serializers.FileField(), required=False
    )
