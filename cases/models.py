"""Unbinding cases: the case and its state machine, documents, audit events,
the notification outbox and the execution steps.

State rules live here as django-fsm transitions; the use cases that save,
record events and dispatch side effects live in ``cases.services``.
"""

import functools
import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy
from django_fsm import FSMField, transition

from cases.actions import staff_action_permission
from cases.tokens import hash_secret, tracking_token_for_case
from terminals.models import Merchant, SettlementBatch, Terminal


class CaseState(models.TextChoices):
    # Filed; waiting for the merchant to enter the code e-mailed to the contact on file.
    PENDING_VERIFICATION = (
        "pending_verification",
        _("Waiting for identity verification"),
    )
    # Identity verified; in the review queue, not yet taken by a reviewer.
    SUBMITTED = "submitted", _("Submitted")
    # A reviewer is checking the documents.
    IN_REVIEW = "in_review", _("In review")
    # The reviewer asked the merchant for more information or documents.
    INFO_REQUESTED = "info_requested", _("Information requested")
    # Recommended by a reviewer; waiting for an approver (a different person).
    AWAITING_APPROVAL = "awaiting_approval", _("Awaiting approval")
    # Approved; queued for execution in the background.
    APPROVED = "approved", _("Approved")
    # A worker is carrying out the unbinding steps.
    EXECUTING = "executing", _("Executing")
    # Every step done; the terminals are unbound.
    COMPLETED = "completed", _("Completed")
    # A step failed; operations can retry after fixing the cause.
    FAILED = "failed", _("Failed")
    # Refused by staff, with a reason.
    REJECTED = "rejected", _("Rejected")
    # Withdrawn by the merchant before approval.
    WITHDRAWN = "withdrawn", _("Withdrawn")
    # The identity code was never entered in time.
    EXPIRED = "expired", _("Expired")


# States in which the merchant can still withdraw.
WITHDRAWABLE_STATES = [
    CaseState.PENDING_VERIFICATION,
    CaseState.SUBMITTED,
    CaseState.IN_REVIEW,
    CaseState.INFO_REQUESTED,
    CaseState.AWAITING_APPROVAL,
]
# States after which nothing more happens to the case.
CLOSED_STATES = [
    CaseState.COMPLETED,
    CaseState.REJECTED,
    CaseState.WITHDRAWN,
    CaseState.EXPIRED,
]
# States in which a case waits on staff: its review is due by
# ``review_due_at`` and it is overdue after that (the queue's filter, its
# partial index and the dashboard read this one list).
WAITING_ON_STAFF_STATES = [
    CaseState.SUBMITTED,
    CaseState.IN_REVIEW,
    CaseState.AWAITING_APPROVAL,
]
# States in which a case can be (re)assigned to a reviewer.
ASSIGNABLE_STATES = [
    CaseState.SUBMITTED,
    CaseState.IN_REVIEW,
    CaseState.INFO_REQUESTED,
    CaseState.AWAITING_APPROVAL,
]


class CaseChannel(models.TextChoices):
    """How a request reached us."""

    WEB = "web", _("Web (the merchant)")
    PHONE = "phone", _("Phone")
    BRANCH = "branch", _("Branch")
    AGENT = "agent", _("Agent (代理商)")
    API = "api", _("API")


class Reason(models.TextChoices):
    BUSINESS_CHANGE = "business_change", _("Business change (业务调整)")
    DEVICE_REPLACEMENT = "device_replacement", _("Device replacement (设备更换)")
    LEGAL_COMPLIANCE = "legal_compliance", _("Legal compliance (法律合规)")
    DATA_MIGRATION = "data_migration", _("Data migration (数据迁移)")
    CUSTOMER_REQUEST = "customer_request", _("Customer request (客户要求)")
    OTHER = "other", _("Other")


class CaseQuerySet(models.QuerySet):
    def open(self) -> "CaseQuerySet":
        """Cases that are not closed (completed, rejected, withdrawn, expired)."""
        return self.exclude(state__in=CLOSED_STATES)

    def overdue(self, *, now=None) -> "CaseQuerySet":
        """Cases waiting on staff past their review due date."""
        now = now or timezone.now()
        return self.filter(state__in=WAITING_ON_STAFF_STATES, review_due_at__lt=now)

    def by_token(self, token: str) -> "CaseQuerySet":
        return self.filter(token_hash=hash_secret(token or ""))


