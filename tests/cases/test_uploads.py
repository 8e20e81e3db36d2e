"""Upload safety: what ``cases.uploads`` accepts, refuses, rewrites and stores."""

import hashlib
import io
import os
import re
import types
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt
from PIL import ExifTags, Image

from cases import uploads
from cases.uploads import (
    JPEG,
    PDF,
    PNG,
    CleanUpload,
    OversizedUpload,
    limit_upload_size,
    sanitize_file_name,
    upload_clean,
    upload_limits_exceeded,
    uploads_total_size,
)
from tests import filebuilders as fb

STORED_NAME = re.compile(r"cases/\d{4}/\d{2}/[0-9a-f]{32}\.(pdf|jpg|png)")
HANDLERS = [
    "cases.uploads.RequestSizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
EXPECTED_MESSAGES = {
    "empty": "The file is empty.",
    "too_large": "The file is larger than",
    "file_type": "The file is not a PDF, JPEG or PNG file",
    "image_too_large": "The image is too large",
    "image_invalid": "The image is damaged or incomplete",
    "pdf_invalid": "The PDF is damaged or not a valid PDF",
    "pdf_encrypted": "The PDF is protected with a password or encrypted",
    "pdf_active_content": "The PDF contains active content",
}


@pytest.fixture
def upload_temp_dir(settings, tmp_path) -> Path:
    """Send Django's and this module's temporary files to a directory of their own."""
    directory = tmp_path / "upload-temp"
    directory.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(directory)
    return directory


@pytest.fixture
def media_root(_private_media_root) -> Path:
    return _private_media_root


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def read_stored(root: Path, name: str) -> bytes:
    return (root / name).read_bytes()


# ------------------------------------------------------------------------------
# Accepted files
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrap", [fb.uploaded_file, fb.temporary_uploaded_file], ids=["memory", "tempfile"]
)
def test_a_valid_pdf_is_stored_byte_for_byte_under_a_random_name(
    media_root, upload_temp_dir, wrap
):
    # given
    data = fb.large_pdf_bytes(300_000)
    uploaded = wrap("营业执照.pdf", data, "image/png")

    # when
    clean = upload_clean(uploaded)
    name = clean.store()

    # then
    assert clean.content_type == PDF
    assert clean.original_name == "营业执照.pdf"
    assert clean.size == len(data)
    assert clean.sha256 == hashlib.sha256(data).hexdigest()
    assert STORED_NAME.fullmatch(name), name
    assert read_stored(media_root, name) == data
    assert (media_root / name).stat().st_mode & 0o777 == 0o600


def test_a_jpeg_is_reencoded_without_exif_gps_or_comment(media_root, upload_temp_dir):
    # given
    data = fb.jpeg_with_gps_bytes()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    # when
    clean = upload_clean(fb.uploaded_file("shop.jpg", data, "image/jpeg"))
    name = clean.store()

    # then
    stored = read_stored(media_root, name)
    assert clean.content_type == JPEG
    assert clean.size == len(stored)
    assert clean.sha256 == hashlib.sha256(stored).hexdigest()
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG"
    assert image.size == (40, 20)
    assert dict(image.getexif()) == {}
    assert "comment" not in image.info
    for leak in (b"Exif", b"TestCam", b"shop front", b"secret comment"):
        assert leak not in stored


def test_exif_orientation_is_applied_before_the_exif_is_dropped(
    media_root, upload_temp_dir
):
    # given: a 40x20 picture, red on its left half, that says "rotate 90° clockwise"
    data = fb.jpeg_with_gps_bytes(orientation=6)

    # when
    name = upload_clean(fb.uploaded_file("id.jpg", data)).store()

    # then: it is stored upright (20x40), the red half now at the top
    image = Image.open(io.BytesIO(read_stored(media_root, name)))
    assert image.size == (20, 40)
    red, green, _blue = image.convert("RGB").getpixel((10, 5))
    assert red > 150
    assert green < 100
    assert image.convert("RGB").getpixel((10, 35)) > (200, 200, 200)
    assert ExifTags.Base.Orientation not in image.getexif()


