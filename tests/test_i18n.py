"""Languages: the Simplified Chinese catalogue is complete, current and served.

The catalogue checks read locale/zh_Hans/LC_MESSAGES/django.po. The check
that every string in the code is in the catalogue runs ``makemessages`` (GNU
xgettext) in a temporary copy of the project; without xgettext it is skipped
locally and fails when REQUIRE_INTEGRATION=1 (as .ci/run sets). See
docs/i18n.md for how to update the catalogue.
"""

import io
import os
import re
import shutil
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import translation
from pypdf import PdfWriter

from cases.admin.outbox import sample_notification
from cases.models import Case, CaseState, ExecutionStep, Notification
from cases.notifications import notification_render
from cases.services import review
from tests import factories

ROOT = Path(settings.BASE_DIR)
PO_PATH = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
# What makemessages reads: the same directories as `docs/i18n.md` says.
SOURCE_DIRS = ["cases", "terminals", "config", "templates", "static", "api", "webhooks"]
SOURCE_SUFFIXES = {".py", ".html", ".txt"}

# %(name)s / %(count)d, bare %s / %d, str.format's {} / {name}, and HTML tags.
PLACEHOLDER = re.compile(
    r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdifrx]|%[-#0 +]*\d*(?:\.\d+)?[sdifrx]|\{\w*\}"
)
HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def catalogue() -> polib.POFile:
    return polib.pofile(str(PO_PATH))


def live_entries(po: polib.POFile) -> list[polib.POEntry]:
    return [e for e in po if not e.obsolete]


def tokens(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text.replace("%%", "")))


def tags(text: str) -> list[str]:
    return sorted(HTML_TAG.findall(text))


def translations_of(entry: polib.POEntry) -> list[str]:
    if entry.msgid_plural:
        return [entry.msgstr_plural[k] for k in sorted(entry.msgstr_plural)]
    return [entry.msgstr]


def source_of(entry: polib.POEntry) -> str:
    # Chinese has one plural form: it must carry the plural's placeholders.
    return entry.msgid_plural or entry.msgid


# --- the catalogue file -----------------------------------------------------------


def test_catalogue_declares_simplified_chinese_with_one_plural_form():
    # given
    po = catalogue()

    # then
    assert po.metadata["Language"] == "zh_Hans"
    assert po.metadata["Plural-Forms"].replace(" ", "") == "nplurals=1;plural=0;"
    assert "fuzzy" not in (po.metadata_is_fuzzy or [])


def test_every_entry_is_translated_and_none_is_fuzzy():
    # given
    po = catalogue()

    # when
    untranslated = [
        e.msgid
        for e in live_entries(po)
        if not all(text.strip() for text in translations_of(e))
    ]
    fuzzy = [e.msgid for e in live_entries(po) if "fuzzy" in e.flags]

    # then
    assert len(live_entries(po)) > 600
    assert untranslated == [], "untranslated entries in django.po"
    assert fuzzy == [], "fuzzy entries in django.po: check and clear the flag"


def test_translations_keep_every_placeholder_and_tag_of_the_english():
    # given
    po = catalogue()

    # when
    mismatched = [
        (e.msgid, text)
        for e in live_entries(po)
        for text in translations_of(e)
        if tokens(text) != tokens(source_of(e)) or tags(text) != tags(source_of(e))
    ]

    # then
    assert mismatched == []


def test_the_placeholder_check_catches_a_dropped_or_renamed_placeholder():
    # given: the helpers the check above relies on
    entry = polib.POEntry(
        msgid="Request %(reference)s, {count} of <strong>%s</strong>",
        msgstr="申请 %(ref)s，第 {count} 个",
    )

    # then
    assert tokens(entry.msgid) == ["%(reference)s", "%s", "{count}"]
    assert tokens(entry.msgstr) != tokens(entry.msgid)
    assert tags(entry.msgstr) != tags(entry.msgid)


def test_chinese_terms_replace_the_english_with_chinese_in_brackets():
    # given: strings whose English carries the Chinese term in brackets
    po = catalogue()
    bracketed = [
        e
        for e in live_entries(po)
        if re.search(r"[（(][^)）]*[\u4e00-\u9fff]", e.msgid)
    ]

    # then: the Chinese reads the term once, without the English around it
    assert bracketed
    for entry in bracketed:
        assert not re.search(r"[A-Za-z]{3,}", entry.msgstr.replace("POS", "")), (
            entry.msgid
        )


# --- the catalogue against the code ------------------------------------------------


