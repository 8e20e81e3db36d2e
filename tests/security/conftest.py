"""Fixtures for the attack tests."""

import pytest


@pytest.fixture
def lockout(settings):
    """Turn the django-axes lockout on (the test settings keep it off)."""
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    return settings
