"""The blank filing form is rendered once per language; its key and CSRF token are per visitor."""

import re
from http import HTTPStatus

import pytest
from django.test import Client
from django.test.signals import template_rendered
from django.urls import reverse
from django.utils import translation


@pytest.fixture(autouse=True)
def _language_restored():
    """The requests below activate a language in this thread; later tests need theirs."""
    language = translation.get_language()
    yield
    translation.activate(language)


KEY = re.compile(r'name="submission_key" value="([^"]+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def rendered_templates(client, url: str, **headers) -> tuple[object, list[str]]:
    names: list[str] = []

    def record(sender, template, context, **kwargs):
        names.append(template.name or "")

    template_rendered.connect(record)
    try:
        response = client.get(url, **headers)
    finally:
        template_rendered.disconnect(record)
    return response, names


@pytest.mark.django_db
def test_the_blank_form_is_rendered_once_per_language_with_each_visitors_key_and_token():
    # given: one visitor saw the form already
    url = reverse("cases:new")
    Client().get(url, HTTP_ACCEPT_LANGUAGE="en")

    # when: another visitor opens it
    visitor = Client(enforce_csrf_checks=True)
    response, templates = rendered_templates(visitor, url, HTTP_ACCEPT_LANGUAGE="en")

    # then: no crispy field template rendered again, yet the page is complete
    assert response.status_code == HTTPStatus.OK
    assert not [t for t in templates if t.startswith("bootstrap5/")], templates
    html = response.content.decode()
    assert 'name="merchant_id"' in html
    assert 'name="declaration"' in html
    key = KEY.search(html).group(1)
    token = CSRF.search(html).group(1)
    assert "slot" not in key
    assert "slot" not in token
    other = Client().get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert KEY.search(other).group(1) != key
    assert CSRF.search(other).group(1) != token


@pytest.mark.django_db
def test_the_cached_form_is_the_form_rendered_in_full_but_for_key_and_token():
    # given: the cached page and the page with carried-over values (rendered in full)
    url = reverse("cases:new")
    client = Client()
    cached = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    cached = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    full = client.get(
        url + "?merchant_id=", HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()

    # when: the per-visitor values are blanked out
    def normal(html: str) -> str:
        html = KEY.sub('name="submission_key" value="K"', html)
        html = CSRF.sub('name="csrfmiddlewaretoken" value="T"', html)
        html = html.replace("/requests/new/?merchant_id=", "/requests/new/")
        return re.sub(r'nonce="[^"]*"', 'nonce=""', html)

    # then: the same page, in Chinese
    assert normal(cached) == normal(full)
    assert "提交" in cached
