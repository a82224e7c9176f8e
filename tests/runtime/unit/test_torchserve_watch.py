# ruff: noqa: E501 (TorchServe's log lines, verbatim)
"""`modelplane-torchserve` reads TorchServe's log: when a load failed, and the reason."""

from __future__ import annotations

import io

from modelplane_runtime.torchserve import LATE_REASON_S, LoadWatch, relay

# TorchServe 0.12's own lines (trimmed), with stdout and stderr of the worker interleaved.
FAILED_LOAD = """\
2026-12-04T01:26:42,842 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG - model_name: tiny, batchSize: 1
2026-12-04T01:26:44,257 [WARN ] W-9000-tiny_v1-stderr MODEL_LOG - W1204 01:26:44.251000 24268 torch/export/__init__.py:403] Traceback (most recent call last):
2026-12-04T01:26:44,262 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG - Backend worker process died.
2026-12-04T01:26:44,265 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG - Traceback (most recent call last):
2026-12-04T01:26:44,265 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG -   File "ts/model_service_worker.py", line 301, in <module>
2026-12-04T01:26:44,263 [WARN ] W-9000-tiny_v1-stderr MODEL_LOG - W1204 01:26:44.251000 24268 torch/export/__init__.py:403]   File "torch/export/__init__.py", line 398, in load
2026-12-04T01:26:44,265 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG -     worker.run_server()
2026-12-04T01:26:44,264 [WARN ] W-9000-tiny_v1-stderr MODEL_LOG - W1204 01:26:44.251000 24268 torch/export/__init__.py:403] RuntimeError: PytorchStreamReader failed reading zip archive
2026-12-04T01:26:44,270 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG -     raise BadZipFile("File is not a zip file")
2026-12-04T01:26:44,275 [INFO ] W-9000-tiny_v1-stdout MODEL_LOG - zipfile.BadZipFile: File is not a zip file
2026-12-04T01:26:44,280 [INFO ] W-9000-tiny_v1 org.pytorch.serve.wlm.WorkerThread - Backend worker monitoring thread interrupted or backend worker process died.
2026-12-04T01:26:44,296 [WARN ] W-9000-tiny_v1 org.pytorch.serve.wlm.BatchAggregator - Load model failed: tiny, error: Worker died.
"""


def _first_failure(text: str, seconds_per_line: float = 0.0) -> tuple[int, str | None]:
    """The line at which the watch decides, and its message; (0, ...) at the log's end."""
    watch = LoadWatch()
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        failure = watch.feed(line, now=number * seconds_per_line)
        if failure:
            return number, failure
    return 0, watch.settle()


def test_a_failed_load_gives_the_worker_s_exception_at_the_frontend_s_report() -> None:
    line, failure = _first_failure(FAILED_LOAD)
    assert line == len(FAILED_LOAD.splitlines())  # not before TorchServe says the load failed
    assert failure == (
        "model 'tiny' failed to load in TorchServe: zipfile.BadZipFile: File is not a zip file"
    )


def test_a_traceback_logged_after_the_frontend_s_report_is_still_the_reason() -> None:
    # The frontend's report and the worker's output come from different Java threads: CI
    # saw "Load model failed" first, and the message said only "Worker died.".
    lines = FAILED_LOAD.splitlines()
    reordered = "\n".join([lines[-1], *lines[:-1]])
    line, failure = _first_failure(reordered)
    assert line == 11  # at the exception's line, the traceback's last
    assert failure == (
        "model 'tiny' failed to load in TorchServe: zipfile.BadZipFile: File is not a zip file"
    )


def test_without_a_traceback_the_frontend_s_error_is_the_reason_once_it_is_late() -> None:
    report = "[WARN ] W-9000-big_1 org.pytorch.serve.wlm.BatchAggregator - Load model failed: big, error: Worker died."
    chatter = "[INFO ] main org.pytorch.serve.wlm.ModelManager - retrying"
    late = 1 + int(LATE_REASON_S)  # the report is line 1 at t=1 s, a line a second
    line, failure = _first_failure("\n".join([report, *[chatter] * (late + 5)]), 1.0)
    assert line == late  # not before the reason is late, and not after
    assert failure == "model 'big' failed to load in TorchServe: Worker died."
    assert _first_failure(report) == (0, failure)  # the log ended: what is known


def test_relay_gives_the_frontend_s_reason_when_the_log_goes_quiet() -> None:
    # A pipe that stays open and silent after the report: relay must not wait forever.
    import os
    import threading
    import time

    read_end, write_end = os.pipe()
    report = b"[WARN ] W-9000-big_1 org.pytorch.serve.wlm.BatchAggregator - Load model failed: big, error: Worker died.\n"
    os.write(write_end, report)
    sink = io.StringIO()
    with os.fdopen(read_end, "r") as stream:
        started = time.monotonic()
        result: list[str | None] = []
        reader = threading.Thread(target=lambda: result.append(relay(stream, sink, LoadWatch())))
        reader.start()
        reader.join(LATE_REASON_S + 5)
        elapsed = time.monotonic() - started
        os.close(write_end)
        reader.join(5)
    assert result == ["model 'big' failed to load in TorchServe: Worker died."]
    assert LATE_REASON_S <= elapsed < LATE_REASON_S + 5
    assert "Load model failed" in sink.getvalue()


def test_a_served_model_s_log_is_no_failure() -> None:
    healthy = (
        "\n".join(line for line in FAILED_LOAD.splitlines() if "Load model failed" not in line)
        + '\n2026-12-04T01:31:05,001 [INFO ] W-9000-tiny_v1 ACCESS_LOG - /127.0.0.1 "POST /predictions/tiny HTTP/1.1" 200 3'
    )
    assert _first_failure(healthy) == (0, None)


# An archive TorchServe cannot register: it logs this, goes on without the model, and
# answers /ping Healthy.
UNREGISTERED = """\
2026-12-04T02:08:58,288 [WARN ] main org.pytorch.serve.ModelServer - Failed to load model: missing.mar
org.pytorch.serve.archive.model.ModelNotFoundException: Model not found at: missing.mar
	at org.pytorch.serve.archive.model.ModelArchive.downloadModel(ModelArchive.java:97)
"""


def test_an_archive_that_cannot_be_registered_is_a_failure_with_java_s_reason() -> None:
    line, failure = _first_failure(UNREGISTERED)
    assert line == 2
    assert failure == (
        "archive 'missing.mar' could not be registered in TorchServe: "
        "ModelNotFoundException: Model not found at: missing.mar"
    )


def test_the_reason_is_the_failing_worker_s_own_exception() -> None:
    other = "2026-12-04T01:20:00,000 [INFO ] W-9001-tiny_v1-stdout MODEL_LOG - "
    earlier = (
        f"{other}Traceback (most recent call last):\n{other}  File x\n{other}MemoryError: old\n"
    )
    line = "[WARN ] W-9000-tiny_v1 org.pytorch.serve.wlm.BatchAggregator - Load model failed: tiny, error: Worker died."
    assert (
        _first_failure(earlier + line)[1]
        == "model 'tiny' failed to load in TorchServe: Worker died."
    )
