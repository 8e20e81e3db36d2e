"""factory_boy factories for the registry, cases and staff users."""

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from factory.django import DjangoModelFactory

from cases.models import Case, CaseTerminal, Document
from cases.tokens import hash_secret, token_for_salt
from terminals import identifiers
from terminals.models import Binding, Merchant, Terminal, Transaction


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"staff{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@provider.example.com")
    password = factory.django.Password("correct horse battery staple")
    is_staff = True


class MerchantFactory(DjangoModelFactory):
    class Meta:
        model = Merchant

    merchant_id = factory.Sequence(lambda n: identifiers.make_merchant_id(n + 1))
    uscc = factory.Sequence(lambda n: identifiers.make_uscc(n + 1))
    name = factory.Sequence(lambda n: f"北京示例商贸有限公司{n}")
    legal_rep_name = "张伟"
    legal_rep_id_number = factory.Sequence(
        lambda n: identifiers.make_resident_id(n + 1)
    )
    contact_email = factory.Sequence(lambda n: f"merchant{n}@shop.example.com")
    contact_phone = "13800138000"
    settlement_card_number = factory.Sequence(
        lambda n: identifiers.make_bank_card(n + 1)
    )


class TerminalFactory(DjangoModelFactory):
    class Meta:
        model = Terminal

    serial_number = factory.Sequence(lambda n: identifiers.make_serial_number(n + 1))
    terminal_id = factory.Sequence(lambda n: identifiers.make_terminal_id(n + 1))
    model = "PAX A920"
    kind = Terminal.Kind.SMART
    status = Terminal.Status.IN_STOCK


class BindingFactory(DjangoModelFactory):
    class Meta:
        model = Binding

    terminal = factory.SubFactory(TerminalFactory, status=Terminal.Status.ACTIVE)
    merchant = factory.SubFactory(MerchantFactory)
    started_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=365))


class TransactionFactory(DjangoModelFactory):
    class Meta:
        model = Transaction

    terminal = factory.SubFactory(TerminalFactory)
    amount = Decimal("128.50")
    occurred_at = factory.Sequence(lambda n: timezone.now() - timedelta(hours=n + 1))
    settled = False


class CaseFactory(DjangoModelFactory):
    """A case filed for one bound terminal. Pass ``state=`` to place it anywhere."""

    class Meta:
        model = Case
        skip_postgeneration_save = True

    merchant = factory.SubFactory(MerchantFactory)
    token_salt = factory.Sequence(lambda n: f"{n:032x}")
    token_hash = factory.LazyAttribute(
        lambda o: hash_secret(token_for_salt(o.token_salt))
    )
    uscc = factory.LazyAttribute(lambda o: o.merchant.uscc or "")
    legal_rep_name = factory.LazyAttribute(lambda o: o.merchant.legal_rep_name)
    applicant_name = factory.LazyAttribute(lambda o: o.merchant.legal_rep_name)
    applicant_is_legal_rep = True
    applicant_phone = "13900139000"
    applicant_email = "applicant@shop.example.com"
    reason = "business_change"
    submitted_at = factory.LazyFunction(timezone.now)
    review_due_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=3))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # The state field is protected against assignment; set it on insert.
        state = kwargs.pop("state", None)
        obj = model_class(*args, **kwargs)
        if state is not None:
            obj.__dict__["state"] = state
        obj.save()
        obj.reference = f"UB-{timezone.now():%Y}-{obj.pk:06d}"
        Case.objects.filter(pk=obj.pk).update(reference=obj.reference)
        return obj

    @factory.post_generation
    def terminals(obj, create, extracted, **kwargs):
        if not create:
            return
        terminals = extracted
        if terminals is None:
            terminals = [BindingFactory(merchant=obj.merchant).terminal]
        for terminal in terminals:
            CaseTerminal.objects.create(
                case=obj, terminal=terminal, is_open=obj.is_open
            )


class DocumentFactory(DjangoModelFactory):
    class Meta:
        model = Document

    case = factory.SubFactory(CaseFactory)
    kind = Document.Kind.BUSINESS_LICENCE
    file = factory.django.FileField(filename="licence.pdf", data=b"%PDF-1.4\n%%EOF\n")
    original_name = "licence.pdf"
    size = 15
    sha256 = "0" * 64
    content_type = "application/pdf"


# --- review (staff side) -------------------------------------------------------


def accepted_documents_for(case: Case, *, reviewer=None) -> list[Document]:
    """Attach one accepted document of every kind ``case`` requires."""
    return [
        DocumentFactory(
            case=case,
            kind=kind,
            original_name=f"{kind}.pdf",
            review_status=Document.ReviewStatus.ACCEPTED,
            reviewed_by=reviewer,
            reviewed_at=timezone.now(),
        )
        for kind in case.required_document_kinds()
    ]


class ImageDocumentFactory(DocumentFactory):
    """A small PNG, for the inline preview."""

    kind = Document.Kind.LEGAL_REP_ID
    file = factory.django.ImageField(filename="id-front.png", format="PNG")
    original_name = "id-front.png"
    content_type = "image/png"


class SettlementBatchFactory(DjangoModelFactory):
    class Meta:
        model = "terminals.SettlementBatch"

    merchant = factory.SubFactory(MerchantFactory)
    reference = factory.Sequence(lambda n: f"SB-{n:08d}")
    total = Decimal("128.50")
    transaction_count = 1
