"""The Celery app of the project, as docs/guides/task-queues.md sets one up.

Its broker is kombu's filesystem transport in ``DPR_CELERY_BROKER``, so that a real worker
(prefork, Celery's Django fixup active) runs here without a broker service.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun, worker_init

from django_postgresql_reconnect import check_pgsql_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.project.settings")


def broker_settings(folder: str) -> dict[str, object]:
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": folder,
            "polling_interval": 0.05,
        },
        "task_ignore_result": True,
        "worker_hijack_root_logger": False,
    }


app = Celery("project")
app.conf.update(broker_settings(os.environ.get("DPR_CELERY_BROKER", "/nonexistent")))

# The one line the guide asks for: check this thread's connections before every task.
task_prerun.connect(lambda **kwargs: check_pgsql_connections(), weak=False)


@worker_init.connect
def _warm_up(**kwargs: object) -> None:
    """An app that touches the database as the worker starts: the parent process then holds a
    connection when it forks the pool's processes."""
    path = os.environ.get("DPR_SITE_WARM_UP")
    if path:
        from tests.integrations.project.views import _backend_pid

        with open(path, "w") as file:
            file.write(str(_backend_pid()))


@app.task(name="project.record")
def record(label: str) -> None:
    """Write a row naming the task, the PostgreSQL backend and the process that ran it."""
    from tests.app.models import Item
    from tests.integrations.project.views import _backend_pid

    Item.objects.create(name=f"{label} {_backend_pid()} {os.getpid()}")
