#!/usr/bin/env python3
"""The demo's real inference: package a model, fetch it, serve it, call it with tritonclient.

Pods in the local cluster are simulated, so the demo runs the same runtime locally:
`modelplane package` turns examples/models/mlp.py:tiny_mlp into model.pt2 +
metadata.json, a tarball of it is fetched by the storage initializer
(`modelplane-storage`, as the init container would), `modelplane-runtime` serves it,
and tritonclient sends one binary-tensor inference request, checked against the
model run in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> int:
    sys.path[:0] = [str(REPO / "hack"), str(REPO / "runtime"), str(REPO / "examples" / "models")]
    from localcluster import CACHE_DIR, free_port

    work = CACHE_DIR / "demo"
    artifact, mnt = work / "tiny", work / "mnt" / "models"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:3])}

    print("packaging examples/models/mlp.py:tiny_mlp with `modelplane package` ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from modelplane_runtime.cli import main; raise SystemExit(main())",
            "package",
            str(REPO / "examples" / "models" / "mlp.py") + ":tiny_mlp",
            "-o",
            str(artifact),
            "--input",
            "x:FP32:-1,16",
            "--output-name",
            "scores",
            "--max-batch-size",
            "64",
            "--name",
            "resnet",
        ],
        check=True,
        env=env,
    )
    tarball = work / "resnet-1.0.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(artifact, arcname="resnet")
    print(f"storage initializer: file://{tarball} -> {mnt}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "modelplane_runtime.storage", f"file://{tarball}", str(mnt)],
        check=True,
        env=env,
    )

    port = free_port()
    runtime_env = {
        **env,
        "MODELPLANE_MODEL_NAME": "resnet",
        "MODELPLANE_MODEL_VERSION": "1.0.0",
        "MODELPLANE_MODEL_DIR": str(mnt),
        "MODELPLANE_PORT": str(port),
        "MODELPLANE_HOST": "127.0.0.1",
        "MODELPLANE_BATCHING": "true",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "modelplane_runtime"],
        env=runtime_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        ready_url = f"http://127.0.0.1:{port}/v2/models/resnet/ready"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("the runtime did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(f"runtime ready on 127.0.0.1:{port} (GET /v2/models/resnet/ready -> 200)")
        return call(port)
    finally:
        server.terminate()
        server.wait(timeout=30)


def call(port: int) -> int:
    import numpy as np
    import torch
    import tritonclient.http as httpclient
    from mlp import tiny_mlp  # type: ignore[import-not-found]

    batch = np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = httpclient.InferInput("x", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    result = client.infer(
        "resnet",
        [tensor],
        model_version="1.0.0",
        outputs=[httpclient.InferRequestedOutput("scores", binary_data=True)],
    )
    scores = result.as_numpy("scores")
    with torch.no_grad():
        expected = tiny_mlp()(torch.from_numpy(batch)).numpy()
    print("tritonclient infer resnet v1.0.0, input x FP32 [3, 16] -> scores", scores.shape)
    print(np.array2string(scores, precision=4))
    same = bool(np.allclose(scores, expected, atol=1e-5))
    print("matches the model run in-process:", same)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
