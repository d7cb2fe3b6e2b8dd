"""Running sync tools in worker processes, so that a call can be cut off.

A thread cannot be stopped, and a sync tool that computes (``9**999**999``) holds the GIL: the
whole service stops answering, misses its keepalive and loses the broker. An isolated call runs in
a worker process: the event loop only waits on the worker's socket, the call's timeout kills the
worker, and an address-space limit set before each call turns a memory hog into a ``MemoryError``
in that worker alone.

Workers are forked (everything already imported, closures included) and stay warm between calls:
forking costs milliseconds per call, a warm worker a socket round trip. A :class:`WorkerPool`
forks them as calls need them, at most ``size``; a worker whose call overran its timeout, that died,
or that grew by more than :data:`RECYCLE_GROWTH_BYTES` is killed and a fresh one forked for the next
call. A worker runs only what was registered before it was forked; a call of something newer is
given a newer worker. As with threads, what a call leaves in module state may be seen by a later
call on the same worker, and what the service changes after a worker was forked is not.

Workers need ``os.fork`` (Linux, macOS); the memory limit and the recycling need Linux's
``/proc``. Elsewhere this module still imports, and an isolated call fails with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from argentic.errors import ArgumentError, ToolExecutionError
from argentic.lifecycle import Running
from argentic.messaging.limits import check_value

log = logging.getLogger(__name__)

#: A worker that grew by this much since it was forked is replaced (a leak stays bounded, and each
#: call keeps close to its whole memory allowance).
RECYCLE_GROWTH_BYTES = 64 * 1024 * 1024
#: Idle workers beyond the warmest one are stopped after this long unused.
KEEP_IDLE_S = 60.0
#: Seconds to wait for a killed worker to be reaped.
REAP_TIMEOUT_S = 5.0

_HEADER = struct.Struct("!Q")

#: A registered target: given the call's JSON arguments, returns its result (in the worker).
Target = Callable[[dict[str, Any]], Any]


def _address_space() -> int | None:
    """Bytes of virtual memory this process has mapped now (None where /proc does not say)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


# --- the worker's side (after the fork; it never touches the event loop) ---------------------


