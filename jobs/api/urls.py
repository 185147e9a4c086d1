from django.urls import path

from jobs.api import views

# Namespaced, so that a project that mounts them keeps its own URL names (job-list, ...) free.
app_name = "skipjack_api"

urlpatterns = [
    path("jobs/", views.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/stats/", views.JobStatsApi.as_view(), name="job-stats"),
    path("jobs/<int:job_id>/", views.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel/", views.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/retry/", views.JobRetryApi.as_view(), name="job-retry"),
    path("dlq/", views.DeadJobListApi.as_view(), name="dlq-list"),
    path("dlq/requeue/", views.DeadJobRequeueApi.as_view(), name="dlq-requeue"),
    path("workers/", views.WorkerListApi.as_view(), name="worker-list"),
    path("queues/", views.QueueListApi.as_view(), name="queue-list"),
    path("queues/<str:name>/", views.QueueDetailApi.as_view(), name="queue-detail"),
    path("queues/<str:name>/pause/", views.QueuePauseApi.as_view(), name="queue-pause"),
    path("queues/<str:name>/resume/", views.QueueResumeApi.as_view(), name="queue-resume"),
    path("queues/<str:name>/keys/", views.KeyLimitListApi.as_view(), name="queue-key-list"),
    path("queues/<str:name>/keys/<path:key>/", views.KeyLimitApi.as_view(), name="queue-key-detail"),

    path("schedules/", views.ScheduleListCreateApi.as_view(), name="schedule-list"),
    path("schedules/<int:schedule_id>/", views.ScheduleDetailApi.as_view(), name="schedule-detail"),
    path("schedules/<int:schedule_id>/pause/", views.SchedulePauseApi.as_view(), name="schedule-pause"),
    path("schedules/<int:schedule_id>/resume/", views.ScheduleResumeApi.as_view(), name="schedule-resume"),
    path("schedules/<int:schedule_id>/run/", views.ScheduleRunApi.as_view(), name="schedule-run"),
    path("schedules/<int:schedule_id>/ticks/", views.ScheduleTickListApi.as_view(), name="schedule-ticks"),
]
