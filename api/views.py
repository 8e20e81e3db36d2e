"""The API's views: thin translations of HTTP into selectors and services.

Each view names the scope it needs per method in ``required_scopes``.
"""

from django.db.models import Prefetch
from django.utils import translation
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import (
    NotFound,
    PermissionDenied,
    Throttled,
    ValidationError,
)
from rest_framework.response import Response

from api.base import KeyedAPIView
from api.models import Scope
from api.pagination import CaseCursorPagination, FinanceItemCursorPagination
from api.problems import BadRecord, Conflict
from api.registry import registry_sync
from api.serializers import (
    ActionSerializer,
    BindingSerializer,
    CaseDetailSerializer,
    CasePageSerializer,
    CaseSerializer,
    FiledSerializer,
    FilingSerializer,
    FinanceItemPageSerializer,
    FinanceItemSerializer,
    PaySerializer,
    ShipSerializer,
    VerifySerializer,
    case_detail_data,
)
from cases.actions import STAFF_ACTIONS
from cases.forms import CaseFilingForm
from cases.models import Case, CaseState, CaseTerminal, DeviceReturn, FinanceItem
from cases.selectors import case_code_resend_wait_seconds
from cases.services import finance, intake, returns, review
from cases.services.chains import case_terminal_progress
from cases.services.common import CaseActionError
from config.client_address import client_address
from config.throttling import throttle_hit
from terminals.forms import BindingStatusForm
from terminals.importer import RegistryImportError
from terminals.models import MONEY_TERM_FIELDS
from terminals.selectors import binding_status_check

PROBLEM = OpenApiResponse(
    response=inline_serializer(
        "Problem",
        {
            "type": serializers.CharField(),
            "title": serializers.CharField(),
            "status": serializers.IntegerField(),
            "detail": serializers.CharField(),
        },
    ),
    description="RFC 9457 problem details (application/problem+json).",
)


def _problems(*codes: int) -> dict:
    return {(code, "application/problem+json"): PROBLEM for code in codes}


ERRORS = _problems(400, 401, 403, 404, 429)
# POSTs may also answer 409 (not in this state, key still running) and 422
# (an Idempotency-Key reused for another request).
POST_ERRORS = {**ERRORS, **_problems(409, 422)}
IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="A repeat with the same key returns the first answer.",
)


def _path_id(name: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.INT, OpenApiParameter.PATH)


def _cases():
    return Case.objects.select_related(
        "merchant", "replacement_terminal"
    ).prefetch_related(
        Prefetch(
            "case_terminals",
            queryset=CaseTerminal.objects.select_related("terminal").order_by("pk"),
            to_attr="prefetched_links",
        )
    )


def _case_or_404(reference: str) -> Case:
    case = _cases().filter(reference=reference).first()
    if case is None:
        raise NotFound(_("There is no case with this reference."))
    return case


# What the case detail reads: the columns its answer and the live statement
# use (the case's are about a third of its row), with the latest frozen
# statement in the same query. A column missing here would cost a query per
# access: tests/api/test_case_detail_cost.py pins the count.
_DETAIL_CASE_FIELDS = (
    "id",
    "reference",
    "state",
    "channel",
    "reason",
    "close_account",
    "applicant_name",
    "applicant_phone",
    "applicant_email",
    "created_at",
    "submitted_at",
    "approved_at",
    "closed_at",
    "updated_at",
    "failure_step",
    "fees_amount",
    "fees_statement",
    "settlement_total",
    "merchant__id",
    "merchant__merchant_id",
    *(f"merchant__{name}" for name in MONEY_TERM_FIELDS),
    "replacement_terminal__id",
    "replacement_terminal__serial_number",
)
_DETAIL_TERMINAL_FIELDS = ("id", "serial_number", "deposit", *MONEY_TERM_FIELDS)


