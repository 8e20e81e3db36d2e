"""What the API shows of a case: personal data masked as on the staff pages."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from cases.models import (
    Case,
    CaseChannel,
    CaseState,
    DeviceReturn,
    DeviceReturnState,
    FinanceItem,
    Reason,
)
from cases.services.returns import TRACKING_NUMBER_RE
from terminals.masking import mask_email, mask_phone


class CaseSerializer(serializers.ModelSerializer):
    """A case as a calling system sees it (read-only)."""

    state = serializers.ChoiceField(choices=CaseState.choices, read_only=True)
    reason = serializers.ChoiceField(choices=Reason.choices, read_only=True)
    channel = serializers.ChoiceField(choices=CaseChannel.choices, read_only=True)
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
            "channel",
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


class StatementLineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    direction = serializers.ChoiceField(choices=["to_merchant", "by_merchant"])
    # Exact decimals as strings ("299.00"), never floats.
    amount = serializers.CharField()
    rule = serializers.CharField()
    serial_number = serializers.CharField(allow_blank=True)
    condition = serializers.CharField(allow_blank=True)
    due_on = serializers.CharField(allow_blank=True)


class StatementSerializer(serializers.Serializer):
    """The case's final statement: the version frozen at approval, else the live one."""

    version = serializers.IntegerField(
        allow_null=True, help_text="null while the statement is not frozen yet"
    )
    frozen = serializers.BooleanField()
    lines = StatementLineSerializer(many=True)
    to_merchant = serializers.CharField()
    by_merchant = serializers.CharField()
    net = serializers.CharField(help_text="to the merchant; negative: owed by them")
    notes = serializers.ListField(child=serializers.CharField())


class ProgressSerializer(serializers.Serializer):
    """How many of the case's terminals the execution unbound (chains)."""

    total = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    pending = serializers.IntegerField()


class DeviceReturnSerializer(serializers.ModelSerializer):
    serial_number = serializers.CharField(source="terminal.serial_number")
    state = serializers.ChoiceField(choices=DeviceReturnState.choices)
    ship_url = serializers.SerializerMethodField()

    class Meta:
        model = DeviceReturn
        fields = [
            "id",
            "serial_number",
            "state",
            "due_at",
            "courier",
            "tracking_number",
            "shipped_at",
            "received_at",
            "ship_url",
        ]
        read_only_fields = fields

    def get_ship_url(self, device_return: DeviceReturn) -> str:
        return (
            f"/api/v1/cases/{device_return.case.reference}"
            f"/returns/{device_return.pk}/ship/"
        )


class CaseDetailSerializer(CaseSerializer):
    """One case with its statement, terminal progress and device returns.

    The view reads them through the services (``context``): a constant number
    of queries whatever the number of terminals.
    """

    statement = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    device_returns = serializers.SerializerMethodField()

    class Meta(CaseSerializer.Meta):
        fields = [
            *CaseSerializer.Meta.fields,
            "statement",
            "progress",
            "device_returns",
        ]
        read_only_fields = fields

    @extend_schema_field(StatementSerializer)
    def get_statement(self, case: Case) -> dict:
        statement = self.context["statement"]
        data = statement.as_dict()
        data.pop("rules_version", None)
        return StatementSerializer(
            {
                **data,
                "version": statement.version,
                "frozen": statement.version is not None,
            }
        ).data

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, case: Case) -> dict:
        progress = self.context["progress"]
        return ProgressSerializer(
            {
                "total": progress.total,
                "done": progress.done,
                "failed": progress.failed,
                "pending": progress.pending,
            }
        ).data

    @extend_schema_field(DeviceReturnSerializer(many=True))
    def get_device_returns(self, case: Case) -> list:
        return DeviceReturnSerializer(self.context["device_returns"], many=True).data


class FinanceItemSerializer(serializers.ModelSerializer):
    """A refund or deduction finance acts on after completion."""

    case_reference = serializers.CharField(source="case.reference")
    direction = serializers.ChoiceField(choices=FinanceItem.Direction.choices)
    state = serializers.ChoiceField(choices=FinanceItem.State.choices)
    # Exact decimals as strings ("299.00"), never floats.
    amount = serializers.DecimalField(
        max_digits=14, decimal_places=2, coerce_to_string=True
    )
    needs_second_user = serializers.SerializerMethodField()
    pay_url = serializers.SerializerMethodField()

    class Meta:
        model = FinanceItem
        fields = [
            "id",
            "case_reference",
            "kind",
            "serial_number",
            "direction",
            "amount",
            "state",
            "due_on",
            "payment_reference",
            "recorded_at",
            "paid_at",
            "needs_second_user",
            "pay_url",
        ]
        read_only_fields = fields

    def get_needs_second_user(self, item: FinanceItem) -> bool:
        from cases.services.finance import needs_second_user

        return needs_second_user(item)

    def get_pay_url(self, item: FinanceItem) -> str:
        return f"/api/v1/finance-items/{item.pk}/pay/"


