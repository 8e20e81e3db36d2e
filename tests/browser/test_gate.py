"""The browser-test gate: skip locally without Chromium, fail in CI."""

import pytest

from tests.browser import conftest as gate


class _Item:
    def __init__(self, marked: bool):
        self.marked = marked

    def get_closest_marker(self, name: str):
        return object() if self.marked and name == "browser" else None


@pytest.fixture
def no_chromium(monkeypatch, tmp_path):
    monkeypatch.setattr(gate, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("REQUIRE_INTEGRATION", raising=False)
    monkeypatch.delenv("CI", raising=False)


def test_without_chromium_a_browser_test_is_skipped_locally(no_chromium):
    # when / then
    with pytest.raises(pytest.skip.Exception, match="no-chromium is absent"):
        gate.pytest_runtest_setup(_Item(marked=True))


@pytest.mark.parametrize(
    ("name", "value"), [("REQUIRE_INTEGRATION", "1"), ("CI", "true")]
)
def test_without_chromium_a_browser_test_fails_in_ci(
    no_chromium, monkeypatch, name, value
):
    # given
    monkeypatch.setenv(name, value)

    # when / then
    with pytest.raises(pytest.fail.Exception, match="browser test cannot run"):
        gate.pytest_runtest_setup(_Item(marked=True))


def test_other_tests_are_not_gated(no_chromium, monkeypatch):
    # given
    monkeypatch.setenv("CI", "true")

    # when / then: nothing is raised
    assert gate.pytest_runtest_setup(_Item(marked=False)) is None
