"""``python manage.py import_registry FILE``: load the registry JSON of CONTRACT.md."""

from pathlib import Path

import ijson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from terminals.importer import RegistryImportError, registry_import_file


class Command(BaseCommand):
    help = (
        "Load merchants, terminals, bindings and transactions from a JSON file. "
        "Idempotent; a bad record rejects the whole file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the registry JSON file")

    def handle(self, *args, file: Path, **options) -> None:
        try:
            handle = file.open("rb")
        except OSError as error:
            raise CommandError(f"cannot read {file}: {error.strerror}") from error
        try:
            with handle:
                # Read as a stream: a million terminals never sit in memory.
                result = registry_import_file(handle)
        except (ijson.JSONError, UnicodeDecodeError) as error:
            raise CommandError(
                f"{file} is not valid JSON: {error}. Nothing was imported."
            ) from error
        except RegistryImportError as error:
            raise CommandError(f"{file}: {error}. Nothing was imported.") from error
        for kind, counts in result.as_dict().items():
            self.stdout.write(
                f"{kind}: {counts['created']} created, {counts['updated']} updated, "
                f"{counts['unchanged']} unchanged"
            )
        self.stdout.write(self.style.SUCCESS(f"Imported {file}."))
