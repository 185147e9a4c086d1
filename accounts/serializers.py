from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

User = get_user_model()


class RegisterSerializer(serializers.Serializer):
    username = serializers.RegexField(
        r"^[\w.+-]{3,150}$", max_length=150,
        error_messages={"invalid": "Use 3 to 150 letters, digits and . + - _ only."},
    )
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, max_length=128, style={"input_type": "password"})

    def validate(self, data):
        candidate = User(username=data["username"], email=data["email"])
        try:
            password_validation.validate_password(data["password"], user=candidate)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from exc
        return data


class RegistrationReceivedSerializer(serializers.Serializer):
    """The one answer to every well-formed registration: it does not say whether the account was created."""

    detail = serializers.CharField()


class RefreshInputSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
