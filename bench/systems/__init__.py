"""The systems under test, in the order the table shows them."""

from bench.systems.celery_sys import Celery
from bench.systems.django_tasks_db_sys import DjangoTasksDb
from bench.systems.pgqueuer_sys import Pgqueuer
from bench.systems.procrastinate_sys import Procrastinate
from bench.systems.skipjack import Skipjack
from bench.systems.skipjack_tasks import SkipjackTasks

SYSTEMS = {cls.name: cls for cls in (Skipjack, Pgqueuer, Procrastinate, Celery, SkipjackTasks, DjangoTasksDb)}
