"""The terminal registry: merchants, their POS terminals and the bindings."""

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from terminals import validators
from terminals.masking import mask_card_number, mask_id_number


class MoneyTerms(models.Model):
    """What a merchant paid for its terminals and still owes: the registry's terms.

    On a terminal, each field overrides the merchant's default of the same
    name; empty means "not stated" (the merchant's value, else nothing).
    Amounts are CNY with two places (fen); the final statement
    (``cases.statements``) itemises them.
    """

    class RefundCondition(models.TextChoices):
        # Refunded once the device is back with the provider.
        DEVICE_RETURNED = "device_returned", _("When the device is returned")
        # Refunded if the terminal's card volume reached the threshold.
        VOLUME_REACHED = "volume_reached", _("When a card volume is reached")
        # Refunded at unbinding, without a condition.
        NONE = "none", _("No condition")

    deposit_refund_condition = models.CharField(
        _("deposit refund condition"),
        max_length=16,
        choices=RefundCondition.choices,
        blank=True,
    )
    deposit_refund_volume = models.DecimalField(
        _("deposit refund volume (CNY)"),
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("Card volume the terminal must reach for its deposit refund."),
    )
    service_fee_annual = models.DecimalField(
        _("annual service fee (CNY)"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
    )
    service_fee_paid_until = models.DateField(
        _("service fee paid until"), null=True, blank=True
    )
    service_fee_prorated = models.BooleanField(
        _("service fee prorated"),
        null=True,
        blank=True,
        help_text=_("Whether the unused part of the annual fee is refunded."),
    )
    sim_fee = models.DecimalField(
        _("SIM / data-card fee (CNY)"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
    )
    sim_fee_paid_until = models.DateField(
        _("SIM fee paid until"), null=True, blank=True
    )

    class Meta:
        abstract = True


MONEY_TERM_FIELDS = (
    "deposit_refund_condition",
    "deposit_refund_volume",
    "service_fee_annual",
    "service_fee_paid_until",
    "service_fee_prorated",
    "sim_fee",
    "sim_fee_paid_until",
)


class Merchant(MoneyTerms):
    class Kind(models.TextChoices):
        # A company (企业): business licence and unified social credit code.
        ENTERPRISE = "enterprise", _("Enterprise (企业)")
        # An individual business (个体工商户): also licensed, also has a USCC.
        INDIVIDUAL = "individual", _("Individual business (个体工商户)")
        # A micro-merchant (小微商户): no licence, only the owner's ID; the
        # USCC may be unknown.
        MICRO = "micro", _("Micro-merchant (小微商户)")

    class Status(models.TextChoices):
        # Trading normally; terminals can be bound to it.
        ACTIVE = "active", _("Active")
        # Account closed (注销) by an unbinding case; nothing can be bound.
        CLOSED = "closed", _("Closed")

    merchant_id = models.CharField(
        _("merchant number"),
        max_length=15,
        unique=True,
        validators=[validators.validate_merchant_id],
        help_text=_("商户号: 15 digits."),
    )
    kind = models.CharField(
        _("kind of merchant"),
        max_length=16,
        choices=Kind.choices,
        default=Kind.ENTERPRISE,
        help_text=_("Decides which documents a request needs."),
    )
    uscc = models.CharField(
        _("unified social credit code"),
        max_length=18,
        unique=True,
        # Only a micro-merchant may have none (constraint below).
        null=True,
        blank=True,
        validators=[validators.validate_uscc],
        help_text=_("统一社会信用代码: 18 characters with a check character."),
    )
    name = models.CharField(_("name"), max_length=200)
    legal_rep_name = models.CharField(_("legal representative"), max_length=100)
    legal_rep_id_number = models.CharField(
        _("legal representative ID number"),
        max_length=18,
        validators=[validators.validate_resident_id],
    )
    contact_email = models.EmailField(_("contact e-mail on file"))
    contact_phone = models.CharField(
        _("contact mobile on file"),
        max_length=11,
        validators=[validators.validate_mobile],
    )
    settlement_card_number = models.CharField(
        _("settlement bank card"),
        max_length=19,
        blank=True,
        validators=[validators.validate_bank_card],
    )
    # Where the merchant trades (经营地址), as the registry holds it: reported
    # to the clearing institution with each binding change (银发〔2021〕259号).
    address = models.CharField(_("business address"), max_length=200, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("merchant")
        verbose_name_plural = _("merchants")
        ordering = ["merchant_id"]
        constraints = [
            # Enterprises and individual businesses are licensed and always
            # have a USCC; "no code" is NULL, never "" (which unique would clash on).
            models.CheckConstraint(
                condition=Q(uscc__isnull=True, kind="micro")
                | (Q(uscc__isnull=False) & ~Q(uscc="")),
                name="merchant_uscc_unless_micro",
                violation_error_message=_(
                    "Only a micro-merchant may have no unified social credit code."
                ),
            ),
        ]
        indexes = [
            # Prefix search on the name (LIKE '北京%') uses an index under any
            # collation on PostgreSQL; elsewhere it is an ordinary index.
            models.Index(
                fields=["name"],
                name="merchant_name_prefix",
                opclasses=["varchar_pattern_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.merchant_id} {self.name}"

    @property
    def is_micro(self) -> bool:
        return self.kind == self.Kind.MICRO

    @property
    def masked_legal_rep_id_number(self) -> str:
        return mask_id_number(self.legal_rep_id_number)

    @property
    def masked_settlement_card_number(self) -> str:
        return mask_card_number(self.settlement_card_number)


class Terminal(MoneyTerms):
    class Kind(models.TextChoices):
        MAGSTRIPE = "magstripe", _("Magnetic-stripe POS")
        CHIP = "chip", _("Chip (EMV) POS")
        MOBILE = "mobile", _("Mobile POS (mPOS)")
        SMART = "smart", _("Smart Android POS")
        QR = "qr", _("QR-code terminal")

    class Status(models.TextChoices):
        # In the provider's stock, bound to no merchant.
        IN_STOCK = "in_stock", _("In stock")
        # Bound to a merchant and activated.
        ACTIVE = "active", _("Active")
        # Unbound from its merchant by a case; kept for history.
        UNBOUND = "unbound", _("Unbound")

    serial_number = models.CharField(
        _("serial number"),
        max_length=32,
        unique=True,
        validators=[validators.validate_serial_number],
        help_text=_("SN printed on the device."),
    )
    terminal_id = models.CharField(
        _("terminal ID"),
        max_length=8,
        unique=True,
        validators=[validators.validate_terminal_id],
        help_text=_("终端号: 8 characters."),
    )
    model = models.CharField(_("model"), max_length=100, blank=True)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.IN_STOCK
    )
    deposit = models.DecimalField(
        _("deposit (CNY)"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_(
            "Refundable deposit (押金) the merchant paid for the device; empty if none."
        ),
    )
    # Set by the execution step that deactivates the SIM of an unbound device.
    sim_deactivated_at = models.DateTimeField(
        _("SIM deactivated at"), null=True, blank=True
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("terminal")
        verbose_name_plural = _("terminals")
        ordering = ["serial_number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(deposit__isnull=True) | Q(deposit__gte=0),
                name="terminal_deposit_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.serial_number


class BindingQuerySet(models.QuerySet):
    def active(self) -> "BindingQuerySet":
        """Bindings that have not ended."""
        return self.filter(ended_at__isnull=True)


class Binding(models.Model):
    """A terminal bound to a merchant from ``started_at`` until ``ended_at``.

    Rows are never deleted: ended bindings are the terminal's history.
    """

    terminal = models.ForeignKey(
        Terminal,
        verbose_name=_("terminal"),
        on_delete=models.PROTECT,
        related_name="bindings",
    )
    merchant = models.ForeignKey(
        Merchant,
        verbose_name=_("merchant"),
        on_delete=models.PROTECT,
        related_name="bindings",
    )
    started_at = models.DateTimeField(_("started at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    ended_reason = models.CharField(_("ended because"), max_length=200, blank=True)

    objects = BindingQuerySet.as_manager()

    class Meta:
        verbose_name = _("binding")
        verbose_name_plural = _("bindings")
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["terminal"],
                condition=Q(ended_at__isnull=True),
                name="one_active_binding_per_terminal",
                violation_error_message=_("This terminal is already bound."),
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True)
                | Q(ended_at__gte=models.F("started_at")),
                name="binding_ends_after_start",
            ),
        ]
        indexes = [
            models.Index(
                fields=["merchant"],
                condition=Q(ended_at__isnull=True),
                name="binding_active_by_merchant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.terminal_id} → {self.merchant_id}"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None


class SettlementBatch(models.Model):
    """Final settlement of a merchant's unsettled transactions (资金结算)."""

    merchant = models.ForeignKey(
        Merchant,
        verbose_name=_("merchant"),
        on_delete=models.PROTECT,
        related_name="settlement_batches",
    )
    reference = models.CharField(_("reference"), max_length=64, unique=True)
    total = models.DecimalField(
        _("total"), max_digits=14, decimal_places=2, default=Decimal("0.00")
    )
    transaction_count = models.PositiveIntegerField(_("transactions"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("settlement batch")
        verbose_name_plural = _("settlement batches")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.reference


class Transaction(models.Model):
    terminal = models.ForeignKey(
        Terminal,
        verbose_name=_("terminal"),
        on_delete=models.PROTECT,
        related_name="transactions",
    )
    amount = models.DecimalField(_("amount"), max_digits=12, decimal_places=2)
    occurred_at = models.DateTimeField(_("occurred at"))
    settled = models.BooleanField(_("settled"), default=False)
    settlement_batch = models.ForeignKey(
        SettlementBatch,
        verbose_name=_("settlement batch"),
        on_delete=models.PROTECT,
        related_name="transactions",
        null=True,
        blank=True,
    )

    class Meta:
        verbose_name = _("transaction")
        verbose_name_plural = _("transactions")
        ordering = ["-occurred_at"]
        constraints = [
            # Natural key used by import_registry to stay idempotent.
            models.UniqueConstraint(
                fields=["terminal", "occurred_at", "amount"],
                name="transaction_natural_key",
            ),
        ]
        indexes = [
            models.Index(
                fields=["terminal"],
                condition=Q(settled=False),
                name="transaction_unsettled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.terminal_id} {self.amount} {self.occurred_at:%Y-%m-%d %H:%M}"
