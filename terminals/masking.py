"""Mask personal numbers wherever they are shown outside the edit form."""


def mask_id_number(value: str) -> str:
    """Show an ID number as its first 3 and last 4 characters: 110***********1234."""
    if not value:
        return ""
    if len(value) <= 7:
        return "*" * len(value)
    return f"{value[:3]}{'*' * (len(value) - 7)}{value[-4:]}"


def mask_card_number(value: str) -> str:
    """Show a bank card as its first 6 and last 4 digits: 622202******1234."""
    if not value:
        return ""
    if len(value) <= 10:
        return "*" * len(value)
    return f"{value[:6]}{'*' * (len(value) - 10)}{value[-4:]}"


def mask_phone(value: str) -> str:
    """Show a mobile number as 138****0000."""
    if not value:
        return ""
    if len(value) < 7:
        return "*" * len(value)
    return f"{value[:3]}{'*' * (len(value) - 7)}{value[-4:]}"


def mask_email(value: str) -> str:
    """Show an e-mail address as z***@example.com."""
    if not value or "@" not in value:
        return "*" * len(value or "")
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"