def test_a_png_is_reencoded_without_exif_or_text_chunks(media_root, upload_temp_dir):
    # given
    data = fb.png_with_gps_bytes()
    assert b"eXIf" in data
    assert b"secret comment" in data

    # when
    clean = upload_clean(fb.uploaded_file("licence.png", data))
    stored = read_stored(media_root, clean.store())

    # then
    assert clean.content_type == PNG
    assert clean.size == len(stored)
    assert clean.sha256 == hashlib.sha256(stored).hexdigest()
    assert b"eXIf" not in stored
    assert b"tEXt" not in stored
    assert b"secret comment" not in stored
    assert Image.open(io.BytesIO(stored)).size == (40, 20)


@pytest.mark.parametrize(
    ("builder", "end"),
    [
        (fb.png_with_appended_bytes, b"IEND\xaeB`\x82"),
        (fb.jpeg_with_appended_bytes, b"\xff\xd9"),
    ],
    ids=["png", "jpeg"],
)
def test_bytes_appended_after_the_image_end_are_dropped(
    media_root, upload_temp_dir, builder, end
):
    # given
    data = builder()
    assert fb.APPENDED_PAYLOAD in data

    # when
    name = upload_clean(fb.uploaded_file("scan.png", data)).store()

    # then
    stored = read_stored(media_root, name)
    assert fb.APPENDED_PAYLOAD not in stored
    assert stored.endswith(end)


def test_a_palette_png_keeps_its_mode_and_transparency(media_root, upload_temp_dir):
    # given
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)

    # when
    name = upload_clean(fb.uploaded_file("p.png", buffer.getvalue())).store()

    # then
    stored = Image.open(io.BytesIO(read_stored(media_root, name)))
    assert stored.mode == "P"
    assert stored.info.get("transparency") == 0


@pytest.mark.parametrize(
    "builder",
    [
        fb.valid_pdf_bytes,
        fb.pdf_with_open_destination_bytes,
        lambda: fb.assemble_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
            ]
        ),
    ],
    ids=["pypdf", "open-destination", "hand-assembled"],
)
def test_pdfs_without_active_content_are_accepted(media_root, builder):
    # given
    data = builder()

    # when
    clean = upload_clean(fb.uploaded_file("a.pdf", data))

    # then
    assert clean.content_type == PDF
    assert clean.sha256 == hashlib.sha256(data).hexdigest()


def test_each_store_gets_a_new_random_name_with_nothing_of_the_original(
    media_root, upload_temp_dir
):
    # given
    uploaded = fb.uploaded_file("secret-merchant-name.pdf", fb.valid_pdf_bytes())
    clean = upload_clean(uploaded)

    # when
    names = {clean.store(), clean.store()}

    # then
    assert len(names) == 2
    for name in names:
        assert STORED_NAME.fullmatch(name)
        assert "secret" not in name
        assert (media_root / name).resolve().is_relative_to(media_root.resolve())


