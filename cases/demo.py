"""Demo data: a believable registry, staff users per role, and cases in every state.

Used by ``manage.py seed_demo``; idempotent by natural keys, so running it
again changes nothing.
"""

import io
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from pypdf import PdfWriter

from cases import events, roles
from cases.models import (
    AgentMerchant,
    Case,
    CaseState,
    CaseTerminal,
    DeviceReturn,
    DeviceReturnState,
    Document,
    ExecutionStep,
    FinanceItem,
    LegalHold,
)
from cases.services import finance
from cases.services.execution import STEP_ORDER
from cases.tokens import tracking_token_fields
from terminals import identifiers
from terminals.models import Binding, Merchant, Terminal, Transaction

DEMO_PASSWORD = "demo-pass-2026"

STAFF = [
    ("admin", None, "系统管理员"),
    ("reviewer", roles.REVIEWER, "王审核"),
    ("reviewer2", roles.REVIEWER, "赵审核"),
    ("approver", roles.APPROVER, "李审批"),
    ("operations", roles.OPERATIONS, "陈运维"),
    ("auditor", roles.AUDITOR, "周审计"),
    ("service", roles.SERVICE, "吴客服"),
    ("agent", roles.AGENT, "郑代理"),
    ("finance", roles.FINANCE, "钱财务"),
    ("finance2", roles.FINANCE, "孙复核"),
]
# The agent (代理商) collects requests for these merchants (MERCHANTS, 1-based).
AGENT_MERCHANTS = (5, 6)

MERCHANTS = [
    ("北京朝阳便利店有限公司", "张伟", "magstripe"),
    ("上海静安咖啡馆", "李娜", "chip"),
    ("广州天河餐饮管理有限公司", "王芳", "smart"),
    ("深圳南山电子商行", "刘洋", "mobile"),
    ("杭州西湖茶庄", "陈静", "qr"),
    ("成都锦江火锅店", "杨磊", "smart"),
    ("武汉江汉服装店", "赵敏", "chip"),
    ("南京鼓楼书店", "黄强", "magstripe"),
]

# Merchants as they come (DOMAIN.md "Merchants come in kinds"): a
# micro-merchant without a licence or USCC, and a chain whose terminals carry
# a deposit. Numbered after MERCHANTS; serial numbers from 1000 up.
MICRO_MERCHANT = (9, "西安回民街马记小吃", "马强", "qr")
CHAIN_MERCHANT = (10, "好邻居便利连锁有限公司", "孙丽", "smart")
CHAIN_TERMINALS = 300
CHAIN_FIRST_SERIAL = 1000
MICRO_FIRST_SERIAL = 1400
# A completed case whose refunds wait for finance (README "Money").
MONEY_MERCHANT = (11, "青岛市南海鲜酒楼", "周洁", "chip")
MONEY_FIRST_SERIAL = 1500
DEMO_DEPOSIT = Decimal("299.00")

# State → (reason, close_account, replacement)
CASE_STATES = [
    (CaseState.PENDING_VERIFICATION, "business_change", False, False),
    (CaseState.SUBMITTED, "device_replacement", False, True),
    (CaseState.SUBMITTED, "legal_compliance", False, False),
    (CaseState.IN_REVIEW, "business_change", True, False),
    (CaseState.INFO_REQUESTED, "data_migration", False, False),
    (CaseState.AWAITING_APPROVAL, "customer_request", False, False),
    (CaseState.APPROVED, "business_change", False, False),
    (CaseState.EXECUTING, "business_change", False, False),
    (CaseState.COMPLETED, "business_change", False, False),
    (CaseState.FAILED, "device_replacement", False, True),
    (CaseState.REJECTED, "other", False, False),
    (CaseState.WITHDRAWN, "customer_request", False, False),
    (CaseState.EXPIRED, "business_change", False, False),
    # A second completed case: its device is overdue (the returns queue).
    (CaseState.COMPLETED, "business_change", False, False),
]


@dataclass
class DemoResult:
    staff: list[tuple[str, str, str]]
    merchants: int
    terminals: int
    cases: int


