"""The saved jobs API: create, list, show, edit, delete and run saved jobs; their runs."""

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ccs.api import ID, QueryIn, page_of, query_valid
from tasks.serializers import TaskCreatedOut

from . import selectors, services
from .serializers import (
    JobRunOut,
    OccurrenceOut,
    SavedJobEditIn,
    SavedJobFilterIn,
    SavedJobIn,
    SavedJobOut,
    ScheduleEditIn,
    ScheduleIn,
    ScheduleOut,
)


def _valid(serializer_class: type, request: Request) -> dict:
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    return dict(data.validated_data)


class SavedJobViewSet(viewsets.GenericViewSet):
    """Saved jobs: a launch kept under a name, run again with one request."""

    serializer_class = SavedJobOut
    lookup_value_regex = ID

    def get_queryset(self):
        return selectors.saved_jobs_visible_to(self.request.user)

    @extend_schema(summary="List the saved jobs you can see, by name",
                   parameters=[SavedJobFilterIn], responses=SavedJobOut(many=True))
    def list(self, request: Request) -> Response:
        query = query_valid(request, SavedJobFilterIn)
        jobs = self.get_queryset()
        if "name" in query:
            jobs = jobs.filter(name=query["name"])
        if "plugin" in query:
            jobs = jobs.filter(launch__plugin=query["plugin"])
        return page_of(self, jobs, SavedJobOut)

    @extend_schema(
        summary="Save a launch under a name; you become its owner",
        description="The launch is checked as `POST tasks/?plan=1` checks it; you must be "
        "allowed to operate every target node and host.",
        request=SavedJobIn, responses={201: SavedJobOut},
    )
    def create(self, request: Request) -> Response:
        job = services.saved_job_create(actor=request.user, **_valid(SavedJobIn, request))
        return Response(SavedJobOut(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Show a saved job")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(SavedJobOut(self.get_object()).data)

    @extend_schema(
        summary="Change a saved job's name, description or launch (replaced whole)",
        description="Needs the right to operate every node and host of its target, and of "
        "the new one.", request=SavedJobEditIn, responses=SavedJobOut,
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        job = services.saved_job_edit(actor=request.user, job_id=job.pk,
                                      **_valid(SavedJobEditIn, request))
        return Response(SavedJobOut(job).data)

    @extend_schema(summary="Delete a saved job (the tasks it started stay)", request=None,
                   responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.saved_job_delete(actor=request.user, job_id=self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Run a saved job: start its launch as a task of yours",
        description="Rights on the hosts its target expands to now, the version's approval "
        "and your quota are checked now, as for any task.",
        request=None, responses={201: TaskCreatedOut},
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str) -> Response:
        task = services.saved_job_run(actor=request.user, job_id=self.get_object().pk)
        task.refresh_from_db()
        return Response(TaskCreatedOut(task).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="List the tasks a saved job started, newest first",
                   parameters=[QueryIn], responses=JobRunOut(many=True))
    @action(detail=True, methods=["get"])
    def runs(self, request: Request, pk: str) -> Response:
        query_valid(request, QueryIn)
        return page_of(self, selectors.saved_job_runs(self.get_object()), JobRunOut)

    @extend_schema(methods=["GET"], summary="List a saved job's schedules",
                   parameters=[QueryIn], responses=ScheduleOut(many=True))
    @extend_schema(
        methods=["POST"], summary="Schedule a saved job: a cron expression or a one-off time",
        description="You own the schedule: each occurrence runs as a task of yours, checked "
        "against your rights at that moment (an occurrence you may no longer run fails, "
        "visibly, instead). Needs the right to operate every target of the job now.",
        request=ScheduleIn, responses={201: ScheduleOut},
    )
    @action(detail=True, methods=["get", "post"])
    def schedules(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        if request.method == "GET":
            query_valid(request, QueryIn)
            return page_of(self, job.schedules.select_related("job", "owner"), ScheduleOut)
        schedule = services.schedule_create(actor=request.user, job_id=job.pk,
                                            **_valid(ScheduleIn, request))
        return Response(ScheduleOut(schedule).data, status=status.HTTP_201_CREATED)


class ScheduleViewSet(viewsets.GenericViewSet):
    """Schedules of saved jobs: change, pause, delete them; their occurrences."""

    serializer_class = ScheduleOut
    lookup_value_regex = ID

    def get_object(self):
        return selectors.schedule_visible(self.request.user, int(self.kwargs["pk"]))

    @extend_schema(summary="Show a schedule with its next fire times")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ScheduleOut(self.get_object()).data)

    @extend_schema(summary="Change or pause a schedule; you become its owner",
                   request=ScheduleEditIn, responses=ScheduleOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        schedule = services.schedule_edit(actor=request.user, schedule_id=self.get_object().pk,
                                          **_valid(ScheduleEditIn, request))
        return Response(ScheduleOut(schedule).data)

    @extend_schema(summary="Delete a schedule", request=None, responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.schedule_delete(actor=request.user, schedule_id=self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="List a schedule's occurrences, newest first: the task each "
                   "started, or why it did not run", parameters=[QueryIn],
                   responses=OccurrenceOut(many=True))
    @action(detail=True, methods=["get"])
    def occurrences(self, request: Request, pk: str) -> Response:
        query_valid(request, QueryIn)
        return page_of(self, selectors.schedule_occurrences(self.get_object()), OccurrenceOut)
