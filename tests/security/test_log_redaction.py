"""Tracking tokens never reach the log output."""

import logging

import pytest

from config.logging import RedactTrackingTokens, redact
from tests import factories


def test_redact_replaces_tokens_but_not_public_paths():
    assert (
        redact("/requests/AbCdEfGhIjKlMnOpQrStUvWx12/verify/")
        == "/requests/[token]/verify/"
    )
    assert redact("/requests/new/") == "/requests/new/"
    assert redact("/requests/track/?link=x") == "/requests/track/?link=[token]"


@pytest.mark.django_db
def test_a_404_on_a_tracking_url_logs_no_token(client, caplog):
    # given the console handler's filter on the django.request logger
    token = "Zz" * 16
    handler_filter = RedactTrackingTokens()
    logger = logging.getLogger("django.request")
    logger.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.WARNING, logger="django.request"):
            client.get(f"/requests/{token}/")
    finally:
        logger.removeFilter(handler_filter)

    # then the warning names the path without the token
    assert caplog.records
    assert all(token not in record.getMessage() for record in caplog.records)


@pytest.mark.django_db
def test_the_configured_console_handler_redacts(client):
    case = factories.CaseFactory()
    token = case.tracking_token
    record = logging.LogRecord(
        "django.request",
        logging.WARNING,
        __file__,
        1,
        "Not Found: %s",
        (f"/requests/{token}/",),
        None,
    )

    handler = next(
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, RedactTrackingTokens) for f in h.filters)
    )
    for f in handler.filters:
        f.filter(record)

    assert token not in record.getMessage()
