"""Fault injectors for the fault-injection suite: a PostgreSQL proxy that cuts
connections, a Redis the test can stop on this suite's own ports, an SMTP sink
that can go away and come back on the same port, and a tiny filesystem.

The real worker, the broker of the tests and the SMTP sink come from
``tests.integration.harness``; this module only adds ways to break them.
"""

import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from django.db import connections

from tests.integration.harness import RedisServer, SmtpSink, wait_for

# Ports for this suite's throwaway redis-server (the integration suite uses
# 6390-6399).
FAULTS_REDIS_PORTS = range(6380, 6390)


class FaultsRedisServer(RedisServer):
    """A throwaway ``redis-server`` on a port in 6380-6389."""

    @staticmethod
    def _spare_port() -> int:
        for port in FAULTS_REDIS_PORTS:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    return port
        raise RuntimeError("no spare port for a test Redis in 6380-6389")


# --- PostgreSQL through a proxy that can cut the line ---------------------------


class PgProxy:
    """A loopback TCP proxy in front of PostgreSQL that can drop its connections.

    ``cut_on(pattern, forward=...)`` arms it: the first packet the client sends
    that contains ``pattern`` closes both sides of that connection, either
    instead of being forwarded (the server never sees it: it rolls back the
    open transaction) or right after it (the server carries it out, e.g. a
    COMMIT, but the client never hears back). The server sees its client
    vanish; the client's next read fails as on a real network fault.
    """

    def __init__(self, *, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pattern: bytes | None = None
        self.forward = False
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_on(self, pattern: bytes, *, forward: bool = False) -> None:
        with self._lock:
            self.pattern, self.forward = pattern, forward

    def _take_trigger(self, data: bytes) -> bool | None:
        """None if ``data`` passes; else whether to forward it before cutting."""
        with self._lock:
            if self.pattern is None or self.pattern not in data:
                return None
            self.pattern = None
            self.cuts += 1
            return self.forward

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(
                target=self._pipe, args=(client, server, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(server, client, False), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        try:
            while data := src.recv(65536):
                trigger = self._take_trigger(data) if inspect else None
                if trigger is None or trigger:
                    dst.sendall(data)
                if trigger is not None:
                    break
        except OSError:
            pass
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()


@contextmanager
def database_through(proxy: PgProxy, alias: str = "default") -> Iterator[None]:
    """Route this thread's ``alias`` connection through ``proxy`` for the block."""
    conn = connections[alias]
    saved = {key: conn.settings_dict.get(key) for key in ("HOST", "PORT", "OPTIONS")}
    conn.close()
    conn.settings_dict["HOST"] = "127.0.0.1"
    conn.settings_dict["PORT"] = str(proxy.port)
    # Plain TCP, so that the proxy can read the statements it cuts on.
    conn.settings_dict["OPTIONS"] = {**(saved["OPTIONS"] or {}), "sslmode": "disable"}
    try:
        yield
    finally:
        with suppress(Exception):
            conn.close()
        conn.settings_dict.update(saved)


# --- SMTP that goes away ----------------------------------------------------------


class StoppableSmtpSink(SmtpSink):
    """The integration SMTP sink, which can also be shut down and started again."""

    def down(self) -> None:
        self.controller.stop()

    def up(self) -> None:
        # A fresh controller on the same port: the workers' EMAIL_URL stays valid.
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()


def codes_for(sink: SmtpSink, address: str) -> list[str]:
    """The six-digit codes e-mailed to ``address``, oldest first."""
    codes = []
    for message in sink.received():
        if address in message["X-Envelope-To"]:
            body = message.get_body(("plain",)).get_content()
            match = re.search(r"(?<![\d-])(\d{6})(?!\d)", body)
            if match:
                codes.append(match.group(1))
    return codes


def wait_code(sink: SmtpSink, address: str, *, timeout: float = 40) -> str:
    return wait_for(
        lambda: (codes_for(sink, address) or [None])[-1],
        timeout=timeout,
        what=f"a code e-mailed to {address}",
    )


# --- a tiny filesystem ----------------------------------------------------------


class TinyFilesystem:
    """A tmpfs of ``size`` mounted at ``path`` (needs root or CAP_SYS_ADMIN)."""

    def __init__(self, path: Path, *, size: str = "2m") -> None:
        self.path = path
        self.size = size
        self.mounted = False

    def mount(self) -> str:
        """Mount it; return '' or the reason it cannot be mounted here."""
        if shutil.which("mount") is None:
            return "mount(8) is not installed"
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                *("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700"),
                *("tmpfs", str(self.path)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return f"cannot mount a tmpfs here: {result.stderr.strip()}"
        self.mounted = True
        return ""

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self, *, leave: int) -> None:
        """Write a filler file until only about ``leave`` bytes are free."""
        with (self.path / "filler").open("wb") as fh:
            fh.write(b"\0" * max(0, self.free() - leave))

    def files(self) -> list[Path]:
        return [p for p in self.path.rglob("*") if p.is_file() and p.name != "filler"]

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=False)
            self.mounted = False


# --- the public form ------------------------------------------------------------


def pdf_bytes(*, padding: int = 0) -> bytes:
    """A one-page PDF; ``padding`` bytes of harmless metadata make it larger."""
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    if padding:
        writer.add_metadata({"/Subject": "x" * padding})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def filing_form(
    merchant, terminals, *, key: str, padding: int = 0, email: str = ""
) -> dict:
    """The fields and files of /requests/new/ for ``terminals``, ready to post.

    Build it again for each post: the test client reads the files.
    """
    from django.core.files.uploadedfile import SimpleUploadedFile

    def pdf(name: str) -> SimpleUploadedFile:
        return SimpleUploadedFile(
            name, pdf_bytes(padding=padding), content_type="application/pdf"
        )

    return {
        "submission_key": key,
        "merchant_id": merchant.merchant_id,
        "uscc": merchant.uscc,
        "legal_rep_name": merchant.legal_rep_name,
        "applicant_name": merchant.legal_rep_name,
        "applicant_is_legal_rep": "on",
        "applicant_phone": "13912345678",
        "applicant_email": email or "applicant@typed.example.com",
        "serial_numbers": "\n".join(t.serial_number for t in terminals),
        "reason": "business_change",
        "reason_detail": "",
        "replacement_serial_number": "",
        "declaration": "on",
        "business_licence": pdf("licence.pdf"),
        "legal_rep_id": [pdf("id-front.pdf"), pdf("id-back.pdf")],
        "device_evidence": [pdf("device.pdf")],
    }


def review_to_approval(case, *, reviewer) -> None:
    """Take the case, accept every document and recommend it, as ``reviewer``."""
    from cases.services.review import case_transition, document_review

    case_transition(case_id=case.pk, name="start_review", actor=reviewer)
    for pk in case.documents.values_list("pk", flat=True):
        document_review(document_id=pk, decision="accept", actor=reviewer)
    case_transition(case_id=case.pk, name="recommend", actor=reviewer)
