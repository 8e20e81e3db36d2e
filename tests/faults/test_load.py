"""A small, bounded load in the suite: bench/load.py with 20 cases.

The figures of a larger run are in docs/reliability.md (``bench/load.py``).
"""

import pytest

from bench.load import run_load

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(150),
]

CASES = 20


def test_merchants_and_staff_at_once_leave_every_case_consistent(
    start_worker, smtp, departments
):
    """Twenty merchants file while three staff approve and two workers execute.

    Lost: nothing. Every request answers as expected, every case ends
    completed or withdrawn with its steps, registry changes and audit trail
    consistent, and every e-mail reached the mail server exactly once.
    """
    # given
    start_worker("w1")
    start_worker("w2")

    # when
    figures = run_load(cases=CASES, sink=smtp, merchants=6, staff=3, max_seconds=110)

    # then
    assert figures.errors == 0, figures.error_samples
    assert figures.problems == []
    assert figures.cases == CASES
    assert (
        figures.states.get("completed", 0) + figures.states.get("withdrawn", 0) == CASES
    )
    assert figures.states.get("completed", 0) >= CASES - CASES // 10
    assert figures.emails >= 2 * CASES