def _case_detail_or_404(reference: str) -> Case:
    links = CaseTerminal.objects.select_related("terminal").only(
        "id",
        "case_id",
        "terminal_id",
        "execution_status",
        "execution_error",
        *(f"terminal__{name}" for name in _DETAIL_TERMINAL_FIELDS),
    )
    queryset = (
        Case.objects.select_related("merchant", "replacement_terminal")
        .only(*_DETAIL_CASE_FIELDS)
        .prefetch_related(
            Prefetch(
                "case_terminals",
                queryset=links.order_by("pk"),
                to_attr="prefetched_links",
            )
        )
        .filter(reference=reference)
    )
    case = finance.cases_with_latest_statement(queryset).first()
    if case is None:
        raise NotFound(_("There is no case with this reference."))
    return case


def _case_detail(case: Case) -> dict:
    """The answer of the case detail: the case with its statement, progress and
    device returns, in a constant number of queries whatever the number of
    terminals (``case`` from ``_case_detail_or_404``).
    """
    links = case.prefetched_links
    terminals = [link.terminal for link in links]
    statement = finance.case_statement_shown(case=case, terminals=terminals)
    device_returns = (
        DeviceReturn.objects.filter(case=case)
        .select_related("terminal")
        .only(
            "id",
            "case_id",
            "terminal_id",
            "state",
            "due_at",
            "courier",
            "tracking_number",
            "shipped_at",
            "received_at",
            "terminal__id",
            "terminal__serial_number",
        )
        .order_by("pk")
    )
    return case_detail_data(
        case=case,
        statement=statement,
        progress=case_terminal_progress(case=case, links=links),
        device_returns=list(device_returns),
    )


def _pk(value: str) -> int | None:
    """Read a primary key from a path: any other text is simply not found."""
    return (
        int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None
    )


class CaseDetailView(KeyedAPIView):
    required_scopes = {"GET": Scope.READ_CASES}

    @extend_schema(
        operation_id="case_retrieve", responses={200: CaseDetailSerializer, **ERRORS}
    )
    def get(self, request, reference: str):
        """Return one case by its reference, with its statement and device returns.

        ``statement`` is the version frozen at approval once there is one
        (``version`` set), else the statement as it stands now (``version``
        null); amounts are decimal strings in CNY.
        """
        return Response(_case_detail(_case_detail_or_404(reference)))


class CaseListView(KeyedAPIView):
    """List cases and file new ones."""

    required_scopes = {"GET": Scope.READ_CASES, "POST": Scope.FILE_CASES}

    @extend_schema(
        operation_id="case_list",
        parameters=[
            OpenApiParameter("state", OpenApiTypes.STR, enum=CaseState.values),
            OpenApiParameter("merchant_id", OpenApiTypes.STR),
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("overdue", OpenApiTypes.BOOL),
            OpenApiParameter("unassigned", OpenApiTypes.BOOL),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: CasePageSerializer, **ERRORS},
    )
    def get(self, request):
        """List cases, newest first, filtered as in the staff queue."""
        params = _ListFilters(data=request.query_params)
        params.is_valid(raise_exception=True)
        queryset = _cases()
        data = params.validated_data
        if data.get("state"):
            queryset = queryset.filter(state=data["state"])
        if data.get("merchant_id"):
            queryset = queryset.filter(merchant__merchant_id=data["merchant_id"])
        if data.get("created_after"):
            queryset = queryset.filter(created_at__gte=data["created_after"])
        if data.get("created_before"):
            queryset = queryset.filter(created_at__lt=data["created_before"])
        if data.get("overdue"):
            queryset = queryset.overdue()
        if data.get("unassigned"):
            queryset = queryset.filter(assigned_to__isnull=True)
        paginator = CaseCursorPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(CaseSerializer(page, many=True).data)

    @extend_schema(
        operation_id="case_file",
        parameters=[IDEMPOTENCY],
        request={"multipart/form-data": FilingSerializer},
        responses={201: FiledSerializer, **POST_ERRORS},
    )
    def post(self, request):
        """File a case for a merchant, with the form's fields and files.

        The same rules as /requests/new/ apply. The case waits in
        ``pending_verification`` until the code e-mailed to the merchant's
        contact on file is posted to ``/api/v1/cases/<reference>/verify/``.
        """
        form = CaseFilingForm(request.POST, request.FILES)
        if not form.is_valid():
            form.discard_uploads()
            raise ValidationError(
                {
                    field: [str(e) for e in errors]
                    for field, errors in form.errors.items()
                }
            )
        filing = form.filing(
            language=translation.get_language() or "zh-hans",
            client_ip=client_address(request),
        )
        try:
            case, _token = intake.case_file(filing=filing)
        except CaseActionError as exc:
            form.discard_uploads()
            raise Conflict(exc.message) from None
        self.audit_reference = case.reference or ""
        return Response(
            FiledSerializer(
                {
                    "reference": case.reference,
                    "state": case.state,
                    "verify_url": f"/api/v1/cases/{case.reference}/verify/",
                }
            ).data,
            status=status.HTTP_201_CREATED,
        )