def _close_inherited_sockets(keep: int) -> None:
    """Close the service's sockets in the worker: a broker or server must see a connection the
    service closes as closed, and another worker's socket must end when the service ends. Standard
    input and output stay, sockets or not (a journal's)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            names = os.listdir(listing)
            break
    else:
        return
    for name in names:
        fd = int(name)
        if fd <= 2 or fd == keep:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)


def _receive_blocking(sock: socket.socket) -> Any:
    """The next request, or None once the service closed its end."""
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(sock, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    read = 0
    while read < size:
        count = sock.recv_into(view[read:])
        if count == 0:
            return None
        read += count
    return bytes(buffer)


def _limit_memory(max_memory_mb: int | None, ceiling: int) -> None:
    """Let the next call map at most ``max_memory_mb`` more than the worker has now, and never more
    than ``ceiling`` (the limit the worker was forked with)."""
    import resource

    limit = ceiling
    mapped = _address_space()
    if max_memory_mb is not None and mapped is not None:
        limit = mapped + max_memory_mb * 1024 * 1024
        if ceiling != resource.RLIM_INFINITY:
            limit = min(limit, ceiling)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _serve(sock: socket.socket, targets: list[Target]) -> None:
    """Answer requests ``(key, arguments, max_memory_mb)`` with ``(status, value, grown)``."""
    import resource  # POSIX only, like fork

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the service's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the service's graceful handler
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    _close_inherited_sockets(sock.fileno())
    baseline = _address_space()
    ceiling = resource.getrlimit(resource.RLIMIT_AS)[0]
    while True:
        request = _receive_blocking(sock)
        if request is None:
            return
        key, arguments, max_memory_mb = request
        _limit_memory(max_memory_mb, ceiling)
        try:
            result = to_jsonable_python(targets[key](arguments))
            check_value(result, "the result")
            reply: tuple[str, Any] = ("ok", result)
        except BaseException as exc:  # everything goes back to the service as the call's error
            reply = ("error", f"{type(exc).__name__}: {exc}"[:2000])
        _limit_memory(None, ceiling)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        mapped = _address_space()
        grown = mapped is not None and baseline is not None and mapped - baseline > RECYCLE_GROWTH_BYTES
        sock.sendall(_frame((*reply, grown)))


# --- the service's side ----------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    pid: int
    sock: socket.socket
    known: int  # targets registered before the fork: keys below this
    idle_since: float = 0.0  # 0: never used
    busy: bool = False  # a call waits on its socket: only that call may close it
    reaped: asyncio.Future[int] | None = field(default=None, repr=False)


class WorkerPool(Running):
    """Warm worker processes for sync calls that must be stoppable: ``async with WorkerPool(8) as pool``.

    :meth:`call` runs a registered target with a call's arguments in a worker and returns its
    JSON-ready result; cancelling the call (its timeout) kills the worker. At most ``size`` workers
    exist, so at most ``size`` calls run at once; more wait for a worker.
    """

    def __init__(self, size: int, *, keep_idle_s: float = KEEP_IDLE_S) -> None:
        if size < 1:
            raise ArgumentError(f"a worker pool needs at least one worker, got {size}")
        self.size = size
        self.keep_idle_s = keep_idle_s
        self._keys: dict[Hashable, int] = {}
        self._targets: list[Target] = []
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []  # the most recently used last
        self._slots = asyncio.Semaphore(size)
        self._reaping: set[asyncio.Task[None]] = set()
        self._trim: asyncio.TimerHandle | None = None
        self._started = False

    @property
    def running(self) -> bool:
        return self._started

    @property
    def workers(self) -> int:
        """Worker processes alive now."""
        return len(self._workers)

    def register(self, target: Target) -> int:
        """Make ``target`` callable in workers forked from now on; returns its key."""
        key = self._keys.get(target)
        if key is None:
            key = self._keys[target] = len(self._targets)
            self._targets.append(target)
        return key

    async def start(self) -> None:
        """Fork one warm worker when something is registered."""
        if self._started:
            return
        self._started = True
        if self._targets and not self._workers and hasattr(os, "fork"):
            self._release(self._fork())

    async def stop(self) -> None:
        """Stop the idle workers; those running a call stop once it ends (or its timeout kills it)."""
        if not self._started:
            return
        self._started = False
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        for worker in list(self._idle):
            self._retire(worker)
        if self._reaping:
            await asyncio.wait(set(self._reaping), timeout=REAP_TIMEOUT_S)

    async def call(
        self, target: Target, arguments: dict[str, Any], *, max_memory_mb: int | None = None
    ) -> Any:
        """``target(arguments)`` in a worker, JSON-ready, the worker's address space growing by at
        most ``max_memory_mb``. A failure in the worker raises :class:`ToolExecutionError` naming it."""
        if not self._started:
            raise ToolExecutionError("the worker pool is not running")
        key = self.register(target)
        # JSON-ready arguments always pickle (a locally defined model would not); the worker's
        # validation rebuilds the objects the target takes.
        request = _frame((key, to_jsonable_python(arguments), max_memory_mb))
        loop = asyncio.get_running_loop()
        async with self._slots:
            worker = await self._send(key, request)
            try:
                status, value, grown = pickle.loads(await _read_frame(loop, worker.sock))
            except EOFError:
                worker.busy = False
                code = await self._retire(worker)
                raise ToolExecutionError(
                    f"the tool's process ended without a result (exit code {code})"
                ) from None
            except BaseException:  # cancelled (the call's timeout): stop the computation
                worker.busy = False
                self._retire(worker)
                raise
            worker.busy = False
            if grown:
                self._retire(worker)
            else:
                self._release(worker)
        if status != "ok":
            raise ToolExecutionError(value)
        return value

    async def _send(self, key: int, request: bytes) -> _Worker:
        """A worker that took ``request``. An idle worker found dead is replaced (the call never ran)."""
        loop = asyncio.get_running_loop()
        while True:
            worker = self._take(key)
            fresh = worker.idle_since == 0.0
            worker.busy = True
            try:
                await loop.sock_sendall(worker.sock, request)
            except BaseException as exc:
                worker.busy = False
                self._retire(worker)
                if not isinstance(exc, OSError):
                    raise
                if fresh:
                    raise ToolExecutionError(f"the tool's process could not take the call: {exc}") from None
                continue
            return worker

    def _take(self, key: int) -> _Worker:
        """An idle worker that knows ``key`` (the warmest), else a new one. Called holding a slot, so
        when ``size`` workers exist one of them is idle: an older one is replaced."""
        for index in range(len(self._idle) - 1, -1, -1):
            if self._idle[index].known > key:
                return self._idle.pop(index)
        if len(self._workers) >= self.size:
            self._retire(self._idle[0])
        return self._fork()

    def _fork(self) -> _Worker:
        if not hasattr(os, "fork"):
            raise ToolExecutionError("isolated tools run in forked processes: this platform cannot fork")
        ours, theirs = socket.socketpair()
        for stream in (sys.stdout, sys.stderr):  # or the worker writes what is buffered here again
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except BaseException:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the worker: serve, and never return into the service's code
            code = 0
            try:
                ours.close()
                _serve(theirs, self._targets)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        worker = _Worker(pid, ours, len(self._targets))
        self._workers.add(worker)
        return worker

    def _release(self, worker: _Worker) -> None:
        if not self._started:
            self._retire(worker)
            return
        worker.idle_since = asyncio.get_running_loop().time()
        self._idle.append(worker)
        if len(self._idle) > 1 and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(self.keep_idle_s, self._trim_idle)

    def _trim_idle(self) -> None:
        """Stop workers idle for ``keep_idle_s``, keeping the warmest one."""
        self._trim = None
        now = asyncio.get_running_loop().time()
        for worker in self._idle[:-1]:
            if now - worker.idle_since >= self.keep_idle_s:
                self._retire(worker)
        if len(self._idle) > 1:
            due = self._idle[0].idle_since + self.keep_idle_s
            self._trim = asyncio.get_running_loop().call_at(due, self._trim_idle)

    def _retire(self, worker: _Worker) -> asyncio.Future[int]:
        """Kill ``worker`` now and reap it off the loop; the future gives its exit code. The socket
        of a busy worker is left to its call, which sees the end of file and retires it again."""
        if not worker.busy:
            worker.sock.close()
        if worker.reaped is not None:
            return worker.reaped
        self._workers.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        reaped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        worker.reaped = reaped

        async def reap() -> None:
            try:
                _, status = await asyncio.to_thread(os.waitpid, worker.pid, 0)
                reaped.set_result(os.waitstatus_to_exitcode(status))
            except ChildProcessError:  # reaped elsewhere
                reaped.set_result(-signal.SIGKILL)
            except asyncio.CancelledError:
                reaped.cancel()
                raise

        task = asyncio.get_running_loop().create_task(reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)
        return reaped


async def _read_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """One frame from a worker; EOFError when the worker is gone."""
    data = bytearray()
    wanted = _HEADER.size
    while len(data) < wanted:
        chunk = await loop.sock_recv(sock, max(wanted - len(data), 65536))
        if not chunk:
            raise EOFError
        data += chunk
        if wanted == _HEADER.size and len(data) >= _HEADER.size:
            wanted += _HEADER.unpack_from(data)[0]
    return bytes(data[_HEADER.size :])
