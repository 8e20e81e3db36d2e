"""Imports run one way: what the import-linter contract cannot see."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_task_module_imports_no_project_module_at_load():
    """Services import cases.tasks at the top; it must not import them back."""
    # given
    script = (
        "import sys, cases.tasks; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('cases', 'terminals', 'config')))"
    )

    # when
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    # then
    assert result.stdout.strip() == "['cases', 'cases.tasks']"


def test_the_layers_contract_holds():
    # when
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )

    # then
    assert result.returncode == 0, result.stdout[-2000:]
