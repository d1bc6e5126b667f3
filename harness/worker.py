"""The measuring process.

The runner measures in a child process so that a kernel that crashes the process or
poisons the CUDA context (an illegal memory access) costs one row, not the run: the
runner records the implementation in flight as crashed and starts a fresh worker for the
rest. Messages on the pipe, child to parent:
    ("prepared", environment dict, ceilings dict)   answer to ("prepare", dtype names)
    ("begin", impl name)    ("row", Row)    ("poisoned", reason)    ("done", None)
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch

from harness import ceilings as ceilings_mod
from harness import environment, registry
from harness.ceilings import Ceilings
from harness.measure import Measurer
from harness.registry import parse_dtype
from harness.suites import Unit
from harness.timing import Timer


@dataclass(frozen=True)
class WorkerSettings:
    device: str  # "cuda" or "cpu"
    base_seed: int
    ceilings: dict | None = None


class Session:
    """What a worker holds: the device, the timer (and its L2-flush buffer), the measurer."""

    def __init__(self, settings: WorkerSettings):
        if settings.device == "cpu":
            from harness import interpreter

            interpreter.enable()
        warnings.filterwarnings("ignore", message=".*deterministic.*")  # from the output poisoning
        registry.load_all()
        self.device = torch.device(settings.device)
        self.timer = Timer(self.device)
        self.measurer = Measurer(self.device, Ceilings.from_dict(settings.ceilings), settings.base_seed, self.timer)

    def prepare(self, dtype_names: list[str]) -> tuple[dict, dict]:
        env = environment.capture(self.device)
        found = ceilings_mod.measure(self.timer, [parse_dtype(d) for d in dtype_names])
        self.measurer.ceilings = found
        return env.to_dict(), found.to_dict()

    def run_unit(self, unit: Unit, impl_names: list[str], emit) -> None:
        self.measurer.run_unit(unit, impl_names, emit)
        emit("done", None)


def serve(conn: Connection, settings: WorkerSettings) -> None:
    """Child process entry: answer requests until the pipe closes or the context is poisoned."""
    session = Session(settings)
    poisoned = False

    def emit(kind: str, payload: object) -> None:
        nonlocal poisoned
        poisoned |= kind == "poisoned"
        conn.send((kind, payload))

    while not poisoned:
        try:
            request, payload = conn.recv()
        except EOFError:
            return
        if request == "prepare":
            conn.send(("prepared", session.prepare(payload)))
        elif request == "unit":
            unit, impl_names = payload
            session.run_unit(unit, impl_names, emit)
    conn.close()
    os._exit(0)  # a poisoned CUDA context can hang a normal interpreter exit


class WorkerProcess:
    """The parent's handle on one worker child process."""

    def __init__(self, settings: WorkerSettings):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, settings), daemon=True)
        self.process.start()
        child.close()

    def send(self, request: str, payload: object) -> None:
        self.conn.send((request, payload))

    def receive(self, timeout_s: float) -> tuple[str, object] | None:
        """The next message; None on timeout; ("died", reason) when the child is gone."""
        try:
            if not self.conn.poll(timeout_s):
                return None
            return self.conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            self.process.join(timeout=10)
            return ("died", describe_exit(self.process.exitcode))

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker process stopped answering"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process was killed by {name}"
    return f"the worker process exited with code {code}"
