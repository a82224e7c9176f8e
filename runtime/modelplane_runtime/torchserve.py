"""`modelplane-torchserve`: TorchServe in the foreground, made to fail like a container.

Two things TorchServe does not do for Kubernetes:
- A model that fails to load leaves it running and ``/ping`` answering Healthy, while it
  restarts the worker forever: the pod would never be Ready, and no status would say why.
  Here the first "Load model failed" ends the container with exit code 1 and the model's
  own exception as the termination message, so that the pod status, and the operator's
  automatic rollback, show TorchServe's reason.
- Its `torchserve` command leaves the Java server running when it is signalled. Here it
  runs in a process group of its own, and SIGTERM reaches every process in it, after
  the drain delay (MODELPLANE_DRAIN_DELAY_S, 5 s) that lets the pod leave the Service
  first, as modelplane's runtime does.

Every argument is passed to `torchserve`; its output is relayed line by line.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from .termination import write_termination_message

# TorchServe's frontend, when a worker could not load the model (its thread names the
# worker, e.g. "W-9000-tiny_1.0"), and when an archive could not even be registered.
LOAD_FAILED = re.compile(
    r"\] (?P<worker>W-\S+) \S+ - Load model failed: (?P<model>[^,\s]+), error: (?P<error>.*)$"
)
REGISTER_FAILED = re.compile(r"Failed to load model: (?P<archive>\S+)")
# A line of the Python worker's output, as the frontend logs it ("W-9000-tiny_1.0-stdout").
MODEL_LOG = re.compile(r"\] (?P<worker>W-\S+?)-(?P<stream>stdout|stderr) MODEL_LOG - (?P<text>.*)$")
TRACEBACK = "Traceback (most recent call last):"
# The frontend's "Load model failed" and the worker's traceback are logged by different
# Java threads: the traceback can come after it. It is waited for this long.
LATE_REASON_S = 3.0
STOP_SECONDS = 20
DRAIN_DELAY_S = 5.0  # MODELPLANE_DRAIN_DELAY_S, as for modelplane's runtime
# Where `torchserve` records a running server and refuses to start another: a restarted
# container finds the last one's in its /tmp volume, though that server is gone.
PID_FILE = os.path.join(tempfile.gettempdir(), ".model_server.pid")


@dataclass(frozen=True)
class PendingFailure:
    """A load the frontend reported failed, waiting briefly for the worker's exception."""

    model: str
    worker: str
    frontend_error: str  # TorchServe's own words ("Worker died."): the reason without one
    deadline: float

    def message(self, reason: str | None = None) -> str:
        return f"model {self.model!r} failed to load in TorchServe: {reason or self.frontend_error}"


@dataclass
class LoadWatch:
    """Reads TorchServe's log lines; decides when the model failed to load, and why."""

    # Per worker stream: whether a Python traceback is being printed.
    in_traceback: dict[str, bool] = field(default_factory=dict)
    # Per worker: the last exception its Python process printed.
    last_exception: dict[str, str] = field(default_factory=dict)
    unregistered: str = ""  # an archive TorchServe could not register; its reason follows
    pending: PendingFailure | None = None

    def feed(self, line: str, now: float | None = None) -> str | None:
        """The termination message once a load failed and its reason is known, else None."""
        now = time.monotonic() if now is None else now
        if self.unregistered:
            # The Java exception under "Failed to load model": "pkg.SomeException: text".
            kind, sep, text = line.strip().partition(": ")
            reason = f"{kind.rpartition('.')[2]}: {text}" if sep else line.strip()
            return f"archive {self.unregistered!r} could not be registered in TorchServe: {reason}"
        logged = MODEL_LOG.search(line)
        if logged:
            self._worker_line(logged.group("worker"), logged.group("stream"), logged.group("text"))
            return self._reason_arrived() or self.overdue(now)
        unregistered = REGISTER_FAILED.search(line)
        if unregistered:
            # TorchServe goes on without the model, /ping Healthy: nothing would serve.
            self.unregistered = unregistered.group("archive")
            return None
        failed = LOAD_FAILED.search(line)
        if failed and self.pending is None:
            self.pending = PendingFailure(
                failed.group("model"),
                failed.group("worker"),
                failed.group("error").strip(),
                now + LATE_REASON_S,
            )
            return self._reason_arrived()
        return self.overdue(now)

    def overdue(self, now: float) -> str | None:
        """The frontend's own reason, once the worker's exception is late."""
        if self.pending and now >= self.pending.deadline:
            return self.pending.message()
        return None

    def settle(self) -> str | None:
        """At the end of the log: a reported failure, with whatever reason is known."""
        return self._reason_arrived() or (self.pending.message() if self.pending else None)

    def _reason_arrived(self) -> str | None:
        if self.pending and self.pending.worker in self.last_exception:
            return self.pending.message(self.last_exception[self.pending.worker])
        return None

    def _worker_line(self, worker: str, stream: str, text: str) -> None:
        # A Python traceback ends at its first unindented line: "ExceptionType: message".
        key = f"{worker}-{stream}"
        if text.startswith(TRACEBACK):
            self.in_traceback[key] = True
        elif self.in_traceback.get(key) and text and not text[0].isspace():
            self.last_exception[worker] = text.strip()
            self.in_traceback[key] = False