def _copy_sources(target: Path) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        return [
            name
            for name in names
            if name == "__pycache__"
            or name == "migrations"
            or (
                Path(directory, name).is_file()
                and Path(name).suffix not in SOURCE_SUFFIXES
            )
        ]

    for name in SOURCE_DIRS:
        shutil.copytree(ROOT / name, target / name, ignore=ignore)


def _keys(po: polib.POFile) -> set[tuple]:
    return {(e.msgctxt, e.msgid, e.msgid_plural) for e in live_entries(po)}


def test_every_string_marked_in_the_code_is_in_the_catalogue(
    tmp_path, monkeypatch, settings
):
    if shutil.which("xgettext") is None:
        if os.environ.get("REQUIRE_INTEGRATION") == "1":
            pytest.fail("xgettext is missing: apt-get install gettext", pytrace=False)
        pytest.skip("xgettext (GNU gettext) is not installed here")
    # given: a copy of the sources with an empty locale directory
    _copy_sources(tmp_path)
    (tmp_path / "locale").mkdir()
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)

    # when
    call_command(
        "makemessages",
        locale=["zh_Hans"],
        verbosity=0,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )

    # then
    extracted = _keys(polib.pofile(str(tmp_path / PO_PATH.relative_to(ROOT))))
    committed = _keys(catalogue())
    fix = "run the makemessages command of docs/i18n.md and translate"
    assert sorted(extracted - committed, key=str) == [], f"not in django.po: {fix}"
    assert sorted(committed - extracted, key=str) == [], f"no longer used: {fix}"


def test_the_compiled_catalogue_serves_every_translation_of_the_po():
    """Fails when django.mo is missing or older than django.po.

    Compile with `manage.py compile_catalogues` (`make test` does it first).
    """
    # given
    po = catalogue()

    # when
    with translation.override("zh-hans"):
        served = {
            (e.msgctxt, e.msgid): (
                translation.npgettext(e.msgctxt, e.msgid, e.msgid_plural, 1)
                if e.msgctxt and e.msgid_plural
                else translation.pgettext(e.msgctxt, e.msgid)
                if e.msgctxt
                else translation.ngettext(e.msgid, e.msgid_plural, 1)
                if e.msgid_plural
                else translation.gettext(e.msgid)
            )
            for e in live_entries(po)
        }

    # then
    stale = [
        e.msgid
        for e in live_entries(po)
        if served[(e.msgctxt, e.msgid)] != translations_of(e)[0]
    ]
    assert stale == [], "django.mo is stale: run manage.py compile_catalogues"


# --- pages and e-mails in the visitor's language ---------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept_language", "home", "form"),
    [
        ("zh-CN", "提交解绑申请", "统一社会信用代码"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "查询绑定状态", "法人身份证明"),
        ("en", "File an unbinding request", "Unified social credit code"),
    ],
)
def test_public_pages_follow_the_browser_language(client, accept_language, home, form):
    # when
    home_page = client.get("/", HTTP_ACCEPT_LANGUAGE=accept_language)
    form_page = client.get(reverse("cases:new"), HTTP_ACCEPT_LANGUAGE=accept_language)

    # then
    assert home_page.status_code == HTTPStatus.OK
    assert home in home_page.content.decode()
    assert form in form_page.content.decode()
    expected_lang = "en" if accept_language == "en" else "zh-hans"
    assert f'<html lang="{expected_lang}">' in home_page.content.decode()


