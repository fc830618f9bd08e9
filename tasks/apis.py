"""The tasks API: create, read, subtasks and grouped summary."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from . import selectors, services
from .models import SubTask, Task
from .serializers import SubTaskOut, SummaryGroupOut, TaskCreateIn, TaskDetailOut, TaskOut


class TaskViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Tasks visible to the caller."""

    serializer_class = TaskOut

    def get_queryset(self):
        return selectors.tasks_visible_to(self.request.user)

    def _task(self, pk: str):
        return get_object_or_404(self.get_queryset(), pk=pk)

    @extend_schema(request=TaskCreateIn, responses={201: TaskDetailOut})
    def create(self, request: Request) -> Response:
        data = TaskCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        task = services.task_create(
            actor=request.user, plugin=v["plugin"], version=v.get("version"),
            params=v["params"], nodes=v["target"]["nodes"], hosts=v["target"]["hosts"],
            run_as=v["run_as"], timeout=v["control"].get("timeout"),
            priority=v["control"].get("priority", Task.Priority.NORMAL),
        )
        return Response(self._detail(task).data, status=201)

    @extend_schema(responses=TaskDetailOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self._detail(self._task(pk)).data)

    def _detail(self, task) -> TaskDetailOut:
        return TaskDetailOut(task, context={"counts": selectors.task_counts(task.pk)})

    @extend_schema(
        responses=SubTaskOut(many=True),
        parameters=[OpenApiParameter("status", str), OpenApiParameter("datacenter", str)],
    )
    @action(detail=True, methods=["get"])
    def subtasks(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        rows = SubTask.objects.filter(task=task).select_related("host", "datacenter").order_by("id")
        if status := request.query_params.get("status"):
            rows = rows.filter(status=status)
        if datacenter := request.query_params.get("datacenter"):
            rows = rows.filter(datacenter__name=datacenter)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(SubTaskOut(page, many=True).data)

    @extend_schema(
        responses=SummaryGroupOut(many=True), parameters=[OpenApiParameter("datacenter", str)]
    )
    @action(detail=True, methods=["get"])
    def summary(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        groups = selectors.task_summary(task.pk, request.query_params.get("datacenter"))
        return Response({"task": task.pk, "total": task.total_hosts, "groups": groups})