def _pdf_bytes(title: str) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.add_metadata({"/Title": title})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _staff() -> list[tuple[str, str, str]]:
    User = get_user_model()
    logins = []
    for username, group, name in STAFF:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={
                "is_staff": True,
                "first_name": name,
                "email": f"{username}@provider.example.com",
            },
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.is_superuser = group is None
            user.save()
        if group:
            user.groups.add(Group.objects.get(name=group))
        logins.append((username, DEMO_PASSWORD, group or "superuser"))
    return logins


def _registry(now) -> list[Merchant]:
    merchants = []
    serial = 1
    for index, (name, legal_rep, kind) in enumerate(MERCHANTS, start=1):
        merchant, _ = Merchant.objects.get_or_create(
            merchant_id=identifiers.make_merchant_id(index),
            defaults={
                "uscc": identifiers.make_uscc(index),
                "name": name,
                "legal_rep_name": legal_rep,
                "legal_rep_id_number": identifiers.make_resident_id(index),
                "contact_email": f"merchant{index}@shop.example.com",
                "contact_phone": f"1380013{index:04d}",
                "settlement_card_number": identifiers.make_bank_card(index),
            },
        )
        if merchant.uscc != identifiers.make_uscc(index):
            # Demo data loaded before make_uscc carried the GB 11714 check.
            merchant.uscc = identifiers.make_uscc(index)
            merchant.save(update_fields=["uscc", "updated_at"])
        merchants.append(merchant)
        for _ in range(4):
            terminal, created = Terminal.objects.get_or_create(
                serial_number=identifiers.make_serial_number(serial),
                defaults={
                    "terminal_id": identifiers.make_terminal_id(serial),
                    "model": {
                        "smart": "PAX A920",
                        "mobile": "Newland ME31",
                        "qr": "Sunmi V2s",
                    }.get(kind, "Verifone VX520"),
                    "kind": kind,
                    "status": Terminal.Status.ACTIVE,
                },
            )
            serial += 1
            if created:
                Binding.objects.create(
                    terminal=terminal,
                    merchant=merchant,
                    started_at=now - timedelta(days=400),
                )
                Transaction.objects.bulk_create(
                    [
                        Transaction(
                            terminal=terminal,
                            amount=Decimal(f"{(serial * 37 + i * 11) % 900 + 12}.50"),
                            occurred_at=now - timedelta(hours=6 * i + serial),
                            settled=i > 2,
                        )
                        for i in range(6)
                    ]
                )
    # Devices in stock, for replacements.
    for n in range(900, 910):
        Terminal.objects.get_or_create(
            serial_number=identifiers.make_serial_number(n),
            defaults={
                "terminal_id": identifiers.make_terminal_id(n),
                "model": "PAX A920 Pro",
                "kind": "smart",
            },
        )
    return merchants


