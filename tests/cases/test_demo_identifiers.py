"""Issue 11: demo merchants carry identifiers the stricter validators accept."""

from io import StringIO

import pytest
from django.core.management import call_command

from terminals.models import Merchant

pytestmark = pytest.mark.django_db


def test_seeding_again_repairs_a_demo_uscc_made_before_the_organisation_check():
    # given: demo data seeded by the old make_uscc (no GB 11714 check)
    call_command("seed_demo", stdout=StringIO())
    merchant = Merchant.objects.order_by("merchant_id").first()
    Merchant.objects.filter(pk=merchant.pk).update(uscc="91110000000000001X")

    # when
    call_command("seed_demo", stdout=StringIO())

    # then: every demo merchant passes its own model validation
    for merchant in Merchant.objects.all():
        merchant.full_clean()
