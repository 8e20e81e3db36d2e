"""The API's Swagger UI works from the product's own files under CSP 'self'."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_api_docs_render_without_a_cdn_or_a_csp_violation(new_page, live_server):
    # given
    page = new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    # when
    response = page.goto("/api/docs/")

    # then: the operations are listed, every file came from the product, and
    # the page_errors fixture fails the test on any CSP violation
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.locator(
        ".opblock-summary-path", has_text="/api/v1/cases/{reference}/"
    ).first.wait_for()
    assert requested
    assert all(url.startswith(live_server.url) for url in requested), requested