# ------------------------------------------------------------------------------
# Refused files
# ------------------------------------------------------------------------------
REFUSED = [
    ("x.pdf", fb.elf_bytes, "file_type"),
    ("invoice.pdf", fb.pe_bytes, "file_type"),
    ("x.png", fb.svg_script_bytes, "file_type"),
    ("x.png", fb.html_bytes, "file_type"),
    ("x.pdf", fb.html_with_pdf_header_later_bytes, "file_type"),
    ("licence.pdf", fb.zip_bytes, "file_type"),
    ("empty.pdf", lambda: b"", "empty"),
    ("bomb.png", fb.png_bomb_bytes, "image_too_large"),
    ("half.png", fb.truncated_png_bytes, "image_invalid"),
    ("fake.jpg", lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image_invalid"),
    ("locked.pdf", fb.encrypted_pdf_bytes, "pdf_encrypted"),
    ("js.pdf", fb.pdf_with_open_action_javascript_bytes, "pdf_active_content"),
    ("js.pdf", fb.pdf_with_names_javascript_bytes, "pdf_active_content"),
    ("js.pdf", fb.pdf_with_page_aa_javascript_bytes, "pdf_active_content"),
    ("js.pdf", fb.pdf_with_link_javascript_bytes, "pdf_active_content"),
    ("js.pdf", fb.pdf_with_hex_escaped_javascript_bytes, "pdf_active_content"),
    ("run.pdf", fb.pdf_with_launch_bytes, "pdf_active_content"),
    ("uri.pdf", fb.pdf_with_open_action_uri_bytes, "pdf_active_content"),
    ("attach.pdf", fb.pdf_with_embedded_file_bytes, "pdf_active_content"),
    ("xfa.pdf", fb.pdf_with_xfa_bytes, "pdf_active_content"),
    ("broken.pdf", fb.truncated_pdf_bytes, "pdf_invalid"),
    ("broken.pdf", lambda: b"%PDF-1.7\n" + os.urandom(500), "pdf_invalid"),
]


@pytest.mark.parametrize(
    "wrap", [fb.uploaded_file, fb.temporary_uploaded_file], ids=["memory", "tempfile"]
)
@pytest.mark.parametrize(
    ("name", "builder", "code"),
    REFUSED,
    ids=[f"{code}-{builder.__name__}" for _n, builder, code in REFUSED],
)
def test_refused_files_raise_a_clear_error_and_leave_nothing_behind(
    media_root, upload_temp_dir, wrap, name, builder, code
):
    # given
    uploaded = wrap(name, builder(), "application/pdf")
    descriptors = open_descriptors()

    # when
    with translation.override("en"), pytest.raises(ValidationError) as raised:
        upload_clean(uploaded)

    # then
    with translation.override("en"):
        assert raised.value.code == code
        assert raised.value.messages[0].startswith(EXPECTED_MESSAGES[code])
    assert open_descriptors() == descriptors
    assert files_in(media_root) == []
    uploaded.close()
    assert files_in(upload_temp_dir) == []


def test_a_file_over_the_size_limit_is_refused(media_root, settings):
    # given
    settings.UPLOAD_MAX_FILE_SIZE = 10 * 1024
    uploaded = fb.uploaded_file("big.pdf", fb.large_pdf_bytes(20 * 1024))

    # when
    with translation.override("en"), pytest.raises(ValidationError) as raised:
        upload_clean(uploaded)

    # then
    assert raised.value.code == "too_large"
    with translation.override("en"):
        assert raised.value.messages == ["The file is larger than 10 KB."]
    assert files_in(media_root) == []


def test_the_size_limit_counts_the_bytes_not_the_reported_size(settings):
    # given: an upload that claims to be small
    settings.UPLOAD_MAX_FILE_SIZE = 10 * 1024
    uploaded = fb.uploaded_file("big.pdf", fb.large_pdf_bytes(20 * 1024))
    uploaded.size = 100

    # when / then
    with pytest.raises(ValidationError) as raised:
        upload_clean(uploaded)
    assert raised.value.code == "too_large"


def test_the_default_limit_is_shown_in_megabytes(settings):
    # given
    settings.UPLOAD_MAX_FILE_SIZE = 10 * 1024 * 1024
    uploaded = OversizedUpload(name="scan.pdf", content_type=PDF, size=11 * 1024**2)

    # when
    with translation.override("en"), pytest.raises(ValidationError) as raised:
        upload_clean(uploaded)

    # then
    with translation.override("en"):
        assert raised.value.messages == ["The file is larger than 10 MB."]


def test_an_image_just_over_the_pixel_limit_is_refused(settings, upload_temp_dir):
    # given: 30x30 = 900 pixels against a limit of 500 (Pillow only warns here)
    settings.UPLOAD_MAX_IMAGE_PIXELS = 500
    uploaded = fb.uploaded_file("wide.png", fb.png_bytes(30, 30))

    # when
    with pytest.raises(ValidationError) as raised:
        upload_clean(uploaded)

    # then
    assert raised.value.code == "image_too_large"
    assert files_in(upload_temp_dir) == []


def test_a_pdf_changed_after_inspection_is_not_stored(media_root):
    # given
    uploaded = fb.temporary_uploaded_file("a.pdf", fb.valid_pdf_bytes())
    clean = upload_clean(uploaded)
    with open(uploaded.temporary_file_path(), "r+b") as file:
        file.seek(20)
        file.write(b"tampered")

    # when
    with pytest.raises(ValidationError) as raised:
        clean.store()

    # then
    assert raised.value.code == "changed"
    assert files_in(media_root) == []


def test_discard_releases_the_temporary_copy_and_is_idempotent(upload_temp_dir):
    # given
    descriptors = open_descriptors()
    clean = upload_clean(fb.uploaded_file("a.png", fb.png_bytes()))
    assert open_descriptors() == descriptors + 1

    # when
    clean.discard()
    clean.discard()

    # then
    assert open_descriptors() == descriptors
    assert files_in(upload_temp_dir) == []
    with pytest.raises(ValueError, match="discarded"):
        clean.store()


def test_a_clean_upload_used_as_a_context_manager_is_discarded(upload_temp_dir):
    # given
    descriptors = open_descriptors()

    # when
    with upload_clean(fb.uploaded_file("a.jpg", fb.jpeg_bytes())) as clean:
        assert isinstance(clean, CleanUpload)

    # then
    assert open_descriptors() == descriptors


# ------------------------------------------------------------------------------
# Display names
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        ("../../etc/passwd.pdf", PDF, "passwd.pdf"),
        ("C:\\evil\\a.pdf", PDF, "a.pdf"),
        ("a\x00b.pdf", PDF, "ab.pdf"),
        ("line\nbreak\r\n.pdf", PDF, "line break.pdf"),
        ("invoice\u202efdp.exe", PDF, "invoicefdp.exe.pdf"),
        ("zero\u200bwidth.png", PNG, "zerowidth.png"),
        ("营业执照.pdf", PDF, "营业执照.pdf"),
        ("法人身份证 正面.JPG", JPEG, "法人身份证 正面.JPG"),
        ("photo.png", JPEG, "photo.jpg"),
        ("report.v2", PDF, "report.v2.pdf"),
        ("..", PDF, "document.pdf"),
        ("", PNG, "document.png"),
        (None, PNG, "document.png"),
        (".htaccess.pdf", PDF, "htaccess.pdf"),
        ('a<b>:"c|d?*.pdf', PDF, "a_b___c_d__.pdf"),
        ("  spaced   name .pdf", PDF, "spaced name.pdf"),
    ],
)
def test_display_names_are_sanitised(raw, content_type, expected):
    assert sanitize_file_name(raw, content_type=content_type) == expected


