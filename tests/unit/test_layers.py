"""A job's path runs in one direction: the entry points call the queue, never the other way round.

    queueproject.urls, queueproject.asgi                      (the routes)
    dashboard, jobs.api, jobs.admin, commands                 (entry points)
        -> jobs.worker, jobs.submission                        (the runworker loop; a user's limits)
        -> jobs.queue                                          (every state change)
        -> jobs.models, jobs.spec, jobs.registry, settings...  (the core)

A module may import from its own layer or those below it. The queue must
not know the worker that drives it, nor the worker the API or dashboard
that show what it did: each talks to the next one down only, through its
package's functions. Checked on the source, so no module is imported.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

# Layer of a module by the longest matching prefix; higher numbers may import lower ones.
LAYERS = {
    "jobs": 0,
    "jobs.queue": 1,
    "jobs.worker": 2,
    # The limits of a user's submission, checked before the queue is asked to enqueue.
    "jobs.submission": 2,
    # Django's Tasks API: the backend enqueues through the queue; what the
    # worker and the retry rule need of a task (resolving, running, its
    # result) is core.
    "jobs.tasks": 2,
    "jobs.tasks.base": 0,
    "jobs.tasks.compat": 0,
    "jobs.tasks.priorities": 0,
    "jobs.tasks.results": 0,
    "jobs.tasks.runtime": 0,
    "jobs.api": 3,
    "jobs.admin": 3,
    "jobs.management": 3,
    "jobs.backends": 3,
    "dashboard": 3,
    "accounts": 3,
    # The project's plumbing (settings, cache, embedded servers) is core; its URLs and ASGI app top it all.
    "queueproject": 0,
    "queueproject.urls": 4,
    "queueproject.asgi": 4,
}
def layer(module: str) -> int | None:
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(module: str, source: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """Return (line, module) for every import in `source`, the code of `module`, absolute or relative, at any depth."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from jobs import worker` imports the submodule jobs.worker.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def upward_imports(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Return a line per import in `source` from a layer above `module`'s own."""
    own = layer(module)
    return [f"line {line}: {target}" for line, target in imports(module, source, is_package=is_package)
            if (theirs := layer(target)) is not None and own is not None and theirs > own]


SOURCES = sorted(
    path for package in ("jobs", "dashboard", "accounts", "queueproject")
    for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    module = module_name(path)
    assert layer(module) is not None
    upward = upward_imports(module, path.read_text(), is_package=path.name == "__init__.py")
    assert not upward, f"{path.relative_to(ROOT)} imports from a layer above its own: {upward}"


def test_the_check_finds_upward_imports_and_passes_downward_ones():
    assert upward_imports("jobs.queue.claim", "from jobs import worker\n") == ["line 1: jobs.worker"]
    assert upward_imports("jobs.queue.claim", "from ..worker.runner import Worker\n") == [
        "line 1: jobs.worker.runner", "line 1: jobs.worker.runner.Worker"]
    assert upward_imports("jobs.worker.producer", "def f():\n    from dashboard import views\n") == [
        "line 2: dashboard", "line 2: dashboard.views"]
    assert upward_imports("jobs.spec", "import jobs.api.views\n") == ["line 1: jobs.api.views"]
    # Down or level: allowed.
    assert upward_imports("jobs.worker.runner", "from jobs import conf, queue\nfrom . import slots\n") == []
    assert upward_imports("dashboard.views", "from jobs.queue import enqueue\nfrom jobs.worker import Worker\n") == []
