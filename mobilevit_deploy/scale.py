"""Where a report's tasks run: in this process (the default), on a local Ray, or on a Ray cluster.

One job: run plain functions of picklable arguments and hand back each one's outcome as it completes.
What the tasks are (conversion cells, evaluation shards) is the report's business
(`quantization/schedule.py`); this module only runs them. An argument may be the handle of another task or
of a `put` value: the task then waits for it (Ray resolves it on the worker; in-process it is computed
first). Ray is imported by `RayExecutor` alone, so `mvdeploy --help` and an in-process report never load it.

Failures are outcomes, not exceptions: a task that raises comes back as `Failed(error line)`. A library
refusal (`MvDeployError`: bad input, an unsupported op) is deterministic and is not retried; anything
else (an unexpected exception, a killed worker) is retried once by Ray before it counts as failed.
Each executor keeps a `Tally` of the tasks it ran, the ones that failed and the ones Ray ran again.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import InvalidValueError, MvDeployError, first_line
from .extras import RAY
from .versions import version_of

RETRIES = 1                          # Ray runs a failed or killed task once more before it counts as failed
OBJECT_STORE_BYTES = 384 * 2**20     # a local Ray's shared-memory store: artifacts and shards, spilled past this


@dataclass(frozen=True)
class Failed:
    """A task that did not produce its value: one readable line saying why."""

    error: str


@dataclass
class Tally:
    """The tasks an executor handed back (values `put` are not tasks), those whose outcome is `Failed`, and
    those Ray ran again (their first attempt raised or its worker died) that then returned or raised; a
    task whose worker died on every attempt counts as failed only (Ray does not say how often it ran)."""

    tasks: int = 0
    failed: int = 0
    retried: int = 0
    images: int = 0          # listed images the evaluation tasks that succeeded went through (unreadable ones too),
                             # once per file and once for the reference
    seconds: float = 0.0     # wall time from the first task handed out to the last one back

    def count(self, outcome: Any) -> None:
        self.tasks += 1
        self.failed += isinstance(outcome, Failed)

    def to_dict(self) -> dict:
        rate = self.images / self.seconds if self.seconds else None
        return {"tasks": self.tasks, "failed": self.failed, "retried": self.retried, "image_evaluations": self.images,
                "seconds": round(self.seconds, 3), "images_per_second": None if rate is None else round(rate, 1)}


def error_line(error: BaseException) -> str:
    """Our own errors speak for themselves; anything else is named by its type."""
    if isinstance(error, MvDeployError):
        return first_line(error)
    return f"{type(error).__name__}: {first_line(error)}"


def _call(fn: Callable, threads: int | None, *args) -> Any:
    """Runs inside the worker: set the thread budget, run, and turn a library refusal into a value
    (so Ray does not retry what would fail again); other exceptions propagate to be retried."""
    args = tuple(a.value if isinstance(a, _Ran) else a for a in args)     # another Ray task's outcome
    failed = next((a for a in args if isinstance(a, Failed)), None)
    if failed is not None:
        return failed                        # an input that failed: so does this task, for the same reason
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    try:
        return fn(*args)
    except MvDeployError as e:
        return Failed(error_line(e))


@dataclass(frozen=True)
class _Ran:
    """A Ray task's outcome with the attempt that produced it (0: the first run)."""

    value: Any
    attempt: int


def _attempt_number() -> int:
    """Which run of the current Ray task this is. Ray has no public call for it (2.60): the core worker's
    own counter, else 0 (a retry then goes uncounted, never miscounted)."""
    try:
        from ray._private.worker import global_worker
        return int(global_worker.core_worker.get_current_task_attempt_number())
    except Exception:                                   # noqa: BLE001 - a count, never a failure
        return 0


def _ray_call(fn: Callable, threads: int | None, *args) -> _Ran:
    """`_call` as a Ray task: its outcome carries the attempt number; an exception carries it too, with an
    id (the tasks that depend on a failed one get the same exception: one retry, counted once)."""
    attempt = _attempt_number()
    try:
        return _Ran(_call(fn, threads, *args), attempt)
    except Exception as e:
        e.mvdeploy_attempt = (attempt, uuid.uuid4().hex)
        raise


# -- in this process ----------------------------------------------------------------------------------

@dataclass(eq=False)
class _Lazy:
    """An in-process task: computed the first time it (or a task depending on it) is asked for."""

    fn: Callable | None
    args: tuple
    value: Any = None
    done: bool = False
    task: bool = True                  # False for a value `put` here


