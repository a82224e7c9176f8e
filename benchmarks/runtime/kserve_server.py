"""KServe's ModelServer (one worker) serving the same .pt2 artifact over the v2 protocol.

Usage: python kserve_server.py MODEL_DIR NAME HTTP_PORT
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import torch


class TorchExportModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.module: Any = None

    def load(self) -> bool:
        self.module = torch.export.load(str(self.model_dir / "model.pt2")).module()
        self.ready = True
        return True

    def predict(
        self, payload: Any, headers: Any = None, response_headers: Any = None
    ) -> kserve.InferResponse:
        x = payload.inputs[0].as_numpy()
        with torch.inference_mode():
            y = self.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        out = kserve.InferOutput(name="output0", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=True)
        return kserve.InferResponse(
            model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4())
        )


def main() -> None:
    model_dir, name, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    model = TorchExportModel(name, model_dir)
    model.load()
    kserve.ModelServer(
        http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False
    ).start([model])


if __name__ == "__main__":
    main()
