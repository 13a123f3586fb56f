"""Worker-side runtime: what a Celery worker does besides running tasks.

`node.WorkerNode` makes each Celery worker a member of the fleet like any agent: it
registers itself (kind "worker", its host and NVML GPU inventory), heartbeats with host
readings, and obeys drain / isolate / release / restart through Celery's own remote
control. Connected to the worker's signals in `pulseguard/celery.py`.
"""
