"""The merchant's side of a case: file, verify identity, respond, withdraw."""

import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from cases import events
from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    Document,
    Notification,
)
from cases.notifications import (
    case_recipients,
    notification_queue,
    notification_requeue,
)
from cases.services import previews
from cases.services.common import CaseActionError, case_apply_transition, case_lock
from cases.tokens import (
    hash_secret,
    is_submission_key,
    new_token_salt,
    salt_for_submission_key,
    tracking_token_fields,
)
from cases.uploads import CleanUpload
from terminals.models import Binding, Merchant, Terminal

logger = logging.getLogger(__name__)

# How long to wait for the server process of a lost connection to finish
# what it received (a COMMIT) before asking whether the case was filed.
LOST_CONNECTION_WAIT_SECONDS = 10

# Shown when the document storage cannot take the files (disk full, I/O error).
STORAGE_FAILED_FILING = _(
    "We could not store your documents just now. Nothing was filed; please try "
    "again in a few minutes."
)
STORAGE_FAILED_ANSWER = _(
    "We could not store your documents just now. Your answer was not sent; "
    "please try again in a few minutes."
)


def _now() -> datetime:
    """Return the current time; a seam for tests that move to another day."""
    return timezone.now()


class IntakeRejected(Exception):
    """The request does not match the registry; ``errors`` maps form fields to messages.

    ``serial_problems`` maps each refused serial number to why (``not_bound``,
    ``busy``), for a per-line report of an uploaded file.
    """

    def __init__(
        self, errors: dict[str, list], serial_problems: dict[str, str] | None = None
    ):
        super().__init__(errors)
        self.errors = errors
        self.serial_problems = serial_problems or {}


@dataclass
class IntakeFound:
    merchant: Merchant
    terminals: list[Terminal]
    replacement_terminal: Terminal | None = None
    # Unverified cases whose code expired that still hold these terminals.
    stale_case_ids: list[int] = field(default_factory=list)


@dataclass
class CaseFiling:
    """What the merchant typed, already cleaned by the form."""

    merchant: Merchant
    terminals: list[Terminal]
    uscc: str
    legal_rep_name: str
    applicant_name: str
    applicant_is_legal_rep: bool
    applicant_phone: str
    applicant_email: str
    reason: str
    reason_detail: str = ""
    close_account: bool = False
    replacement_terminal: Terminal | None = None
    language: str = "zh-hans"
    client_ip: str | None = None
    submission_key: str = ""
    uploads: list[tuple[str, CleanUpload]] = field(default_factory=list)
    # How it reached us; a staff member filing for the merchant (phone, branch, agent).
    channel: str = "web"
    filed_by: Any = None
    # The stale unverified cases the registry check found holding these
    # terminals (superseded on filing); None: look them up again.
    stale_case_ids: list[int] | None = None


def _same_uscc(merchant: Merchant, uscc: str) -> bool:
    """Match the typed USCC; only a micro-merchant (registry kind) may leave it out."""
    if not uscc:
        return merchant.kind == Merchant.Kind.MICRO
    return (merchant.uscc or "") == uscc


def _same_name(a: str, b: str) -> bool:
    return "".join(a.split()).casefold() == "".join(b.split()).casefold()


