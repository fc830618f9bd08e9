"""The tasks API: create and read tasks, their subtasks and summary; pause, resume, stop."""

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from ccs.api import EventStreamRenderer, int_param

from . import selectors, services
from .events import PAGE, EventStream, events_after
from .models import CallbackAttempt, SubTask, Task
from .permissions import CanOperateSubtask, CanOperateTask
from .serializers import (
    CallbackAttemptOut,
    EventPageOut,
    RerunIn,
    SubTaskOut,
    SummaryGroupOut,
    TaskCreatedOut,
    TaskCreateIn,
    TaskDetailOut,
    TaskOut,
)


def _control(data: dict, task_type: str) -> services.ControlData:
    return services.ControlData(
        timeout=data.get("timeout"), priority=data.get("priority", Task.Priority.NORMAL),
        concurrency=data.get("concurrency"), batches=data.get("batches", []),
        failure_threshold=data.get("failure_threshold") or "",
        auto_resume=data.get("auto_resume"), task_type=task_type,
    )


class TaskViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Tasks visible to the caller."""

    serializer_class = TaskOut

    def get_queryset(self):
        return selectors.tasks_visible_to(self.request.user)

    def get_permissions(self):
        extra = [CanOperateTask()] if self.action in ("pause", "resume", "stop") else []
        return [*super().get_permissions(), *extra]

    def _task(self, pk: str) -> Task:
        task = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(self.request, task)
        return task

    @extend_schema(request=TaskCreateIn, responses={201: TaskCreatedOut})
    def create(self, request: Request) -> Response:
        data = TaskCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        task = services.task_create(
            actor=request.user, plugin=v["plugin"], version=v.get("version"),
            params=v["params"], nodes=v["target"]["nodes"], hosts=v["target"]["hosts"],
            run_as=v["run_as"], control=_control(v["control"], v["type"]),
            callback_url=v["callback_url"],
        )
        task.refresh_from_db()
        out = TaskCreatedOut(task, context={"counts": selectors.task_counts(task.pk)})
        return Response(out.data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=TaskDetailOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self._detail(self._task(pk)).data)

    def _detail(self, task: Task) -> TaskDetailOut:
        task.refresh_from_db()
        return TaskDetailOut(task, context={"counts": selectors.task_counts(task.pk)})

    def _operate(self, pk: str, service) -> Response:
        task = self._task(pk)
        task = service(actor=self.request.user, task_id=task.pk)
        return Response(self._detail(task).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: TaskDetailOut})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._operate(pk, services.task_pause)

    @extend_schema(request=None, responses={202: TaskDetailOut})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._operate(pk, services.task_resume)

    @extend_schema(request=None, responses={202: TaskDetailOut})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        return self._operate(pk, services.task_stop)

    @extend_schema(request=RerunIn, responses={201: TaskDetailOut})
    @action(detail=True, methods=["post"])
    def rerun(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        data = RerunIn(data=request.data)
        data.is_valid(raise_exception=True)
        new = services.task_rerun(
            actor=request.user, task_id=task.pk, statuses=data.validated_data["statuses"]
        )
        return Response(self._detail(new).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses=SubTaskOut(many=True),
        parameters=[OpenApiParameter("status", str), OpenApiParameter("datacenter", str)],
    )
    @action(detail=True, methods=["get"])
    def subtasks(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        rows = SubTask.objects.filter(task=task).select_related("host", "datacenter").order_by("id")
        if status_ := request.query_params.get("status"):
            rows = rows.filter(status=status_)
        if datacenter := request.query_params.get("datacenter"):
            rows = rows.filter(datacenter__name=datacenter)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(SubTaskOut(page, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("after", int), OpenApiParameter("limit", int),
                    OpenApiParameter("Last-Event-ID", str, location=OpenApiParameter.HEADER)],
        responses=EventPageOut,
        description="JSON pages of the task's events, or with `Accept: text/event-stream` a "
        "live stream that replays from Last-Event-ID (or `after`) and follows until the task ends.",
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, EventStreamRenderer])
    def events(self, request: Request, pk: str):
        task = self._task(pk)
        if request.accepted_renderer.format == EventStreamRenderer.format:
            header = request.headers.get("Last-Event-ID")
            after = int_param(header, "Last-Event-ID") if header else int_param(
                request.query_params.get("after"), "after"
            )
            response = StreamingHttpResponse(
                EventStream(task.pk, after), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # no proxy buffering of the stream
            return response
        after = int_param(request.query_params.get("after"), "after")
        limit = min(int_param(request.query_params.get("limit"), "limit", PAGE, 1), PAGE)
        events = events_after(task.pk, after, limit)
        last = events[-1]["seq"] if events else after
        return Response({"results": events, "next_after": last, "more": len(events) == limit})

    @extend_schema(responses=CallbackAttemptOut(many=True))
    @action(detail=True, methods=["get"])
    def callbacks(self, request: Request, pk: str) -> Response:
        """Delivery attempts of the task's callbacks, oldest first."""
        task = self._task(pk)
        page = self.paginate_queryset(CallbackAttempt.objects.filter(task=task).order_by("id"))
        return self.get_paginated_response(CallbackAttemptOut(page, many=True).data)

    @extend_schema(
        responses=SummaryGroupOut(many=True), parameters=[OpenApiParameter("datacenter", str)]
    )
    @action(detail=True, methods=["get"])
    def summary(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        groups = selectors.task_summary(task.pk, request.query_params.get("datacenter"))
        return Response({"task": task.pk, "total": task.total_hosts, "groups": groups})


class SubTaskViewSet(viewsets.GenericViewSet):
    """One host's part of a task; pause, resume and stop it."""

    serializer_class = SubTaskOut

    def get_queryset(self):
        return selectors.subtasks_visible_to(self.request.user)

    def get_permissions(self):
        extra = [CanOperateSubtask()] if self.action in ("pause", "resume", "stop") else []
        return [*super().get_permissions(), *extra]

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(SubTaskOut(self.get_object()).data)

    def _operate(self, service) -> Response:
        subtask = self.get_object()
        service(actor=self.request.user, subtask_id=subtask.pk)
        return Response(SubTaskOut(self.get_object()).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: SubTaskOut})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._operate(services.subtask_pause)

    @extend_schema(request=None, responses={202: SubTaskOut})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._operate(services.subtask_resume)

    @extend_schema(request=None, responses={202: SubTaskOut})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        return self._operate(services.subtask_stop)
