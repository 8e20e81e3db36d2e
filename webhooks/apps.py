from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = _("Webhooks")

    def ready(self) -> None:
        from webhooks.models import Subscription
        from webhooks.services import subscriptions_changed

        # The cached list of subscriptions (webhooks.services.subscribed).
        for signal in (post_save, post_delete):
            signal.connect(
                subscriptions_changed,
                sender=Subscription,
                dispatch_uid=f"webhooks-subscriptions-{signal is post_save}",
            )