def case_filing_check(
    *,
    merchant_id: str,
    uscc: str,
    legal_rep_name: str,
    serial_numbers: list[str],
    close_account: bool,
    replacement_serial_number: str,
) -> IntakeFound:
    """Check a request against the registry; raise IntakeRejected with form errors.

    Messages never say whom a terminal belongs to when it is not this merchant's.
    An empty ``uscc`` matches only a micro-merchant, by the registry's kind.
    """
    # One query on the way every filing takes: the listed terminals bound to
    # the merchant, with the merchant, and whether an open case holds each
    # (a live one blocks it; one whose code expired is superseded on filing).
    now = _now()
    stale = Q(
        case__state=CaseState.PENDING_VERIFICATION,
        case__code_expires_at__lt=now,
    )
    open_links = CaseTerminal.objects.filter(
        terminal=OuterRef("terminal_id"), is_open=True
    )
    bindings = list(
        Binding.objects.active()
        .filter(
            merchant__merchant_id=merchant_id,
            terminal__serial_number__in=serial_numbers,
        )
        .select_related("merchant", "terminal")
        .annotate(
            busy=Exists(open_links.exclude(stale)),
            stale_case_id=Subquery(open_links.filter(stale).values("case_id")[:1]),
        )
    )
    merchant = (
        bindings[0].merchant
        if bindings
        else Merchant.objects.filter(merchant_id=merchant_id).first()
    )
    if (
        merchant is None
        or not _same_uscc(merchant, uscc)
        or not _same_name(merchant.legal_rep_name, legal_rep_name)
    ):
        raise IntakeRejected(
            {
                None: [
                    _(
                        "The merchant number, unified social credit code and legal "
                        "representative do not match our records. Check them against "
                        "your business licence and merchant agreement."
                    )
                ]
            }
        )
    if merchant.status != Merchant.Status.ACTIVE:
        raise IntakeRejected({None: [_("This merchant account is closed.")]})

    errors: dict[str, list] = {}
    bound = {b.terminal.serial_number: b for b in bindings}
    missing = [s for s in serial_numbers if s not in bound]
    if missing:
        errors.setdefault("serial_numbers", []).append(
            ngettext(
                "This terminal is not bound to your merchant number: %(serials)s",
                "These terminals are not bound to your merchant number: %(serials)s",
                len(missing),
            )
            % {"serials": ", ".join(missing)}
        )
    terminals = [bound[s].terminal for s in serial_numbers if s in bound]

    busy = [s for s in serial_numbers if s in bound and bound[s].busy]
    if busy:
        errors.setdefault("serial_numbers", []).append(
            _(
                "There is already an open request for %(serials)s. Follow it with the "
                "link in its e-mail, or withdraw it first."
            )
            % {"serials": ", ".join(sorted(busy))}
        )
    stale_case_ids = sorted(
        {b.stale_case_id for b in bindings if b.stale_case_id is not None}
    )

    if close_account and not missing:
        others = (
            Binding.objects.active()
            .filter(merchant=merchant)
            .exclude(terminal__in=terminals)
            .count()
        )
        if others:
            errors.setdefault("close_account", []).append(
                ngettext(
                    "To close the account, list every terminal bound to it: %(count)d more terminal is bound to this merchant.",
                    "To close the account, list every terminal bound to it: %(count)d more terminals are bound to this merchant.",
                    others,
                )
                % {"count": others}
            )

    replacement = None
    if replacement_serial_number:
        replacement = (
            Terminal.objects.filter(
                serial_number=replacement_serial_number, status=Terminal.Status.IN_STOCK
            )
            .exclude(Exists(Binding.objects.active().filter(terminal=OuterRef("pk"))))
            .first()
        )
        if replacement is None or replacement_serial_number in serial_numbers:
            errors.setdefault("replacement_serial_number", []).append(
                _(
                    "This device is not available as a replacement. Check the serial number with your account manager."
                )
            )
    if errors:
        problems = dict.fromkeys(busy, "busy")
        problems.update((serial, "not_bound") for serial in missing)
        raise IntakeRejected(errors, serial_problems=problems)
    return IntakeFound(
        merchant=merchant,
        terminals=terminals,
        replacement_terminal=replacement,
        stale_case_ids=stale_case_ids,
    )


def _new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def _code_hash(case: Case, code: str) -> str:
    return hash_secret(f"code:{case.pk}:{code}")


def _issue_code(case: Case, *, now) -> str:
    """Set a fresh code on ``case`` (earlier codes stop working) and return it."""
    code = _new_code()
    case.code_hash = _code_hash(case, code)
    case.code_expires_at = now + settings.CASE_VERIFICATION_CODE_TTL
    case.code_attempts = 0
    case.code_sent_at = now
    return code


