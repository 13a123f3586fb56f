"""Structured logs: one line per event, carrying the request id of the work it belongs to.

The request id is bound in `apps.core.middleware.RequestIdMiddleware` (taken from an
incoming `X-Request-ID` or made up), travels in the headers of every Celery task sent
while it is bound, and is bound again in the worker before the task runs.
"""



import structlog

REQUEST_ID_HEADER = "pulseguard_request_id"


def build_logging_config(*, fmt: str, level: str) -> dict:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                # Lines from Django, Celery and uvicorn get the same fields and request id.
                "foreign_pre_chain": shared,
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Replace Django's own console handler so each line is printed once, structured.
            "django": {"handlers": ["console"], "level": level, "propagate": False},
            "django.server": {"level": "WARNING"},
            "uvicorn.access": {"level": "WARNING"},
            "celery.app.trace": {"level": "INFO"},
        },
    }


def connect_celery_signals() -> None:
    from celery import signals

    @signals.before_task_publish.connect(weak=False)
    def _attach_request_id(headers=None, **_):
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id and headers is not None:
            headers[REQUEST_ID_HEADER] = request_id

    @signals.task_prerun.connect(weak=False)
    def _bind_request_id(task=None, task_id=None, **_):
        structlog.contextvars.clear_contextvars()
        request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
        structlog.contextvars.bind_contextvars(request_id=request_id or task_id, task=task.name if task else None)

    @signals.task_postrun.connect(weak=False)
    def _unbind(**_):
        structlog.contextvars.clear_contextvars()

    @signals.setup_logging.connect(weak=False)
    def _keep_django_logging(**_):
        # Celery would otherwise replace our handlers with its own plain formatter.
        from django.conf import settings
        import logging.config

        logging.config.dictConfig(settings.LOGGING)
