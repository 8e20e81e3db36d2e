from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from api.models import Scope
from api.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for one calling system and print it alone on the "
        "last line (it is shown once; only a hash is kept)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the calling system, e.g. acquiring-core")
        parser.add_argument(
            "--scope",
            action="append",
            choices=Scope.values,
            help="repeat for several; default: cases:read and cases:file",
        )
        parser.add_argument(
            "--staff-user",
            help="username whose groups decide the key's staff actions (cases:act)",
        )

    def handle(self, *args, name, scope, staff_user, **options):
        user = None
        if staff_user:
            try:
                user = get_user_model().objects.get(username=staff_user, is_staff=True)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no staff user {staff_user!r}") from None
        api_key, key = api_key_create(name=name, scopes=scope, staff_user=user)
        self.stdout.write(
            f"API key {api_key.name!r} ({api_key.prefix}), scopes: "
            f"{', '.join(api_key.scopes)}. Store it now; it is not shown again:"
        )
        self.stdout.write(key)