def _queue_code(case: Case, code: str, *, sequence: int, new_case=False) -> None:
    notification_queue(
        new_case=new_case,
        kind=Notification.Kind.VERIFICATION_CODE,
        # The code goes to the contact on file, never to an address from the form.
        recipients=[case.merchant.contact_email],
        case=case,
        context={
            "code": code,
            "ttl_minutes": int(
                settings.CASE_VERIFICATION_CODE_TTL.total_seconds() // 60
            ),
        },
        dedupe_key=f"case:{case.pk}:code:{sequence}",
    )


def _supersede_stale(
    terminals: list[Terminal], *, now, case_ids: list[int] | None = None
) -> None:
    """Expire unverified cases whose code expired and that still hold these terminals.

    ``case_ids``: the ones the registry check found (none: no query); None
    looks them up.
    """
    stale_ids = case_ids
    if stale_ids is None:
        stale_ids = (
            CaseTerminal.objects.filter(
                terminal__in=terminals,
                is_open=True,
                case__state=CaseState.PENDING_VERIFICATION,
                case__code_expires_at__lt=now,
            )
            .values_list("case_id", flat=True)
            .distinct()
        )
    for case_id in list(stale_ids):
        stale = case_lock(case_id=case_id)
        if stale.state == CaseState.PENDING_VERIFICATION:
            with translation.override(stale.language):
                note = str(_("Superseded by a new request for the same terminal."))
            case_apply_transition(
                case=stale,
                name="expire",
                note=note,
                visible_to_merchant=True,
            )


def case_file(*, filing: CaseFiling) -> tuple[Case, str]:
    """File a request: store the documents, create the case and e-mail the code.

    Returns the case and its tracking token. A repeat of the same form
    (same submission key) returns the first case. On any failure nothing is
    left behind: no row, no stored file, no e-mail. ``filing.submission_key``
    must be one the caller issued to this browser: it stands for the token.
    """
    keyed = is_submission_key(filing.submission_key)
    salt = salt_for_submission_key(filing.submission_key) if keyed else new_token_salt()
    # A fresh random salt (128 bits) has no case yet; a form's key may have one.
    existing = _case_of_salt(salt) if keyed else None
    if existing is not None:
        _discard(filing.uploads)
        return existing, existing.tracking_token

    stored: list[tuple[str, CleanUpload, str]] = []
    backend_pid = None
    try:
        try:
            for kind, upload in filing.uploads:
                stored.append((kind, upload, upload.store()))
        except OSError as exc:
            logger.error("could not store an upload: %s", exc)
            raise CaseActionError(STORAGE_FAILED_FILING) from exc
        backend_pid = _backend_pid()
        case = _case_create(filing=filing, salt=salt, stored=stored)
    except IntegrityError:
        _delete_stored(stored)
        duplicate = Case.objects.filter(token_salt=salt).first()
        if duplicate is not None:
            return duplicate, duplicate.tracking_token
        raise CaseActionError(
            _("There is already an open request for one of these terminals.")
        ) from None
    except DatabaseError:
        # The connection may have dropped after the COMMIT reached the server:
        # then the case exists and its stored documents must stay.
        try:
            filed = _case_filed_after_lost_connection(
                salt=salt, backend_pid=backend_pid
            )
        except DatabaseError:
            logger.error(
                "could not tell whether a filing was committed; kept its files %s",
                [name for _kind, _upload, name in stored],
            )
            raise
        if filed is None:
            _delete_stored(stored)
            raise
        logger.warning("case %s was filed although its commit failed", filed.pk)
        for pk in filed.notifications.filter(
            status=Notification.Status.PENDING
        ).values_list("pk", flat=True):
            notification_requeue(notification_id=pk)
        return filed, filed.tracking_token
    except BaseException:
        _delete_stored(stored)
        raise
    finally:
        _discard(filing.uploads)
    return case, case.tracking_token


