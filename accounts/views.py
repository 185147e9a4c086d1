from functools import wraps

from django.contrib import admin
from django.contrib.auth.views import LoginView
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.forms import LoginForm
from accounts.serializers import RegisterSerializer, RegistrationReceivedSerializer
from accounts.services import user_register
from accounts.throttling import LoginAccountThrottle, LoginIPThrottle, RegisterThrottle
from jobs.api.serializers import ErrorSerializer, RateLimitSerializer
from jobs.metrics import count_rate_limit_rejection

BAD_INPUT = OpenApiResponse(description="Invalid input, with messages per field.")
REGISTRATION_RECEIVED = (
    "Registration received. If you cannot log in with this username and password, "
    "the username or the email address was already in use."
)


class RegisterApi(APIView):
    """Create an account; the answer is the same whether or not the username or email address was taken."""

    permission_classes = [AllowAny]
    authentication_classes = []
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


@extend_schema_view(post=extend_schema(responses={
    200: TokenObtainPairSerializer, 400: BAD_INPUT, 401: ErrorSerializer, 429: RateLimitSerializer,
}))
class TokenObtainApi(TokenObtainPairView):
    """Log in with username (or email) and password; get an access and a refresh token."""

    throttle_classes = [LoginIPThrottle, LoginAccountThrottle]
    rate_limit_kind = "login"


@extend_schema_view(post=extend_schema(responses={200: TokenRefreshSerializer, 400: BAD_INPUT, 401: ErrorSerializer}))
class TokenRefreshApi(TokenRefreshView):
    """Trade a refresh token for a new pair; the old refresh token is blacklisted."""


def with_throttle_status(login_view):
    """Answer 429 with Retry-After when `login_view`'s form refused the attempt for its throttle."""

    @wraps(login_view)
    def view(request, *args, **kwargs):
        response = login_view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if getattr(form, "retry_after", None) is not None:
            count_rate_limit_rejection("login")
            response.status_code = status.HTTP_429_TOO_MANY_REQUESTS
            response["Retry-After"] = str(form.retry_after)
        return response

    return view


# The dashboard's and the admin's session logins, on the API's login counters
# (admin.site.login_form is accounts.forms.AdminLoginForm: queueproject/urls.py).
session_login = with_throttle_status(LoginView.as_view(authentication_form=LoginForm, redirect_authenticated_user=True))
admin_login = with_throttle_status(admin.site.login)