def test_a_very_long_name_is_cut_to_255_characters_keeping_the_extension():
    # when
    name = sanitize_file_name("长" * 300 + ".pdf", content_type=PDF)

    # then
    assert len(name) == 255
    assert name == "长" * 251 + ".pdf"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("C:\\evil\\a.pdf", "a.pdf"),
        ("rtl\u202egnp.pdf", "rtlgnp.pdf"),
        ("营业执照.pdf", "营业执照.pdf"),
    ],
)
def test_upload_clean_gives_the_sanitised_name_and_stores_none_of_it(
    media_root, raw, expected
):
    # when
    clean = upload_clean(fb.uploaded_file(raw, fb.valid_pdf_bytes()))
    name = clean.store()

    # then
    assert clean.original_name == expected
    assert STORED_NAME.fullmatch(name)


def test_uploads_total_size_adds_the_sizes():
    files = [fb.uploaded_file("a.pdf", b"x" * 10), fb.uploaded_file("b.pdf", b"y" * 5)]

    assert uploads_total_size(files) == 15
    assert uploads_total_size([]) == 0


# ------------------------------------------------------------------------------
# Through HTTP: the request and file size limits
# ------------------------------------------------------------------------------
class PassedOnCounter(FileUploadHandler):
    """Count the bytes of each file that reach the handlers after the limiter."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        passed = self.request.passed_on
        passed[self.file_name] = passed.get(self.file_name, 0) + len(raw_data)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def _store_all(request: HttpRequest) -> JsonResponse:
    """Clean and store every uploaded file; report what happened to each."""
    results = []
    for field, files in request.FILES.lists():
        for uploaded in files:
            try:
                clean = upload_clean(uploaded)
            except ValidationError as exc:
                results.append({"field": field, "error": exc.code})
                continue
            with clean:
                results.append({"field": field, "stored": clean.store()})
    return JsonResponse(
        {
            "results": results,
            "fields": sorted(request.POST),
            "flagged": upload_limits_exceeded(request),
            "passed_on": getattr(request, "passed_on", {}),
            "temp_files": getattr(request, "temp_files", None),
        }
    )


@csrf_exempt
def _counting_view(request: HttpRequest) -> JsonResponse:
    request.passed_on = {}
    request.upload_handlers.insert(1, PassedOnCounter(request))
    request.FILES  # noqa: B018 - parse the body now, then look at the temp dir
    request.temp_files = len(files_in(Path(settings.FILE_UPLOAD_TEMP_DIR)))
    return _store_all(request)


def _urlconf(view: Callable) -> types.ModuleType:
    """A URLconf with the site's URLs (the 413 page links to them) and ``view``."""
    from config.urls import urlpatterns

    module = types.ModuleType("upload_test_urls")
    module.urlpatterns = [path("upload-test/", view, name="upload-test"), *urlpatterns]
    return module


