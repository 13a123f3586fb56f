"""Hooks the node into the worker's life: register when ready, goodbye on shutdown."""

from celery import signals

_node = None


def connect() -> None:
    @signals.worker_ready.connect(weak=False)
    def _start_node(sender=None, **_):
        global _node
        from celery_worker.node import WorkerNode

        queues = sorted(q.name for q in sender.task_consumer.queues) or [sender.app.conf.task_default_queue]
        _node = WorkerNode(app=sender.app, hostname=sender.hostname, queues=queues)
        _node.start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop_node(**_):
        if _node is not None:
            _node.stop()
