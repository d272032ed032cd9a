"""KServe's own v2 REST client (``kserve.InferenceRESTClient``) works against ``ortkube serve``."""

from __future__ import annotations

import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.runtime_process import ServeProcess


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_kserve_rest_client_infers(two_io_server: ServeProcess, binary: bool) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.int64)
    inputs = [InferInput("a", [2, 4], "FP32"), InferInput("b", [2, 4], "INT64")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    request = InferRequest(model_name="two_io", infer_inputs=inputs, request_id="k-1")
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
    try:
        assert await client.is_server_ready(two_io_server.base_url)
        assert await client.is_model_ready(two_io_server.base_url, "two_io")
        response = await client.infer(two_io_server.base_url, request, model_name="two_io")
    finally:
        await client.close()
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    np.testing.assert_array_equal(outputs["sum"], a + 1)
    np.testing.assert_array_equal(outputs["mask"], (a + 1) > 0)
    assert response.id == "k-1"
