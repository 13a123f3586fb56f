import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from apps.security.roles import Role


class Command(BaseCommand):
    help = "Create the first admin user if there is none, and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=None, help="default: a random one, printed once")
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args, username, password, url, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(f"Admin exists. Log in at {url}accounts/login/")
            return
        password = password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        user.groups.add(Group.objects.get(name=Role.ADMIN.group_name))
        self.stdout.write(
            f"Created admin user. Log in at {url}accounts/login/ as {username!r} with password {password!r}"
        )
