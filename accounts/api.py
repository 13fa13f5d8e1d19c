from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.views import (
    TokenBlacklistView,
    TokenObtainPairView,
    TokenRefreshView,
)

from accounts.serializers import LogoutIn, MeOut, MeUpdateIn, RegisterIn, UserOut, WsTicketOut
from accounts.services import user_register, user_set_time_zone, ws_ticket_issue


class AuthThrottled:
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"


class RegisterView(AuthThrottled, APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(request=RegisterIn, responses={201: UserOut})
    def post(self, request):
        data = RegisterIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data)
        return Response(UserOut(user).data, status=status.HTTP_201_CREATED)


class TokenView(AuthThrottled, TokenObtainPairView):
    pass


class TokenRefresh(AuthThrottled, TokenRefreshView):
    pass


class LogoutView(AuthThrottled, TokenBlacklistView):
    """Blacklist a refresh token (this device's session). The refresh token is the
    credential: no access token is needed, so an app can log out after it expired.
    An invalid, expired or already blacklisted token is 401, as on refresh."""

    @extend_schema(request=LogoutIn, responses={204: None})
    def post(self, request, *args, **kwargs):
        super().post(request, *args, **kwargs)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WsTicketView(APIView):
    @extend_schema(request=None, responses={200: WsTicketOut})
    def post(self, request):
        ticket, ttl = ws_ticket_issue(user=request.user)
        return Response({"ticket": ticket, "expires_in": ttl})


class MeView(APIView):
    @extend_schema(responses={200: MeOut})
    def get(self, request):
        return Response(MeOut(request.user).data)

    @extend_schema(request=MeUpdateIn, responses={200: MeOut})
    def patch(self, request):
        data = MeUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        user_set_time_zone(user=request.user, time_zone=data.validated_data["time_zone"])
        return Response(MeOut(request.user).data)
