"""Inspect, sanitise and store merchant uploads: the one way a file gets in.

A file is recognised by its bytes, never by its name or the browser's content
type. Only PDF, JPEG and PNG are accepted:

- images are opened with Pillow under a pixel limit, verified, turned upright
  and re-encoded, so that metadata (EXIF GPS location, comments, text chunks)
  and anything appended after the image data are dropped;
- PDFs are parsed with pypdf in strict mode and refused when encrypted or when
  they carry active content (scripts, launch/open actions, embedded files,
  rich media, XFA forms); an accepted PDF is stored byte for byte.

Content is only ever read in chunks and hashed while it streams, so a 10 MB
upload costs a few hundred KB of memory (images excepted: decoding needs the
pixels). Limits on request and file size are enforced while the body is read
by ``RequestSizeLimitUploadHandler`` and, before the view runs, by
``UploadLimitMiddleware`` (413 page).
"""

import contextlib
import functools
import hashlib
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils.datastructures import MultiValueDict
from django.utils.translation import gettext_lazy as _
from PIL import Image, ImageOps
from pypdf import PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

from cases.models import document_upload_to

PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"

# Read and write in 64 KB pieces: small enough to keep memory flat, large
# enough that hashing and copying stay fast.
CHUNK_SIZE = 64 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXTENSIONS = {PDF: (".pdf",), JPEG: (".jpg", ".jpeg", ".jpe"), PNG: (".png",)}
_ALL_EXTENSIONS = {ext for exts in _EXTENSIONS.values() for ext in exts}
_MAX_NAME_LENGTH = 255
# Characters that break file names on common systems; shown as "_".
_UNSAFE_NAME_CHARACTERS = dict.fromkeys(map(ord, '<>:"|?*'), "_")

MESSAGES = {
    "empty": _("The file is empty."),
    "too_large": _("The file is larger than %(limit)s."),
    "file_type": _(
        "The file is not a PDF, JPEG or PNG file (the content decides, not the name)."
    ),
    "image_too_large": _(
        "The image is too large: at most %(limit)s million pixels are accepted."
    ),
    "image_invalid": _("The image is damaged or incomplete and cannot be read."),
    "pdf_invalid": _(
        "The PDF is damaged or not a valid PDF. Please save or print it to a new "
        "PDF and upload that."
    ),
    "pdf_encrypted": _(
        "The PDF is protected with a password or encrypted. Please upload it "
        "without protection."
    ),
    "pdf_active_content": _(
        "The PDF contains active content (scripts, automatic actions or embedded "
        "files) and cannot be accepted. Please print it to a new PDF and upload that."
    ),
    "changed": _("The file changed while it was being stored. Please upload it again."),
}


def _refuse(code: str, **params: Any) -> ValidationError:
    return ValidationError(MESSAGES[code], code=code, params=params or None)


def size_label(size: int) -> str:
    """Return a byte count as a short label: ``10 MB``, ``1.5 MB``, ``200 KB``."""
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    value = size / (1024 * 1024)
    return f"{value:.0f} MB" if value == int(value) else f"{value:.1f} MB"