def _with_upload_middleware(middleware: list[str]) -> list[str]:
    middleware = [m for m in middleware if m != "cases.uploads.UploadLimitMiddleware"]
    index = middleware.index("django.middleware.locale.LocaleMiddleware") + 1
    return [
        *middleware[:index],
        "cases.uploads.UploadLimitMiddleware",
        *middleware[index:],
    ]


@pytest.fixture
def upload_settings(settings, upload_temp_dir):
    """Small limits, the limiting handler first, the middleware installed."""
    settings.UPLOAD_MAX_REQUEST_SIZE = 200 * 1024
    settings.UPLOAD_MAX_FILE_SIZE = 100 * 1024
    settings.FILE_UPLOAD_HANDLERS = HANDLERS
    settings.MIDDLEWARE = _with_upload_middleware(settings.MIDDLEWARE)
    settings.ROOT_URLCONF = _urlconf(csrf_exempt(_store_all))
    return settings


@pytest.mark.django_db
def test_an_oversized_request_gets_the_413_page_before_csrf_or_the_view(
    upload_settings, media_root
):
    # given: a client that enforces CSRF, with no token: the size decides first
    client = Client(enforce_csrf_checks=True)
    body = {"document": fb.uploaded_file("big.pdf", fb.large_pdf_bytes(250 * 1024))}

    # when
    with translation.override("en"):
        response = client.post("/upload-test/", body, HTTP_ACCEPT_LANGUAGE="en")

    # then
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "413.html" in [t.name for t in response.templates]
    content = response.content.decode()
    assert 'data-error="too-large"' in content
    assert "The files are larger than 200 KB in total" in content
    assert files_in(media_root) == []


@pytest.mark.django_db
def test_the_413_page_states_the_default_limit(upload_settings, client):
    # given
    upload_settings.UPLOAD_MAX_REQUEST_SIZE = 40 * 1024 * 1024

    # when: Content-Length alone is over the limit; the body is never read
    with translation.override("en"):
        response = client.post(
            "/upload-test/",
            data=b"",
            content_type="multipart/form-data; boundary=x",
            CONTENT_LENGTH=str(41 * 1024 * 1024),
        )

    # then
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "The files are larger than 40 MB in total" in response.content.decode()


