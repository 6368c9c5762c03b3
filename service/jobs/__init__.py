"""Queued jobs (/transfer, later /frontalize and /classify/video), one module per seam:

- `records`: a job's record, its broker message and the problem it fails with;
- `stores`: where jobs are kept (Redis, or memory), each part for a TTL;
- `kinds`: what a kind of job is (`JobKind`) and runs with (`JobRuntime`);
  `transfer` is the expression transfer kind, `registry` lists every kind;
- `execution`: `execute`, the one place that runs a job;
- `queues`: `JobQueue` as the routes see it, `LocalJobs` (in process) and `CeleryJobs`;
- `celery_config`: the Celery task, queue and configuration shared with service/worker.py.
"""
