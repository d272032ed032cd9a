"""precision int8 is refused, before any build, for models TensorRT cannot build INT8 from."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from ortkube.runtime.engine.errors import Int8ModelError
from ortkube.runtime.engine.int8 import check_int8_model
from ortkube.runtime.engine.sample_models import dynamic_mlp, qdq_model


def test_symmetric_static_qdq_model_passes_as_proto_bytes_graph_and_path(tmp_path: Path) -> None:
    model = qdq_model()
    path = tmp_path / "qdq.onnx"
    onnx.save(model, str(path))
    check_int8_model(model)
    check_int8_model(model.SerializeToString())
    check_int8_model(model.graph)
    check_int8_model(path)


def test_qdq_model_without_zero_points_is_symmetric() -> None:
    check_int8_model(qdq_model(with_zero_point=False))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (dynamic_mlp(), "needs a QDQ model, but this one has 0 QuantizeLinear and 0 Dequan"),
        (qdq_model(zero_point=3), "node 'quant_x' .*zero-point 'zp' is not zero"),
        (qdq_model(zero_point_as_input=True), "zero-point 'zp' is computed at run time"),
    ],
)
def test_models_tensorrt_cannot_build_int8_from_are_rejected_with_a_reason(
    model: onnx.ModelProto, message: str
) -> None:
    with pytest.raises(Int8ModelError, match=message):
        check_int8_model(model)


def test_dynamic_quantization_is_rejected() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dq")],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [4])],
    )
    with pytest.raises(Int8ModelError, match="dynamic quantization"):
        check_int8_model(helper.make_model(graph))
