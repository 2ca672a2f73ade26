"""Where the engines run: in this process (threads) or in a pool of worker processes.

Each stream belongs to one shard (a stable hash of its id), so its state lives in one engine and
its records are processed in order. Threads suffice when the work mostly releases the GIL (PyAV,
the numba kernels, torch) and keep tests quick; processes use every core for the Python parts too
(the TS demuxer, feature assembly) and are the service's default.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from consumers.engine import Engine
from consumers.errors import EngineCrashError, WorkerProcessError
from schemas.settings import Settings

ENGINE = "consumers.engine:Engine"
P = ParamSpec("P")
R = TypeVar("R")
# an engine method, named by the function itself (``Engine.process``), so mypy checks every call
EngineMethod = Callable[Concatenate[Engine, P], R]


def freeze_startup_heap() -> None:
    """Take what the engine allocated at start out of the cyclic collector's sight.

    Torch, the models and the ONNX sessions leave a few hundred thousand long-lived objects that
    every full collection would walk again, a pause in every stream's latency. Garbage is
    collected first so none of it is kept for good.
    """
    gc.collect()
    gc.freeze()


def shard_of(stream_id: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2s(stream_id.encode(), digest_size=4).digest(), "big") % n


def _bound(engine: Engine, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` looked up on ``engine``, so an engine subclass's override runs (benchmarks)."""
    return getattr(engine, method.__name__)


class Shards(Protocol):
    n: int

    async def call(self, shard: int, method: EngineMethod[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def close(self) -> None: ...


class ThreadShards:
    """One engine in this process; calls run in threads (different streams concurrently)."""

    n = 1

    def __init__(self, settings: Settings, model_dir: Path, engine: str = ENGINE) -> None:
        self.engine = _engine_class(engine)(settings, model_dir)
        freeze_startup_heap()

    async def call(self, shard: int, method: EngineMethod[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(_bound(self.engine, method), *args, **kwargs)

    async def close(self) -> None:
        pass


def _engine_class(path: str) -> type[Engine]:
    module, _, name = path.partition(":")
    cls: type[Engine] = getattr(importlib.import_module(module), name)
    return cls


def _serve(conn: Connection, settings: Settings, model_dir: Path, cpu: int | None, engine_path: str) -> None:
    """An engine process: requests over a pipe until the parent closes it or is gone, then a quiet
    exit. Ctrl-C reaches the whole process group; the parent alone decides when engines stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    engine = _engine_class(engine_path)(settings, model_dir)
    freeze_startup_heap()
    try:
        conn.send(("ready", engine.model_version))
        while True:
            method, args, kwargs = conn.recv()
            try:
                reply = ("ok", _bound(engine, method)(*args, **kwargs))
            except Exception as e:
                reply = ("error", e)
            conn.send(reply)
    except (EOFError, OSError):  # the parent closed the pipe or died (BrokenPipeError is an OSError)
        return


class ProcessShards:
    """``n`` worker processes, one engine each; one request at a time per process."""

    def __init__(self, settings: Settings, model_dir: Path, n: int, cpus: list[int] | None = None,
                 engine: str = ENGINE) -> None:  # fmt: skip
        self.n = n
        ctx = mp.get_context("spawn")  # never fork a process that runs an event loop and threads
        self.conns: list[Connection] = []
        self.procs = []
        cpus = cpus or []
        for i in range(n):
            parent, child = ctx.Pipe()
            cpu = cpus[i % len(cpus)] if cpus else None
            p = ctx.Process(target=_serve, args=(child, settings, model_dir, cpu, engine), daemon=True,
                            name=f"gopwatch-engine-{i}")  # fmt: skip
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        for i, c in enumerate(self.conns):
            try:
                c.recv()  # ("ready", version): the model loaded
            except EOFError:
                raise WorkerProcessError(f"worker process {i} died while starting") from None
        self.pool = [ThreadPoolExecutor(1, thread_name_prefix=f"shard{i}") for i in range(n)]

    def _rpc(
        self, shard: int, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        c, proc = self.conns[shard], self.procs[shard]
        if not proc.is_alive():  # died during an earlier call: this one is not to blame
            code = proc.exitcode
            raise WorkerProcessError(f"worker process {shard} died (exit code {code}) before this call")
        try:
            c.send((method, args, kwargs))  # the function pickles as a reference to Engine's method
            status, value = c.recv()
        except (EOFError, OSError):  # BrokenPipeError is an OSError
            proc.join(timeout=5)  # the exit code, once the pipe has closed
            raise EngineCrashError(f"worker process {shard} died (exit code {proc.exitcode})") from None
        if status == "error":
            raise value
        return value

    async def call(self, shard: int, method: EngineMethod[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool[shard], self._rpc, shard, method, args, kwargs
        )

    async def close(self) -> None:
        for c in self.conns:
            c.close()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        for ex in self.pool:
            ex.shutdown(wait=False)


def make_shards(settings: Settings, model_dir: Path, cpus: list[int] | None = None,
                engine: str = ENGINE) -> Shards:  # fmt: skip
    """``settings.workers`` processes (each pinned to one of ``cpus`` when given), or this
    process's threads when it is 0. ``engine``: ``module:Class`` of the engine (benchmarks swap it)."""
    if settings.workers == 0:
        return ThreadShards(settings, model_dir, engine)
    return ProcessShards(settings, model_dir, settings.workers, cpus, engine)
