"""Builders of real test files: good documents and the upload attacks.

Every builder returns ``bytes``; ``uploaded_file`` and ``temporary_uploaded_file``
wrap them the way Django's upload handlers would (in memory below 256 KB, in a
temporary file above).
"""

import io
import os
import struct
import zipfile
import zlib

from django.core.files.uploadedfile import (
    SimpleUploadedFile,
    TemporaryUploadedFile,
    UploadedFile,
)
from PIL import ExifTags, Image
from pypdf import PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    TextStringObject,
)

# Tiananmen Square, as degrees/minutes/seconds: a location a leak would reveal.
GPS_LATITUDE = (39.0, 54.0, 27.0)
GPS_LONGITUDE = (116.0, 23.0, 27.0)
APPENDED_PAYLOAD = b"<script>alert('appended after the image')</script>"


# ------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------
def _image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (width, height), "white" if mode != "P" else 0)
    # A stripe on the left half so that orientation changes are visible.
    for x in range(width // 2):
        for y in range(height):
            image.putpixel((x, y), (200, 30, 30) if mode == "RGB" else 1)
    return image


def png_bytes(width: int = 40, height: int = 20, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    _image(width, height, mode).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int = 40, height: int = 20) -> bytes:
    buffer = io.BytesIO()
    _image(width, height).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ExifTags.Base.ImageDescription] = "shop front"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = GPS_LONGITUDE
    return exif


def jpeg_with_gps_bytes(
    width: int = 40, height: int = 20, orientation: int | None = None
) -> bytes:
    """A JPEG with EXIF GPS location, a camera make and a comment."""
    buffer = io.BytesIO()
    _image(width, height).save(
        buffer,
        "JPEG",
        quality=95,
        exif=gps_exif(orientation),
        comment=b"secret comment",
    )
    return buffer.getvalue()


def png_with_gps_bytes(width: int = 40, height: int = 20) -> bytes:
    """A PNG with an eXIf chunk (GPS) and a text chunk."""
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("Comment", "secret comment")
    buffer = io.BytesIO()
    _image(width, height).save(buffer, "PNG", exif=gps_exif(), pnginfo=text)
    return buffer.getvalue()


def png_with_appended_bytes(payload: bytes = APPENDED_PAYLOAD) -> bytes:
    """A valid PNG with data after its IEND chunk (a classic polyglot)."""
    return png_bytes() + payload


def jpeg_with_appended_bytes(payload: bytes = APPENDED_PAYLOAD) -> bytes:
    """A valid JPEG with data after its EOI marker."""
    return jpeg_bytes() + payload


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG declaring huge dimensions (10 gigapixels by default)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    row = b"\x00" + b"\x00" * width
    compressor = zlib.compressobj(9)
    data = compressor.compress(row * 16) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def truncated_png_bytes() -> bytes:
    data = png_bytes(200, 200)
    return data[: len(data) // 2]


def noise_png_bytes(width: int, height: int) -> bytes:
    """A PNG of random pixels: it hardly compresses (about 3 bytes a pixel)."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def noise_jpeg_bytes(width: int, height: int, quality: int = 95) -> bytes:
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# ------------------------------------------------------------------------------
# PDFs
# ------------------------------------------------------------------------------
def _write(writer: PdfWriter) -> bytes:
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _writer(pages: int = 1) -> PdfWriter:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    return writer


def valid_pdf_bytes(pages: int = 1) -> bytes:
    return _write(_writer(pages))


def encrypted_pdf_bytes() -> bytes:
    writer = _writer()
    writer.encrypt(user_password="", owner_password="owner")
    return _write(writer)


def _javascript_action(writer: PdfWriter, code: str = "app.alert('x');"):
    action = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Action"),
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject(code),
        }
    )
    return writer._add_object(action)


def pdf_with_open_action_javascript_bytes() -> bytes:
    """The catalog's /OpenAction runs JavaScript when the file is opened."""
    writer = _writer()
    writer._root_object[NameObject("/OpenAction")] = _javascript_action(writer)
    return _write(writer)


def pdf_with_names_javascript_bytes() -> bytes:
    """Document-level JavaScript in the /Names /JavaScript name tree."""
    writer = _writer()
    tree = DictionaryObject(
        {
            NameObject("/Names"): ArrayObject(
                [TextStringObject("init"), _javascript_action(writer)]
            )
        }
    )
    writer._root_object[NameObject("/Names")] = DictionaryObject(
        {NameObject("/JavaScript"): writer._add_object(tree)}
    )
    return _write(writer)


def pdf_with_page_aa_javascript_bytes() -> bytes:
    """A page's additional action (/AA /O: on open) runs JavaScript."""
    writer = _writer()
    writer.pages[0][NameObject("/AA")] = DictionaryObject(
        {NameObject("/O"): _javascript_action(writer)}
    )
    return _write(writer)


def pdf_with_link_javascript_bytes() -> bytes:
    """A link annotation whose action is JavaScript, hidden in an indirect object."""
    writer = _writer()
    annotation = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Annot"),
            NameObject("/Subtype"): NameObject("/Link"),
            NameObject("/Rect"): ArrayObject([NumberObject(n) for n in (0, 0, 99, 99)]),
            NameObject("/A"): _javascript_action(writer),
        }
    )
    writer.pages[0][NameObject("/Annots")] = ArrayObject(
        [writer._add_object(annotation)]
    )
    return _write(writer)