def _cases(merchants: list[Merchant], now) -> int:
    User = get_user_model()
    reviewer = User.objects.get(username="reviewer")
    approver = User.objects.get(username="approver")
    created = 0
    stock = list(
        Terminal.objects.filter(status=Terminal.Status.IN_STOCK).order_by(
            "serial_number"
        )
    )
    for index, (state, reason, close_account, replacement) in enumerate(CASE_STATES):
        salt = f"{index:02d}demo" + "0" * 26
        if Case.objects.filter(token_salt=salt).exists():
            continue
        merchant = merchants[index % len(merchants)]
        active = list(
            Terminal.objects.filter(
                bindings__merchant=merchant, bindings__ended_at__isnull=True
            ).exclude(case_links__is_open=True)[:4]
        )
        terminals = active if close_account else active[: 1 + index % 2]
        if not terminals:
            continue
        filed_at = now - timedelta(days=len(CASE_STATES) - index, hours=index)
        case = Case(
            **tracking_token_fields(salt),
            merchant=merchant,
            uscc=merchant.uscc,
            legal_rep_name=merchant.legal_rep_name,
            applicant_name=merchant.legal_rep_name,
            applicant_is_legal_rep=True,
            applicant_phone=merchant.contact_phone,
            applicant_email=merchant.contact_email,
            reason=reason,
            reason_detail="门店停业" if reason == "other" else "",
            close_account=close_account,
            replacement_terminal=stock.pop(0) if replacement else None,
            language="zh-hans",
            state=state,  # demo data is placed directly in its state
        )
        case.save()
        verified = state not in (CaseState.PENDING_VERIFICATION, CaseState.EXPIRED)
        Case.objects.filter(pk=case.pk).update(
            reference=f"UB-{timezone.localtime(now):%Y}-{case.pk:06d}",
            created_at=filed_at,
            submitted_at=filed_at + timedelta(minutes=5) if verified else None,
            review_due_at=filed_at + timedelta(days=3) if verified else None,
            code_expires_at=(now + timedelta(minutes=15))
            if state == CaseState.PENDING_VERIFICATION
            else None,
            assigned_to=reviewer
            if state not in (CaseState.SUBMITTED,) and verified
            else None,
            recommended_by=reviewer
            if state
            in (
                CaseState.AWAITING_APPROVAL,
                CaseState.APPROVED,
                CaseState.EXECUTING,
                CaseState.COMPLETED,
                CaseState.FAILED,
            )
            else None,
            approved_by=approver
            if state
            in (
                CaseState.APPROVED,
                CaseState.EXECUTING,
                CaseState.COMPLETED,
                CaseState.FAILED,
            )
            else None,
            failure_step="verify_bindings" if state == CaseState.FAILED else "",
            failure_reason="终端已绑定到其他商户" if state == CaseState.FAILED else "",
            closed_at=now
            if state
            in (
                CaseState.COMPLETED,
                CaseState.REJECTED,
                CaseState.WITHDRAWN,
                CaseState.EXPIRED,
            )
            else None,
        )
        case.refresh_from_db()
        CaseTerminal.objects.bulk_create(
            [
                CaseTerminal(case=case, terminal=t, is_open=case.is_open)
                for t in terminals
            ]
        )
        accepted = state in (
            CaseState.AWAITING_APPROVAL,
            CaseState.APPROVED,
            CaseState.EXECUTING,
            CaseState.COMPLETED,
            CaseState.FAILED,
        )
        for kind in case.required_document_kinds():
            Document.objects.create(
                case=case,
                kind=kind,
                file=ContentFile(_pdf_bytes(kind), name=f"{kind}.pdf"),
                original_name=f"{Document.Kind(kind).label}.pdf",
                size=len(_pdf_bytes(kind)),
                sha256="",
                content_type="application/pdf",
                review_status=Document.ReviewStatus.ACCEPTED
                if accepted
                else Document.ReviewStatus.PENDING,
                reviewed_by=reviewer if accepted else None,
                reviewed_at=now if accepted else None,
            )
        events.demo_case_placed_events(
            case=case, from_state=CaseState.PENDING_VERIFICATION
        )
        created += 1
    return created


def _merchant_of_kind(
    number: int, name: str, legal_rep: str, *, kind: str, uscc: str | None
) -> Merchant:
    merchant, _created = Merchant.objects.get_or_create(
        merchant_id=identifiers.make_merchant_id(number),
        defaults={
            "kind": kind,
            "uscc": uscc,
            "name": name,
            "legal_rep_name": legal_rep,
            "legal_rep_id_number": identifiers.make_resident_id(number),
            "contact_email": f"merchant{number}@shop.example.com",
            "contact_phone": f"1380013{number:04d}",
            "settlement_card_number": identifiers.make_bank_card(number),
        },
    )
    return merchant