@pytest.mark.django_db
def test_english_pages_show_no_chinese_translation_and_chinese_no_english_labels(
    client,
):
    # when
    english = client.get(
        reverse("cases:new"), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    chinese = client.get(
        reverse("cases:new"), HTTP_ACCEPT_LANGUAGE="zh-CN"
    ).content.decode()

    # then
    assert "Terminal serial numbers (SN)" in english
    assert "终端序列号（SN）" not in english
    assert "终端序列号（SN）" in chinese
    assert "Terminal serial numbers (SN)" not in chinese
    assert "Submit request" not in chinese


@pytest.mark.django_db
def test_tracking_page_states_and_dates_in_china_standard_time(client):
    # given: due at 16:30 UTC, which is 00:30 the next day in Beijing
    case = factories.CaseFactory(
        state=CaseState.SUBMITTED,
        review_due_at=datetime(2026, 3, 1, 16, 30, tzinfo=UTC),
    )
    path = case.get_tracking_path()

    # when
    chinese = client.get(path, HTTP_ACCEPT_LANGUAGE="zh-CN")
    english = client.get(path, HTTP_ACCEPT_LANGUAGE="en")

    # then
    assert settings.TIME_ZONE == "Asia/Shanghai"
    assert chinese.status_code == english.status_code == HTTPStatus.OK
    zh_html = chinese.content.decode()
    en_html = english.content.decode()
    assert 'data-status="submitted"' in zh_html
    assert "已提交" in zh_html
    assert "审核员将于 2026年3月2日 00:30 前处理" in zh_html
    assert "Submitted" in en_html
    assert "March 2, 2026, 12:30 a.m." in en_html


@pytest.mark.django_db
def test_language_switch_is_remembered_across_pages(client):
    # when: a visitor whose browser asks for English picks 简体中文
    response = client.post(
        reverse("set_language"),
        {"language": "zh-hans", "next": "/"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    page = client.get(reverse("cases:new"), HTTP_ACCEPT_LANGUAGE="en")

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert "提交申请" in page.content.decode()


def _pdf(name: str) -> SimpleUploadedFile:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/pdf")


def _file_request(client, *, accept_language: str) -> Case:
    binding = factories.BindingFactory()
    merchant = binding.merchant
    response = client.post(
        reverse("cases:new"),
        {
            "merchant_id": merchant.merchant_id,
            "uscc": merchant.uscc,
            "legal_rep_name": merchant.legal_rep_name,
            "applicant_name": merchant.legal_rep_name,
            "applicant_is_legal_rep": "on",
            "applicant_phone": "13912345678",
            "applicant_email": "applicant@typed.example.com",
            "serial_numbers": binding.terminal.serial_number,
            "reason": "business_change",
            "declaration": "on",
            "business_licence": _pdf("licence.pdf"),
            "legal_rep_id": [_pdf("id-front.pdf")],
            "device_evidence": [_pdf("device.pdf")],
        },
        HTTP_ACCEPT_LANGUAGE=accept_language,
    )
    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:2000]
    return Case.objects.get(merchant=merchant)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept_language", "stored", "code_subject", "worker_language", "info_subject"),
    [
        (
            "en",
            "en",
            "Your verification code",
            "zh-hans",
            "More information is needed for your unbinding request",
        ),
        ("zh-CN", "zh-hans", "您的验证码", "en", "您的解绑申请需要补充材料"),
    ],
)
def test_the_language_a_case_was_filed_in_drives_all_its_e_mails(
    hooks_client,
    reviewer,
    django_capture_on_commit_callbacks,
    accept_language,
    stored,
    code_subject,
    worker_language,
    info_subject,
):
    # given: a request filed in one language
    case = _file_request(hooks_client, accept_language=accept_language)
    [code_mail] = mail.outbox
    Case.objects.filter(pk=case.pk).update(
        assigned_to=reviewer, state=CaseState.IN_REVIEW
    )
    mail.outbox.clear()

    # when: a reviewer working in the other language asks for information
    with (
        translation.override(worker_language),
        django_capture_on_commit_callbacks(execute=True),
    ):
        review.case_transition(
            case_id=case.pk, name="request_info", actor=reviewer, note="请补充材料"
        )

    # then
    case.refresh_from_db()
    assert case.language == stored
    assert code_mail.subject == f"[{case.reference}] {code_subject}"
    [info_mail] = mail.outbox
    assert info_mail.subject == f"[{case.reference}] {info_subject}"
    notice = Notification.objects.get(case=case, kind=Notification.Kind.INFO_REQUESTED)
    assert notice.language == stored


@pytest.mark.parametrize("kind", [k.value for k in Notification.Kind])
def test_every_e_mail_renders_in_chinese_without_english_sentences(kind):
    # given: the staff preview's sample notice of each kind, in Chinese
    notice = sample_notification(kind=kind, language="zh-hans")
    if kind == Notification.Kind.EXECUTION_FAILED:
        # sample data typed in English, not product text
        notice.context["reason"] = "终端已绑定到其他商户"
        with translation.override("zh-hans"):
            notice.context["step_label"] = str(ExecutionStep.Step.VERIFY_BINDINGS.label)

    # when
    subject, text, html = notification_render(notice)

    # then: every part is Chinese and no English sentence is left
    for part in (subject, text, html):
        assert re.search(r"[\u4e00-\u9fff]", part), (kind, part)
        visible = re.sub(r"<[^>]+>|https?://\S+", " ", part)
        english = re.findall(r"\b[A-Za-z]{3,}(?:\s+[A-Za-z]{2,}){2,}", visible)
        assert english == [], (kind, english)
    if notice.case is not None:
        assert subject.startswith(f"[{notice.case.reference}] ")


@pytest.mark.django_db
def test_staff_choose_their_language_in_admin(admin_client):
    page = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en")
    assert 'id="admin-language-switch"' in page.content.decode()

    admin_client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/admin/"})
    page = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en")

    assert page.content.decode().count('lang="zh-hans"') >= 1
    assert "管理后台" in page.content.decode()
