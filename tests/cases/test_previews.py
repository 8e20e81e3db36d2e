"""Document previews: PDF pages rendered to JPEG on the server, shown on the case page."""

from datetime import timedelta
from http import HTTPStatus
from io import BytesIO

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from cases.models import DocumentPreview
from cases.services import previews
from tests import factories, filebuilders


def pdf_document(pages: int, **kwargs):
    data = filebuilders.drawn_pdf_bytes(pages=pages)
    document = factories.DocumentFactory(size=len(data), **kwargs)
    document.file.save("licence.pdf", ContentFile(data), save=True)
    return document


@pytest.mark.django_db
def test_a_reviewer_sees_the_pages_of_a_pdf_as_images_on_the_case_page(
    client, reviewer, django_capture_on_commit_callbacks, settings
):
    # given: a three-page PDF; previews limited to two pages
    settings.PREVIEW_MAX_PAGES = 2
    document = pdf_document(pages=3)
    client.force_login(reviewer)
    page_url = reverse("admin:cases_case_change", args=[document.case_id])

    # when: the first visit queues the rendering (the worker runs it after commit)
    with django_capture_on_commit_callbacks(execute=True):
        first = client.get(page_url)
    second = client.get(page_url)

    # then
    assert 'data-preview="pending"' in first.content.decode()
    body = second.content.decode()
    assert 'data-preview="ready"' in body
    first_page = reverse("admin:cases_document_preview", args=[document.pk, 1])
    assert first_page in body
    assert reverse("admin:cases_document_preview", args=[document.pk, 3]) not in body
    assert "First 2 of 3 pages shown" in body
    preview = DocumentPreview.objects.get(document=document)
    assert (preview.status, preview.page_count, len(preview.pages)) == ("ready", 3, 2)

    image = client.get(first_page)
    assert image.status_code == HTTPStatus.OK
    assert image["Content-Type"] == "image/jpeg"
    assert image["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in image["Content-Security-Policy"]
    data = b"".join(image.streaming_content)
    assert not data.startswith(b"%PDF")
    page = Image.open(BytesIO(data))
    assert page.format == "JPEG"
    assert page.convert("L").getextrema()[0] < 100  # something was drawn
    assert page.width == settings.PREVIEW_WIDTH
    assert page.width * page.height <= settings.PREVIEW_MAX_PIXELS


@pytest.mark.django_db
def test_a_preview_stored_as_png_before_is_still_served_as_png(client, reviewer):
    # given: a page rendered when previews were PNG files
    document = pdf_document(pages=1)
    buffer = BytesIO()
    Image.new("RGB", (20, 20), "white").save(buffer, format="PNG")
    name = document.file.storage.save(
        f"previews/{document.pk}/001.png", ContentFile(buffer.getvalue())
    )
    DocumentPreview.objects.create(
        document=document,
        status=DocumentPreview.Status.READY,
        pages=[name],
        page_count=1,
    )
    client.force_login(reviewer)

    # when
    image = client.get(reverse("admin:cases_document_preview", args=[document.pk, 1]))

    # then
    assert image.status_code == HTTPStatus.OK
    assert image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content) == buffer.getvalue()


@pytest.mark.django_db
def test_a_page_is_rendered_within_the_pixel_limit(settings):
    # given
    settings.PREVIEW_WIDTH = 4000
    settings.PREVIEW_MAX_PIXELS = 100_000
    document = pdf_document(pages=1)

    # when
    status = previews.document_preview_render(document_id=document.pk)

    # then
    preview = DocumentPreview.objects.get(document=document)
    assert status == "ready"
    with preview.document.file.storage.open(preview.pages[0]) as handle:
        png = Image.open(handle)
        assert png.width * png.height <= 100_000


@pytest.mark.django_db
def test_a_broken_pdf_shows_a_placeholder_not_an_error(client, reviewer):
    # given: the factory's file is no real PDF
    document = factories.DocumentFactory()
    client.force_login(reviewer)

    # when
    status = previews.document_preview_render(document_id=document.pk)
    response = client.get(reverse("admin:cases_case_change", args=[document.case_id]))

    # then
    assert status == "failed"
    assert response.status_code == HTTPStatus.OK
    assert 'data-preview="failed"' in response.content.decode()
    assert (
        client.get(
            reverse("admin:cases_document_preview", args=[document.pk, 1])
        ).status_code
        == HTTPStatus.NOT_FOUND
    )


@pytest.mark.django_db
def test_a_render_that_runs_out_of_time_fails_cleanly(monkeypatch):
    # given: the worker's soft time limit strikes during rendering
    from celery.exceptions import SoftTimeLimitExceeded

    from cases import tasks

    document = pdf_document(pages=1)

    def too_slow(data):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(previews, "_render_pdf", too_slow)

    # when
    result = tasks.document_preview_render_task.apply(
        kwargs={"document_id": document.pk}
    ).get()

    # then
    preview = DocumentPreview.objects.get(document=document)
    assert (result, preview.status) == ("failed", "failed")
    assert "TimeLimit" in preview.error


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["reviewer", "approver", "operations", "auditor"])
def test_every_staff_role_may_see_a_page_but_no_one_else(client, request, who):
    # given
    document = pdf_document(pages=1)
    previews.document_preview_render(document_id=document.pk)
    url = reverse("admin:cases_document_preview", args=[document.pk, 1])

    # when
    anonymous = client.get(url)
    client.force_login(request.getfixturevalue(who))
    staff = client.get(url)

    # then
    assert anonymous.status_code == HTTPStatus.FOUND  # to the login page
    assert staff.status_code == HTTPStatus.OK


@pytest.mark.django_db
def test_a_page_of_another_number_or_a_purged_document_is_not_found(client, auditor):
    # given
    document = pdf_document(pages=1)
    previews.document_preview_render(document_id=document.pk)
    client.force_login(auditor)

    # when
    beyond = client.get(reverse("admin:cases_document_preview", args=[document.pk, 2]))
    previews.document_preview_purge(document=document)
    type(document).objects.filter(pk=document.pk).update(purged_at="2020-01-01T00:00Z")
    purged = client.get(reverse("admin:cases_document_preview", args=[document.pk, 1]))

    # then
    assert beyond.status_code == HTTPStatus.NOT_FOUND
    assert purged.status_code == HTTPStatus.NOT_FOUND
    assert DocumentPreview.objects.get(document=document).pages == []


@pytest.mark.django_db
def test_a_rendering_lost_by_the_broker_is_queued_again_by_the_next_page_view(
    client, reviewer, django_capture_on_commit_callbacks, settings
):
    # given: a preview queued ten minutes ago whose task never ran
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    document = pdf_document(pages=1)
    DocumentPreview.objects.create(
        document=document, requested_at=timezone.now() - timedelta(minutes=10)
    )
    client.force_login(reviewer)
    url = reverse("admin:cases_case_change", args=[document.case_id])

    # when
    with django_capture_on_commit_callbacks(execute=True) as queued:
        client.get(url)
    with django_capture_on_commit_callbacks(execute=True) as queued_again:
        client.get(url)

    # then: queued once, and rendered
    assert len(queued) == 1
    assert len(queued_again) == 0
    assert DocumentPreview.objects.get(document=document).status == "ready"