class _ListFilters(serializers.Serializer):
    state = serializers.ChoiceField(choices=CaseState.choices, required=False)
    merchant_id = serializers.CharField(max_length=20, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    overdue = serializers.BooleanField(required=False, default=False)
    unassigned = serializers.BooleanField(required=False, default=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1)


class CaseVerifyView(KeyedAPIView):
    required_scopes = {"POST": Scope.FILE_CASES}

    @extend_schema(
        operation_id="case_verify",
        parameters=[IDEMPOTENCY],
        request=VerifySerializer,
        responses={200: CaseSerializer, **POST_ERRORS},
    )
    def post(self, request, reference: str):
        """Post the code e-mailed to the merchant's contact on file."""
        case = _case_or_404(reference)
        self.audit_reference = reference
        serializer = VerifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = intake.case_verify(
            case_id=case.pk,
            code=serializer.validated_data["code"],
            client_ip=client_address(request),
        )
        if result not in (
            intake.VerificationResult.OK,
            intake.VerificationResult.NOT_PENDING,
        ):
            messages = {
                intake.VerificationResult.WRONG: _("This code is not right."),
                intake.VerificationResult.EXPIRED: _("This code has expired."),
                intake.VerificationResult.LOCKED: _(
                    "Too many wrong codes; the merchant must ask for a new code."
                ),
            }
            # Any other refusal the intake service may add answers the same way.
            message = messages.get(result, _("This code cannot be accepted now."))
            raise ValidationError({"code": [message]})
        return Response(CaseSerializer(_case_or_404(reference)).data)


class CaseResendCodeView(KeyedAPIView):
    required_scopes = {"POST": Scope.FILE_CASES}

    @extend_schema(
        operation_id="case_resend_code",
        parameters=[IDEMPOTENCY],
        request=None,
        responses={202: CaseSerializer, **POST_ERRORS},
    )
    def post(self, request, reference: str):
        """E-mail a new code to the merchant's contact on file; earlier codes stop working.

        Throttled per case as on the verify page; too soon after the last
        code is a 429.
        """
        case = _case_or_404(reference)
        self.audit_reference = reference
        if throttle_hit("resend", f"case:{case.pk}"):
            raise Throttled(
                detail=str(_("A code was sent a moment ago; try again later."))
            )
        sent = intake.case_resend_code(
            case_id=case.pk, client_ip=client_address(request)
        )
        if not sent:
            raise Throttled(
                wait=case_code_resend_wait_seconds(case=case),
                detail=str(_("A code was sent a moment ago; try again later.")),
            )
        return Response(
            CaseSerializer(_case_or_404(reference)).data,
            status=status.HTTP_202_ACCEPTED,
        )


class CaseActionView(KeyedAPIView):
    required_scopes = {"POST": Scope.ACT_ON_CASES}

    @extend_schema(
        operation_id="case_action",
        parameters=[
            IDEMPOTENCY,
            OpenApiParameter(
                "name",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                enum=list(STAFF_ACTIONS),
                description="A staff action (cases/actions.py, the table the admin reads).",
            ),
        ],
        request=ActionSerializer,
        responses={200: CaseSerializer, **POST_ERRORS},
    )
    def post(self, request, reference: str, name: str):
        """Apply a staff action as the staff user the key is linked to.

        The same service as the admin: the user's groups, maker-checker and
        assignee rules decide; a refusal is a 403 or 409 and changes nothing.
        """
        if name not in STAFF_ACTIONS:
            raise NotFound(_("There is no such action."))
        actor = request.auth.staff_user
        if actor is None:
            raise PermissionDenied(_("This API key is not linked to a staff user."))
        case = _case_or_404(reference)
        self.audit_reference = reference
        serializer = ActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        review.case_transition(
            case_id=case.pk,
            name=name,
            actor=actor,
            note=serializer.validated_data["note"],
            client_ip=client_address(request),
        )
        return Response(CaseSerializer(_case_or_404(reference)).data)


class BindingView(KeyedAPIView):
    required_scopes = {"GET": Scope.READ_CASES}

    @extend_schema(
        operation_id="binding_check",
        parameters=[
            OpenApiParameter(
                "merchant_id",
                OpenApiTypes.STR,
                required=True,
                pattern=r"^\d{15}$",
                description="The merchant number (15 digits).",
            ),
        ],
        responses={200: BindingSerializer, **ERRORS},
    )
    def get(self, request, serial_number: str):
        """Tell whether the terminal is bound to the merchant, and nothing else.

        False alike for an unknown terminal, an unknown merchant, a terminal in
        stock and one bound to another merchant (as /terminals/status/).
        """
        form = BindingStatusForm(
            {
                "merchant_id": request.query_params.get("merchant_id", ""),
                "serial_number": serial_number,
            }
        )
        if not form.is_valid():
            raise ValidationError(
                {
                    field: [str(e) for e in errors]
                    for field, errors in form.errors.items()
                }
            )
        bound = binding_status_check(**form.cleaned_data)
        return Response(BindingSerializer({"bound": bound}).data)


class _SyncAnswer(serializers.Serializer):
    class _Counts(serializers.Serializer):
        created = serializers.IntegerField()
        updated = serializers.IntegerField()
        unchanged = serializers.IntegerField()

    class _Conflict(serializers.Serializer):
        serial_number = serializers.CharField()
        merchant_id = serializers.CharField()
        record_as_of = serializers.DateTimeField()
        local_changed_at = serializers.DateTimeField()
        detail = serializers.CharField()

    merchants = _Counts()
    terminals = _Counts()
    bindings = _Counts()
    transactions = _Counts()
    conflicts = _Conflict(many=True)


class RegistrySyncView(KeyedAPIView):
    required_scopes = {"POST": Scope.SYNC_REGISTRY}

    @extend_schema(
        operation_id="registry_sync",
        parameters=[IDEMPOTENCY],
        request={"application/json": OpenApiTypes.OBJECT},
        responses={200: _SyncAnswer, **POST_ERRORS},
    )
    def post(self, request):
        """Apply merchants, terminals, bindings and transactions from the core.

        The registry file format of ``import_registry`` plus ``as_of`` (the
        body's, or a terminal record's own). A record older than a binding
        change made here is not applied but listed in ``conflicts`` (and for
        staff in the admin); a bad record rejects the whole body.
        """
        try:
            result = registry_sync(
                data=request.data, sent_by=f"api:{request.auth.name}"
            )
        except RegistryImportError as error:
            raise BadRecord(
                str(error),
                record={
                    "section": error.section,
                    "index": error.index,
                    "field": error.field,
                    "reason": error.reason,
                },
            ) from None
        return Response(
            _SyncAnswer(
                {**result.imported.as_dict(), "conflicts": result.conflicts}
            ).data
        )


class DeviceReturnShipView(KeyedAPIView):
    """Record, for the merchant, that an unbound device was posted back.

    Scope ``cases:file``: the calling system acts for the merchant, as the
    merchant does on the tracking page (the same service, as the merchant).
    """

    required_scopes = {"POST": Scope.FILE_CASES}

    @extend_schema(
        operation_id="device_return_ship",
        parameters=[IDEMPOTENCY, _path_id("return_id")],
        request=ShipSerializer,
        responses={200: CaseDetailSerializer, **POST_ERRORS},
    )
    def post(self, request, reference: str, return_id: str):
        """Give the courier and tracking number of a device on its way back.

        A device not expected back (already shipped, received, reported lost)
        is a 409 and changes nothing.
        """
        case = _case_or_404(reference)
        self.audit_reference = reference
        pk = _pk(return_id)
        device_return = (
            DeviceReturn.objects.filter(pk=pk, case=case).first() if pk else None
        )
        if device_return is None:
            raise NotFound(_("This case has no such device return."))
        serializer = ShipSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        returns.device_return_ship(
            return_id=device_return.pk,
            courier=serializer.validated_data["courier"],
            tracking_number=serializer.validated_data["tracking_number"],
            actor="merchant",
            client_ip=client_address(request),
        )
        return Response(_case_detail(_case_detail_or_404(reference)))


class _FinanceFilters(serializers.Serializer):
    state = serializers.ChoiceField(choices=FinanceItem.State.choices, required=False)
    overdue = serializers.BooleanField(required=False, default=False)
    case = serializers.CharField(max_length=40, required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1)


class FinanceItemListView(KeyedAPIView):
    required_scopes = {"GET": Scope.READ_FINANCE}

    @extend_schema(
        operation_id="finance_item_list",
        parameters=[
            OpenApiParameter("state", OpenApiTypes.STR, enum=FinanceItem.State.values),
            OpenApiParameter(
                "overdue",
                OpenApiTypes.BOOL,
                description="Refunds unpaid FINANCE_REFUND_OVERDUE_DAYS after due.",
            ),
            OpenApiParameter("case", OpenApiTypes.STR, description="case reference"),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: FinanceItemPageSerializer, **ERRORS},
    )
    def get(self, request):
        """List finance items, newest first, filtered as in the admin."""
        params = _FinanceFilters(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        queryset = (
            finance.finance_items_overdue()
            if data.get("overdue")
            else FinanceItem.objects.all()
        )
        queryset = queryset.select_related("case")
        if data.get("state"):
            queryset = queryset.filter(state=data["state"])
        if data.get("case"):
            queryset = queryset.filter(case__reference=data["case"])
        paginator = FinanceItemCursorPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(
            FinanceItemSerializer(page, many=True).data
        )


def _finance_item_or_404(item_id: str) -> FinanceItem:
    pk = _pk(item_id)
    item = (
        FinanceItem.objects.select_related("case").filter(pk=pk).first() if pk else None
    )
    if item is None:
        raise NotFound(_("There is no such finance item."))
    return item


def _finance_actor(request):
    actor = request.auth.staff_user
    if actor is None:
        raise PermissionDenied(_("This API key is not linked to a staff user."))
    return actor


class FinanceItemPayView(KeyedAPIView):
    required_scopes = {"POST": Scope.ACT_ON_FINANCE}

    @extend_schema(
        operation_id="finance_item_pay",
        parameters=[IDEMPOTENCY, _path_id("item_id")],
        request=PaySerializer,
        responses={200: FinanceItemSerializer, **POST_ERRORS},
    )
    def post(self, request, item_id: str):
        """Mark the item paid, as the staff user the key is linked to.

        The same service as the admin: only the Finance group pays; above
        FINANCE_DUAL_CONTROL_ABOVE the payment is only recorded (``recorded``)
        and a different Finance user confirms it in the admin (maker-checker).
        """
        actor = _finance_actor(request)
        item = _finance_item_or_404(item_id)
        self.audit_reference = item.case.reference or ""
        serializer = PaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = finance.finance_item_pay(
            item_id=item.pk,
            actor=actor,
            reference=serializer.validated_data["payment_reference"],
        )
        return Response(FinanceItemSerializer(item).data)


class FinanceItemConfirmView(KeyedAPIView):
    required_scopes = {"POST": Scope.ACT_ON_FINANCE}

    @extend_schema(
        operation_id="finance_item_confirm",
        parameters=[IDEMPOTENCY, _path_id("item_id")],
        request=None,
        responses={200: FinanceItemSerializer, **POST_ERRORS},
    )
    def post(self, request, item_id: str):
        """Confirm a payment another Finance user recorded (maker-checker).

        As the staff user the key is linked to; the user who recorded the
        payment is refused (403), as in the admin.
        """
        actor = _finance_actor(request)
        item = _finance_item_or_404(item_id)
        self.audit_reference = item.case.reference or ""
        item = finance.finance_item_confirm(item_id=item.pk, actor=actor)
        return Response(FinanceItemSerializer(item).data)
