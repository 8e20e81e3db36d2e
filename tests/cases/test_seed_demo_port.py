"""`make run` with PORT set prints the demo admin URL on that port."""

import io
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_seed_demo_prints_the_admin_url_on_the_given_port():
    # when
    out = io.StringIO()
    call_command("seed_demo", port=8123, stdout=out, stderr=io.StringIO())

    # then
    assert "http://127.0.0.1:8123/admin/" in out.getvalue()
    assert ":8000/" not in out.getvalue()


@pytest.mark.django_db
def test_seed_demo_reads_port_from_the_environment(monkeypatch):
    # given
    monkeypatch.setenv("PORT", "8765")

    # when
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO())

    # then
    assert "http://127.0.0.1:8765/admin/" in out.getvalue()


def test_make_run_passes_its_port_to_seed_demo():
    # when: what `make run PORT=8123` would run (dry run, nothing executed)
    result = subprocess.run(
        ["make", "-n", "run", "PORT=8123"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then
    assert "manage.py seed_demo --port 8123" in result.stdout, result.stdout