def _reap(process: subprocess.Popen[str]) -> None:
    """Collect exited children: `torchserve` itself, and, once it is gone, the processes
    it left to us (as the container's PID 1, orphans are ours to wait for). A zombie still
    counts as a member of the group."""
    if process.poll() is None:
        return
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _group_gone(process: subprocess.Popen[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(process)
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _server_and_command(process: subprocess.Popen[str]) -> list[int]:
    """`torchserve` and the Java server it started. Not the Python workers: Java stops
    them itself once the requests they run are answered."""
    try:
        import psutil  # type: ignore[import-untyped]  # a dependency of TorchServe

        return [process.pid, *(c.pid for c in psutil.Process(process.pid).children())]
    except Exception:  # no psutil, or torchserve already gone: the group is all we know
        return []


def _stop(process: subprocess.Popen[str], graceful: bool = True) -> int:
    """SIGTERM to the Java server, then SIGKILL to TorchServe's whole group once
    STOP_SECONDS pass. The whole group is waited for, since it holds the ports. Not
    graceful after a failed load: with a worker restarting, Java's shutdown hangs."""
    if graceful:
        pids = _server_and_command(process)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if not pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        if _group_gone(process, STOP_SECONDS):
            return process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    _group_gone(process, STOP_SECONDS)
    return process.wait()


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """The stream's lines, read by a thread so that the reader can wait with a timeout;
    None at the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="torchserve-log", daemon=True).start()
    return lines


def relay(stream: IO[str], sink: IO[str], watch: LoadWatch) -> str | None:
    """Copy TorchServe's output to ``sink`` until it ends or a load fails (the reason)."""
    lines = _lines(stream)
    while True:
        wait = watch.pending.deadline - time.monotonic() if watch.pending else None
        try:
            line = lines.get(timeout=max(wait, 0.0) if wait is not None else None)
        except queue.Empty:
            return watch.overdue(time.monotonic())
        if line is None:
            return watch.settle()
        sink.write(line)
        sink.flush()
        failure = watch.feed(line.rstrip("\n"))
        if failure:
            return failure


def _drain_delay_s() -> float:
    try:
        return max(0.0, float(os.environ.get("MODELPLANE_DRAIN_DELAY_S", DRAIN_DELAY_S)))
    except ValueError:
        return DRAIN_DELAY_S


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--foreground" not in args:
        args = ["--foreground", *args]
    if os.path.exists(PID_FILE):
        os.remove(PID_FILE)
    stopping = threading.Event()
    started: list[subprocess.Popen[str]] = []

    def stop_after_drain(process: subprocess.Popen[str]) -> None:
        threading.Timer(_drain_delay_s(), _stop, (process,)).start()

    def on_sigterm(*_: object) -> None:
        # As modelplane's runtime: keep serving while the pod leaves the Service's
        # endpoints (kube-proxy is asynchronous), then stop. A second SIGTERM is ignored.
        if not stopping.is_set():
            stopping.set()
            if started:
                stop_after_drain(started[0])

    # Before the start: as PID 1, a SIGTERM without a handler would be ignored.
    signal.signal(signal.SIGTERM, on_sigterm)
    process = subprocess.Popen(
        ["torchserve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="backslashreplace",
        start_new_session=True,
    )
    started.append(process)
    if stopping.is_set():  # it came while TorchServe was being started
        stop_after_drain(process)
    assert process.stdout is not None
    failure = relay(process.stdout, sys.stdout, LoadWatch())
    if failure:
        print(f"modelplane-torchserve: {failure}", file=sys.stderr, flush=True)
        write_termination_message(failure, os.environ.get("MODELPLANE_TERMINATION_LOG"))
        _stop(process, graceful=False)
        return 1
    code = process.wait()
    return 0 if stopping.is_set() else code


if __name__ == "__main__":
    sys.exit(main())
