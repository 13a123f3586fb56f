"""Hooks the node into the worker's life: register when ready, goodbye on shutdown."""

from celery import signals

_node = None


def gpu_queues(hostname: str) -> list[str]:
    """The per-device queues of this machine's GPUs (none without NVML or GPUs)."""
    from pulseguard_agent.gpu import gpu_inventory

    return [f"gpu.{hostname}.{gpu['index']}" for gpu in gpu_inventory()]


def connect() -> None:
    @signals.worker_ready.connect(weak=False)
    def _start_node(sender=None, **_):
        global _node
        from celery_worker.node import WorkerNode

        queues = sorted(q.name for q in sender.task_consumer.queues) or [sender.app.conf.task_default_queue]
        # Each local GPU has its own queue (gpu.<node>.<index>): the dispatcher places GPU
        # tasks on a device and this worker runs them pinned to it.
        for queue in gpu_queues(sender.hostname):
            if queue not in queues:
                sender.add_task_queue(queue)
                queues.append(queue)
        _node = WorkerNode(app=sender.app, hostname=sender.hostname, queues=queues)
        _node.start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop_node(**_):
        if _node is not None:
            _node.stop()
