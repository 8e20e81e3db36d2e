"""Check a (restored) database against its document storage."""

import hashlib

from django.core.management.base import BaseCommand, CommandError

from cases.models import Case, CaseEvent, Document

# Bytes read at a time while hashing a stored file.
CHUNK_SIZE = 1024 * 1024


class Command(BaseCommand):
    help = (
        "Count cases, events and documents, and check that every document's "
        "file is in the storage with its recorded SHA-256 (run after a restore)."
    )

    def handle(self, *args, **options) -> None:
        documents = Document.objects.all()
        self.stdout.write(f"cases: {Case.objects.count()}")
        self.stdout.write(f"events: {CaseEvent.objects.count()}")
        self.stdout.write(
            f"documents: {documents.count()} "
            f"({documents.filter(purged_at__isnull=False).count()} purged)"
        )
        checked = 0
        problems: list[str] = []
        for document in (
            documents.filter(purged_at__isnull=True)
            .only("pk", "file", "sha256")
            .order_by("pk")
            .iterator(chunk_size=500)
        ):
            checked += 1
            problem = _file_problem(document)
            if problem:
                problems.append(
                    f"document {document.pk} ({document.file.name}): {problem}"
                )
        self.stdout.write(f"files checked: {checked}, problems: {len(problems)}")
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} document file(s) missing or changed")


def _file_problem(document: Document) -> str:
    if not document.file:
        return "no file recorded"
    hasher = hashlib.sha256()
    try:
        with document.file.open("rb") as fh:
            while chunk := fh.read(CHUNK_SIZE):
                hasher.update(chunk)
    except FileNotFoundError:
        return "missing"
    if hasher.hexdigest() != document.sha256:
        return "SHA-256 differs"
    return ""
