from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApplicationError
from apps.security.services import api_token_create


class Command(BaseCommand):
    help = "Mint an operator API token for USERNAME. The token is the last line printed; it is not stored."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--expires-in", type=int, default=None, help="seconds until it expires")

    def handle(self, *args, username, name, expires_in, **options):
        if expires_in is not None and expires_in <= 0:
            raise CommandError("--expires-in must be a positive number of seconds")
        try:
            token, raw = api_token_create(
                username=username, name=name, expires_in=timedelta(seconds=expires_in) if expires_in else None
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"API token {token.name!r} for {token.user.username} (shown once; store it now):")
        self.stdout.write(raw)