def _bound_terminals(
    merchant: Merchant, *, first: int, count: int, kind: str, deposit, now
) -> list[Terminal]:
    """Create ``count`` terminals bound to ``merchant`` (in bulk: a chain has hundreds)."""
    serials = [identifiers.make_serial_number(n) for n in range(first, first + count)]
    existing = set(
        Terminal.objects.filter(serial_number__in=serials).values_list(
            "serial_number", flat=True
        )
    )
    Terminal.objects.bulk_create(
        [
            Terminal(
                serial_number=identifiers.make_serial_number(n),
                terminal_id=identifiers.make_terminal_id(n),
                model="PAX A920",
                kind=kind,
                status=Terminal.Status.ACTIVE,
                deposit=deposit,
            )
            for n in range(first, first + count)
            if identifiers.make_serial_number(n) not in existing
        ]
    )
    # Read back rather than trust bulk_create to set primary keys on every backend.
    new = list(
        Terminal.objects.filter(serial_number__in=set(serials) - existing).order_by(
            "serial_number"
        )
    )
    Binding.objects.bulk_create(
        [
            Binding(terminal=t, merchant=merchant, started_at=now - timedelta(days=200))
            for t in new
        ]
    )
    Transaction.objects.bulk_create(
        [
            Transaction(
                terminal=t,
                amount=Decimal(f"{(i * 53) % 400 + 20}.80"),
                occurred_at=now - timedelta(hours=3 + i % 48),
                settled=False,
            )
            for i, t in enumerate(new)
            if i % 10 == 0
        ]
    )
    return list(Terminal.objects.filter(serial_number__in=serials))


def _merchants_as_they_come(now) -> tuple[Merchant, Merchant]:
    """The micro-merchant and the chain of 300 terminals."""
    number, name, legal_rep, kind = MICRO_MERCHANT
    micro = _merchant_of_kind(
        number, name, legal_rep, kind=Merchant.Kind.MICRO, uscc=None
    )
    _bound_terminals(
        micro, first=MICRO_FIRST_SERIAL, count=2, kind=kind, deposit=None, now=now
    )
    number, name, legal_rep, kind = CHAIN_MERCHANT
    chain = _merchant_of_kind(
        number,
        name,
        legal_rep,
        kind=Merchant.Kind.ENTERPRISE,
        uscc=identifiers.make_uscc(number),
    )
    _bound_terminals(
        chain,
        first=CHAIN_FIRST_SERIAL,
        count=CHAIN_TERMINALS,
        kind=kind,
        deposit=DEMO_DEPOSIT,
        now=now,
    )
    return micro, chain


def _case_for(
    merchant: Merchant,
    *,
    salt: str,
    state: str,
    reason: str,
    now,
    fees=None,
    channel: str = "web",
    filed_by=None,
) -> int:
    """File a demo case for every free terminal of ``merchant``; 1 if created."""
    if Case.objects.filter(token_salt=salt).exists():
        return 0
    User = get_user_model()
    reviewer = User.objects.get(username="reviewer")
    terminals = list(
        Terminal.objects.filter(
            bindings__merchant=merchant, bindings__ended_at__isnull=True
        ).exclude(case_links__is_open=True)
    )
    if not terminals:
        return 0
    case = Case(
        **tracking_token_fields(salt),
        merchant=merchant,
        uscc=merchant.uscc or "",
        legal_rep_name=merchant.legal_rep_name,
        applicant_name=merchant.legal_rep_name,
        applicant_is_legal_rep=True,
        applicant_phone=merchant.contact_phone,
        applicant_email=merchant.contact_email,
        reason=reason,
        language="zh-hans",
        fees_statement="年服务费按剩余月份折算" if fees is not None else "",
        fees_amount=fees,
        channel=channel,
        filed_by=filed_by,
    )
    case.__dict__["state"] = state  # demo data is placed directly in its state
    case.save()
    accepted = state == CaseState.AWAITING_APPROVAL
    Case.objects.filter(pk=case.pk).update(
        reference=f"UB-{timezone.localtime(now):%Y}-{case.pk:06d}",
        submitted_at=now - timedelta(hours=20),
        review_due_at=now + timedelta(days=2),
        assigned_to=reviewer if accepted else None,
        recommended_by=reviewer if accepted else None,
    )
    case.refresh_from_db()
    CaseTerminal.objects.bulk_create(
        [CaseTerminal(case=case, terminal=t, is_open=True) for t in terminals]
    )
    for kind in case.required_document_kinds():
        content = _pdf_bytes(kind)
        Document.objects.create(
            case=case,
            kind=kind,
            file=ContentFile(content, name=f"{kind}.pdf"),
            original_name=f"{Document.Kind(kind).label}.pdf",
            size=len(content),
            sha256="",
            content_type="application/pdf",
            review_status=Document.ReviewStatus.ACCEPTED
            if accepted
            else Document.ReviewStatus.PENDING,
            reviewed_by=reviewer if accepted else None,
            reviewed_at=now if accepted else None,
        )
    events.demo_case_placed_events(case=case, from_state=CaseState.PENDING_VERIFICATION)
    if filed_by is not None:
        _identity_checked_offline(case, staff=filed_by)
    return 1


