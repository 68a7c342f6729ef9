"""Views of the test site.

What the workers run is defined here at module level, and this module is
imported by the URLconf, which multicore.contrib.django imports before it
forks: the workers have these functions (and ITEMS) without importing or
receiving anything.
"""

import os

from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.template.loader import get_template

from multicore import Task, worker_id, worker_state
from multicore.utils import ranges

# Loaded once, before the fork: the workers see it, nothing is sent.
ITEMS = [{"n": i, "name": f"item <{i}> & co", "square": i * i} for i in range(1000)]

# For the tests: this module must be imported before the pool starts.
LOADED_IN_PID = os.getpid()
POOL_RUNNING_AT_IMPORT = Task() is not None


def render_items(start, end):
    """The sequential rendering of ITEMS[start:end], one autoescaped <li>
    per item: chunks rendered apart and concatenated make the same page."""
    template = get_template("mcsite/item.html")
    return "".join(template.render({"item": item}) for item in ITEMS[start:end])


def render_items_in_worker(start, end):
    return [worker_id(), render_items(start, end)]


def probe_worker():
    """What a worker sees of Django: its database connection (its own,
    opened on first use), and what MULTICORE["worker_init"] left."""
    inherited = connection.connection is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT 6 * 7")
        answer = cursor.fetchone()[0]
    return {"worker": worker_id(), "pid": os.getpid(),
            "inherited_connection": inherited, "answer": answer,
            "init": worker_state().get("init"),
            "views_loaded_in_pid": LOADED_IN_PID}


# The functions the views send to the workers (checked by the tests).
TASK_FUNCTIONS = [render_items_in_worker, probe_worker]


def items(request):
    n = min(int(request.GET.get("n", len(ITEMS))), len(ITEMS))
    task = Task()
    if task is None:                    # no pool in this process
        body, mode, used = render_items(0, n), "sequential", ""
    else:
        for start, end in ranges(range(n)):
            task.run(render_items_in_worker, start, end)
        parts = task.get(timeout=30)
        body = "".join(html for _, html in parts)
        mode, used = "parallel", ",".join(sorted({str(w) for w, _ in parts}))
    response = HttpResponse("<ul>\n" + body + "</ul>\n")
    response["X-Multicore"] = mode
    response["X-Multicore-Workers"] = used
    return response


def workers(request):
    task = Task()
    if task is None:
        return JsonResponse({"mode": "sequential", "probes": []})
    for _ in range(int(request.GET.get("n", "8"))):
        task.run(probe_worker)
    return JsonResponse({"mode": "parallel", "probes": task.get(timeout=30)})