# ------------------------------------------------------------------------------
# Display names
# ------------------------------------------------------------------------------
def sanitize_file_name(raw: str | None, *, content_type: str) -> str:
    """Return ``raw`` as safe display text whose extension matches the content.

    Path parts (``../``, ``C:\\``) are cut, control, format (bidi overrides,
    zero-width) and unassigned characters dropped, whitespace collapsed, leading
    and trailing dots removed, and the result kept within 255 characters.
    Letters of every script are kept: ``营业执照.pdf`` stays as it is.
    """
    name = unicodedata.normalize("NFC", str(raw or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        " " if ch.isspace() else ch
        for ch in name
        if ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    name = " ".join(name.translate(_UNSAFE_NAME_CHARACTERS).split()).strip(" .")

    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot else ""
    if not dot:
        stem = name
    if suffix.lower() not in _EXTENSIONS[content_type]:
        if suffix.lower() not in _ALL_EXTENSIONS:
            # "report.v2" or "a.exe": keep the whole name, add the real extension.
            stem = name
        suffix = _EXTENSIONS[content_type][0]
    stem = stem[: _MAX_NAME_LENGTH - len(suffix)].rstrip(" .") or "document"
    return f"{stem}{suffix}"


# ------------------------------------------------------------------------------
# The cleaned upload
# ------------------------------------------------------------------------------
class _HashingFile(File):
    """A ``File`` that hashes what the storage reads from it through ``chunks``."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.hasher = hashlib.sha256()
        self.hashed = 0

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        for chunk in super().chunks(chunk_size or CHUNK_SIZE):
            self.hasher.update(chunk)
            self.hashed += len(chunk)
            yield chunk


class CleanUpload:
    """A verified, sanitised file waiting to be stored.

    Use it as a context manager, or call ``discard`` when it is not stored, so
    that the temporary file of a re-encoded image is released at once.
    """

    def __init__(
        self,
        *,
        original_name: str,
        content_type: str,
        size: int,
        sha256: str,
        source: IO[bytes],
        owns_source: bool,
    ) -> None:
        self.original_name = original_name
        self.content_type = content_type
        self.size = size
        self.sha256 = sha256
        self._source: IO[bytes] | None = source
        # A re-encoded image lives in a temporary file of its own; a PDF is
        # read straight from Django's upload, which Django closes itself.
        self._owns_source = owns_source

    def __repr__(self) -> str:
        return (
            f"<CleanUpload {self.original_name!r} {self.content_type} "
            f"{self.size} bytes>"
        )

    def __enter__(self) -> "CleanUpload":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.content_type][0]

    def store(self) -> str:
        """Save the content under a random name in the default storage.

        Return the storage name to put in ``Document.file``. The content is
        copied in chunks and hashed again on the way; if it no longer matches
        ``sha256`` the stored copy is deleted and ValidationError raised. An
        OSError (disk full) propagates with nothing left in the storage.
        """
        if self._source is None:
            raise ValueError("This upload was discarded and cannot be stored.")
        content = _HashingFile(self._source)
        name = document_upload_to(None, f"upload{self.extension}")
        try:
            name = default_storage.save(name, content)
        except OSError:
            # A write that fails half-way (disk full) leaves the part written
            # behind in FileSystemStorage. The name is random: nothing else
            # can be stored under it.
            with contextlib.suppress(OSError):
                default_storage.delete(name)
            raise
        # Storages that read with chunks() (FileSystemStorage) are checked;
        # others that read differently are trusted.
        if content.hashed and (
            content.hashed != self.size or content.hasher.hexdigest() != self.sha256
        ):
            default_storage.delete(name)
            raise _refuse("changed")
        return name

    def discard(self) -> None:
        """Release the temporary copy, if any (safe to call more than once)."""
        source, self._source = self._source, None
        if source is not None and self._owns_source:
            source.close()


def _temporary_file() -> IO[bytes]:
    # An anonymous file: it has no name on disk and vanishes when closed, or
    # when the process dies, so a refused or forgotten upload leaves nothing.
    return tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR)


def _digest(chunks: Iterable[bytes], *, limit: int | None = None) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise _refuse("too_large", limit=size_label(limit))
    return hasher.hexdigest(), size


def _read_chunks(fileobj: IO[bytes]) -> Iterator[bytes]:
    fileobj.seek(0)
    while chunk := fileobj.read(CHUNK_SIZE):
        yield chunk


def sniff_content_type(head: bytes) -> str | None:
    """Return the content type the first bytes announce, if it is one accepted."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    return None


def upload_clean(uploaded: UploadedFile) -> CleanUpload:
    """Inspect an uploaded file and return it verified and sanitised.

    Raise ValidationError (with a ``code`` from ``MESSAGES``) when the file is
    empty, too large, not a PDF/JPEG/PNG by its content, a damaged or
    oversized image, or a damaged, encrypted or active PDF.
    """
    limit = settings.UPLOAD_MAX_FILE_SIZE
    if uploaded.size is not None and uploaded.size > limit:
        raise _refuse("too_large", limit=size_label(limit))
    uploaded.seek(0)
    head = uploaded.read(16)
    uploaded.seek(0)
    if not head:
        raise _refuse("empty")
    content_type = sniff_content_type(head)
    if content_type is None:
        raise _refuse("file_type")
    display_name = sanitize_file_name(uploaded.name, content_type=content_type)

    if content_type == PDF:
        # Hash (and count) first: the size Django reports is trusted no further.
        sha256, size = _digest(_read_chunks(uploaded), limit=limit)
        _check_pdf(uploaded)
        return CleanUpload(
            original_name=display_name,
            content_type=PDF,
            size=size,
            sha256=sha256,
            source=uploaded,
            owns_source=False,
        )

    _digest(_read_chunks(uploaded), limit=limit)
    output = _reencode_image(uploaded, content_type)
    try:
        sha256, size = _digest(_read_chunks(output))
    except BaseException:
        output.close()
        raise
    return CleanUpload(
        original_name=display_name,
        content_type=content_type,
        size=size,
        sha256=sha256,
        source=output,
        owns_source=True,
    )


def uploads_total_size(files: Iterable[UploadedFile]) -> int:
    """Return the total size in bytes of the uploaded files."""
    return sum(f.size or 0 for f in files if f is not None)


# ------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}
_JPEG_MODES = {"L", "RGB", "CMYK"}


def _check_pixels(image: Image.Image) -> None:
    limit = settings.UPLOAD_MAX_IMAGE_PIXELS
    if image.width * image.height > limit:
        raise _refuse("image_too_large", limit=f"{limit / 1_000_000:g}")


def _reencode_image(uploaded: UploadedFile, content_type: str) -> IO[bytes]:
    """Decode the image and write it again, without metadata, to a temp file."""
    fmt = "PNG" if content_type == PNG else "JPEG"
    limit = settings.UPLOAD_MAX_IMAGE_PIXELS
    # Pillow reads this module global in Image.open (and raises beyond twice
    # it); the explicit check in _check_pixels does not depend on it.
    Image.MAX_IMAGE_PIXELS = limit
    output = _temporary_file()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            uploaded.seek(0)
            with Image.open(uploaded, formats=[fmt]) as image:
                _check_pixels(image)
                image.verify()
            # verify() leaves the image unusable: open it again to decode it.
            uploaded.seek(0)
            with Image.open(uploaded, formats=[fmt]) as image:
                _check_pixels(image)
                image.load()
                _save_without_metadata(image, fmt, output)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        output.close()
        raise _refuse("image_too_large", limit=f"{limit / 1_000_000:g}") from None
    except ValidationError:
        output.close()
        raise
    except Exception as exc:  # Pillow raises many kinds on malformed input
        output.close()
        raise _refuse("image_invalid") from exc
    return output


def _save_without_metadata(image: Image.Image, fmt: str, output: IO[bytes]) -> None:
    # Turn the picture upright before its EXIF (and the orientation) goes;
    # an unreadable orientation leaves it as it is rather than refusing it.
    with contextlib.suppress(Exception):  # malformed EXIF: various errors
        ImageOps.exif_transpose(image, in_place=True)
    upright = image
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        if upright.mode not in _JPEG_MODES:
            upright = upright.convert("RGB")
        options["quality"] = 90
    else:
        transparency = upright.info.get("transparency")
        if upright.mode not in _PNG_MODES:
            upright = upright.convert("RGBA")
            transparency = None
        if transparency is not None:
            options["transparency"] = transparency
    # Encoders fall back to image.info for some chunks (JPEG comments, PNG
    # loop counts): nothing of the original's metadata may be carried over.
    upright.info = {}
    upright.save(output, format=fmt, **options)
    output.flush()


# ------------------------------------------------------------------------------
# PDFs
# ------------------------------------------------------------------------------
# Action types that run code, open or fetch other files, or send data away.
_FORBIDDEN_ACTIONS = {
    "/JavaScript",
    "/Launch",
    "/GoToE",
    "/GoToR",
    "/ImportData",
    "/SubmitForm",
    "/RichMediaExecute",
    "/Rendition",
    "/Movie",
    "/Sound",
}
# Keys that mean scripts, embedded files, rich media or XFA forms.
_FORBIDDEN_KEYS = {
    "/JavaScript",
    "/JS",
    "/EmbeddedFiles",
    "/EF",
    "/RichMediaContent",
    "/RichMediaSettings",
    "/XFA",
}
_FORBIDDEN_TYPES = {"/EmbeddedFile", "/RichMedia", "/FileAttachment", "/Screen", "/3D"}
# Page content, fonts, images and appearance streams cannot carry actions;
# not following them keeps large image streams out of memory.
_SKIPPED_KEYS = {
    "/Parent",
    "/P",
    "/Contents",
    "/Resources",
    "/AP",
    "/Thumb",
    "/Metadata",
    "/DR",
    "/Font",
    "/XObject",
    "/StructTreeRoot",
    "/PieceInfo",
}
# A document with more objects than this is refused as unreasonable.
_MAX_PDF_NODES = 500_000


class _ActiveContent(Exception):
    pass


def _check_pdf(uploaded: UploadedFile) -> None:
    try:
        uploaded.seek(0)
        reader = PdfReader(uploaded, strict=True)
        if reader.is_encrypted:
            raise _refuse("pdf_encrypted")
        if len(reader.pages) < 1:
            raise _refuse("pdf_invalid")
        _walk_pdf(reader.trailer)
    except ValidationError:
        raise
    except _ActiveContent:
        raise _refuse("pdf_active_content") from None
    except Exception as exc:  # pypdf raises many kinds on malformed input
        raise _refuse("pdf_invalid") from exc
    finally:
        uploaded.seek(0)


def _walk_pdf(root: Any) -> None:
    """Visit every dictionary reachable from ``root``; raise _ActiveContent."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    visited = 0
    while stack:
        node = stack.pop()
        if isinstance(node, IndirectObject):
            key = (node.idnum, node.generation)
            if key in seen:
                continue
            seen.add(key)
            node = node.get_object()
        visited += 1
        if visited > _MAX_PDF_NODES:
            raise ValueError("too many objects")
        if isinstance(node, DictionaryObject):  # includes stream dictionaries
            _check_pdf_dictionary(node)
            stack.extend(v for k, v in node.items() if k not in _SKIPPED_KEYS)
        elif isinstance(node, ArrayObject):
            stack.extend(node)


def _resolved(value: Any) -> Any:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _check_pdf_dictionary(node: Any) -> None:
    if _FORBIDDEN_KEYS.intersection(node.keys()):
        raise _ActiveContent
    for key in ("/S", "/Type", "/Subtype"):
        value = _resolved(node.get(key))
        if isinstance(value, str) and (
            value in _FORBIDDEN_ACTIONS or value in _FORBIDDEN_TYPES
        ):
            raise _ActiveContent
    # A destination (an array) only chooses the first page shown; an action
    # dictionary does something, and only a plain "go to" is kept.
    open_action = _resolved(node.get("/OpenAction"))
    if isinstance(open_action, DictionaryObject) and (
        _resolved(open_action.get("/S")) != "/GoTo" or "/Next" in open_action
    ):
        raise _ActiveContent


# ------------------------------------------------------------------------------
# Request and file size limits while the body is read
# ------------------------------------------------------------------------------
_EXCEEDED_ATTRIBUTE = "_upload_limit_exceeded"


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return 0


def upload_limits_exceeded(request: HttpRequest) -> bool:
    """Return True if the request body is over ``UPLOAD_MAX_REQUEST_SIZE``."""
    return getattr(request, _EXCEEDED_ATTRIBUTE, False) or (
        _content_length(request) > settings.UPLOAD_MAX_REQUEST_SIZE
    )


def request_too_large(request: HttpRequest) -> HttpResponse:
    """Render the 413 page (the body is not read)."""
    return render(
        request,
        "413.html",
        {
            "request_limit": size_label(settings.UPLOAD_MAX_REQUEST_SIZE),
            "file_limit": size_label(settings.UPLOAD_MAX_FILE_SIZE),
        },
        status=413,
    )


class UploadLimitMiddleware:
    """Answer 413 before any view or middleware reads an oversized body.

    Place it before ``CsrfViewMiddleware``, whose check would otherwise read
    (and reject) the body first.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if upload_limits_exceeded(request):
            return request_too_large(request)
        return self.get_response(request)


def limit_upload_size(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorate a view so that an oversized request gets the 413 page.

    Checked before the view (Content-Length) and after it (the upload handler
    may have stopped reading the body while the view's form read it).
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if upload_limits_exceeded(request):
            return request_too_large(request)
        response = view(request, *args, **kwargs)
        if upload_limits_exceeded(request):
            return request_too_large(request)
        return response

    return wrapped


class OversizedUpload(UploadedFile):
    """Stands in for a file whose upload stopped at the per-file limit.

    It has no content; ``size`` is what was received before the limit, so
    ``upload_clean`` (and a form using it) refuses it as too large.
    """

    oversized = True

    def __init__(self, *, name: str, content_type: str | None, size: int) -> None:
        super().__init__(BytesIO(), name, content_type, size)


class RequestSizeLimitUploadHandler(FileUploadHandler):
    """Stop reading uploads beyond the request and per-file size limits.

    Put it first in ``FILE_UPLOAD_HANDLERS``. A request whose Content-Length is
    over ``UPLOAD_MAX_REQUEST_SIZE`` is not read at all: POST and FILES stay
    empty and ``upload_limits_exceeded(request)`` turns True (the middleware
    answers 413 before this even happens). A file over ``UPLOAD_MAX_FILE_SIZE``
    is not written further: its partial copy is closed (deleted) and FILES
    gets an ``OversizedUpload`` that ``upload_clean`` refuses with a message.
    """

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.request_bytes = 0
        self.file_bytes = 0
        self.oversized = False

    def _mark_exceeded(self) -> None:
        if self.request is not None:
            setattr(self.request, _EXCEEDED_ATTRIBUTE, True)

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: bytes,
        encoding: str | None = None,
    ) -> tuple[QueryDict, MultiValueDict] | None:
        if content_length > settings.UPLOAD_MAX_REQUEST_SIZE:
            self._mark_exceeded()
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, Any] | None = None,
    ) -> None:
        super().new_file(
            field_name,
            file_name,
            content_type,
            content_length,
            charset,
            content_type_extra,
        )
        self.file_bytes = 0
        self.oversized = (
            content_length is not None
            and content_length > settings.UPLOAD_MAX_FILE_SIZE
        )

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.request_bytes += len(raw_data)
        if self.request_bytes > settings.UPLOAD_MAX_REQUEST_SIZE:
            # Only reachable without a trustworthy Content-Length.
            self._mark_exceeded()
            raise StopUpload(connection_reset=True)
        self.file_bytes += len(raw_data)
        if self.oversized:
            return None
        if self.file_bytes > settings.UPLOAD_MAX_FILE_SIZE:
            self.oversized = True
            self._close_partial_copies()
            return None
        return raw_data

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if not self.oversized:
            return None
        self._close_partial_copies()
        return OversizedUpload(
            name=self.file_name, content_type=self.content_type, size=self.file_bytes
        )

    def _close_partial_copies(self) -> None:
        # The handlers after this one hold the current file as ``file`` (the
        # same assumption Django's parser makes when it skips a file); closing
        # a temporary upload deletes it from disk.
        if self.request is None:
            return
        for handler in self.request.upload_handlers:
            partial = getattr(handler, "file", None)
            if handler is not self and partial is not None:
                partial.close()
