from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.serializers import RegisterSerializer, UserSerializer
from accounts.services import AccountExists, user_register
from accounts.throttling import LoginIPThrottle, LoginUsernameThrottle, RegisterThrottle


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [RegisterThrottle]

    @extend_schema(request=RegisterSerializer, responses={201: UserSerializer}, summary="Create an account")
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_register(**serializer.validated_data)
        except AccountExists as exc:
            raise ValidationError({"username": [str(exc)]}) from exc
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenObtainApi(TokenObtainPairView):
    """Log in with username (or email) and password; get an access and a refresh token."""

    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]


class TokenRefreshApi(TokenRefreshView):
    """Trade a refresh token for a new pair; the old refresh token is blacklisted."""