def _device_returns(now) -> None:
    """Devices coming back from the completed demo cases (idempotent).

    The first completed case's device is on its way back (courier and
    tracking number); the next one's is overdue, in the Operations queue.
    """
    completed = list(
        Case.objects.filter(
            state=CaseState.COMPLETED, token_salt__endswith="demo" + "0" * 26
        ).order_by("pk")[:2]
    )
    plans = [
        (
            DeviceReturnState.SHIPPED,
            now + timedelta(days=10),
            "顺丰速运",
            "SF1402883310",
        ),
        (DeviceReturnState.AWAITING_RETURN, now - timedelta(days=3), "", ""),
    ]
    for case, (state, due_at, courier, number) in zip(completed, plans, strict=False):
        link = case.case_terminals.select_related("terminal").order_by("pk").first()
        if link is None:
            continue
        _return, created = DeviceReturn.objects.get_or_create(
            case=case,
            terminal=link.terminal,
            defaults={
                "state": state,
                "due_at": due_at,
                "courier": courier,
                "tracking_number": number,
                "shipped_at": now - timedelta(days=1) if courier else None,
            },
        )
        if created:
            events.device_returns_opened_event(
                case=case,
                serial_numbers=[link.terminal.serial_number],
                due_at=due_at,
                note="请在 14 天内寄回已解绑的设备。",
            )
            if courier:
                events.device_return_event(
                    case=case,
                    actor="merchant",
                    serial_number=link.terminal.serial_number,
                    action="ship",
                    from_state=DeviceReturnState.AWAITING_RETURN,
                    to_state=state,
                    details={"courier": courier, "tracking_number": number},
                )


def _identity_checked_offline(case: Case, *, staff) -> None:
    """The evidence and audit entry of an identity check done at the branch."""
    content = _pdf_bytes("identity_check")
    document = Document.objects.create(
        case=case,
        kind=Document.Kind.IDENTITY_CHECK,
        file=ContentFile(content, name="identity_check.pdf"),
        original_name="身份证原件核验记录.pdf",
        size=len(content),
        sha256="",
        content_type="application/pdf",
    )
    events.identity_checked_event(
        case=case,
        actor=staff,
        note="网点查验法人身份证原件，与照片一致；回拨备案手机号确认。",
        document_ids=[document.pk],
    )


def _agents() -> None:
    """Link the demo agent to its merchants."""
    agent = get_user_model().objects.get(username="agent")
    for number in AGENT_MERCHANTS:
        merchant = Merchant.objects.get(
            merchant_id=identifiers.make_merchant_id(number)
        )
        AgentMerchant.objects.get_or_create(agent=agent, merchant=merchant)


@transaction.atomic
def demo_seed() -> DemoResult:
    """Create (or find) the demo registry, staff and cases."""
    now = timezone.now()
    staff = _staff()
    merchants = _registry(now)
    cases = _cases(merchants, now)
    micro, chain = _merchants_as_they_come(now)
    # A micro-merchant's request: no USCC, no business licence.
    cases += _case_for(
        micro,
        salt="micro" + "0" * 27,
        state=CaseState.SUBMITTED,
        reason="business_change",
        now=now,
    )
    # A chain closing 300 terminals, recommended, with a final statement.
    cases += _case_for(
        chain,
        salt="chain" + "0" * 27,
        state=CaseState.AWAITING_APPROVAL,
        reason="business_change",
        now=now,
        fees=Decimal("120.00"),
    )
    cases += _chain_partly_unbound(now)
    _device_returns(now)
    _records(now)
    # A branch request filed by Service staff, identity checked offline.
    _agents()
    cases += _case_for(
        merchants[6],
        salt="branch" + "0" * 26,
        state=CaseState.SUBMITTED,
        reason="business_change",
        now=now,
        channel="branch",
        filed_by=get_user_model().objects.get(username="service"),
    )
    # A completed case with its frozen statement: a deposit refund waiting for
    # the device, a prorated fee refund waiting for finance (overdue), a SIM
    # fee to collect and the chargeback reserve to release in 180 days.
    cases += _money_case(now)
    return DemoResult(
        staff=staff,
        merchants=Merchant.objects.count(),
        terminals=Terminal.objects.count(),
        cases=cases,
    )


