"""Forget the keys cached by api.auth when a key or a user changes in this process."""

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from api.auth import api_keys_forget
from api.models import APIKey


@receiver(post_save, sender=APIKey, dispatch_uid="api_key_saved")
@receiver(post_delete, sender=APIKey, dispatch_uid="api_key_deleted")
@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_user_saved")
@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_user_gone")
def _forget_keys(**kwargs) -> None:
    api_keys_forget()