class FinanceItemPageSerializer(serializers.Serializer):
    """One page of finance items; follow ``next`` for the following one."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = FinanceItemSerializer(many=True)


class PaySerializer(serializers.Serializer):
    payment_reference = serializers.CharField(max_length=100)


class ShipSerializer(serializers.Serializer):
    courier = serializers.CharField(max_length=60)
    # The service's own pattern, so that both refuse the same numbers.
    tracking_number = serializers.RegexField(
        TRACKING_NUMBER_RE,
        max_length=40,
        error_messages={
            "invalid": _(
                "Enter the tracking number: 6 to 40 letters, digits or dashes."
            )
        },
    )


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


# --- the case detail, written out --------------------------------------------------
# ``CaseDetailSerializer`` describes the answer (the OpenAPI schema); the
# detail view writes the same JSON with ``case_detail_data`` below, without
# DRF building ~35 field objects per request (a ModelSerializer builds its
# fields for each instance). tests/api/test_case_detail_cost.py holds the two
# equal, field for field, on cases with and without each part.

_datetime = serializers.DateTimeField()


def _text(value) -> str | None:
    return None if value is None else str(value)


def _choice(value):
    # ChoiceField.to_representation for values of the field's choices.
    return value if value in ("", None) else str(value)


def _moment(value) -> str | None:
    return None if value is None else _datetime.to_representation(value)


def _statement_data(statement) -> dict:
    data = statement.as_dict()
    version = statement.version
    return {
        "version": None if version is None else int(version),
        "frozen": version is not None,
        "lines": [
            {
                name: _text(line.get(name))
                for name in (
                    "kind",
                    "direction",
                    "amount",
                    "rule",
                    "serial_number",
                    "condition",
                    "due_on",
                )
            }
            for line in data["lines"]
        ],
        "to_merchant": _text(data["to_merchant"]),
        "by_merchant": _text(data["by_merchant"]),
        "net": _text(data["net"]),
        "notes": [_text(note) for note in data["notes"]],
    }


def case_detail_data(*, case: Case, statement, progress, device_returns) -> dict:
    """``CaseDetailSerializer(case, context=...).data``, written out."""
    links = case.prefetched_links
    replacement = case.replacement_terminal
    return {
        "reference": _text(case.reference),
        "state": _choice(case.state),
        "channel": _choice(case.channel),
        "merchant_id": _text(case.merchant.merchant_id),
        "serial_numbers": [link.terminal.serial_number for link in links],
        "reason": _choice(case.reason),
        "close_account": bool(case.close_account),
        "replacement_serial_number": replacement.serial_number if replacement else None,
        "applicant_name": _text(case.applicant_name),
        "applicant_phone": mask_phone(case.applicant_phone),
        "applicant_email": mask_email(case.applicant_email),
        "created_at": _moment(case.created_at),
        "submitted_at": _moment(case.submitted_at),
        "approved_at": _moment(case.approved_at),
        "closed_at": _moment(case.closed_at),
        "updated_at": _moment(case.updated_at),
        "failure_step": _text(case.failure_step),
        "statement": _statement_data(statement),
        "progress": {
            "total": int(progress.total),
            "done": int(progress.done),
            "failed": int(progress.failed),
            "pending": int(progress.pending),
        },
        "device_returns": [
            {
                "id": int(device_return.pk),
                "serial_number": _text(device_return.terminal.serial_number),
                "state": _choice(device_return.state),
                "due_at": _moment(device_return.due_at),
                "courier": _text(device_return.courier),
                "tracking_number": _text(device_return.tracking_number),
                "shipped_at": _moment(device_return.shipped_at),
                "received_at": _moment(device_return.received_at),
                "ship_url": (
                    f"/api/v1/cases/{case.reference}/returns/{device_return.pk}/ship/"
                ),
            }
            for device_return in device_returns
        ],
    }
