"""The KServe v2 REST client, unchanged, against the runtime (where kserve is installed).

kserve cannot share the dev environment with the operator's kubernetes pin (it needs
python-dateutil<3), so this runs in the benchmark environment (`modelplane[bench]`).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from runtimekit import RuntimeServer

kserve = pytest.importorskip("kserve", reason="kserve is not installed (see docs/runtime.md)")


def test_kserve_rest_client_binary_and_json(addmul_server: RuntimeServer) -> None:
    from kserve.inference_client import RESTConfig

    async def call(binary: bool) -> dict[str, np.ndarray]:
        client = kserve.InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            assert await client.is_server_live(addmul_server.url)
            assert await client.is_model_ready(addmul_server.url, "addmul")
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            inputs = []
            for name in ("x", "y"):
                tensor = kserve.InferInput(name, list(x.shape), "FP32")
                tensor.set_data_from_numpy(x, binary_data=binary)
                inputs.append(tensor)
            request = kserve.InferRequest("addmul", inputs)
            response = await client.infer(addmul_server.url, request, model_name="addmul")
            return {out.name: out.as_numpy() for out in response.outputs}
        finally:
            await client.close()

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for binary in (False, True):
        outputs = asyncio.run(call(binary))
        np.testing.assert_array_equal(outputs["sum"], x + x)
        np.testing.assert_array_equal(outputs["product"], x * x)
