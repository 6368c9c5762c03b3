"""The Celery side of the job queue, shared by the gateway (which only publishes) and the
workers (service/worker.py): the task name, the broker queue and the configuration."""

from __future__ import annotations

from typing import Any

from service.settings import Settings

#: The Celery task that runs a job (service/worker.py defines it; the gateway only names it).
RUN_JOB = "fer.run_job"

#: The broker queue of jobs.
QUEUE = "fer-jobs"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration of the gateway (which only publishes) and of the workers."""
    url = str(settings.redis_url)
    visibility = settings.job_visibility_timeout
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_connection_timeout": settings.redis_timeout,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "global_keyprefix": settings.redis_prefix,
            # A message taken by a worker that died is delivered again this long after it
            # was taken: longer than any job (Settings checks), or jobs would run twice.
            "visibility_timeout": visibility,
            # Look for such messages every few seconds (kombu's default is every 100 s).
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": settings.redis_timeout,
            "socket_timeout": max(5.0, settings.redis_timeout),
        },
        "result_backend_transport_options": {
            "global_keyprefix": settings.redis_prefix,
            "retry_policy": {"timeout": 5.0},
        },
        "redis_socket_connect_timeout": settings.redis_timeout,
        "redis_socket_timeout": max(5.0, settings.redis_timeout),
        "result_expires": settings.job_ttl,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # At-least-once delivery (see the module docstring); one job at a time per process.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # The gateway answers 503 quickly when Redis is down instead of retrying for long.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # `execute` stops a job at job_timeout; this hard limit replaces a process stuck
        # in native code, before the message would be delivered to another worker.
        "task_time_limit": settings.job_timeout
        + max(1.0, min(30.0, (visibility - settings.job_timeout) / 2)),
        "worker_send_task_events": False,
    }