class Case(models.Model):
    """A merchant's request to unbind one or more POS terminals."""

    reference = models.CharField(
        _("reference"), max_length=20, unique=True, null=True, blank=True
    )
    token_hash = models.CharField(_("tracking token hash"), max_length=64, unique=True)
    state = FSMField(
        _("state"),
        max_length=32,
        choices=CaseState.choices,
        default=CaseState.PENDING_VERIFICATION,
        # Not ``protected``: that breaks refresh_from_db. The state changes only
        # through the transitions below, called by cases.services; admin shows it read-only.
    )

    merchant = models.ForeignKey(
        Merchant,
        verbose_name=_("merchant"),
        on_delete=models.PROTECT,
        related_name="cases",
    )
    # What the applicant typed, kept as filed.
    uscc = models.CharField(_("unified social credit code"), max_length=18)
    legal_rep_name = models.CharField(_("legal representative"), max_length=100)
    applicant_name = models.CharField(_("applicant"), max_length=100)
    applicant_is_legal_rep = models.BooleanField(
        _("applicant is the legal representative"), default=True
    )
    applicant_phone = models.CharField(_("applicant mobile"), max_length=11)
    applicant_email = models.EmailField(_("applicant e-mail"))
    reason = models.CharField(_("reason"), max_length=32, choices=Reason.choices)
    reason_detail = models.TextField(_("reason in detail"), blank=True)
    close_account = models.BooleanField(_("close the merchant account"), default=False)
    replacement_terminal = models.ForeignKey(
        Terminal,
        verbose_name=_("replacement device"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="replacement_cases",
    )
    language = models.CharField(
        _("language"), max_length=10, default="zh-hans", choices=settings.LANGUAGES
    )
    client_ip = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    # Salt of the tracking token: random, or a keyed hash of the form's
    # submission key (salt_for_submission_key) so that a repeated POST of the
    # same form finds this case instead of making another.
    token_salt = models.CharField(_("token salt"), max_length=64, unique=True)

    # Identity verification (the code itself is never stored).
    code_hash = models.CharField(_("code hash"), max_length=64, blank=True)
    code_expires_at = models.DateTimeField(_("code expires at"), null=True, blank=True)
    code_attempts = models.PositiveSmallIntegerField(_("code attempts"), default=0)
    code_sent_at = models.DateTimeField(_("code sent at"), null=True, blank=True)

    # Review.
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("assigned to"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_cases",
    )
    recommended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("recommended by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="recommended_cases",
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("approved by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="approved_cases",
    )
    fees_statement = models.TextField(
        _("fees stated to the merchant"),
        blank=True,
        help_text=_("Any fees the unbinding will cost (可能产生的费用)."),
    )
    # The amount of those fees, owed by the merchant: a line of the final
    # statement (cases.statements); empty until staff state one.
    fees_amount = models.DecimalField(
        _("fees amount (CNY)"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
    )
    decision_note = models.TextField(_("decision note"), blank=True)

    # Execution.
    settlement_batch = models.ForeignKey(
        SettlementBatch,
        verbose_name=_("settlement batch"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="cases",
    )
    settlement_total = models.DecimalField(
        _("settlement total"), max_digits=14, decimal_places=2, null=True, blank=True
    )
    failure_step = models.CharField(_("failed step"), max_length=32, blank=True)
    failure_reason = models.TextField(_("failure reason"), blank=True)

    # Timeline.
    created_at = models.DateTimeField(_("filed at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    submitted_at = models.DateTimeField(_("submitted at"), null=True, blank=True)
    review_due_at = models.DateTimeField(_("review due"), null=True, blank=True)
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    info_requested_at = models.DateTimeField(
        _("information requested at"), null=True, blank=True
    )
    info_reminded_at = models.DateTimeField(
        _("reminder sent at"), null=True, blank=True
    )
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)
    execution_queued_at = models.DateTimeField(
        _("execution queued at"), null=True, blank=True
    )
    # How the request reached us, and the staff member who filed it for the
    # merchant (phone, branch, agent); None for the merchant's own filing.
    channel = models.CharField(
        _("channel"), max_length=16, choices=CaseChannel.choices, default="web"
    )
    filed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("filed by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    objects = CaseQuerySet.as_manager()

    class Meta:
        verbose_name = _("case")
        verbose_name_plural = _("cases")
        ordering = ["review_due_at", "pk"]
        indexes = [
            models.Index(fields=["state", "review_due_at"], name="case_state_due"),
            models.Index(fields=["review_due_at", "id"], name="case_due_id"),
            models.Index(fields=["assigned_to", "state"], name="case_assigned_state"),
            models.Index(fields=["reason", "review_due_at"], name="case_reason_due"),
            models.Index(
                fields=["merchant", "created_at"], name="case_merchant_created"
            ),
            models.Index(fields=["closed_at"], name="case_closed_at"),
            # The queue's search by merchant (number or name): the merchants'
            # cases in due-date order from the index alone, no heap visit.
            models.Index(
                fields=["merchant", "review_due_at", "id"], name="case_merchant_due"
            ),
            # The queue's channel filter (its count reads this index alone).
            models.Index(fields=["channel", "review_due_at"], name="case_channel_due"),
            # The queue's filters, each in due-date order (cases/admin/queue.py).
            models.Index(
                fields=["review_due_at", "id"],
                condition=Q(assigned_to__isnull=True),
                name="case_unassigned_due",
            ),
            models.Index(
                fields=["review_due_at", "id"],
                condition=Q(close_account=True),
                name="case_close_account_due",
            ),
            models.Index(
                fields=["review_due_at", "id"],
                condition=Q(replacement_terminal__isnull=False),
                name="case_replacement_due",
            ),
            # The overdue filter (CaseQuerySet.overdue, same states in the same
            # order): without it the due-date walk passes every closed case.
            models.Index(
                fields=["review_due_at", "id"],
                condition=Q(state__in=WAITING_ON_STAFF_STATES),
                name="case_waiting_due",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(fees_amount__isnull=True) | Q(fees_amount__gte=0),
                name="case_fees_amount_not_negative",
            ),
        ]
        permissions = [
            ("review_case", _("Can review cases")),
            ("approve_case", _("Can approve cases")),
            ("retry_case", _("Can retry failed cases")),
        ]

    def __str__(self) -> str:
        return self.reference or f"#{self.pk}"

    @property
    def tracking_token(self) -> str:
        return tracking_token_for_case(
            token_salt=self.token_salt, token_hash_stored=self.token_hash
        )

    @property
    def settlement_reference(self) -> str:
        """The reference of the case's final settlement batch: the same on every run."""
        return f"{self.reference or f'CASE{self.pk}'}-FINAL"

    def get_tracking_path(self) -> str:
        return reverse("cases:detail", kwargs={"token": self.tracking_token})

    # --- predicates -----------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state not in CLOSED_STATES

    @property
    def is_withdrawable(self) -> bool:
        return self.state in WITHDRAWABLE_STATES

    @property
    def is_overdue(self) -> bool:
        return (
            self.state in WAITING_ON_STAFF_STATES
            and self.review_due_at is not None
            and self.review_due_at < timezone.now()
        )

    def required_document_kinds(self) -> list[str]:
        """Return the document kinds DOMAIN.md requires for this case's options."""
        return required_document_kinds(
            close_account=self.close_account,
            replacement=self.replacement_terminal_id is not None,
            applicant_is_legal_rep=self.applicant_is_legal_rep,
            merchant_kind=self.merchant.kind,
        )

    def missing_for_recommendation(self) -> list[str]:
        """Return, in words, what keeps the case from being recommended (empty if nothing).

        One line per document still to review, then one per required kind
        that has no document accepted or awaiting review.
        """
        documents = [
            d for d in self.documents.all() if d.kind != Document.Kind.DATA_EXPORT
        ]
        accepted = {
            d.kind
            for d in documents
            if d.review_status == Document.ReviewStatus.ACCEPTED
        }
        pending = [
            d for d in documents if d.review_status == Document.ReviewStatus.PENDING
        ]
        pending_kinds = {d.kind for d in pending}
        problems = [
            str(
                _("%(kind)s: “%(name)s” is not reviewed yet")
                % {"kind": d.get_kind_display(), "name": d.original_name}
            )
            for d in pending
        ]
        problems += [
            str(_("%(kind)s: no accepted document") % {"kind": Document.Kind(k).label})
            for k in self.required_document_kinds()
            if k not in accepted and k not in pending_kinds
        ]
        return problems

    def required_documents_accepted(self) -> bool:
        """Tell whether every required kind has an accepted document and none is pending."""
        return not self.missing_for_recommendation()

    # --- transitions (rules only; see cases.services for the use cases) --------

    @transition(
        field=state, source=CaseState.PENDING_VERIFICATION, target=CaseState.SUBMITTED
    )
    def verify(self) -> None:
        """The merchant entered the code sent to the contact on file."""

    @transition(
        field=state, source=CaseState.PENDING_VERIFICATION, target=CaseState.EXPIRED
    )
    def expire(self) -> None:
        """The code was never entered in time."""

    @transition(
        field=state,
        source=CaseState.SUBMITTED,
        target=CaseState.IN_REVIEW,
        permission=staff_action_permission("start_review"),
    )
    def start_review(self) -> None:
        """A reviewer takes the case."""

    @transition(
        field=state,
        source=CaseState.IN_REVIEW,
        target=CaseState.INFO_REQUESTED,
        permission=staff_action_permission("request_info"),
    )
    def request_info(self) -> None:
        """Ask the merchant for more information or documents."""

    @transition(
        field=state,
        source=CaseState.IN_REVIEW,
        target=CaseState.SUBMITTED,
        permission=staff_action_permission("release"),
    )
    def release(self) -> None:
        """The reviewer puts the case back in the queue, unassigned."""

    @transition(
        field=state, source=CaseState.INFO_REQUESTED, target=CaseState.SUBMITTED
    )
    def respond(self) -> None:
        """The merchant answered; the case goes back to the queue."""

    @transition(
        field=state,
        source=CaseState.IN_REVIEW,
        target=CaseState.AWAITING_APPROVAL,
        conditions=[required_documents_accepted],
        permission=staff_action_permission("recommend"),
    )
    def recommend(self) -> None:
        """Recommend approval; every required document must be accepted."""

    @transition(
        field=state,
        source=CaseState.AWAITING_APPROVAL,
        target=CaseState.APPROVED,
        permission=staff_action_permission("approve"),
    )
    def approve(self) -> None:
        """Second pair of eyes: an approver who did not recommend the case."""

    @transition(
        field=state,
        source=CaseState.AWAITING_APPROVAL,
        target=CaseState.IN_REVIEW,
        permission=staff_action_permission("send_back"),
    )
    def send_back(self) -> None:
        """The approver returns the case to review."""

    @transition(
        field=state,
        source=[CaseState.IN_REVIEW, CaseState.AWAITING_APPROVAL],
        target=CaseState.REJECTED,
        permission=staff_action_permission("reject"),
    )
    def reject(self) -> None:
        """Refuse the request, with a reason shown to the merchant."""

    @transition(field=state, source=WITHDRAWABLE_STATES, target=CaseState.WITHDRAWN)
    def withdraw(self) -> None:
        """The merchant withdraws before approval."""

    @transition(field=state, source=CaseState.APPROVED, target=CaseState.EXECUTING)
    def start_execution(self) -> None:
        """A worker starts carrying out the steps."""

    @transition(field=state, source=CaseState.EXECUTING, target=CaseState.COMPLETED)
    def complete(self) -> None:
        """Every step is done."""

    @transition(
        field=state,
        source=[CaseState.APPROVED, CaseState.EXECUTING],
        target=CaseState.FAILED,
    )
    def fail(self) -> None:
        """A step failed permanently."""

    @transition(
        field=state,
        source=CaseState.FAILED,
        target=CaseState.APPROVED,
        permission=staff_action_permission("retry"),
    )
    def retry(self) -> None:
        """Operations fixed the cause; execution resumes from the failed step."""

    @transition(
        field=state,
        source=CaseState.FAILED,
        target=CaseState.REJECTED,
        permission=staff_action_permission("abandon"),
    )
    def abandon(self) -> None:
        """Operations gives up on a failed case: closed, its terminals freed.

        The contract's list of states is fixed, so an abandoned case ends
        ``rejected`` (the request will not be carried out, by staff decision,
        with a reason); the ``abandon`` transition in its timeline tells it
        apart from a rejection in review.
        """


def required_document_kinds(
    *,
    close_account: bool,
    replacement: bool,
    applicant_is_legal_rep: bool,
    merchant_kind: str = Merchant.Kind.ENTERPRISE,
) -> list[str]:
    """Return the document kinds a request needs for the chosen options (DOMAIN.md).

    ``merchant_kind`` is the registry's kind, never what a form claims: a
    micro-merchant (小微商户) has no business licence, only the owner's ID.
    """
    kinds = []
    if merchant_kind != Merchant.Kind.MICRO:
        kinds.append(Document.Kind.BUSINESS_LICENCE)
    kinds += [Document.Kind.LEGAL_REP_ID, Document.Kind.DEVICE_EVIDENCE]
    if close_account:
        kinds += [Document.Kind.CONTRACT, Document.Kind.BANK_STATEMENT]
    if replacement:
        kinds.append(Document.Kind.REPLACEMENT_DOCUMENTS)
    if not applicant_is_legal_rep:
        kinds.append(Document.Kind.AUTHORISATION_LETTER)
    return kinds


class CaseTerminal(models.Model):
    """A terminal named in a case. ``is_open`` mirrors whether the case is open,
    so that the database refuses a second open case for the same terminal."""

    class ExecutionStatus(models.TextChoices):
        # Not unbound yet (or refused before and retried since).
        PENDING = "pending", _("Pending")
        # Its binding ended at the core and in the registry; never sent again.
        DONE = "done", _("Unbound")
        # The core or the registry refused it; Operations' retry sends it again.
        FAILED = "failed", _("Refused")

    case = models.ForeignKey(
        Case,
        verbose_name=_("case"),
        on_delete=models.CASCADE,
        related_name="case_terminals",
    )
    terminal = models.ForeignKey(
        Terminal,
        verbose_name=_("terminal"),
        on_delete=models.PROTECT,
        related_name="case_links",
    )
    is_open = models.BooleanField(_("case open"), default=True)
    # Per-terminal progress of the execution (chains run in batches of
    # EXECUTION_BATCH_SIZE): one column here rather than a row per terminal and
    # step, so a page counts a case's progress with one aggregate over the
    # case's own rows, whatever its number of terminals.
    execution_status = models.CharField(
        _("execution"),
        max_length=16,
        choices=ExecutionStatus.choices,
        default=ExecutionStatus.PENDING,
    )
    execution_error = models.TextField(_("execution error"), blank=True)
    executed_at = models.DateTimeField(_("unbound at"), null=True, blank=True)

    class Meta:
        verbose_name = _("terminal of the case")
        verbose_name_plural = _("terminals of the case")
        constraints = [
            models.UniqueConstraint(
                fields=["terminal"],
                condition=Q(is_open=True),
                name="one_open_case_per_terminal",
            ),
            models.UniqueConstraint(
                fields=["case", "terminal"], name="case_terminal_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.case} · {self.terminal}"


def document_upload_to(instance: "Document", filename: str) -> str:
    """Store under a random name; the original name is display text only."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in {".pdf", ".jpg", ".jpeg", ".png", ".csv"}:
        suffix = ""
    now = timezone.now()
    return f"cases/{now:%Y/%m}/{uuid.uuid4().hex}{suffix}"


class Document(models.Model):
    class Kind(models.TextChoices):
        BUSINESS_LICENCE = "business_licence", _("Business licence copy (营业执照副本)")
        LEGAL_REP_ID = "legal_rep_id", _("Legal representative's ID (法人身份证明)")
        DEVICE_EVIDENCE = (
            "device_evidence",
            _("Device evidence (原POS机设备及相关资料)"),
        )
        CONTRACT = "contract", _("Contract or service agreement (合同或协议)")
        BANK_STATEMENT = (
            "bank_statement",
            _("Bank statement or account information (银行对账单)"),
        )
        REPLACEMENT_DOCUMENTS = (
            "replacement_documents",
            _("New device documents (新POS机设备及相关资料)"),
        )
        AUTHORISATION_LETTER = (
            "authorisation_letter",
            _("Authorisation letter (授权委托书)"),
        )
        OTHER = "other", _("Other documents (其他相关文件)")
        # Produced by the execution: the terminals' transaction history.
        DATA_EXPORT = "data_export", _("Transaction history export")
        # A lost or stolen device is not returned: the police report replaces it.
        POLICE_REPORT = "police_report", _("Police report (报案证明)")
        # Staff's evidence of an identity check done offline (phone, branch).
        IDENTITY_CHECK = "identity_check", _("Offline identity check evidence")

    class ReviewStatus(models.TextChoices):
        PENDING = "pending", _("Not reviewed")
        ACCEPTED = "accepted", _("Accepted")
        REJECTED = "rejected", _("Rejected")

    case = models.ForeignKey(
        Case, verbose_name=_("case"), on_delete=models.PROTECT, related_name="documents"
    )
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    file = models.FileField(
        _("file"), upload_to=document_upload_to, max_length=255, blank=True
    )
    original_name = models.CharField(_("original name"), max_length=255)
    size = models.PositiveBigIntegerField(_("size (bytes)"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    content_type = models.CharField(_("content type"), max_length=100)
    review_status = models.CharField(
        _("review"),
        max_length=16,
        choices=ReviewStatus.choices,
        default=ReviewStatus.PENDING,
    )
    review_note = models.TextField(_("review note"), blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("reviewed by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(_("reviewed at"), null=True, blank=True)
    uploaded_at = models.DateTimeField(_("uploaded at"), auto_now_add=True)
    # Set when the retention period ended and the stored file was deleted.
    purged_at = models.DateTimeField(_("file purged at"), null=True, blank=True)

    class Meta:
        verbose_name = _("document")
        verbose_name_plural = _("documents")
        ordering = ["case", "kind", "pk"]
        indexes = [models.Index(fields=["case", "kind"], name="document_case_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.original_name}"

    @property
    def is_image(self) -> bool:
        return self.content_type in {"image/jpeg", "image/png"}


class CaseEvent(models.Model):
    """One line of a case's audit trail. Only ever inserted (see cases.events)."""

    class Type(models.TextChoices):
        FILED = "filed", _("Request filed")
        CODE_SENT = "code_sent", _("Verification code sent")
        CODE_FAILED = "code_failed", _("Wrong verification code")
        TRANSITION = "transition", _("State changed")
        DOCUMENT_ADDED = "document_added", _("Document added")
        DOCUMENT_REVIEWED = "document_reviewed", _("Document reviewed")
        MESSAGE = "message", _("Message")
        ASSIGNED = "assigned", _("Assigned")
        STEP = "step", _("Execution step")
        NOTIFICATION = "notification", _("Notification")
        FEES_STATED = "fees_stated", _("Fees stated")
        DEVICE_RETURN = "device_return", _("Device return")
        DEVICE_RECEIVED = "device_received", _("Device received")
        DOCUMENTS_PURGED = "documents_purged", _("Documents purged")
        LEGAL_HOLD = "legal_hold", _("Legal hold")
        IDENTITY_CHECKED = "identity_checked", _("Identity checked offline")
        STATEMENT_FROZEN = "statement_frozen", _("Final statement frozen")
        FINANCE = "finance", _("Finance item changed")

    class Actor(models.TextChoices):
        MERCHANT = "merchant", _("Merchant")
        STAFF = "staff", _("Staff")
        SYSTEM = "system", _("System")

    case = models.ForeignKey(
        Case, verbose_name=_("case"), on_delete=models.PROTECT, related_name="events"
    )
    type = models.CharField(_("type"), max_length=32, choices=Type.choices)
    actor_kind = models.CharField(_("by"), max_length=16, choices=Actor.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("staff user"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Snapshot of who acted, kept if the user is later deleted.
    actor_label = models.CharField(_("actor"), max_length=150, blank=True)
    from_state = models.CharField(_("from"), max_length=32, blank=True)
    to_state = models.CharField(_("to"), max_length=32, blank=True)
    transition = models.CharField(_("transition"), max_length=32, blank=True)
    note = models.TextField(_("note"), blank=True)
    payload = models.JSONField(_("details"), default=dict, blank=True)
    visible_to_merchant = models.BooleanField(
        _("visible to the merchant"), default=False
    )
    client_ip = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    created_at = models.DateTimeField(_("at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("case event")
        verbose_name_plural = _("case events")
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(fields=["case", "created_at"], name="event_case_created")
        ]

    def __str__(self) -> str:
        return f"{self.case} {self.get_type_display()} {self.created_at:%Y-%m-%d %H:%M}"


class Notification(models.Model):
    """An e-mail in the outbox: written with its cause, delivered after commit."""

    class Kind(models.TextChoices):
        VERIFICATION_CODE = "verification_code", _("Verification code")
        RECEIPT = "receipt", _("Receipt")
        INFO_REQUESTED = "info_requested", _("Information requested")
        INFO_REMINDER = "info_reminder", _("Information reminder")
        REJECTED = "rejected", _("Rejected")
        WITHDRAWN = "withdrawn", _("Withdrawn")
        COMPLETED = "completed", _("Completed")
        DEPARTMENT_COMPLETED = "department_completed", _("Completed (department)")
        EXECUTION_FAILED = "execution_failed", _("Execution failed")
        ABANDONED = "abandoned", _("Abandoned")
        OVERDUE_DIGEST = "overdue_digest", _("Overdue digest")
        DEVICE_RETURN_REMINDER = "device_return_reminder", _("Device return reminder")
        SIGN_IN_CODE = "sign_in_code", _("Merchant sign-in code")
        MONEY_MOVED = "money_moved", _("Money paid or collected")

    class Channel(models.TextChoices):
        EMAIL = "email", _("E-mail")
        SMS = "sms", _("SMS")

    class Status(models.TextChoices):
        PENDING = "pending", pgettext_lazy("notification status", "Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", pgettext_lazy("notification status", "Failed")
        CANCELLED = "cancelled", _("Cancelled")

    case = models.ForeignKey(
        Case,
        verbose_name=_("case"),
        on_delete=models.PROTECT,
        related_name="notifications",
        null=True,
        blank=True,
    )
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    # An SMS row's recipients are mobile numbers (the merchant's, on file).
    channel = models.CharField(
        _("channel"), max_length=8, choices=Channel.choices, default=Channel.EMAIL
    )
    recipients = models.JSONField(_("recipients"), default=list)
    language = models.CharField(_("language"), max_length=10, default="zh-hans")
    # Template context. A verification code is removed once the mail is sent.
    context = models.JSONField(_("context"), default=dict, blank=True)
    # Prevents the same notice being queued twice for the same cause.
    dedupe_key = models.CharField(_("deduplication key"), max_length=120, unique=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    queued_at = models.DateTimeField(_("queued at"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["queued_at"],
                condition=Q(status="pending"),
                name="notification_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {', '.join(self.recipients)}"


class ExecutionStep(models.Model):
    """Progress of one execution step of a case: done steps are never repeated."""

    class Step(models.TextChoices):
        VERIFY_BINDINGS = "verify_bindings", _("Verify the bindings")
        SETTLE = "settle", _("Settle unsettled transactions")
        EXPORT = "export", _("Export the transaction history")
        UNBIND = "unbind", _("End the bindings")
        DEACTIVATE_SIM = "deactivate_sim", _("Deactivate the SIM cards")
        BIND_REPLACEMENT = "bind_replacement", _("Bind the replacement device")
        CLOSE_ACCOUNT = "close_account", _("Close the merchant account")
        NOTIFY = "notify", _("Queue the completion notices")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        # The provider's core answered "pending": its callback or a poll ends it.
        WAITING = "waiting", _("Waiting for the core")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Not needed")

    case = models.ForeignKey(
        Case, verbose_name=_("case"), on_delete=models.PROTECT, related_name="steps"
    )
    step = models.CharField(_("step"), max_length=32, choices=Step.choices)
    position = models.PositiveSmallIntegerField(_("position"))
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    result = models.JSONField(_("result"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # Sent to the provider's core with the step (see cases.connectors), and the
    # core's own reference of the operation, for reconciliation.
    idempotency_key = models.CharField(
        _("idempotency key"), max_length=100, blank=True, db_index=True
    )
    remote_reference = models.CharField(_("core reference"), max_length=100, blank=True)

    class Meta:
        verbose_name = _("execution step")
        verbose_name_plural = _("execution steps")
        ordering = ["case", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "step"], name="execution_step_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.case} {self.get_step_display()}: {self.get_status_display()}"


class DeviceReturnState(models.TextChoices):
    # Unbound by a case; the merchant is to send the device back.
    AWAITING_RETURN = "awaiting_return", _("Awaiting return")
    # The merchant (or staff) entered the courier and tracking number.
    SHIPPED = "shipped", _("On its way back")
    # Operations received the parcel; the device is to be inspected.
    RECEIVED = "received", _("Received")
    # Inspected; to be refurbished into stock or scrapped.
    INSPECTED = "inspected", _("Inspected")
    # Refurbished and back in the provider's stock.
    IN_STOCK = "in_stock", _("Back in stock")
    # Not fit for use; scrapped.
    SCRAPPED = "scrapped", _("Scrapped")
    # Lost or stolen: a police report replaces the device.
    LOST = "lost", _("Lost or stolen")


# Returns that still wait on the merchant (the reminders and the overdue queue).
DEVICE_RETURN_OPEN_STATES = [DeviceReturnState.AWAITING_RETURN]
# Nothing more happens to these returns.
DEVICE_RETURN_FINAL_STATES = [
    DeviceReturnState.IN_STOCK,
    DeviceReturnState.SCRAPPED,
    DeviceReturnState.LOST,
]


class DeviceReturnQuerySet(models.QuerySet):
    def overdue(self, *, now) -> "DeviceReturnQuerySet":
        """Devices that should be back by ``now`` and are not on their way."""
        return self.filter(state__in=DEVICE_RETURN_OPEN_STATES, due_at__lt=now)

    def due_for_reminder(self, *, now, every) -> "DeviceReturnQuerySet":
        """Overdue devices whose merchant was not reminded in the last ``every``."""
        return self.overdue(now=now).filter(
            Q(reminded_at__isnull=True) | Q(reminded_at__lte=now - every)
        )


class DeviceReturn(models.Model):
    """The way back of one device unbound by one case (押金 waits for it).

    Kept in the cases app, not on ``Terminal``: a device can come back more
    than once in its life (one row per case that unbound it), each return is
    audited on the case that unbound it, and it holds that case's police
    report document.
    """

    class Outcome(models.TextChoices):
        REFURBISHED = "refurbished", _("Refurbished into stock")
        SCRAPPED = "scrapped", _("Scrapped")

    terminal = models.ForeignKey(
        Terminal,
        verbose_name=_("terminal"),
        on_delete=models.PROTECT,
        related_name="returns",
    )
    case = models.ForeignKey(
        Case,
        verbose_name=_("case"),
        on_delete=models.PROTECT,
        related_name="device_returns",
    )
    state = FSMField(
        _("return state"),
        max_length=32,
        choices=DeviceReturnState.choices,
        default=DeviceReturnState.AWAITING_RETURN,
        protected=False,
    )
    due_at = models.DateTimeField(_("due back by"))
    courier = models.CharField(_("courier"), max_length=60, blank=True)
    tracking_number = models.CharField(_("tracking number"), max_length=40, blank=True)
    shipped_at = models.DateTimeField(_("shipped at"), null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), null=True, blank=True)
    inspected_at = models.DateTimeField(_("inspected at"), null=True, blank=True)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=Outcome.choices, blank=True
    )
    inspection_note = models.TextField(_("inspection note"), blank=True)
    police_report = models.ForeignKey(
        Document,
        verbose_name=_("police report"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    lost_reported_at = models.DateTimeField(
        _("reported lost at"), null=True, blank=True
    )
    # The last reminder sent to the merchant (one per DEVICE_RETURN_REMINDER_EVERY).
    reminded_at = models.DateTimeField(_("last reminded at"), null=True, blank=True)
    reminder_count = models.PositiveSmallIntegerField(_("reminders sent"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = DeviceReturnQuerySet.as_manager()

    class Meta:
        verbose_name = _("device return")
        verbose_name_plural = _("device returns")
        ordering = ["due_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "terminal"], name="device_return_once_per_case"
            ),
        ]
        indexes = [
            models.Index(
                fields=["due_at"],
                condition=Q(state="awaiting_return"),
                name="device_return_awaiting",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.terminal.serial_number} ({self.get_state_display()})"

    def is_overdue(self, now=None) -> bool:
        """Tell whether the device should be back by now and is not on its way."""
        now = now or timezone.now()
        return self.state in DEVICE_RETURN_OPEN_STATES and self.due_at < now

    @transition(
        field=state,
        source=DeviceReturnState.AWAITING_RETURN,
        target=DeviceReturnState.SHIPPED,
    )
    def ship(self) -> None:
        """The device is on its way back (courier and tracking number given)."""

    @transition(
        field=state,
        source=[DeviceReturnState.AWAITING_RETURN, DeviceReturnState.SHIPPED],
        target=DeviceReturnState.RECEIVED,
    )
    def receive(self) -> None:
        """Operations has the device (collected, or the parcel arrived)."""

    @transition(
        field=state,
        source=DeviceReturnState.RECEIVED,
        target=DeviceReturnState.INSPECTED,
    )
    def inspect(self) -> None:
        """Operations inspected the device."""

    @transition(
        field=state,
        source=DeviceReturnState.INSPECTED,
        target=DeviceReturnState.IN_STOCK,
    )
    def restock(self) -> None:
        """The device was refurbished into stock."""

    @transition(
        field=state,
        source=DeviceReturnState.INSPECTED,
        target=DeviceReturnState.SCRAPPED,
    )
    def scrap(self) -> None:
        """The device is not fit for use."""

    @transition(
        field=state,
        source=[DeviceReturnState.AWAITING_RETURN, DeviceReturnState.SHIPPED],
        target=DeviceReturnState.LOST,
    )
    def report_lost(self) -> None:
        """Lost or stolen: a police report replaces the device."""


class LegalHoldQuerySet(models.QuerySet):
    def active(self) -> "LegalHoldQuerySet":
        """Holds not yet released."""
        return self.filter(released_at__isnull=True)


class LegalHold(models.Model):
    """A legal hold on a merchant or a case: while active, nothing of it is purged.

    Rows are never deleted: releasing sets ``released_at``, so the hold and
    who placed and released it stay on record.
    """

    merchant = models.ForeignKey(
        Merchant,
        verbose_name=_("merchant"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="legal_holds",
    )
    case = models.ForeignKey(
        Case,
        verbose_name=_("case"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="legal_holds",
    )
    reason = models.TextField(_("reason"))
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("placed by"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    placed_at = models.DateTimeField(_("placed at"), default=timezone.now)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("released by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)

    objects = LegalHoldQuerySet.as_manager()

    class Meta:
        verbose_name = _("legal hold")
        verbose_name_plural = _("legal holds")
        ordering = ["-placed_at", "-pk"]
        permissions = [
            ("place_legalhold", "Can place and release legal holds"),
            ("export_regulator_report", "Can export the regulator's binding report"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(merchant__isnull=False) & Q(case__isnull=True))
                | (Q(merchant__isnull=True) & Q(case__isnull=False)),
                name="legal_hold_on_merchant_or_case",
                violation_error_message=_("A hold is on a merchant or on a case."),
            )
        ]

    def __str__(self) -> str:
        return str(self.case or self.merchant)

    @property
    def is_active(self) -> bool:
        return self.released_at is None


class DocumentPreview(models.Model):
    """The pages of a document rendered to PNG on the server, stored privately."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Rendering")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    document = models.OneToOneField(
        Document,
        verbose_name=_("document"),
        on_delete=models.PROTECT,
        related_name="preview",
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    # Storage names of the page images, in page order.
    pages = models.JSONField(_("pages"), default=list, blank=True)
    page_count = models.PositiveIntegerField(_("pages in the file"), default=0)
    error = models.CharField(_("error"), max_length=200, blank=True)
    rendered_at = models.DateTimeField(_("rendered at"), null=True, blank=True)
    # When the rendering was last queued: a pending preview older than
    # OUTBOX_SWEEP_AFTER (a lost task) is queued again by the next page view.
    requested_at = models.DateTimeField(
        _("rendering requested at"), default=timezone.now
    )

    class Meta:
        verbose_name = _("document preview")
        verbose_name_plural = _("document previews")

    def __str__(self) -> str:
        return f"{self.document_id}: {self.status}"


class ReportExport(models.Model):
    """One download of a report with personal data in full: who, when, which period."""

    class Kind(models.TextChoices):
        BINDING_CHANGES = "binding_changes", _("Binding changes (regulator)")

    kind = models.CharField(_("report"), max_length=32, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("staff user"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    period_start = models.DateField(_("period start"), null=True, blank=True)
    period_end = models.DateField(_("period end"), null=True, blank=True)
    client_ip = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    created_at = models.DateTimeField(_("at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("report export")
        verbose_name_plural = _("report exports")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.created_at:%Y-%m-%d %H:%M}"


class MerchantSignIn(models.Model):
    """One sign-in of a merchant on the merchant page: the code, its checks, the session.

    Append-mostly audit of the portal: every request for a code writes a row,
    also for a merchant number we do not know (``merchant`` None, no code),
    so sign-ins are traced like the code checks of a case. The code and the
    session secret are stored hashed (``cases.tokens.hash_secret``).
    """

    class Status(models.TextChoices):
        REFUSED = "refused", _("No code sent")
        CODE_SENT = "code_sent", _("Code sent")
        SIGNED_IN = "signed_in", _("Signed in")
        LOCKED = "locked", _("Too many wrong codes")
        SIGNED_OUT = "signed_out", _("Signed out")

    class Channel(models.TextChoices):
        SMS = "sms", _("Mobile on file")
        EMAIL = "email", _("E-mail on file")

    merchant = models.ForeignKey(
        Merchant,
        verbose_name=_("merchant"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="sign_ins",
    )
    merchant_number = models.CharField(_("merchant number typed"), max_length=20)
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.REFUSED
    )
    refused_because = models.CharField(_("refused because"), max_length=32, blank=True)
    code_hash = models.CharField(max_length=64, blank=True)
    code_expires_at = models.DateTimeField(null=True, blank=True)
    code_attempts = models.PositiveSmallIntegerField(_("wrong codes"), default=0)
    session_hash = models.CharField(max_length=64, blank=True)
    signed_in_at = models.DateTimeField(_("signed in at"), null=True, blank=True)
    last_seen_at = models.DateTimeField(_("last seen at"), null=True, blank=True)
    signed_out_at = models.DateTimeField(_("signed out at"), null=True, blank=True)
    client_ip = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("merchant sign-in")
        verbose_name_plural = _("merchant sign-ins")
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["merchant", "created_at"], name="signin_merchant_created"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.merchant_number} {self.get_status_display()}"


class AgentMerchant(models.Model):
    """An agent (代理商) collects requests for this merchant; managed in admin."""

    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("agent"),
        on_delete=models.CASCADE,
        related_name="agent_merchants",
    )
    merchant = models.ForeignKey(
        Merchant,
        verbose_name=_("merchant"),
        on_delete=models.CASCADE,
        related_name="agents",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("agent's merchant")
        verbose_name_plural = _("agents' merchants")
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "merchant"], name="agent_merchant_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent} → {self.merchant}"


class CaseStatement(models.Model):
    """A case's final statement as approved: one immutable version per approval.

    ``data`` is ``cases.statements.Statement.as_dict()`` (amounts as strings,
    the rules' text in the case's language). A case sent back and approved
    again gets a new version; the latest is the one shown and paid.
    """

    case = models.ForeignKey(
        Case,
        verbose_name=_("case"),
        on_delete=models.PROTECT,
        related_name="statements",
    )
    version = models.PositiveSmallIntegerField(_("version"))
    data = models.JSONField(_("statement"))
    created_at = models.DateTimeField(_("frozen at"), default=timezone.now)

    class Meta:
        verbose_name = _("frozen statement")
        verbose_name_plural = _("frozen statements")
        ordering = ["case", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "version"], name="case_statement_version_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.case} v{self.version}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValueError("a frozen statement is never changed")
        super().save(*args, **kwargs)


class FinanceItem(models.Model):
    """One refund or deduction of a completed case's statement, for finance to pay.

    Created from the frozen statement when the case completes (cases/services/
    finance.py). Above ``FINANCE_DUAL_CONTROL_ABOVE`` one finance user records
    the payment and a different one confirms it (maker-checker).
    """

    class State(models.TextChoices):
        # A deposit refund waiting for the device to come back.
        WAITING = "waiting", _("Waiting for the device")
        # To be paid or collected (from its due date).
        OPEN = "open", pgettext_lazy("finance item state", "Open")
        # Payment recorded by one finance user; a second one must confirm it.
        RECORDED = "recorded", _("Recorded, to confirm")
        # Paid to or collected from the merchant, with its payment reference.
        PAID = "paid", _("Paid")
        # Not paid or collected, on purpose, with a reason.
        WAIVED = "waived", _("Waived")
        # No longer owed (e.g. the statement was wrong), with a reason.
        CANCELLED = "cancelled", _("Cancelled")

    class Direction(models.TextChoices):
        TO_MERCHANT = "to_merchant", _("Refund to the merchant")
        BY_MERCHANT = "by_merchant", _("Deduction from the merchant")

    OPEN_STATES = (State.WAITING, State.OPEN, State.RECORDED)

    case = models.ForeignKey(
        Case,
        verbose_name=_("case"),
        on_delete=models.PROTECT,
        related_name="finance_items",
    )
    statement = models.ForeignKey(
        CaseStatement,
        verbose_name=_("frozen statement"),
        on_delete=models.PROTECT,
        related_name="finance_items",
    )
    # Position of the line in the frozen statement: one item per line.
    line = models.PositiveSmallIntegerField(_("line"))
    kind = models.CharField(_("line kind"), max_length=32)
    serial_number = models.CharField(_("serial number"), max_length=32, blank=True)
    direction = models.CharField(
        _("direction"), max_length=16, choices=Direction.choices
    )
    amount = models.DecimalField(_("amount (CNY)"), max_digits=14, decimal_places=2)
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.OPEN
    )
    due_on = models.DateField(_("due on"))
    payment_reference = models.CharField(
        _("payment reference"), max_length=100, blank=True
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("recorded by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    recorded_at = models.DateTimeField(_("recorded at"), null=True, blank=True)
    paid_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("paid by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("finance item")
        verbose_name_plural = _("finance items")
        ordering = ["due_on", "pk"]
        permissions = [("pay_financeitem", _("Can record and confirm payments"))]
        constraints = [
            models.UniqueConstraint(
                fields=["statement", "line"], name="finance_item_once_per_line"
            ),
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="finance_item_amount_positive"
            ),
            models.CheckConstraint(
                condition=~Q(state="paid") | ~Q(payment_reference=""),
                name="finance_item_paid_has_reference",
            ),
        ]
        indexes = [models.Index(fields=["state", "due_on"])]

    def __str__(self) -> str:
        return f"{self.case} {self.kind} {self.amount}"

    @property
    def is_refund(self) -> bool:
        return self.direction == self.Direction.TO_MERCHANT


@functools.lru_cache(maxsize=256)
def _rows_update_sql(
    model: type[models.Model], fields: tuple[str, ...], rows: int
) -> str:
    """The text of ``rows_update``'s statement, built once per model, fields and size."""
    from django.db import connection

    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    casts = [meta.pk.db_type(connection), *(f.db_type(connection) for f in columns)]
    row_sql = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    quote = connection.ops.quote_name
    names = [quote(f.column) for f in columns]
    pk = quote(meta.pk.column)
    return (
        f"UPDATE {quote(meta.db_table)} AS t SET "
        + ", ".join(f"{name} = v.{name}" for name in names)
        + " FROM (VALUES "
        + ", ".join([row_sql] * rows)
        + f") AS v({pk}, {', '.join(names)}) WHERE t.{pk} = v.{pk}"
    )


def rows_update(rows: list[models.Model], fields: tuple[str, ...]) -> None:
    """Write ``fields`` of several rows of one model with one UPDATE (PostgreSQL).

    ``UPDATE … FROM (VALUES …)``: Django's ``bulk_update`` builds a CASE per
    field and row, which costs more CPU than the single UPDATEs it replaces.
    The statement's text is built once per model, fields and number of rows.
    Elsewhere (SQLite, local runs) each row is saved.
    """
    from django.db import connection

    if not rows:
        return
    if connection.vendor != "postgresql":
        for row in rows:
            row.save(update_fields=list(fields))
        return
    model = type(rows[0])
    columns = [model._meta.get_field(name) for name in fields]
    params: list = []
    for row in rows:
        params.append(row.pk)
        params += [
            f.get_db_prep_save(getattr(row, f.attname), connection) for f in columns
        ]
    with connection.cursor() as cursor:
        cursor.execute(_rows_update_sql(model, tuple(fields), len(rows)), params)
