"""The REST API. Each view validates its input, calls a service or a selector, and serializes."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from jobs import flow, queue, selectors
from jobs.api.base import ApiView
from jobs.api.serializers import (
    DeadJobSerializer,
    ErrorSerializer,
    JobCreateSerializer,
    JobDetailSerializer,
    JobFilterSerializer,
    JobInspectSerializer,
    JobSerializer,
    KeyLimitSerializer,
    QueueControlsSerializer,
    QueueSerializer,
    RateLimitSerializer,
    RequeueResultSerializer,
    RequeueSerializer,
    ScheduleInputSerializer,
    ScheduleRunSerializer,
    ScheduleSerializer,
    ScheduleTickSerializer,
    StatsSerializer,
    WorkerSerializer,
    paginated,
)
from jobs.errors import JobTypeNotAllowed, PayloadError
from jobs.models import Job, KeyLimit, Schedule, ScheduleTick
from jobs.registry import unstorable
from jobs.submission import OptionNotAllowed, requeue_dead_for_user, retry_for_user, submit_job

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Repeat a request with the same key to get the same job back instead of a second one.",
)
ERRORS = {
    400: OpenApiResponse(description="Invalid input, with messages per field."),
    401: ErrorSerializer,
    404: ErrorSerializer,
}


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def owned_job(request, job_id: int) -> Job:
    """Return the job if the user may see it; 404 otherwise, whether or not it exists."""
    return get_object_or_404(Job.objects.for_user(request.user), pk=job_id)


class JobListCreateApi(ApiView):
    @extend_schema(
        parameters=[JobFilterSerializer],
        responses={200: paginated(JobSerializer), 400: ERRORS[400], 401: ErrorSerializer, 404: ErrorSerializer},
        summary="List your jobs",
        description="Each job without its result and attempt history; GET /api/jobs/{id}/ serves both.",
        operation_id="jobs_list",
    )
    def get(self, request):
        filters = JobFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        jobs = selectors.job_list_for_user(
            request.user, statuses=f.get("status", ()), type=f.get("type"), queue=f.get("queue"),
            priorities=f.get("priority", ()), created_after=f.get("created_after"),
            created_before=f.get("created_before"), ordering=f.get("ordering", "-id"),
        ).defer(*JobSerializer.LIST_DEFERS)
        paginator = Pagination()
        page: list[Job] | None = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(JobSerializer(page, many=True).data)

    @extend_schema(
        request=JobCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: JobDetailSerializer,
            200: OpenApiResponse(JobDetailSerializer, description="Replay of an earlier request with this Idempotency-Key."),
            400: ERRORS[400], 401: ErrorSerializer, 413: ErrorSerializer,
            422: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused for a different request."),
            429: RateLimitSerializer,
        },
        summary="Submit a job",
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 255):
            raise ValidationError({"Idempotency-Key": ["Must be 1 to 255 characters."]})
        if key and (problem := unstorable(key)):
            raise ValidationError({"Idempotency-Key": [f"Must not contain {problem}."]})
        data = JobCreateSerializer(data=request.data, context={"owner": request.user, "idempotency_key": key or None})
        data.is_valid(raise_exception=True)
        try:
            submission = submit_job(user=request.user, spec=data.spec)
        except JobTypeNotAllowed as exc:
            raise ValidationError({"type": [str(exc)]}) from exc
        except OptionNotAllowed as exc:
            raise ValidationError(exc.errors) from exc
        except PayloadError as exc:
            raise ValidationError({"payload": exc.errors}) from exc
        except ValueError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(
            JobDetailSerializer(submission.job).data,
            status=status.HTTP_200_OK if submission.replayed else status.HTTP_201_CREATED,
        )


class JobDetailApi(ApiView):
    @extend_schema(responses={200: JobInspectSerializer, 401: ErrorSerializer, 404: ErrorSerializer}, summary="One job",
                   description="The job, with `waiting`: why a job that is not running waits.", operation_id="jobs_retrieve")
    def get(self, request, job_id: int):
        return Response(JobInspectSerializer(owned_job(request, job_id)).data)


class JobCancelApi(ApiView):
    @extend_schema(
        request=None,
        responses={200: JobDetailSerializer, 401: ErrorSerializer, 404: ErrorSerializer,
                   409: OpenApiResponse(ErrorSerializer, description="The job has already finished.")},
        summary="Cancel a job that has not finished",
    )
    def post(self, request, job_id: int):
        queue.cancel_job(owned_job(request, job_id).pk)
        return Response(JobDetailSerializer(owned_job(request, job_id)).data)


class JobRetryApi(ApiView):
    @extend_schema(
        request=None,
        responses={200: JobDetailSerializer, 401: ErrorSerializer, 404: ErrorSerializer,
                   409: OpenApiResponse(ErrorSerializer, description="The job is not dead or cancelled."),
                   429: RateLimitSerializer},
        summary="Requeue a dead, cancelled or expired job",
    )
    def post(self, request, job_id: int):
        retry_for_user(request.user, owned_job(request, job_id).pk)
        return Response(JobDetailSerializer(owned_job(request, job_id)).data)


class JobStatsApi(ApiView):
    @extend_schema(responses={200: StatsSerializer, 401: ErrorSerializer}, summary="Counts and timings of your jobs")
    def get(self, request):
        return Response(StatsSerializer(selectors.job_stats(request.user)).data)


class DeadJobListApi(ApiView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
        responses={200: paginated(DeadJobSerializer), 401: ErrorSerializer, 404: ErrorSerializer},
        summary="Your dead jobs (the DLQ)",
        description="Each with its last error; GET /api/jobs/{id}/ serves its result and attempt history.",
    )
    def get(self, request):
        jobs = Job.objects.for_user(request.user).dead().defer(*JobSerializer.LIST_DEFERS).order_by("-finished_at", "-id")
        paginator = Pagination()
        page: list[Job] | None = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(DeadJobSerializer(page, many=True).data)


class DeadJobRequeueApi(ApiView):
    @extend_schema(
        request=RequeueSerializer,
        responses={200: RequeueResultSerializer, 400: ERRORS[400], 401: ErrorSerializer, 429: RateLimitSerializer},
        summary="Requeue dead jobs: the ones given, or all of yours",
    )
    def post(self, request):
        data = RequeueSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids = requeue_dead_for_user(
            request.user, job_ids=data.validated_data.get("job_ids"), max_jobs=data.validated_data.get("max_jobs")
        )
        return Response(RequeueResultSerializer({"requeued": len(ids), "job_ids": ids}).data)


class WorkerListApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: WorkerSerializer(many=True), 401: ErrorSerializer, 403: ErrorSerializer},
                   summary="Live workers (staff only)")
    def get(self, request):
        return Response(WorkerSerializer(selectors.live_workers(), many=True).data)


# --- Queues and flow control (staff) -----------------------------------------------


def known_queue(name: str) -> str:
    """Return `name` if an operator may control it, else answer 404."""
    if name not in selectors.known_queues():
        raise NotFound(f"No queue {name!r} is configured, controlled, served or has ever had a job.")
    return name


def queue_row(name: str) -> dict:
    return next(row for row in selectors.queue_list() if row["name"] == name)


def applied(change) -> None:
    """Run a control change; its ValueError (a bad value the fields let through) is a 400."""
    try:
        change()
    except ValueError as exc:
        raise ValidationError({"non_field_errors": [str(exc)]}) from exc


class QueueListApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: QueueSerializer(many=True), 401: ErrorSerializer, 403: ErrorSerializer},
                   summary="Queues with their controls and counts (staff only)")
    def get(self, request):
        return Response(QueueSerializer(selectors.queue_list(), many=True).data)


class QueueDetailApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: QueueSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
                   summary="One queue (staff only)")
    def get(self, request, name: str):
        return Response(QueueSerializer(queue_row(known_queue(name))).data)

    @extend_schema(
        request=QueueControlsSerializer,
        responses={200: QueueSerializer, 400: ERRORS[400], 401: ErrorSerializer, 403: ErrorSerializer,
                   404: ErrorSerializer},
        summary="Change a queue's pause state and limits (staff only)",
        description="Every field is optional; null removes a limit. The change is all or nothing and reaches "
                    "every worker within a second. A change made here outlives the next deploy: "
                    "`manage.py queues reset` applies JOBS_QUEUES again.",
    )
    def patch(self, request, name: str):
        known_queue(name)
        data = QueueControlsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        applied(lambda: queue.set_queue_controls(name, **data.validated_data))
        return Response(QueueSerializer(queue_row(name)).data)


class QueuePauseApi(ApiView):
    permission_classes = [IsAdminUser]
    paused = True

    @extend_schema(request=None,
                   responses={200: QueueSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
                   summary="Pause a queue: workers stop claiming its jobs within a second (staff only)")
    def post(self, request, name: str):
        known_queue(name)
        (queue.pause_queue if self.paused else queue.resume_queue)(name)
        return Response(QueueSerializer(queue_row(name)).data)


class QueueResumeApi(QueuePauseApi):
    paused = False

    @extend_schema(request=None,
                   responses={200: QueueSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
                   summary="Resume a paused queue (staff only)")
    def post(self, request, name: str):
        return super().post(request, name)


class KeyLimitListApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: KeyLimitSerializer(many=True), 401: ErrorSerializer, 403: ErrorSerializer,
                              404: ErrorSerializer},
                   summary="The concurrency keys of a queue that have limits of their own (staff only)")
    def get(self, request, name: str):
        return Response(KeyLimitSerializer(KeyLimit.objects.filter(queue=known_queue(name)), many=True).data)


class KeyLimitApi(ApiView):
    permission_classes = [IsAdminUser]

    def key_limit(self, name: str, key: str) -> KeyLimit:
        return get_object_or_404(KeyLimit, queue=known_queue(name), key=key)

    @extend_schema(responses={200: KeyLimitSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
                   summary="One key's own limits (staff only)")
    def get(self, request, name: str, key: str):
        return Response(KeyLimitSerializer(self.key_limit(name, key)).data)

    @extend_schema(request=KeyLimitSerializer,
                   responses={200: KeyLimitSerializer, 400: ERRORS[400], 401: ErrorSerializer, 403: ErrorSerializer,
                              404: ErrorSerializer},
                   summary="Set one key's own limits, overriding its type's and queue's (staff only)")
    def put(self, request, name: str, key: str):
        known_queue(name)
        errors = {}
        try:
            flow.check_key(key)
        except ValueError as exc:
            errors["key"] = [str(exc)]
        data = KeyLimitSerializer(data=request.data)
        if not data.is_valid():
            errors.update(data.errors)
        if errors:
            raise ValidationError(errors)
        applied(lambda: queue.set_key_limit(name, key, **data.validated_data))
        return Response(KeyLimitSerializer(self.key_limit(name, key)).data)

    @extend_schema(responses={204: None, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
                   summary="Drop one key's own limits: its type's and queue's apply again (staff only)")
    def delete(self, request, name: str, key: str):
        self.key_limit(name, key)
        queue.remove_key_limit(name, key)
        return Response(status=status.HTTP_204_NO_CONTENT)

# --- schedules (staff only) ---------------------------------------------------------------


def _schedule(schedule_id: int) -> Schedule:
    return get_object_or_404(Schedule, pk=schedule_id)


STAFF_ERRORS = {401: ErrorSerializer, 403: ErrorSerializer}


class ScheduleListCreateApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: paginated(ScheduleSerializer), **STAFF_ERRORS},
                   summary="Schedules (staff only)", operation_id="schedules_list",
                   parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)])
    def get(self, request):
        paginator = Pagination()
        page: list[Schedule] | None = paginator.paginate_queryset(Schedule.objects.order_by("name"), request, view=self)
        return paginator.get_paginated_response(ScheduleSerializer(page, many=True).data)

    @extend_schema(request=ScheduleInputSerializer,
                   responses={201: ScheduleSerializer, 400: ERRORS[400], **STAFF_ERRORS},
                   summary="Add a schedule (staff only)",
                   description="Give exactly one of cron and interval_seconds. A bad cron expression, an unknown "
                               "zone, an unknown job type or an invalid payload is a 400 naming the field.")
    def post(self, request):
        data = ScheduleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            schedule = queue.create_schedule(data.validated_data)
        except queue.ScheduleInvalid as exc:
            raise ValidationError(exc.errors) from exc
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)


class ScheduleDetailApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: ScheduleSerializer, 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="One schedule (staff only)", operation_id="schedules_retrieve")
    def get(self, request, schedule_id: int):
        return Response(ScheduleSerializer(_schedule(schedule_id)).data)

    @extend_schema(request=ScheduleInputSerializer,
                   responses={200: ScheduleSerializer, 400: ERRORS[400], 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="Change a schedule (staff only)",
                   description="Only the fields given change. A declared schedule changed here keeps the change "
                               "across deploys (its edited_at is set).")
    def patch(self, request, schedule_id: int):
        schedule = _schedule(schedule_id)
        data = ScheduleInputSerializer(schedule, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        try:
            schedule = queue.update_schedule(schedule.pk, data.validated_data)
        except queue.ScheduleInvalid as exc:
            raise ValidationError(exc.errors) from exc
        except Schedule.DoesNotExist:
            raise NotFound() from None
        return Response(ScheduleSerializer(schedule).data)

    @extend_schema(request=None, responses={204: None, 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="Remove a schedule and its tick history (staff only)",
                   description="A schedule declared in code or settings comes back, as declared, at the next start-up.")
    def delete(self, request, schedule_id: int):
        try:
            queue.delete_schedule(_schedule(schedule_id).pk)
        except Schedule.DoesNotExist:
            raise NotFound() from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePauseApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={200: ScheduleSerializer, 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="Pause a schedule (staff only)")
    def post(self, request, schedule_id: int):
        return Response(ScheduleSerializer(queue.pause_schedule(_schedule(schedule_id).pk)).data)


class ScheduleResumeApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=None,
                   responses={200: ScheduleSerializer, 400: ERRORS[400], 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="Resume a schedule from its next tick (staff only)")
    def post(self, request, schedule_id: int):
        try:
            schedule = queue.resume_schedule(_schedule(schedule_id).pk)
        except queue.ScheduleInvalid as exc:
            raise ValidationError(exc.errors) from exc
        return Response(ScheduleSerializer(schedule).data)


class ScheduleRunApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=None,
                   responses={200: ScheduleRunSerializer, 400: ERRORS[400], 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="Enqueue a schedule's job now (staff only)",
                   description="Recorded as a manual tick; neither a pause nor the overlap policy applies.")
    def post(self, request, schedule_id: int):
        try:
            job_id = queue.run_schedule_now(_schedule(schedule_id).pk)
        except queue.ScheduleInvalid as exc:
            raise ValidationError(exc.errors) from exc
        return Response(ScheduleRunSerializer({"job_id": job_id}).data)


class ScheduleTickListApi(ApiView):
    permission_classes = [IsAdminUser]

    @extend_schema(parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
                   responses={200: paginated(ScheduleTickSerializer), 404: ErrorSerializer, **STAFF_ERRORS},
                   summary="A schedule's tick history, newest first (staff only)",
                   description="Each tick with the job it enqueued and that job's status now, or why it enqueued "
                               "none. Kept for JOBS_SCHEDULE_TICK_RETENTION_SECONDS.")
    def get(self, request, schedule_id: int):
        schedule = _schedule(schedule_id)
        paginator = Pagination()
        page: list[ScheduleTick] | None = paginator.paginate_queryset(
            ScheduleTick.objects.filter(schedule=schedule).order_by("-tick_at"), request, view=self)
        ticks = list(page or [])
        selectors.attach_tick_job_statuses(ticks)
        return paginator.get_paginated_response(ScheduleTickSerializer(ticks, many=True).data)
