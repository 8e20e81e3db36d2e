"""Document previews: the pages of a PDF rendered to JPEG on the server.

Reviewers look at the images on the case page, so the merchant's PDF never
reaches a browser as a PDF. Rendering runs in a worker
(``document_preview_render_task``, soft and hard time limits) within
``PREVIEW_MAX_PAGES`` pages and ``PREVIEW_MAX_PIXELS`` pixels per page; the
images are stored privately next to the documents and served only through
the permission-checked admin view. Images uploaded as JPEG or PNG need no
preview: the stored (already re-encoded) image is shown inline.
"""

import logging
import math
from io import BytesIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from cases import tasks
from cases.models import Document, DocumentPreview

logger = logging.getLogger(__name__)

PDF = "application/pdf"
# The pages are encoded as JPEG, quality 90 without chroma subsampling (4:4:4,
# so small print stays sharp): 6-10 ms a page where PNG took 40 ms for a
# drawn page and 170 ms for a scanned one (at zlib level 1 still 23 and 150),
# and a scan's page is a third of the size (issue 15, docs/benchmarks.md).
# Previews stored before as PNG keep their name and are served as PNG.
PREVIEW_JPEG_QUALITY = 90
PREVIEW_CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}


def preview_content_type(name: str) -> str:
    """The content type of a stored preview page, by its name."""
    return PREVIEW_CONTENT_TYPES[name[name.rfind(".") :].lower()]


def document_preview_wanted(*, document: Document) -> bool:
    return bool(
        document.content_type == PDF and not document.purged_at and document.file
    )


def document_preview_request(*, document_id: int) -> None:
    """Queue the rendering of a document's preview after the current commit.

    With the broker down the filing still succeeds: the preview stays pending
    and the next view of the case page queues it again.
    """

    def _queue() -> None:
        try:
            tasks.document_preview_render_task.delay(document_id=document_id)
        except Exception:  # broker down: the case page queues it again later
            logger.warning(
                "broker unavailable; preview of document %s left for later",
                document_id,
            )

    transaction.on_commit(_queue)


def documents_preview_request(*, document_ids: list[int]) -> None:
    """Queue the previews of several documents after the current commit.

    One message for all of them (``document_previews_render_task``), which a
    worker fans out into one rendering task per document, each with its own
    time limits: the web request publishes once instead of once per PDF
    (about 1.2 ms of CPU each). Broker down: as ``document_preview_request``.
    """
    ids = list(document_ids)
    if len(ids) <= 1:
        for document_id in ids:
            document_preview_request(document_id=document_id)
        return

    def _queue() -> None:
        try:
            tasks.document_previews_render_task.delay(document_ids=ids)
        except Exception:  # broker down: the case page queues them again later
            logger.warning(
                "broker unavailable; previews of documents %s left for later", ids
            )

    transaction.on_commit(_queue)


def documents_preview_fan_out(*, document_ids: list[int]) -> int:
    """In a worker: queue one rendering task per document; return how many."""
    for document_id in document_ids:
        tasks.document_preview_render_task.delay(document_id=document_id)
    return len(document_ids)


def document_preview_for_page(*, document: Document) -> DocumentPreview | None:
    """The preview to show on the case page; queue the rendering when missing."""
    if not document_preview_wanted(document=document):
        return None
    try:
        # Read with the document when selected with it (select_related).
        preview = document.preview
    except DocumentPreview.DoesNotExist:
        preview = None
    if preview is None:
        preview, created = DocumentPreview.objects.get_or_create(document=document)
        if created:
            document_preview_request(document_id=document.pk)
        return preview
    now = timezone.now()
    if (
        preview.status == DocumentPreview.Status.PENDING
        and preview.requested_at < now - settings.OUTBOX_SWEEP_AFTER
    ):
        # The task was lost (a broker outage): queue it again, once for all
        # the reviewers who open the page now (compare and set).
        again = DocumentPreview.objects.filter(
            pk=preview.pk,
            status=DocumentPreview.Status.PENDING,
            requested_at=preview.requested_at,
        ).update(requested_at=now)
        if again:
            document_preview_request(document_id=document.pk)
    return preview


