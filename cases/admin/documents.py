"""Documents: read-only rows, the review decision and the private download."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from cases.admin.common import CaseReferenceSearchMixin, service_answer
from cases.models import Document, DocumentPreview
from cases.services import previews
from cases.services.review import DocumentDecision, document_review
from config.admin_site import ReadOnlyAdminMixin


class DocumentReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=DocumentDecision.CHOICES)
    note = forms.CharField(required=False, max_length=2000)


@admin.register(Document)
class DocumentAdmin(CaseReferenceSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "original_name",
        "kind",
        "case",
        "review_status",
        "size",
        "uploaded_at",
        "purged_at",
    )
    list_filter = ("review_status", "kind")
    list_select_related = ("case",)
    search_fields = ("case__reference",)
    show_full_result_count = False
    readonly_fields = (
        "case",
        "kind",
        "original_name",
        "content_type",
        "size",
        "sha256",
        "review_status",
        "review_note",
        "reviewed_by",
        "reviewed_at",
        "uploaded_at",
        "purged_at",
        "download_link",
    )
    fields = readonly_fields

    @admin.display(description=_("file"))
    def download_link(self, obj: Document):
        if obj.purged_at or not obj.file:
            return _("purged at the end of the retention period")
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:cases_document_download", args=[obj.pk]),
            _("Download"),
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/review/",
                wrap(require_POST(self.review_view)),
                name="cases_document_review",
            ),
            path(
                "<path:object_id>/preview/<int:page>/",
                wrap(self.preview_view),
                name="cases_document_preview",
            ),
            path(
                "<path:object_id>/download/",
                wrap(self.download_view),
                name="cases_document_download",
            ),
            *super().get_urls(),
        ]

    def review_view(self, request, object_id):
        """POST decision=accept|reject and note: record the review, back to the case."""
        document = get_object_or_404(Document, pk=object_id)
        back = reverse("admin:cases_case_change", args=[document.case_id])
        form = DocumentReviewForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Choose accept or reject."))
            return HttpResponseRedirect(back + "#documents")
        decision = form.cleaned_data["decision"]
        return service_answer(
            request,
            call=lambda: document_review(
                document_id=document.pk,
                decision=decision,
                note=form.cleaned_data["note"],
                actor=request.user,
            ),
            case=document.case,
            success=_("“%(name)s”: %(decision)s.")
            % {
                "name": document.original_name,
                "decision": dict(DocumentDecision.CHOICES)[decision],
            },
            back=back + "#documents",
        )

    def download_view(self, request, object_id):
        """Hand out the stored file to staff allowed to view documents.

        An attachment by default; ``?inline=1`` shows an image in the page.
        Never a public URL: MEDIA_ROOT is not served.
        """
        if not request.user.has_perm("cases.view_document"):
            raise PermissionDenied
        document = get_object_or_404(Document, pk=object_id)
        if document.purged_at or not document.file:
            return _gone(request)
        try:
            handle = document.file.open("rb")
        except FileNotFoundError:
            return _gone(request)
        inline = request.GET.get("inline") == "1" and document.is_image
        response = FileResponse(
            handle,
            as_attachment=not inline,
            filename=document.original_name,
            content_type=document.content_type or "application/octet-stream",
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "private, no-store"
        return response

    def preview_view(self, request, object_id, page):
        """One rendered page of a PDF as PNG, to staff allowed to view documents.

        The image was rendered and encoded by the server; the merchant's PDF
        itself is never sent for a preview.
        """
        if not request.user.has_perm("cases.view_document"):
            raise PermissionDenied
        document = get_object_or_404(Document, pk=object_id)
        preview = DocumentPreview.objects.filter(document=document).first()
        if (
            document.purged_at
            or preview is None
            or preview.status != DocumentPreview.Status.READY
            or not 1 <= page <= len(preview.pages)
        ):
            raise Http404
        try:
            handle = default_storage.open(preview.pages[page - 1], "rb")
        except FileNotFoundError:
            raise Http404 from None
        response = FileResponse(
            handle,
            content_type=previews.preview_content_type(preview.pages[page - 1]),
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "private, no-store"
        return response


def _gone(request):
    return TemplateResponse(
        request,
        "admin/cases/refused.html",
        {
            **admin.site.each_context(request),
            "title": _("Document no longer stored"),
            "message": _(
                "This document was deleted at the end of the retention period."
            ),
        },
        status=410,
    )
