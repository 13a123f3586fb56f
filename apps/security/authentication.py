from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from apps.core.errors import AuthenticationFailed
from apps.core.tokens import API_PREFIX, bearer_from_header
from apps.security.services import api_token_authenticate


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pgo_…`: an operator API token acting as its user."""

    def authenticate(self, request):
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is None or not raw.startswith(API_PREFIX):
            return None
        try:
            token = api_token_authenticate(raw=raw)
        except AuthenticationFailed as exc:
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from exc
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="pulseguard"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "operatorToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Operator API token (pgo_…)"}
