"""Phone-in, branch and agent requests: staff file a case for a merchant.

The filing itself is the merchant's (``intake.case_file``: the same registry
check, upload checks and documents), with the channel and the staff member
recorded on the case. The code still goes to the contact on file, so the
merchant always learns that a request was filed in their name. Then either
the merchant gives the code (online, or read out on the phone for staff to
enter: ``intake.case_verify``, with its limits), or staff record an offline
identity check with its evidence (``case_identity_check_record``); the
approver sees it on the case page and the approval confirmation.

An agent (代理商) files only for the merchants the admin linked to it
(``AgentMerchant``) and never reviews or approves (``cases.actions``).
"""

import logging

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cases import events, roles
from cases.models import (
    AgentMerchant,
    Case,
    CaseChannel,
    CaseState,
    Document,
)
from cases.services.common import CaseActionError, case_lock
from cases.services.intake import (
    STORAGE_FAILED_FILING,
    _delete_stored,
    _discard,
    case_verified_submit,
)
from cases.uploads import CleanUpload
from terminals.models import Merchant

logger = logging.getLogger(__name__)

# The channels staff pick from; an agent's filing is always "agent".
STAFF_CHANNELS = (CaseChannel.PHONE, CaseChannel.BRANCH)


def merchant_may_be_filed_by(*, user, merchant: Merchant) -> bool:
    """Tell whether ``user`` may file a case for ``merchant``.

    Service staff for any merchant; an agent only for its own merchants.
    """
    if not roles.may_file_for_merchants(user):
        return False
    if roles.is_agent(user) and not roles.user_in_group(user, roles.SERVICE):
        return AgentMerchant.objects.filter(agent=user, merchant=merchant).exists()
    return True


def filing_channel_for(*, user, chosen: str) -> str:
    """The channel a staff filing records: an agent's is always "agent"."""
    if roles.is_agent(user) and not roles.user_in_group(user, roles.SERVICE):
        return CaseChannel.AGENT
    return chosen if chosen in STAFF_CHANNELS else CaseChannel.PHONE


def case_identity_check_record(
    *,
    case_id: int,
    actor,
    note: str,
    evidence: list[CleanUpload],
    client_ip: str | None = None,
) -> Case:
    """Staff checked the merchant's identity offline: keep the evidence, submit the case.

    The case must be waiting for its code and filed by staff (not from the
    web form, whose merchant verifies online). One transaction: the evidence
    documents, the typed audit event, the transition to "submitted" and the
    receipt to the merchant.
    """
    note = (note or "").strip()
    if not note:
        raise CaseActionError(_("Say how you checked the merchant's identity."))
    if not evidence:
        raise CaseActionError(_("Attach the evidence of the identity check."))
    stored: list[tuple[CleanUpload, str]] = []
    try:
        with transaction.atomic():
            case = case_lock(case_id=case_id)
            if not merchant_may_be_filed_by(user=actor, merchant=case.merchant):
                raise PermissionDenied(
                    _("You are not allowed to do this on this case.")
                )
            if case.channel == CaseChannel.WEB:
                raise CaseActionError(
                    _("The merchant filed this request online and verifies it there.")
                )
            if case.state != CaseState.PENDING_VERIFICATION:
                raise CaseActionError(_("This request no longer needs a code."))
            try:
                for upload in evidence:
                    stored.append((upload, upload.store()))
            except OSError as exc:
                logger.error("could not store an upload: %s", exc)
                raise CaseActionError(STORAGE_FAILED_FILING) from exc
            documents = [
                Document.objects.create(
                    case=case,
                    kind=Document.Kind.IDENTITY_CHECK,
                    file=name,
                    original_name=upload.original_name,
                    size=upload.size,
                    sha256=upload.sha256,
                    content_type=upload.content_type,
                )
                for upload, name in stored
            ]
            events.identity_checked_event(
                case=case,
                actor=actor,
                note=note,
                document_ids=[d.pk for d in documents],
                client_ip=client_ip,
            )
            case_verified_submit(
                case=case, actor=actor, client_ip=client_ip, now=timezone.now()
            )
    except BaseException:
        _delete_stored([("", upload, name) for upload, name in stored])
        raise
    finally:
        _discard([("", upload) for upload in evidence])
    return case