def _case_of_salt(salt: str) -> Case | None:
    """The case filed with ``salt``, if any: the key alone first (usually none)."""
    found = Case.objects.filter(token_salt=salt).values_list("pk", flat=True)[:1]
    return Case.objects.get(pk=found[0]) if found else None


def _backend_pid() -> int | None:
    """The PostgreSQL server process of this connection, if there is one."""
    if connection.vendor != "postgresql" or connection.connection is None:
        return None
    return connection.connection.info.backend_pid


def _case_filed_after_lost_connection(
    *, salt: str, backend_pid: int | None
) -> Case | None:
    """Return the case of ``salt`` if its filing was committed after all.

    Asked on a new connection once the server process of the lost one has
    exited (a COMMIT it received may still be running until then). Inside an
    outer transaction nothing was committed: None. Raise DatabaseError when
    the database cannot be asked.
    """
    if connection.in_atomic_block:
        return None
    connection.close()
    if backend_pid is not None:
        deadline = time.monotonic() + LOST_CONNECTION_WAIT_SECONDS
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend_pid]
                )
                if cursor.fetchone() is None:
                    break
                time.sleep(0.05)
    return Case.objects.filter(token_salt=salt).first()


@transaction.atomic
def _case_create(*, filing: CaseFiling, salt: str, stored) -> Case:
    now = _now()
    _supersede_stale(filing.terminals, now=now, case_ids=filing.stale_case_ids)
    case = Case(
        **tracking_token_fields(salt),
        merchant=filing.merchant,
        uscc=filing.uscc,
        legal_rep_name=filing.legal_rep_name,
        applicant_name=filing.applicant_name,
        applicant_is_legal_rep=filing.applicant_is_legal_rep,
        applicant_phone=filing.applicant_phone,
        applicant_email=filing.applicant_email,
        reason=filing.reason,
        reason_detail=filing.reason_detail,
        close_account=filing.close_account,
        replacement_terminal=filing.replacement_terminal,
        language=filing.language,
        client_ip=filing.client_ip,
        channel=filing.channel,
        filed_by=filing.filed_by,
    )
    case.save()
    case.reference = f"UB-{timezone.localtime(now):%Y}-{case.pk:06d}"
    code = _issue_code(case, now=now)
    case.save(
        update_fields=[
            "reference",
            "code_hash",
            "code_expires_at",
            "code_attempts",
            "code_sent_at",
        ]
    )
    CaseTerminal.objects.bulk_create(
        [CaseTerminal(case=case, terminal=t, is_open=True) for t in filing.terminals]
    )
    documents = Document.objects.bulk_create(
        [
            Document(
                case=case,
                kind=kind,
                file=name,
                original_name=upload.original_name,
                size=upload.size,
                sha256=upload.sha256,
                content_type=upload.content_type,
            )
            for kind, upload, name in stored
        ]
    )
    previews.documents_preview_request(
        document_ids=[
            document.pk
            for document in documents
            if previews.document_preview_wanted(document=document)
        ]
    )
    events.case_filed_and_code_sent_events(
        case=case,
        terminals=[t.serial_number for t in filing.terminals],
        documents=len(documents),
        reason=filing.reason,
        client_ip=filing.client_ip,
        channel=filing.channel,
        filed_by=filing.filed_by,
    )
    _queue_code(case, code, sequence=1, new_case=True)
    return case


def _discard(uploads) -> None:
    for _kind, upload in uploads:
        upload.discard()


def _delete_stored(stored) -> None:
    for _kind, _upload, name in stored:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("could not delete stored upload %s", name)


def case_token_for_submission(*, key: str) -> str | None:
    """Return the token of the case a form submission already created, if any.

    ``key`` must be a submission key the caller checked was issued to this
    browser (``submission_key_is_bound``): whoever holds the key holds the token.
    """
    if not is_submission_key(key):
        return None
    salt = salt_for_submission_key(key)
    case = Case.objects.filter(token_salt=salt).first()
    return case.tracking_token if case is not None else None