@pytest.mark.django_db
def test_a_request_within_the_limits_reaches_the_view_and_is_stored(
    upload_settings, client, media_root, upload_temp_dir
):
    # given
    body = {
        "licence": fb.uploaded_file("licence.pdf", fb.large_pdf_bytes(90 * 1024)),
        "photo": fb.uploaded_file("photo.jpg", fb.jpeg_with_gps_bytes()),
        "note": "hello",
    }

    # when
    response = client.post("/upload-test/", body)

    # then
    assert response.status_code == HTTPStatus.OK
    results = response.json()["results"]
    assert [r["field"] for r in results] == ["licence", "photo"]
    assert all(STORED_NAME.fullmatch(r.get("stored", "")) for r in results)
    assert response.json()["fields"] == ["note"]
    assert len(files_in(media_root)) == 2
    assert files_in(upload_temp_dir) == []


@pytest.mark.django_db
def test_a_file_over_the_per_file_limit_stops_being_written_while_streaming(
    upload_settings, client, media_root, upload_temp_dir
):
    # given: 600 KB file (spooled to disk by Django) against a 100 KB file limit
    upload_settings.UPLOAD_MAX_REQUEST_SIZE = 10 * 1024 * 1024
    upload_settings.ROOT_URLCONF = _urlconf(_counting_view)
    body = {
        "small": fb.uploaded_file("small.png", fb.png_bytes()),
        "big": fb.uploaded_file("big.pdf", fb.large_pdf_bytes(600 * 1024)),
    }

    # when
    response = client.post("/upload-test/", body)

    # then: the big one is refused as too large, having passed on at most the
    # limit plus one chunk; the small one is stored; no temporary file is left
    assert response.status_code == HTTPStatus.OK
    payload = response.json()
    assert payload["results"] == [
        {"field": "small", "stored": payload["results"][0]["stored"]},
        {"field": "big", "error": "too_large"},
    ]
    passed_on = payload["passed_on"]["big.pdf"]
    assert passed_on <= 100 * 1024 + 64 * 1024
    # Django spools both files to disk (the request is over 256 KB); the big
    # one's partial copy was deleted as soon as it went over the limit, not
    # left on disk until the end of the request.
    assert payload["temp_files"] == 1
    assert len(files_in(media_root)) == 1
    assert files_in(upload_temp_dir) == []


@pytest.mark.django_db
def test_without_the_middleware_the_handler_reads_nothing_and_flags_the_request(
    upload_settings, client, media_root
):
    # given: the handler alone, and a view that looks at the files anyway
    upload_settings.MIDDLEWARE = [
        m
        for m in upload_settings.MIDDLEWARE
        if m != "cases.uploads.UploadLimitMiddleware"
    ]
    body = {"document": fb.uploaded_file("big.pdf", fb.large_pdf_bytes(250 * 1024))}

    # when
    response = client.post("/upload-test/", body)

    # then
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {
        "results": [],
        "fields": [],
        "flagged": True,
        "passed_on": {},
        "temp_files": None,
    }
    assert files_in(media_root) == []


@pytest.mark.django_db
def test_the_view_decorator_answers_413_without_the_middleware(
    upload_settings, client, media_root
):
    # given
    upload_settings.MIDDLEWARE = [
        m
        for m in upload_settings.MIDDLEWARE
        if m != "cases.uploads.UploadLimitMiddleware"
    ]
    upload_settings.ROOT_URLCONF = _urlconf(csrf_exempt(limit_upload_size(_store_all)))
    body = {"document": fb.uploaded_file("big.pdf", fb.large_pdf_bytes(250 * 1024))}

    # when
    response = client.post("/upload-test/", body)

    # then
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert 'data-error="too-large"' in response.content.decode()
    assert files_in(media_root) == []


def test_the_handler_refuses_by_content_length_without_reading_the_body(rf, settings):
    # given
    settings.UPLOAD_MAX_REQUEST_SIZE = 1000
    request = rf.post("/", data=b"", content_type="multipart/form-data; boundary=x")
    handler = uploads.RequestSizeLimitUploadHandler(request)
    body = io.BytesIO(b"never read")

    # when
    result = handler.handle_raw_input(body, request.META, 5000, b"x", "utf-8")

    # then
    assert result is not None
    post, files = result
    assert not post
    assert not files
    assert body.tell() == 0
    assert upload_limits_exceeded(request)