class InProcessExecutor:
    """Runs every task here, one after the other, in submission order: the report as it always ran."""

    kind = "in-process"
    threads: int | None = None        # leave torch and the engines at their defaults

    def __init__(self) -> None:
        self.tally = Tally()

    def describe(self) -> dict:
        return {"kind": self.kind, "description": "in-process", "workers": 1, "address": None, "ray": None}

    def put(self, value: Any) -> _Lazy:
        return _Lazy(None, (), value, True, task=False)

    def submit(self, fn: Callable, *args) -> _Lazy:
        return _Lazy(fn, args)

    def _resolve(self, task: _Lazy) -> Any:
        if not task.done:
            args = [self._resolve(a) if isinstance(a, _Lazy) else a for a in task.args]
            try:
                task.value = _call(task.fn, self.threads, *args)
            except Exception as e:                   # a bug in one cell must not take the report down
                task.value = Failed(error_line(e))
            task.done, task.fn, task.args = True, None, ()
        return task.value

    def completed(self, handles: list) -> Iterator[tuple[Any, Any]]:
        for handle in handles:
            outcome = self._resolve(handle)
            if handle.task:
                self.tally.count(outcome)
            yield handle, outcome

    def close(self) -> None:
        pass

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- Ray --------------------------------------------------------------------------------------------------

@dataclass
class RayExecutor:
    """Tasks as Ray tasks: on a local Ray started for the run (`workers`) or an existing cluster (`address`).

    Each task asks for one CPU; on a local Ray of N workers the tasks' torch and engine threads are split
    so that N tasks together use the machine's cores once (1 thread each when N >= the cores)."""

    workers: int | None = None
    address: str | None = None
    object_store_bytes: int = OBJECT_STORE_BYTES
    threads: int | None = field(init=False, default=None)
    tally: Tally = field(init=False, default_factory=Tally)
    _tasks: set = field(init=False, default_factory=set, repr=False)        # handles of submitted tasks
    _retried_errors: set = field(init=False, default_factory=set, repr=False)
    _remote: Any = field(init=False, default=None, repr=False)
    _started: bool = field(init=False, default=False, repr=False)

    def __post_init__(self) -> None:
        if (self.workers is None) == (self.address is None):
            raise InvalidValueError("--workers N starts a local Ray for this run and --ray-address ADDRESS "
                                    "uses a running cluster: pass exactly one")
        if self.workers is not None and self.workers < 1:
            raise InvalidValueError(f"--workers must be at least 1; got {self.workers}")
        reason = RAY.unavailable_reason()
        if reason:                                    # before any work: the run would stop at its first task
            raise RayUnavailableError(reason)
        if self.workers is not None:
            self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        else:
            self.threads = 1                          # one CPU asked per task, on machines we do not know

    @property
    def kind(self) -> str:
        return "local-ray" if self.address is None else "ray-cluster"

    def describe(self) -> dict:
        text = (f"local Ray, {self.workers} workers" if self.address is None else f"Ray cluster at {self.address}")
        return {"kind": self.kind, "description": text, "workers": self.workers, "address": self.address,
                "ray": version_of("ray")}

    def __enter__(self) -> "RayExecutor":
        import logging

        import ray

        common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                      configure_logging=True)
        try:
            if self.address is None:
                ray.init(address="local", num_cpus=self.workers, object_store_memory=self.object_store_bytes,
                         **common)
            else:
                ray.init(address=self.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise RayUnavailableError(f"could not start or reach {where}: {first_line(e)}") from None
        self._started = True
        self._remote = ray.remote(_ray_call).options(num_cpus=1, max_retries=RETRIES, retry_exceptions=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._started:
            import ray
            ray.shutdown()               # a local Ray stops with it; a cluster keeps running
            self._started = False

    def put(self, value: Any):
        import ray
        return ray.put(value)

    def submit(self, fn: Callable, *args):
        handle = self._remote.remote(fn, self.threads, *args)
        self._tasks.add(handle)
        return handle

    def completed(self, handles: list) -> Iterator[tuple[Any, Any]]:
        """As they complete. Holds each handle until it is yielded, no longer: a result the caller lets go of
        leaves Ray's store."""
        import ray

        pending, handles = list(handles), None
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            outcome = self._outcome(ready[0])
            if ready[0] in self._tasks:
                self._tasks.discard(ready[0])
                self.tally.count(outcome)
            yield ready.pop(), outcome

    def _outcome(self, handle) -> Any:
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            ran = ray.get(handle)
        except RayTaskError as e:        # the task's own exception (after its retry), or an input's
            cause = getattr(e, "cause", None)
            attempt, error_id = getattr(cause, "mvdeploy_attempt", (0, None))
            if attempt and error_id not in self._retried_errors:
                self._retried_errors.add(error_id)
                self.tally.retried += 1
            return Failed(error_line(cause) if isinstance(cause, BaseException) else first_line(e))
        except RayError as e:            # the worker died (twice), the object was lost, ...: failed, retries unknown
            return Failed(f"{type(e).__name__}: {first_line(e)}")
        if not isinstance(ran, _Ran):   # a value `put` in the store
            return ran
        self.tally.retried += ran.attempt > 0
        return ran.value


class RayUnavailableError(MvDeployError):
    """Ray is not installed, could not be started here, or the cluster could not be reached."""


def executor_for(workers: int | None = None, address: str | None = None):
    """In-process unless the user asked for Ray (`workers` for a local Ray, `address` for a cluster)."""
    if workers is None and address is None:
        return InProcessExecutor()
    return RayExecutor(workers=workers, address=address)