class VerificationResult:
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    LOCKED = "locked"
    # The merchant's wrong codes for today reached the daily cap.
    MERCHANT_LIMIT = "merchant_limit"
    NOT_PENDING = "not_pending"


# Payload of the audit event written when a code is refused unchecked.
REFUSED_MERCHANT_DAILY_LIMIT = "merchant_daily_limit"
MERCHANT_LIMIT_MESSAGE = _(
    "Too many wrong codes for this merchant today. No code can be checked until "
    "tomorrow; then ask for a new code."
)


def _merchant_failures_today(*, merchant_id: int, now: datetime) -> int:
    """Count the merchant's wrong codes in the local day of ``now``.

    Counted from the audit trail in the database, across every case (each
    resend and each new filing) of the merchant: a flushed cache forgets
    nothing. Codes refused unchecked once the cap was reached are not guesses.
    """
    start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return (
        CaseEvent.objects.filter(
            type=CaseEvent.Type.CODE_FAILED,
            case__merchant_id=merchant_id,
            created_at__gte=start,
            created_at__lt=start + timedelta(days=1),
        )
        .exclude(payload__has_key="refused")
        .count()
    )


def verification_failures_left(*, case: Case) -> int:
    """How many more wrong codes the case's merchant may enter today."""
    cap = settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY
    used = _merchant_failures_today(merchant_id=case.merchant_id, now=_now())
    return max(0, cap - used)


def case_verify(*, case_id: int, code: str, client_ip: str | None = None) -> str:
    """Check the code; on success the case enters the review queue and the receipt is sent."""
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        if case.state != CaseState.PENDING_VERIFICATION:
            return VerificationResult.NOT_PENDING
        now = _now()
        # One merchant's verifications wait for each other, so two cases of
        # the same merchant cannot both take the last try of the day.
        Merchant.objects.select_for_update().filter(pk=case.merchant_id).first()
        cap = settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY
        failures = _merchant_failures_today(merchant_id=case.merchant_id, now=now)
        if failures >= cap:
            events.code_refused_event(
                case=case,
                refused=REFUSED_MERCHANT_DAILY_LIMIT,
                cap=cap,
                client_ip=client_ip,
            )
            return VerificationResult.MERCHANT_LIMIT
        if case.code_attempts >= settings.CASE_VERIFICATION_MAX_ATTEMPTS:
            return VerificationResult.LOCKED
        if (
            not case.code_hash
            or case.code_expires_at is None
            or case.code_expires_at < now
        ):
            return VerificationResult.EXPIRED
        if not hmac.compare_digest(case.code_hash, _code_hash(case, code)):
            case.code_attempts += 1
            case.save(update_fields=["code_attempts", "updated_at"])
            events.code_failed_event(
                case=case, attempts=case.code_attempts, client_ip=client_ip
            )
            if failures + 1 >= cap:
                return VerificationResult.MERCHANT_LIMIT
            if case.code_attempts >= settings.CASE_VERIFICATION_MAX_ATTEMPTS:
                return VerificationResult.LOCKED
            return VerificationResult.WRONG
        case_verified_submit(case=case, actor="merchant", client_ip=client_ip, now=now)
    return VerificationResult.OK


def case_verified_submit(*, case: Case, actor, client_ip: str | None, now) -> None:
    """Put a case whose identity was verified into the review queue, with its receipt.

    Call inside the transaction that holds the case's lock: by the code the
    merchant entered, or by staff's offline identity check.
    """
    case.code_hash = ""
    case.code_expires_at = None
    case.submitted_at = now
    case.review_due_at = now + settings.CASE_REVIEW_DUE
    case_apply_transition(
        case=case,
        name="verify",
        actor=actor,
        client_ip=client_ip,
        update_fields=(
            "code_hash",
            "code_expires_at",
            "submitted_at",
            "review_due_at",
        ),
    )
    notification_queue(
        kind=Notification.Kind.RECEIPT,
        recipients=case_recipients(case),
        case=case,
        dedupe_key=f"case:{case.pk}:receipt",
    )


