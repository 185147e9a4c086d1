from functools import wraps

from django.contrib import admin
from django.contrib.auth.views import LoginView
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import AUTH_HEADER_TYPES
from rest_framework_simplejwt.serializers import TokenObtainSerializer

from accounts.forms import LoginForm
from accounts.serializers import (
    RefreshInputSerializer,
    RegisterSerializer,
    RegistrationReceivedSerializer,
    TokenPairSerializer,
)
from accounts.services import session_end, session_refresh, session_start, user_register
from accounts.throttling import LoginAccountThrottle, LoginIPThrottle, RegisterThrottle
from jobs.api.serializers import ErrorSerializer, RateLimitSerializer
from jobs.metrics import count_rate_limit_rejection

BAD_INPUT = OpenApiResponse(description="Invalid input, with messages per field.")
REGISTRATION_RECEIVED = (
    "Registration received. If you cannot log in with this username and password, "
    "the username or the email address was already in use."
)


class AuthApi(APIView):
    """An account endpoint that takes no access token."""

    permission_classes = [AllowAny]
    authentication_classes = []

    def get_authenticate_header(self, request):
        # Without one, DRF would turn its 401s into 403s.
        return f'{AUTH_HEADER_TYPES[0]} realm="api"'


class RegisterApi(AuthApi):
    """Create an account; the answer is the same whether or not the username or email address was taken."""

    throttle_classes = [RegisterThrottle]
    rate_limit_kind = "register"

    @extend_schema(
        request=RegisterSerializer,
        responses={202: RegistrationReceivedSerializer, 400: BAD_INPUT, 429: RateLimitSerializer},
        summary="Create an account",
    )
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user_register(**serializer.validated_data)
        return Response({"detail": REGISTRATION_RECEIVED}, status=status.HTTP_202_ACCEPTED)


class TokenObtainApi(AuthApi):
    """Log in with username (or email) and password; get an access and a refresh token."""

    throttle_classes = [LoginIPThrottle, LoginAccountThrottle]
    rate_limit_kind = "login"

    @extend_schema(
        request=TokenObtainSerializer,
        responses={200: TokenPairSerializer, 400: BAD_INPUT, 401: ErrorSerializer, 429: RateLimitSerializer},
    )
    def post(self, request):
        credentials = TokenObtainSerializer(data=request.data, context={"request": request})
        credentials.is_valid(raise_exception=True)  # 401 unless they name an active account
        return Response(session_start(credentials.user))


class TokenRefreshApi(AuthApi):
    """Trade the session's refresh token for a new pair; the one sent is used up."""

    @extend_schema(
        request=RefreshInputSerializer,
        responses={200: TokenPairSerializer, 400: BAD_INPUT, 401: ErrorSerializer},
    )
    def post(self, request):
        serializer = RefreshInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(session_refresh(serializer.validated_data["refresh"]))


class LogoutApi(AuthApi):
    """End the session of a refresh token: none of its refresh tokens works any more."""

    @extend_schema(
        request=RefreshInputSerializer,
        responses={204: None, 400: BAD_INPUT, 401: ErrorSerializer},
    )
    def post(self, request):
        serializer = RefreshInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        session_end(serializer.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


def with_throttle_status(login_view):
    """Answer 429 with Retry-After when `login_view`'s form refused the attempt for its throttle."""

    @wraps(login_view)
    def view(request, *args, **kwargs):
        response = login_view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        retry_after = getattr(form, "retry_after", None)
        if retry_after is not None:
            count_rate_limit_rejection("login")
            response.status_code = status.HTTP_429_TOO_MANY_REQUESTS
            response["Retry-After"] = str(retry_after)
        return response

    return view


# The dashboard's and the admin's session logins, on the API's login counters
# (admin.site.login_form is accounts.forms.AdminLoginForm: queueproject/urls.py).
session_login = with_throttle_status(LoginView.as_view(authentication_form=LoginForm, redirect_authenticated_user=True))
admin_login = with_throttle_status(admin.site.login)
