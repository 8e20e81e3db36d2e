"""Load the demo registry, staff users per role and cases in every state."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from cases.demo import demo_seed


class Command(BaseCommand):
    help = "Load demo data (idempotent) and print the demo staff logins."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("PORT") or 8000),
            help="Port the demo is served on, for the admin URL printed "
            "(default: $PORT, else 8000).",
        )

    def handle(self, *args, **options) -> None:
        result = demo_seed()
        self.stdout.write(
            f"Demo registry: {result.merchants} merchants, {result.terminals} terminals; "
            f"{result.cases} new demo case(s)."
        )
        self.stdout.write(
            f"Demo staff logins (http://127.0.0.1:{options['port']}/admin/):"
        )
        for username, password, role in result.staff:
            self.stdout.write(f"  {username:<11} {password}   {role}")
        if not settings.DEBUG:
            self.stderr.write(
                self.style.WARNING(
                    "DEBUG is off: do not leave demo logins on a real server."
                )
            )
        self.stdout.write(
            "Demo merchant for the request form: merchant number 898000000000001, "
            "USCC 91110000000000001H, legal representative 张伟, terminal SN0000000003."
        )
        self.stdout.write(
            "Micro-merchant (no USCC, no licence): merchant number 898000000000009, "
            "legal representative 马强. Chain of 300 terminals: 898000000000010."
        )
        self.stdout.write(
            f"Merchant page: http://127.0.0.1:{options['port']}/merchant/ with "
            "merchant number 898000000000001; the sign-in code is in the e-mail "
            "(console) or SMS (console log). Service files phone-in and branch "
            "requests (admin home, “File a request for a merchant”); agent files "
            "for merchants 898000000000005 and 898000000000006 only."
        )