def case_resend_code(*, case_id: int, client_ip: str | None = None) -> bool:
    """E-mail a new code to the contact on file; False if asked again too soon."""
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        if case.state != CaseState.PENDING_VERIFICATION:
            raise CaseActionError(_("This request no longer needs a code."))
        if verification_failures_left(case=case) == 0:
            # A code could not be checked today: mailing one only confuses.
            raise CaseActionError(MERCHANT_LIMIT_MESSAGE)
        now = _now()
        if (
            case.code_sent_at
            and now - case.code_sent_at < settings.CASE_VERIFICATION_RESEND_INTERVAL
        ):
            return False
        code = _issue_code(case, now=now)
        case.save(
            update_fields=[
                "code_hash",
                "code_expires_at",
                "code_attempts",
                "code_sent_at",
                "updated_at",
            ]
        )
        sequence = case.events.filter(type=CaseEvent.Type.CODE_SENT).count() + 1
        events.code_sent_event(
            case=case, actor="merchant", sequence=sequence, client_ip=client_ip
        )
        _queue_code(case, code, sequence=sequence)
    return True


def case_respond(
    *,
    case_id: int,
    message: str,
    uploads: list[tuple[str, CleanUpload]],
    client_ip: str | None = None,
) -> Case:
    """The merchant answers a request for information; the case returns to the queue."""
    stored: list[tuple[str, CleanUpload, str]] = []
    try:
        with transaction.atomic():
            case = case_lock(case_id=case_id)
            if case.state != CaseState.INFO_REQUESTED:
                raise CaseActionError(_("This request is not waiting for your answer."))
            try:
                for kind, upload in uploads:
                    stored.append((kind, upload, upload.store()))
            except OSError as exc:
                logger.error("could not store an upload: %s", exc)
                raise CaseActionError(STORAGE_FAILED_ANSWER) from exc
            for kind, upload, name in stored:
                document = Document.objects.create(
                    case=case,
                    kind=kind,
                    file=name,
                    original_name=upload.original_name,
                    size=upload.size,
                    sha256=upload.sha256,
                    content_type=upload.content_type,
                )
                if previews.document_preview_wanted(document=document):
                    previews.document_preview_request(document_id=document.pk)
                events.document_added_event(
                    case=case,
                    document_id=document.pk,
                    kind=kind,
                    name=upload.original_name,
                    client_ip=client_ip,
                )
            if message:
                events.message_event(
                    case=case, actor="merchant", note=message, client_ip=client_ip
                )
            now = _now()
            case.review_due_at = now + settings.CASE_REVIEW_DUE
            case_apply_transition(
                case=case,
                name="respond",
                actor="merchant",
                client_ip=client_ip,
                update_fields=("review_due_at",),
            )
    except BaseException:
        _delete_stored(stored)
        raise
    finally:
        _discard(uploads)
    return case


def case_withdraw(
    *, case_id: int, client_ip: str | None = None, actor="merchant", note: str = ""
) -> Case:
    """Withdraw a case before approval and tell the merchant."""
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        if not case.is_withdrawable:
            raise CaseActionError(
                _("This request can no longer be withdrawn: it is %(state)s.")
                % {"state": case.get_state_display()}
            )
        was_verified = case.state != CaseState.PENDING_VERIFICATION
        case_apply_transition(
            case=case, name="withdraw", actor=actor, client_ip=client_ip, note=note
        )
        if was_verified:
            notification_queue(
                kind=Notification.Kind.WITHDRAWN,
                recipients=case_recipients(case),
                case=case,
                dedupe_key=f"case:{case.pk}:withdrawn",
            )
    return case