def pdf_with_launch_bytes() -> bytes:
    """/OpenAction launches a program."""
    writer = _writer()
    writer._root_object[NameObject("/OpenAction")] = DictionaryObject(
        {
            NameObject("/S"): NameObject("/Launch"),
            NameObject("/F"): TextStringObject("cmd.exe"),
        }
    )
    return _write(writer)


def pdf_with_open_action_uri_bytes() -> bytes:
    """/OpenAction is an action (open a web address), not a destination."""
    writer = _writer()
    writer._root_object[NameObject("/OpenAction")] = DictionaryObject(
        {
            NameObject("/S"): NameObject("/URI"),
            NameObject("/URI"): TextStringObject("https://evil.example/"),
        }
    )
    return _write(writer)


def pdf_with_open_destination_bytes() -> bytes:
    """/OpenAction is a plain destination (show page 1): harmless, accepted."""
    writer = _writer(2)
    writer._root_object[NameObject("/OpenAction")] = ArrayObject(
        [writer.pages[0].indirect_reference, NameObject("/Fit")]
    )
    return _write(writer)


def pdf_with_embedded_file_bytes() -> bytes:
    writer = _writer()
    writer.add_attachment("invoice.exe", b"MZ\x90\x00 not really a program")
    return _write(writer)


def pdf_with_xfa_bytes() -> bytes:
    writer = _writer()
    writer._root_object[NameObject("/AcroForm")] = DictionaryObject(
        {
            NameObject("/Fields"): ArrayObject(),
            NameObject("/XFA"): writer._add_object(DecodedStreamObject()),
        }
    )
    return _write(writer)


def assemble_pdf(objects: list[bytes]) -> bytes:
    """Write a PDF by hand from object bodies (object 1 is the catalog)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def pdf_with_hex_escaped_javascript_bytes() -> bytes:
    """/J#61vaScript: names spelled with hex escapes to dodge byte scanners."""
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
            b"<< /S /J#61vaScript /J#53 (app.alert\\(1\\)) >>",
        ]
    )


def truncated_pdf_bytes() -> bytes:
    data = valid_pdf_bytes(3)
    return data[: len(data) * 2 // 3]


def large_pdf_bytes(size: int) -> bytes:
    """A valid one-page PDF of about ``size`` bytes: an uncompressed noise image."""
    writer = _writer()
    width = 1000
    height = max(1, (size - 2048) // (width * 3))
    image = DecodedStreamObject()
    image.set_data(os.urandom(width * height * 3))
    image.update(
        {
            NameObject("/Type"): NameObject("/XObject"),
            NameObject("/Subtype"): NameObject("/Image"),
            NameObject("/Width"): NumberObject(width),
            NameObject("/Height"): NumberObject(height),
            NameObject("/ColorSpace"): NameObject("/DeviceRGB"),
            NameObject("/BitsPerComponent"): NumberObject(8),
        }
    )
    page = writer.pages[0]
    page[NameObject("/Resources")] = DictionaryObject(
        {
            NameObject("/XObject"): DictionaryObject(
                {NameObject("/Im0"): writer._add_object(image)}
            )
        }
    )
    content = DecodedStreamObject()
    content.set_data(b"q 595 0 0 842 0 0 cm /Im0 Do Q")
    page[NameObject("/Contents")] = writer._add_object(content)
    return _write(writer)


# ------------------------------------------------------------------------------
# Things that are not documents
# ------------------------------------------------------------------------------
def elf_bytes() -> bytes:
    """The start of a Linux executable."""
    return (
        b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + os.urandom(64)
    )


def pe_bytes() -> bytes:
    """The start of a Windows executable."""
    return b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 52 + b"PE\x00\x00" + os.urandom(64)


def svg_script_bytes() -> bytes:
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg">'
        b"<script>alert(document.cookie)</script></svg>"
    )


def html_bytes() -> bytes:
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def html_with_pdf_header_later_bytes() -> bytes:
    """HTML first, a PDF after it: must not pass as a PDF."""
    return html_bytes() + valid_pdf_bytes()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("licence.pdf", valid_pdf_bytes())
    return buffer.getvalue()


# ------------------------------------------------------------------------------
# Django upload objects
# ------------------------------------------------------------------------------
def uploaded_file(
    name: str, data: bytes, content_type: str = "application/octet-stream"
) -> UploadedFile:
    """An in-memory upload, as Django makes for files up to 256 KB."""
    return SimpleUploadedFile(name, data, content_type=content_type)


def temporary_uploaded_file(
    name: str, data: bytes, content_type: str = "application/octet-stream"
) -> TemporaryUploadedFile:
    """An upload spooled to a temporary file, as Django makes above 256 KB."""
    upload = TemporaryUploadedFile(name, content_type, len(data), None)
    for start in range(0, len(data), 64 * 1024):
        upload.write(data[start : start + 64 * 1024])
    upload.seek(0)
    return upload


def drawn_pdf_bytes(pages: int = 3) -> bytes:
    """A PDF whose pages show something: a title, ruled lines, the page number.

    Made with Pillow (each page an image), so that a rendered preview can be
    told apart from a blank page.
    """
    from PIL import ImageDraw

    images = []
    for number in range(1, pages + 1):
        image = Image.new("RGB", (595, 842), "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle((40, 40, 555, 110), outline="black", width=3)
        draw.text((60, 62), "BUSINESS LICENCE (specimen)", fill="black")
        for y in range(160, 760, 40):
            draw.line((60, y, 535, y), fill=(120, 120, 120), width=2)
        draw.text((270, 790), f"page {number} / {pages}", fill="black")
        images.append(image)
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:])
    return buffer.getvalue()