def _page_scale(width: float, height: float) -> float:
    """Scale to PREVIEW_WIDTH pixels wide, never above PREVIEW_MAX_PIXELS."""
    scale = settings.PREVIEW_WIDTH / max(width, 1.0)
    limit = math.sqrt(settings.PREVIEW_MAX_PIXELS / max(width * height, 1.0))
    scale = min(scale, limit)
    # The bitmap's sides are rounded up: step down until it fits.
    while (
        math.ceil(width * scale) * math.ceil(height * scale)
        > settings.PREVIEW_MAX_PIXELS
    ):
        scale *= 0.99
    return scale


def _render_pdf(data: bytes) -> tuple[int, list[bytes]]:
    # Imported here: the rendering library is loaded only by the worker that renders.
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        count = len(pdf)
        images = []
        for index in range(min(count, settings.PREVIEW_MAX_PAGES)):
            page = pdf[index]
            try:
                width, height = page.get_size()
                bitmap = page.render(scale=_page_scale(width, height))
                buffer = BytesIO()
                bitmap.to_pil().convert("RGB").save(
                    buffer,
                    format="JPEG",
                    quality=PREVIEW_JPEG_QUALITY,
                    subsampling=0,
                )
                images.append(buffer.getvalue())
            finally:
                page.close()
        return count, images
    finally:
        pdf.close()


def document_preview_render(*, document_id: int) -> str:
    """Render a PDF document's pages; return the preview's status.

    Safe to run twice: a ready preview is left alone. A file that cannot be
    rendered leaves a failed preview, shown as a placeholder.
    """
    document = Document.objects.get(pk=document_id)
    if not document_preview_wanted(document=document):
        return "skipped"
    preview, _ = DocumentPreview.objects.get_or_create(document=document)
    if preview.status == DocumentPreview.Status.READY:
        return preview.status
    try:
        with document.file.open("rb") as handle:
            count, images = _render_pdf(handle.read())
    except Exception as exc:  # a broken or hostile file: record it, show a placeholder
        logger.warning("preview of document %s failed: %s", document_id, exc)
        document_preview_fail(document_id=document_id, error=type(exc).__name__)
        return DocumentPreview.Status.FAILED
    names = [
        default_storage.save(
            f"previews/{document.pk}/{index + 1:03d}.jpg", ContentFile(image)
        )
        for index, image in enumerate(images)
    ]
    with transaction.atomic():
        preview = DocumentPreview.objects.select_for_update().get(pk=preview.pk)
        if Document.objects.filter(pk=document_id, purged_at__isnull=False).exists():
            for name in names:
                default_storage.delete(name)
            return "skipped"
        old = [n for n in preview.pages if n not in names]
        preview.pages = names
        preview.page_count = count
        preview.status = DocumentPreview.Status.READY
        preview.error = ""
        preview.rendered_at = timezone.now()
        preview.save()
    for name in old:
        default_storage.delete(name)
    return preview.status


def document_preview_fail(*, document_id: int, error: str) -> None:
    """Mark the preview failed (a broken file, or the time limit was hit)."""
    DocumentPreview.objects.update_or_create(
        document_id=document_id,
        defaults={
            "status": DocumentPreview.Status.FAILED,
            "error": error[:200],
            "rendered_at": timezone.now(),
        },
    )


def document_preview_purge(*, document: Document) -> None:
    """Delete a document's preview images with the document (retention)."""
    try:
        # Read with the document when selected with it (select_related).
        preview = document.preview
    except DocumentPreview.DoesNotExist:
        preview = None
    if preview is None:
        return
    for name in preview.pages:
        default_storage.delete(name)
    preview.pages = []
    preview.status = DocumentPreview.Status.FAILED
    preview.error = "purged"
    preview.save(update_fields=["pages", "status", "error"])
