from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/retry/", views.job_retry, name="job-retry"),
    path("jobs/<int:job_id>/run-now/", views.job_run_now, name="job-run-now"),
    path("dlq/", views.dlq, name="dlq"),
    path("dlq/requeue/", views.dlq_requeue, name="dlq-requeue"),
    path("dlq/<str:group>/", views.dlq_group, name="dlq-group"),
    path("workers/", views.workers, name="workers"),
    path("queues/", views.queues, name="queues"),
    path("queues/<str:name>/pause/", views.queue_pause, name="queue-pause"),
    path("queues/<str:name>/limits/", views.queue_limits, name="queue-limits"),
    path("queues/<str:name>/keys/", views.queue_key_limit, name="queue-key-limit"),
    path("schedules/", views.schedules, name="schedules"),
    path("schedules/<int:schedule_id>/", views.schedule_edit, name="schedule-edit"),
    path("schedules/<int:schedule_id>/<str:action>/", views.schedule_action, name="schedule-action"),
    path("submit/", views.submit, name="submit"),
    path("submit/fields/", views.submit_fields, name="submit-fields"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
]
