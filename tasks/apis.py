"""The tasks API: create and read tasks, their subtasks and summary; pause, resume, stop and
re-run them."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from ccs.api import BIGINT_MAX, ID, EventStreamRenderer, QueryIn, int_param, page_of, query_valid

from . import selectors, services
from .events import events_after
from .models import CallbackAttempt, Task
from .permissions import CanOperateSubtask, CanOperateTask
from .serializers import (
    CallbackAttemptOut,
    EventPageOut,
    EventsIn,
    LaunchQueryIn,
    PlanOut,
    RerunIn,
    SubTaskFilterIn,
    SubTaskOut,
    SummaryFilterIn,
    SummaryOut,
    TaskCreatedOut,
    TaskCreateIn,
    TaskDetailOut,
    TaskFilterIn,
    TaskOut,
)
from .services.plan import task_plan
from .streams import event_stream_response

OPERATE = ("pause", "resume", "stop")


class TaskViewSet(viewsets.GenericViewSet):
    """Tasks: one run of an approved plugin version on hosts, and its control."""

    serializer_class = TaskOut
    lookup_value_regex = ID

    def get_queryset(self):
        return selectors.tasks_visible_to(self.request.user)

    def get_permissions(self):
        extra = [CanOperateTask()] if self.action in OPERATE else []
        return [*super().get_permissions(), *extra]

    def _task(self, pk: str) -> Task:
        return self.get_object()  # 404 naming it if not visible; 403 if not operable

    @extend_schema(summary="List the tasks you can see, newest first", parameters=[TaskFilterIn],
                   responses=TaskOut(many=True))
    def list(self, request: Request) -> Response:
        tasks = selectors.tasks_filtered(self.get_queryset(), **query_valid(request, TaskFilterIn))
        return page_of(self, tasks, TaskOut)

    @extend_schema(
        summary="Start a task: run an approved plugin on the target hosts (or plan it)",
        description="Checks the plugin version, the params against its schema, the account, "
        "your right to operate every target host and your quota; then creates one pending "
        "subtask per host. The callback secret is in this answer only. With `?plan=1` it "
        "creates nothing and answers the plan (200): hosts per datacenter, those you may not "
        "operate or that were offline at the last probe, the batches, the version and whether "
        "the quota allows it.",
        parameters=[LaunchQueryIn], request=TaskCreateIn,
        responses={201: TaskCreatedOut, 200: PlanOut},
    )
    def create(self, request: Request) -> Response:
        plan = query_valid(request, LaunchQueryIn)["plan"]
        data = TaskCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        arguments = services.launch_arguments(data.validated_data)
        if plan:
            return Response(PlanOut(task_plan(actor=request.user, **arguments)).data)
        task = services.task_create(actor=request.user, **arguments)
        task.refresh_from_db()
        return Response(TaskCreatedOut(task).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Show a task with its subtasks counted per state",
                   responses=TaskDetailOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self._detail(self._task(pk)).data)

    def _detail(self, task: Task) -> TaskDetailOut:
        task.refresh_from_db()
        return TaskDetailOut(task)

    def _operate(self, pk: str, service) -> Response:
        task = self._task(pk)
        task = service(actor=self.request.user, task_id=task.pk)
        return Response(self._detail(task).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Pause a task: hold what has not started, freeze what runs",
        description="Subtasks not yet on their host are held at once; running ones are frozen "
        "(SIGSTOP) by their agents, which confirm shortly after. Pausing a paused task is "
        "harmless; any other state answers 409.",
        request=None, responses={202: TaskDetailOut},
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._operate(pk, services.task_pause)

    @extend_schema(
        summary="Resume a paused task",
        description="Held subtasks are released again and frozen ones continue; failures seen "
        "so far no longer count against the failure threshold.",
        request=None, responses={202: TaskDetailOut},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._operate(pk, services.task_resume)

    @extend_schema(
        summary="Stop a task: end what has not started, kill what runs",
        description="The task is `stopping` until every host confirmed that its job was "
        "killed, then `stopped` (at once when nothing was on a host).",
        request=None, responses={202: TaskDetailOut},
    )
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        return self._operate(pk, services.task_stop)

    @extend_schema(
        summary="Re-run a task on its failed hosts (or those in the states given)",
        description="A new task with the same plugin version, params, account and control "
        "data, on the hosts whose subtasks ended in `statuses` (default failed, lost, "
        "timeout). Rights, quota and approval are checked now.",
        request=RerunIn, responses={201: TaskDetailOut},
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        data = RerunIn(data=request.data)
        data.is_valid(raise_exception=True)
        new = services.task_rerun(
            actor=request.user, task_id=task.pk, statuses=data.validated_data["statuses"]
        )
        return Response(self._detail(new).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="List a task's subtasks (one per host) with their results",
                   parameters=[SubTaskFilterIn], responses=SubTaskOut(many=True))
    @action(detail=True, methods=["get"])
    def subtasks(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        rows = selectors.subtasks_filtered(task.pk, **query_valid(request, SubTaskFilterIn))
        return page_of(self, rows, SubTaskOut)

    @extend_schema(
        summary="Page or stream a task's events (every subtask transition)",
        description="JSON pages of the task's numbered events; with `Accept: "
        "text/event-stream` a live stream (SSE) that replays from Last-Event-ID (or `after`) "
        "and follows until the task ends.",
        parameters=[EventsIn, OpenApiParameter(
            "Last-Event-ID", {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX},
            location=OpenApiParameter.HEADER,
            description="the last event number already seen (over `after`)"),
            OpenApiParameter("format", exclude=True)],  # ask with the Accept header
        responses={(200, "application/json"): EventPageOut,
                   (200, "text/event-stream"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, EventStreamRenderer])
    def events(self, request: Request, pk: str):
        task = self._task(pk)
        query = query_valid(request, EventsIn)
        header = request.headers.get("Last-Event-ID")
        after = query["after"] if header is None else int_param(header or "-", "Last-Event-ID")
        if request.accepted_renderer.format == EventStreamRenderer.format:
            return event_stream_response(request._request, task.pk, after)
        events = events_after(task.pk, after, query["limit"])
        last = events[-1]["seq"] if events else after
        return Response({"results": events, "next_after": last,
                         "more": len(events) == query["limit"]})

    @extend_schema(summary="List the delivery attempts of a task's callbacks, oldest first",
                   parameters=[QueryIn], responses=CallbackAttemptOut(many=True))
    @action(detail=True, methods=["get"])
    def callbacks(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        query_valid(request, QueryIn)
        attempts = CallbackAttempt.objects.filter(task=task).order_by("id")
        return page_of(self, attempts, CallbackAttemptOut)

    @extend_schema(
        summary="Group a task's outcomes: hosts with the same status, exit code and output",
        parameters=[SummaryFilterIn], responses=SummaryOut,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def summary(self, request: Request, pk: str) -> Response:
        task = self._task(pk)
        groups = selectors.task_summary(task.pk, **query_valid(request, SummaryFilterIn))
        return Response({"task": task.pk, "total": task.total_hosts, "groups": groups})


class SubTaskViewSet(viewsets.GenericViewSet):
    """One host's part of a task; pause, resume and stop it."""

    serializer_class = SubTaskOut
    lookup_value_regex = ID

    def get_queryset(self):
        return selectors.subtasks_visible_to(self.request.user)

    def get_permissions(self):
        extra = [CanOperateSubtask()] if self.action in OPERATE else []
        return [*super().get_permissions(), *extra]

    @extend_schema(summary="Show one host's subtask with its result")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(SubTaskOut(self.get_object()).data)

    def _operate(self, service) -> Response:
        subtask = self.get_object()
        service(actor=self.request.user, subtask_id=subtask.pk)
        return Response(SubTaskOut(self.get_object()).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Pause one host: hold it if not started, freeze it if it runs",
                   request=None, responses={202: SubTaskOut})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._operate(services.subtask_pause)

    @extend_schema(summary="Resume one held or paused host", request=None,
                   responses={202: SubTaskOut})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._operate(services.subtask_resume)

    @extend_schema(summary="Stop one host: end it if not started, kill its job if it runs",
                   request=None, responses={202: SubTaskOut})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        return self._operate(services.subtask_stop)
