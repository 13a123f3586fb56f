from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from apps.agents.services import enrollment_key_create
from apps.core.errors import ApplicationError


class Command(BaseCommand):
    help = "Mint an enrollment key agents use to register. The key is the last line printed; it is not stored."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--uses", type=int, default=None, help="how many registrations it allows (default: unlimited)")
        parser.add_argument("--expires-in", type=int, default=None, help="seconds until it expires (default: never)")

    def handle(self, *args, name, uses, expires_in, **options):
        if expires_in is not None and expires_in <= 0:
            raise CommandError("--expires-in must be a positive number of seconds")
        try:
            key, raw = enrollment_key_create(
                name=name, max_uses=uses, expires_in=timedelta(seconds=expires_in) if expires_in else None
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        limits = [f"{uses} uses" if uses else "unlimited uses", f"expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else "no expiry"]
        self.stderr.write(f"Enrollment key {name!r} ({', '.join(limits)}). Shown once; store it now:")
        self.stdout.write(raw)
