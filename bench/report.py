"""Write one benchmark's section of docs/benchmarks.md, leaving the others alone.

Each script owns the text between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` and rewrites it with its latest figures.
"""

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Figures written by the scripts under `bench/`; each section says the machine,
the date and the command that produced it. Re-run a script to refresh its section.
"""


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pg = subprocess.run(
            ["psql", "--version"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pg = "?"
    return (
        f"{platform.node()} · {os.cpu_count()} cores · {cpu} · "
        f"Python {platform.python_version()} · {pg}"
    )


def write_section(name: str, title: str, body: str, command: str | None = None) -> None:
    """Replace section ``name`` of the report with ``body`` (Markdown)."""
    command = command or " ".join([Path(sys.executable).name, *sys.argv])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"- Date: {stamp}\n- Machine: {machine()}\n- Command: `{command}`\n\n"
        f"{body.strip()}\n<!-- /bench:{name} -->"
    )
    REPORT.parent.mkdir(exist_ok=True)
    text = REPORT.read_text() if REPORT.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    REPORT.write_text(text)
    print(f"wrote section {name!r} of {REPORT}")


def database_create_if_missing(url: str) -> None:
    """Create the database named in ``url`` if it does not exist yet."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")
