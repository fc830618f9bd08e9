"""The notifications API: your subscriptions (yours, your saved jobs', your tasks') and what
each sent."""

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ccs.api import ID, QueryIn, page_of, query_valid

from . import services
from .models import Subscription
from .serializers import NotificationOut, SubscriptionIn, SubscriptionOut


class SubscriptionViewSet(viewsets.GenericViewSet):
    """Subscriptions to notifications, each the one of the user who made it."""

    serializer_class = SubscriptionOut
    lookup_value_regex = ID

    def get_queryset(self):
        return Subscription.objects.filter(user=self.request.user)

    @extend_schema(summary="List your subscriptions", parameters=[QueryIn])
    def list(self, request: Request) -> Response:
        query_valid(request, QueryIn)
        return page_of(self, self.get_queryset(), SubscriptionOut)

    @extend_schema(
        summary="Subscribe to notifications by e-mail or chat webhook",
        description="Without `job` or `task`: your tasks, your schedules, versions waiting "
        "for your review and reviews of your versions. With `job` (needs the right to change "
        "the job) or `task` (needs the right to operate it): that job's or task's events.",
        request=SubscriptionIn, responses={201: SubscriptionOut},
    )
    def create(self, request: Request) -> Response:
        data = SubscriptionIn(data=request.data)
        data.is_valid(raise_exception=True)
        subscription = services.subscription_create(actor=request.user, **data.validated_data)
        return Response(SubscriptionOut(subscription).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Show a subscription")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(SubscriptionOut(self.get_object()).data)

    @extend_schema(summary="Delete a subscription", request=None, responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.subscription_delete(actor=request.user, subscription_id=self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="List what a subscription sent, newest first, with delivery errors",
                   parameters=[QueryIn], responses=NotificationOut(many=True))
    @action(detail=True, methods=["get"])
    def notifications(self, request: Request, pk: str) -> Response:
        query_valid(request, QueryIn)
        return page_of(self, self.get_object().notifications.all(), NotificationOut)
