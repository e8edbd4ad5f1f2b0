"""Work isolation for parse: a pebble process pool with a time limit per document and a
memory cap per child.

MuPDF can hang, crash or exhaust memory on hostile PDFs. Each document is parsed in a
child process; a child that overruns the time limit is killed, one that dies (segfault,
OOM killer) is reported, and pebble starts a replacement either way. If pebble's pool
itself breaks, it is rebuilt. ``parse_many`` never raises for a bad document: it returns
one answer per request, in order, and child failures come back as retryable
``DocstreamsError``s (``parse_timeout``, ``parse_memory``, ``parse_crashed``).
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import signal
import threading
import time
from concurrent.futures import CancelledError, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pebble import ProcessExpired, ProcessPool

from streams.errors import DocstreamsError

if TYPE_CHECKING:
    from typing import TypeAlias

    from streams.parse import ParseFailure

    ParseAnswer: TypeAlias = dict[str, Any] | ParseFailure | DocstreamsError

FAULTS = frozenset({"hang", "segv", "oom"})
MIN_MEMORY_MB = 384  # a child holds ~270 MB of address space before it opens a document
_KILL_GRACE_S = 3.0  # pebble sends SIGTERM, waits this long, then SIGKILL
_BATCH_SLACK_S = 30.0  # child start-up and scheduling, on top of the time limits


@dataclass(frozen=True)
class ParseRequest:
    """One document to parse. ``fault`` is a test hook ("hang", "segv", "oom") honoured
    only by a pool built with ``allow_faults=True``."""

    data: bytes = field(repr=False)
    expected_sha256: str | None
    password: str | None = field(repr=False)
    fault: str | None = None


@dataclass(frozen=True)
class _OutOfMemory:
    """What a child sends back instead of raising MemoryError (the traceback would hold
    on to the memory while it is pickled)."""

    detail: str


class ParsePool:
    """A fixed number of parse children; use as a context manager or call ``close()``."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int, *,
                 allow_faults: bool = False, max_tasks_per_child: int = 200) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"memory_mb must be at least {MIN_MEMORY_MB} (a parse child "
                             f"needs ~270 MB before it opens a document), got {memory_mb}")
        self.workers, self.timeout_s, self.memory_mb = workers, timeout_s, memory_mb
        self.allow_faults = allow_faults
        # Recycling children now and then bounds whatever MuPDF leaks on odd files.
        self._max_tasks = max_tasks_per_child
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = self._new_pool()

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the children (killing any that hang); idempotent."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join()

    def parse_many(self, requests: list[ParseRequest]) -> list[ParseAnswer]:
        """Parse a batch in parallel; one answer per request, in request order."""
        self._check_faults(requests)
        if not requests:
            return []
        futures = [self._submit(request) for request in requests]
        _, late = wait(futures, timeout=self._batch_deadline(len(requests)))
        answers = [self._answer(future) for future in futures]
        # A future that never completed, or a broken pebble pool, means the pool cannot
        # be trusted with the next batch: replace it (this kills any child still running).
        if late or any(_broke_pool(future) for future in futures):
            self._rebuild()
        return answers

    # --- internals ---------------------------------------------------------------------

    def _new_pool(self) -> ProcessPool:
        return ProcessPool(max_workers=self.workers, max_tasks=self._max_tasks,
                           initializer=_init_child, initargs=(self.memory_mb,),
                           context=_mp_context())

    def _rebuild(self) -> None:
        with self._lock:
            old, self._pool = self._pool, self._new_pool()
        if old is not None:
            old.stop()
            old.join()

    def _check_faults(self, requests: list[ParseRequest]) -> None:
        for request in requests:
            if request.fault is None:
                continue
            if not self.allow_faults:
                raise ValueError("fault injection is disabled in this parse pool")
            if request.fault not in FAULTS:
                raise ValueError(f"unknown fault {request.fault!r}; expected one of "
                                 f"{sorted(FAULTS)}")

    def _submit(self, request: ParseRequest) -> Future:
        with self._lock:
            if self._pool is None:
                raise RuntimeError("the parse pool is closed")
            pool = self._pool
        try:
            return pool.schedule(_parse_in_child, args=(request,), timeout=self.timeout_s)
        except RuntimeError:  # pebble refuses work once its pool broke: start a new one
            self._rebuild()
            with self._lock:
                assert self._pool is not None
                return self._pool.schedule(_parse_in_child, args=(request,),
                                           timeout=self.timeout_s)

    def _batch_deadline(self, count: int) -> float:
        """The longest a healthy pool can take: every wave of documents hitting the time
        limit and the kill grace. Past it, a task is lost, not slow."""
        waves = math.ceil(count / self.workers)
        return waves * (self.timeout_s + _KILL_GRACE_S + 1.0) + _BATCH_SLACK_S

    def _answer(self, future: Future) -> ParseAnswer:
        if not future.done():
            future.cancel()
            return _crashed("the parse pool lost track of this document; pool rebuilt")
        try:
            value = future.result()
        except TimeoutError:
            return DocstreamsError(
                f"parse took longer than the {self.timeout_s:g} s time limit; the child "
                "process was killed and replaced", reason="parse_timeout", retryable=True)
        except ProcessExpired as exc:
            return _crashed(_describe_exit(exc.exitcode))
        except BrokenProcessPool as exc:
            return _crashed(f"the parse pool broke ({exc}); it was rebuilt")
        except CancelledError:
            return _crashed("the parse was cancelled by the pool")
        except MemoryError as exc:
            return self._out_of_memory(str(exc))
        except Exception as exc:  # a bug in parse: the child survived, the message says why
            return _crashed(f"parse raised {type(exc).__name__}: {exc}")
        if isinstance(value, _OutOfMemory):
            return self._out_of_memory(value.detail)
        return value

    def _out_of_memory(self, detail: str) -> DocstreamsError:
        return DocstreamsError(f"parse exceeded the {self.memory_mb} MB memory cap ({detail})",
                               reason="parse_memory", retryable=True)


