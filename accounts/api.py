from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.serializers import RegisterIn, UserOut, WsTicketOut
from accounts.services import user_register, ws_ticket_issue


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


class WsTicketView(APIView):
    @extend_schema(request=None, responses={200: WsTicketOut})
    def post(self, request):
        ticket, ttl = ws_ticket_issue(user=request.user)
        return Response({"ticket": ticket, "expires_in": ttl})


class MeView(APIView):
    @extend_schema(responses={200: UserOut})
    def get(self, request):
        return Response(UserOut(request.user).data)
