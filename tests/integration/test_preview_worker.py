"""Document previews rendered by a real Celery worker over Redis, after commit."""

import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from cases.models import DocumentPreview
from cases.services import previews
from tests import factories, filebuilders
from tests.integration.harness import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


def test_a_worker_renders_the_pages_queued_after_commit(start_worker, media_root):
    # given: a real worker; a three-page PDF stored
    start_worker()
    data = filebuilders.drawn_pdf_bytes(pages=3)
    document = factories.DocumentFactory(size=len(data))
    document.file.save("licence.pdf", ContentFile(data), save=True)

    # when: the rendering is requested inside a transaction
    with transaction.atomic():
        previews.document_preview_request(document_id=document.pk)

    # then: the worker rendered every page into the private storage
    wait_for(
        lambda: DocumentPreview.objects.filter(
            document=document, status="ready"
        ).exists(),
        timeout=60,
        what="preview ready",
    )
    preview = DocumentPreview.objects.get(document=document)
    assert (preview.page_count, len(preview.pages)) == (3, 3)
    for name in preview.pages:
        assert (media_root / name).read_bytes().startswith(b"\xff\xd8\xff")


def test_a_filing_queues_one_message_the_worker_fans_out_per_document(
    start_worker, media_root
):
    # given: a real worker; three PDFs of one case stored
    start_worker()
    documents = []
    for pages in (1, 2, 3):
        data = filebuilders.drawn_pdf_bytes(pages=pages)
        document = factories.DocumentFactory(size=len(data))
        document.file.save(f"doc-{pages}.pdf", ContentFile(data), save=True)
        documents.append(document)

    # when: their previews are requested together, as a filing does
    with transaction.atomic():
        previews.documents_preview_request(document_ids=[d.pk for d in documents])

    # then: each document got its own rendering
    wait_for(
        lambda: (
            DocumentPreview.objects.filter(
                document__in=documents, status="ready"
            ).count()
            == 3
        ),
        timeout=60,
        what="three previews ready",
    )
    counts = dict(
        DocumentPreview.objects.filter(document__in=documents).values_list(
            "document_id", "page_count"
        )
    )
    assert counts == {
        d.pk: pages for d, pages in zip(documents, (1, 2, 3), strict=True)
    }