# A chain whose execution stopped half-way (issue 14, "Chains" and
# "Failures"): 120 terminals unbound in batches, 3 refused by the core, the
# case failed naming them, for Operations to retry or abandon. A merchant
# number and serial numbers well apart from the other demo data.
PARTIAL_CHAIN_MERCHANT = (40, "鲜果多连锁超市有限公司", "钱军", "smart")
PARTIAL_CHAIN_TERMINALS = 120
PARTIAL_CHAIN_FIRST_SERIAL = 4000
PARTIAL_CHAIN_REFUSED = (4007, 4063, 4111)


def _chain_partly_unbound(now) -> int:
    """A failed chain: most terminals unbound, three refused; 1 if created."""
    number, name, legal_rep, kind = PARTIAL_CHAIN_MERCHANT
    merchant = _merchant_of_kind(
        number,
        name,
        legal_rep,
        kind=Merchant.Kind.ENTERPRISE,
        uscc=identifiers.make_uscc(number),
    )
    _bound_terminals(
        merchant,
        first=PARTIAL_CHAIN_FIRST_SERIAL,
        count=PARTIAL_CHAIN_TERMINALS,
        kind=kind,
        deposit=DEMO_DEPOSIT,
        now=now,
    )
    salt = "partialchain" + "0" * 20
    if not _case_for(
        merchant, salt=salt, state=CaseState.FAILED, reason="business_change", now=now
    ):
        return 0
    User = get_user_model()
    case = Case.objects.get(token_salt=salt)
    refused = {identifiers.make_serial_number(n) for n in PARTIAL_CHAIN_REFUSED}
    reason = f"{len(refused)} 台终端被拒绝：{', '.join(sorted(refused))}"
    Case.objects.filter(pk=case.pk).update(
        assigned_to=User.objects.get(username="reviewer"),
        recommended_by=User.objects.get(username="reviewer"),
        approved_by=User.objects.get(username="approver"),
        approved_at=now - timedelta(hours=2),
        failure_step=ExecutionStep.Step.UNBIND,
        failure_reason=reason,
    )
    Document.objects.filter(case=case).update(
        review_status=Document.ReviewStatus.ACCEPTED
    )
    done_at = now - timedelta(hours=1)
    links = CaseTerminal.objects.filter(case=case).select_related("terminal")
    done_ids = []
    for link in links:
        if link.terminal.serial_number in refused:
            link.execution_status = CaseTerminal.ExecutionStatus.FAILED
            link.execution_error = "核心系统拒绝：终端存在未结清的押金纠纷"
        else:
            link.execution_status = CaseTerminal.ExecutionStatus.DONE
            link.executed_at = done_at
            done_ids.append(link.terminal_id)
    CaseTerminal.objects.bulk_update(
        links, ["execution_status", "execution_error", "executed_at"]
    )
    Binding.objects.filter(terminal_id__in=done_ids, ended_at__isnull=True).update(
        ended_at=done_at, ended_reason=f"case {case.reference}: business_change"
    )
    Terminal.objects.filter(pk__in=done_ids).update(status=Terminal.Status.UNBOUND)
    status = {
        ExecutionStep.Step.VERIFY_BINDINGS: ExecutionStep.Status.DONE,
        ExecutionStep.Step.SETTLE: ExecutionStep.Status.DONE,
        ExecutionStep.Step.EXPORT: ExecutionStep.Status.DONE,
        ExecutionStep.Step.UNBIND: ExecutionStep.Status.FAILED,
        ExecutionStep.Step.DEACTIVATE_SIM: ExecutionStep.Status.PENDING,
        ExecutionStep.Step.BIND_REPLACEMENT: ExecutionStep.Status.SKIPPED,
        ExecutionStep.Step.CLOSE_ACCOUNT: ExecutionStep.Status.SKIPPED,
        ExecutionStep.Step.NOTIFY: ExecutionStep.Status.PENDING,
    }
    ExecutionStep.objects.bulk_create(
        [
            ExecutionStep(
                case=case,
                step=step,
                position=position,
                status=status[step],
                error=reason if status[step] == ExecutionStep.Status.FAILED else "",
                finished_at=done_at
                if status[step] != ExecutionStep.Status.PENDING
                else None,
            )
            for position, step in enumerate(STEP_ORDER, start=1)
        ]
    )
    return 1


