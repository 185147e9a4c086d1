from django.urls import path

from accounts.views import LogoutApi, RegisterApi, TokenObtainApi, TokenRefreshApi

urlpatterns = [
    path("register/", RegisterApi.as_view(), name="register"),
    path("token/", TokenObtainApi.as_view(), name="token-obtain"),
    path("token/refresh/", TokenRefreshApi.as_view(), name="token-refresh"),
    path("logout/", LogoutApi.as_view(), name="api-logout"),
]
