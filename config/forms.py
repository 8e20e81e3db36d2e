"""Behaviour every public form shares.

Django decodes a submitted form with ``errors="replace"``: bytes that are not
UTF-8 arrive as U+FFFD and would be stored as such, the merchant's text lost
without a word. ``DecodedTextMixin`` refuses such a value with an error on its
field before any other check runs, so nothing is looked up, stored, uploaded
or sent. A real person never types U+FFFD; one pasted from a damaged document
is refused too, which asks for the text again rather than keeping a wrong one.
"""

from django import forms
from django.utils.translation import gettext_lazy as _

REPLACEMENT_CHARACTER = "\ufffd"


class DecodedTextMixin:
    """Refuse any field whose submitted text could not be decoded as UTF-8.

    Checks the raw submitted values of every declared field (all values of a
    repeated one), whatever the field's own cleaning does with them. The form
    shown again keeps the readable part of such a value, without the U+FFFD.
    """

    undecodable_message = _(
        "This contains characters that could not be read. Type it again."
    )

    def _clean_fields(self) -> None:
        super()._clean_fields()
        getlist = getattr(self.data, "getlist", None)
        undecodable = []
        for name in self.fields:
            key = self.add_prefix(name)
            values = getlist(key) if getlist else [self.data.get(key)]
            if any(
                isinstance(value, str) and REPLACEMENT_CHARACTER in value
                for value in values
            ):
                undecodable.append(key)
                # The only error shown: others would echo the unreadable text.
                self._errors.pop(name, None)
                self.add_error(
                    name,
                    forms.ValidationError(self.undecodable_message, code="undecodable"),
                )
        if undecodable and getlist:
            self.data = self.data.copy()
            for key in undecodable:
                self.data.setlist(
                    key,
                    [
                        v.replace(REPLACEMENT_CHARACTER, "")
                        if isinstance(v, str)
                        else v
                        for v in self.data.getlist(key)
                    ],
                )
