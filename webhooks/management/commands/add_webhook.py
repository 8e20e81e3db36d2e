from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import URLValidator

from webhooks.services import subscription_create


class Command(BaseCommand):
    help = (
        "Subscribe URL to every event type and print its signing secret "
        "(whsec_...) alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("url")

    def handle(self, *args, url, **options):
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise CommandError(f"not an http(s) URL: {url}") from None
        subscription = subscription_create(url=url)
        self.stdout.write(
            f"Subscription {subscription.pk} for {subscription.url}: "
            f"{', '.join(subscription.event_types)}. Signing secret:"
        )
        self.stdout.write(subscription.secret)
