"""Compare the product's PDF check (pypdf, strict) with the same check on pikepdf.

Usage (pikepdf is not a dependency of the product; install it aside)::

    .venv/bin/pip install --no-deps --target /tmp/pikepdf pikepdf==10.17.0
    PYTHONPATH=/tmp/pikepdf DATABASE_URL=postgres://postgres@127.0.0.1:5432/x \\
        .venv/bin/python bench/pdf_checkers.py

For each file of the upload test corpus (``tests/filebuilders.py``: valid,
encrypted, active content of every kind, malformed) and a few more malformed
ones built here, prints what each checker decides and its CPU time per file
(median). The pikepdf port walks the same keys as ``cases.uploads._walk_pdf``;
qpdf repairs a damaged file silently, so it is run twice: refusing any file
qpdf had to repair (its warnings), and accepting repairs. Nothing is written
to docs/benchmarks.md: the table there (issue 15) was pasted from a run.
"""

import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")


class _Active(Exception):
    pass


def main() -> None:
    import django

    django.setup()
    try:
        import pikepdf
    except ImportError:
        sys.exit("pikepdf is not installed: see the usage in this file's docstring")
    from django.core.exceptions import ValidationError
    from django.core.files.uploadedfile import SimpleUploadedFile

    from bench.intake import pdf_bytes as scan_pdf
    from cases import uploads
    from tests import filebuilders as files

    def pypdf_check(data: bytes) -> str:
        try:
            uploads._check_pdf(SimpleUploadedFile("x.pdf", data))
        except ValidationError as exc:
            return f"refused ({exc.code})"
        return "accepted"

    def node_check(node) -> None:
        keys = set(node.keys())
        if uploads._FORBIDDEN_KEYS & keys:
            raise _Active
        for key in ("/S", "/Type", "/Subtype"):
            value = node.get(key)
            if isinstance(value, pikepdf.Name) and (
                str(value) in uploads._FORBIDDEN_ACTIONS
                or str(value) in uploads._FORBIDDEN_TYPES
            ):
                raise _Active
        action = node.get("/OpenAction")
        if isinstance(action, pikepdf.Dictionary) and (
            action.get("/S") != pikepdf.Name.GoTo or "/Next" in action
        ):
            raise _Active

    def pikepdf_check(data: bytes, *, refuse_repaired: bool) -> str:
        try:
            with pikepdf.open(io.BytesIO(data)) as pdf:
                if refuse_repaired and pdf.get_warnings():
                    return "refused (pdf_invalid: repaired)"
                if pdf.is_encrypted:
                    return "refused (pdf_encrypted)"
                if len(pdf.pages) < 1:
                    return "refused (pdf_invalid)"
                seen, stack, visited = set(), [pdf.trailer], 0
                while stack:
                    node = stack.pop()
                    if isinstance(node, pikepdf.Object) and node.is_indirect:
                        if node.objgen in seen:
                            continue
                        seen.add(node.objgen)
                    visited += 1
                    if visited > uploads._MAX_PDF_NODES:
                        return "refused (pdf_invalid)"
                    if isinstance(node, pikepdf.Dictionary | pikepdf.Stream):
                        node_check(node)
                        stack.extend(
                            v for k, v in node.items() if k not in uploads._SKIPPED_KEYS
                        )
                    elif isinstance(node, pikepdf.Array):
                        stack.extend(node)
        except _Active:
            return "refused (pdf_active_content)"
        except pikepdf.PasswordError:
            return "refused (pdf_encrypted)"
        except Exception:  # qpdf raises on what it cannot repair
            return "refused (pdf_invalid)"
        return "accepted"

    def wrong_xref_offset() -> bytes:
        data = files.valid_pdf_bytes(2)
        at = data.rindex(b"startxref\n")
        offset = int(data[at + 10 :].split()[0])
        return data[:at] + b"startxref\n%d\n%%%%EOF\n" % (offset + 7)

    def without_trailer_end() -> bytes:
        data = files.valid_pdf_bytes()
        return data[: data.rindex(b"startxref")]

    def javascript_in_object_stream() -> bytes:
        source = pikepdf.open(io.BytesIO(files.pdf_with_open_action_javascript_bytes()))
        out = io.BytesIO()
        source.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
        return out.getvalue()

    corpus = [
        ("valid, 1 page (pypdf)", files.valid_pdf_bytes()),
        ("valid, 3 drawn pages (Pillow)", files.drawn_pdf_bytes(3)),
        ("valid, the benchmark's 200 KB scan", scan_pdf(1)),
        ("valid, 5 MB image", files.large_pdf_bytes(5 * 1024 * 1024)),
        ("open destination (harmless)", files.pdf_with_open_destination_bytes()),
        ("encrypted, empty user password", files.encrypted_pdf_bytes()),
        ("OpenAction JavaScript", files.pdf_with_open_action_javascript_bytes()),
        ("Names JavaScript", files.pdf_with_names_javascript_bytes()),
        ("page /AA JavaScript", files.pdf_with_page_aa_javascript_bytes()),
        ("link JavaScript", files.pdf_with_link_javascript_bytes()),
        ("Launch", files.pdf_with_launch_bytes()),
        ("OpenAction URI", files.pdf_with_open_action_uri_bytes()),
        ("embedded file", files.pdf_with_embedded_file_bytes()),
        ("XFA form", files.pdf_with_xfa_bytes()),
        ("hex-escaped /J#61vaScript", files.pdf_with_hex_escaped_javascript_bytes()),
        ("JavaScript inside an object stream", javascript_in_object_stream()),
        ("truncated", files.truncated_pdf_bytes()),
        ("xref offset wrong", wrong_xref_offset()),
        ("no startxref / %%EOF", without_trailer_end()),
        ("2 KB of garbage after %%EOF", files.valid_pdf_bytes() + os.urandom(2048)),
        ("header, then garbage", b"%PDF-1.4\n" + os.urandom(500)),
        (
            "no pages",
            files.assemble_pdf(
                [
                    b"<< /Type /Catalog /Pages 2 0 R >>",
                    b"<< /Type /Pages /Kids [] /Count 0 >>",
                ]
            ),
        ),
        (
            "reference to a missing object",
            files.assemble_pdf(
                [
                    b"<< /Type /Catalog /Pages 2 0 R /Outlines 9 0 R >>",
                    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
                ]
            ),
        ),
        (
            "stream /Length wrong",
            files.assemble_pdf(
                [
                    b"<< /Type /Catalog /Pages 2 0 R >>",
                    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                    b"/Contents 4 0 R >>",
                    b"<< /Length 999 >>\nstream\nq Q\nendstream",
                ]
            ),
        ),
    ]

    def cpu_ms(check, data: bytes) -> float:
        times = []
        for _ in range(5 if len(data) > 1_000_000 else 30):
            started = time.process_time()
            check(data)
            times.append(time.process_time() - started)
        return statistics.median(times) * 1000

    strict = lambda data: pikepdf_check(data, refuse_repaired=True)  # noqa: E731
    lenient = lambda data: pikepdf_check(data, refuse_repaired=False)  # noqa: E731
    print(f"pikepdf {pikepdf.__version__} (qpdf {pikepdf.__libqpdf_version__})\n")
    print(
        "| file | size | pypdf (the product) | pikepdf, repairs refused | "
        "pikepdf, repairs accepted | pypdf ms | pikepdf ms |"
    )
    print("|---|---:|---|---|---|---:|---:|")
    for name, data in corpus:
        print(
            f"| {name} | {len(data) / 1024:.0f} KB | {pypdf_check(data)} | "
            f"{strict(data)} | {lenient(data)} | {cpu_ms(pypdf_check, data):.2f} | "
            f"{cpu_ms(strict, data):.2f} |"
        )


if __name__ == "__main__":
    main()