def _crashed(message: str) -> DocstreamsError:
    return DocstreamsError(message, reason="parse_crashed", retryable=True)


def _broke_pool(future: Future) -> bool:
    """pebble fails every task with BrokenProcessPool when its pool breaks (e.g. a child
    died before its task was acknowledged); such a pool takes no more work."""
    return (future.done() and not future.cancelled()
            and isinstance(future.exception(), BrokenProcessPool))


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = (" (killed from outside the pool: often the kernel's out-of-memory killer)"
                if -exitcode == signal.SIGKILL else "")
        return (f"the parse child process died from {name} (exit code {exitcode}){hint}; "
                "it was replaced")
    return f"the parse child process exited with code {exitcode}; it was replaced"


def _mp_context() -> Any:
    """forkserver: children fork from a clean server that has already imported pymupdf,
    so a replacement starts in milliseconds and never inherits the parent's Kafka
    threads (fork from a threaded parent is unsafe). spawn where it is unavailable."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["streams.parse"])
        return context
    return multiprocessing.get_context("spawn")


# --- in the child ----------------------------------------------------------------------

def _init_child(memory_mb: int) -> None:
    """Pool initializer: cap the address space and switch off core dumps (a segfaulting
    MuPDF would otherwise write hundreds of MB per crash)."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _parse_in_child(request: ParseRequest) -> dict[str, Any] | ParseFailure | _OutOfMemory:
    from streams.parse import parse_pdf  # already imported by the forkserver

    try:
        if request.fault is not None:
            _inject_fault(request.fault)
        return parse_pdf(request.data, expected_sha256=request.expected_sha256,
                         password=request.password)
    except MemoryError as exc:
        return _OutOfMemory(str(exc)[:200] or "MemoryError")


def _inject_fault(fault: str) -> None:
    """Misbehave the way MuPDF can: hang deaf to SIGTERM (stuck in C code), segfault,
    or allocate until the memory cap bites. Never runs unless allow_faults=True."""
    if fault == "hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        while True:
            time.sleep(60)
    if fault == "segv":
        signal.raise_signal(signal.SIGSEGV)
    if fault == "oom":
        cap, _ = resource.getrlimit(resource.RLIMIT_AS)
        if cap == resource.RLIM_INFINITY:
            raise RuntimeError("fault 'oom' needs the memory cap, and none is set")
        hoard: list[bytes] = []
        chunk = 64 * 1024 * 1024
        while len(hoard) * chunk <= cap:  # each chunk is written, so really allocated
            hoard.append(b"\x01" * chunk)
        raise RuntimeError("fault 'oom' allocated past the memory cap without MemoryError")
