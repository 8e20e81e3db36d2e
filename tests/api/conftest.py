"""The live server for the schemathesis run (as tests/browser/conftest.py)."""

import pytest


def _static_files_only(media_handler):
    # MEDIA_URL is None on purpose (documents are private), which breaks the
    # live server's media handler; serve static files only.
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    return StaticFilesHandler(media_handler.application)


@pytest.fixture
def live_server():
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1:0", start=False)
    server.thread.static_handler = _static_files_only
    server.start()
    yield server
    server.stop()
