from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.serializers import RegisterSerializer, UserSerializer
from accounts.services import AccountExists, user_register
from accounts.throttling import LoginIPThrottle, LoginUsernameThrottle, RegisterThrottle
from jobs.api.serializers import ErrorSerializer, RateLimitSerializer

BAD_INPUT = OpenApiResponse(description="Invalid input, with messages per field.")


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [RegisterThrottle]
    rate_limit_kind = "register"

    @extend_schema(
        request=RegisterSerializer,
        responses={201: UserSerializer, 400: BAD_INPUT, 429: RateLimitSerializer},
        summary="Create an account",
    )
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_register(**serializer.validated_data)
        except AccountExists as exc:
            raise ValidationError({"username": [str(exc)]}) from exc
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


@extend_schema_view(post=extend_schema(responses={
    200: TokenObtainPairSerializer, 400: BAD_INPUT, 401: ErrorSerializer, 429: RateLimitSerializer,
}))
class TokenObtainApi(TokenObtainPairView):
    """Log in with username (or email) and password; get an access and a refresh token."""

    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]
    rate_limit_kind = "login"


@extend_schema_view(post=extend_schema(responses={200: TokenRefreshSerializer, 400: BAD_INPUT, 401: ErrorSerializer}))
class TokenRefreshApi(TokenRefreshView):
    """Trade a refresh token for a new pair; the old refresh token is blacklisted."""