# --- records (issue 14): previews, a legal hold -----------------------------------

DEMO_HOLD_REASON = "法院调取证据：（2026）京0105民初123号，保全至诉讼终结"


def _records(now) -> None:
    """Render the demo PDFs' previews and hold the completed case (idempotent)."""
    # Imported here: demo data is the only caller that renders in-process.
    from cases.services.previews import document_preview_render

    for document_id in Document.objects.filter(
        content_type="application/pdf", preview__isnull=True, purged_at__isnull=True
    ).values_list("pk", flat=True):
        document_preview_render(document_id=document_id)
    completed = (
        Case.objects.filter(
            state=CaseState.COMPLETED, token_salt__endswith="demo" + "0" * 26
        )
        .order_by("pk")
        .first()
    )
    operations = get_user_model().objects.filter(username="operations").first()
    if completed is None or operations is None:
        return
    with transaction.atomic():
        hold, created = LegalHold.objects.get_or_create(
            case=completed,
            reason=DEMO_HOLD_REASON,
            defaults={"placed_by": operations, "placed_at": now},
        )
        if created:
            events.legal_hold_event(
                case=completed, actor=operations, hold=hold, placed=True
            )


def _money_case(now) -> int:
    number, name, legal_rep, kind = MONEY_MERCHANT
    merchant = _merchant_of_kind(
        number,
        name,
        legal_rep,
        kind=Merchant.Kind.ENTERPRISE,
        uscc=identifiers.make_uscc(number),
    )
    terminals = _bound_terminals(
        merchant,
        first=MONEY_FIRST_SERIAL,
        count=2,
        kind=kind,
        deposit=DEMO_DEPOSIT,
        now=now,
    )
    today = timezone.localdate(now)
    Terminal.objects.filter(pk__in=[t.pk for t in terminals]).update(
        deposit_refund_condition=Terminal.RefundCondition.DEVICE_RETURNED,
        service_fee_annual=Decimal("365.00"),
        service_fee_paid_until=today + timedelta(days=120),
        service_fee_prorated=True,
        sim_fee=Decimal("60.00"),
        sim_fee_paid_until=today - timedelta(days=10),
    )
    created = _case_for(
        merchant,
        salt="money" + "0" * 27,
        state=CaseState.COMPLETED,
        reason="business_change",
        now=now,
    )
    if not created:
        return 0
    case = Case.objects.get(token_salt="money" + "0" * 27)
    approver = get_user_model().objects.get(username="approver")
    # Completed: approved, terminals unbound, the case closed.
    Case.objects.filter(pk=case.pk).update(
        approved_by=approver, approved_at=now, closed_at=now
    )
    CaseTerminal.objects.filter(case=case).update(is_open=False)
    Binding.objects.filter(terminal__in=terminals, ended_at__isnull=True).update(
        ended_at=now, ended_reason=case.reference
    )
    Terminal.objects.filter(pk__in=[t.pk for t in terminals]).update(
        status=Terminal.Status.UNBOUND
    )
    case.refresh_from_db()
    finance.case_statement_freeze(case=case, actor=approver)
    items = finance.finance_items_create(case=case)
    # One refund has waited for finance past the overdue limit: the dashboard.
    FinanceItem.objects.filter(
        pk__in=[i.pk for i in items if i.kind == "service_fee"]
    ).update(due_on=today - timedelta(days=20))
    return created
