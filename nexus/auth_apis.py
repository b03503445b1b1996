"""Auth endpoints (seed 001 shapes): login, refresh, verify, ws-ticket. Logic lives in core.auth."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth import logout as session_logout
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import auth
from core.throttles import LoginThrottle, LoginUsernameThrottle, RefreshThrottle, VerifyThrottle

logger = logging.getLogger("nexus.auth")


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class RefreshSerializer(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=4096)


class LogoutSerializer(serializers.Serializer):
    # allow_blank: a form posts an empty field as "" and DRF reads it as not sent; JSON's "" means the
    # same, so the schema and both encodings agree (nothing to revoke, 200)
    refresh_token = serializers.CharField(
        max_length=4096,
        required=False,
        allow_blank=True,
        help_text="The refresh token to revoke (recommended; empty or absent: none revoked).",
    )


class LogoutResultSerializer(serializers.Serializer):
    logged_out = serializers.BooleanField()
    refresh_token_revoked = serializers.BooleanField(
        help_text="False when none was sent, or it was already revoked or expired."
    )
    session_ended = serializers.BooleanField(help_text="A cookie session was ended.")


class TokenSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.ChoiceField(choices=["bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class TokenVerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    user = serializers.CharField(help_text="The username.")
    type = serializers.ChoiceField(choices=["access"])
    exp = serializers.IntegerField()
    iat = serializers.IntegerField()
    timestamp = serializers.DateTimeField()


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField()


class LoginView(APIView):
    """Exchange a username and password for an access/refresh token pair."""

    authentication_classes = ()  # credentials are in the body; a stray session cookie is ignored
    permission_classes = (AllowAny,)
    throttle_classes = (LoginThrottle, LoginUsernameThrottle)
    parser_classes = (JSONParser, FormParser)

    @extend_schema(
        tags=["auth"],
        summary="Log in",
        request={
            "application/json": LoginSerializer,
            "application/x-www-form-urlencoded": LoginSerializer,
        },
        responses={200: TokenSerializer},
        auth=[],
        examples=[OpenApiExample("Login", value={"username": "demo", "password": "nexus-demo-password"})],
    )
    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            logger.info("login failed from %s", request.META.get("REMOTE_ADDR", "?"))
            raise auth.AuthenticationFailed("Invalid username or password.")
        return Response(auth.tokens_issue(user))


class RefreshView(APIView):
    """Rotate a refresh token: the old one is refused from now on."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (RefreshThrottle,)
    parser_classes = (JSONParser, FormParser)

    @extend_schema(
        tags=["auth"],
        summary="Refresh tokens",
        request={
            "application/json": RefreshSerializer,
            "application/x-www-form-urlencoded": RefreshSerializer,
        },
        responses={200: TokenSerializer},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(auth.tokens_refresh(serializer.validated_data["refresh_token"]))


class LogoutView(APIView):
    """End a login: revoke the refresh token sent (blacklisted for every process) and end the
    cookie session. Open sockets and SSE streams of a session that ended close within
    ``NEXUS_AUTH_RECHECK_SECONDS``; an access token stays valid until it expires (its sockets
    close then, 4002)."""

    permission_classes = (IsAuthenticated,)
    parser_classes = (JSONParser, FormParser)

    @extend_schema(
        tags=["auth"],
        summary="Log out",
        request={
            "application/json": LogoutSerializer,
            "application/x-www-form-urlencoded": LogoutSerializer,
        },
        responses={200: LogoutResultSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw_refresh = serializer.validated_data.get("refresh_token")
        revoked = bool(raw_refresh) and auth.refresh_token_revoke(user=request.user, raw_refresh=raw_refresh)
        django_request = request._request
        session_ended = bool(django_request.session.session_key)
        if session_ended:
            session_logout(django_request)  # deletes the session row: the cookie is worthless now
        return Response(
            {"logged_out": True, "refresh_token_revoked": revoked, "session_ended": session_ended}
        )


class VerifyView(APIView):
    """Check the bearer access token and say whose it is."""

    # The token is checked in the view so that failures are throttled too (per IP).
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (VerifyThrottle,)

    @extend_schema(
        tags=["auth"],
        summary="Verify the bearer token",
        request=None,
        responses={200: TokenVerificationSerializer},
        auth=[{"jwtAuth": []}],
    )
    def post(self, request: Request) -> Response:
        token = auth.bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if token is None:
            raise auth.AuthenticationFailed("Authentication credentials were not provided.")
        return Response(auth.token_verify(token))


class WsTicketView(APIView):
    """A single-use ticket for a browser WebSocket (``?ticket=``), valid 30 seconds."""

    permission_classes = (IsAuthenticated,)

    @extend_schema(
        tags=["auth"],
        summary="Issue a WebSocket ticket",
        request=None,
        responses={200: WsTicketSerializer},
    )
    def post(self, request: Request) -> Response:
        ticket = auth.ws_ticket_issue(request.user)
        return Response({"ticket": ticket, "expires_in": settings.NEXUS_WS_TICKET_SECONDS})
