"""Small ONNX models built with onnx.helper, for tests, benchmarks and the bundled sample.

Run as ``python -m tests.onnx_models`` to regenerate ``examples/models/sample-mlp.onnx``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The IR and opset versions every onnxruntime >= 1.18 loads.
_OPSET = [helper.make_opsetid("", 17)]
_IR_VERSION = 8

SAMPLE_MODEL = Path(__file__).resolve().parent.parent / "examples" / "models" / "sample-mlp.onnx"


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=_OPSET, producer_name="ortkube-tests")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def mlp(
    *,
    width: int = 16,
    layers: int = 2,
    in_features: int = 4,
    out_features: int = 3,
    dtype: type[np.floating] = np.float32,
    seed: int = 0,
    batch_dims: int = 1,
) -> onnx.ModelProto:
    """``y = relu(...relu(x @ W0) @ W1...) @ Wn``, with ``batch_dims`` leading dynamic dims."""
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    sizes = [in_features] + [width] * layers + [out_features]
    nodes, inits = [], []
    current = "x"
    for index, (rows, cols) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(dtype)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        matmul = f"mm{index}"
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [matmul]))
        if index < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [matmul], [f"relu{index}"]))
            current = f"relu{index}"
        else:
            current = matmul
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    leading = ["batch", "seq", "extra"][:batch_dims]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", elem, [*leading, in_features])],
        [helper.make_tensor_value_info("y", elem, [*leading, out_features])],
        initializer=inits,
    )
    return _model(graph)


def two_in_two_out() -> onnx.ModelProto:
    """Inputs ``a`` FP32 [batch, 4] and ``b`` INT64 [batch, 4]; outputs ``sum`` FP32 and
    ``mask`` BOOL (``a + b > 0``), both [batch, 4]."""
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["sum"]),
        helper.make_node("Greater", ["sum", "zero"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_in_two_out",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 4]),
        ],
        initializer=[numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )
    return _model(graph)


def nonzero() -> onnx.ModelProto:
    """``idx = NonZero(x)`` for FP32 ``x`` [n]: the output's shape ([1, count]) depends on
    the data, not only on the input's shape; plus ``relu`` = Relu(x) [n]."""
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["idx"]), helper.make_node("Relu", ["x"], ["relu"])],
        "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [
            helper.make_tensor_value_info("idx", TensorProto.INT64, [1, "count"]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["n"]),
        ],
    )
    return _model(graph)


def identity(elem_type: int, shape: list[int | str]) -> onnx.ModelProto:
    """``y = x`` for one element type: exercises every datatype's codec end to end."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem_type, shape)],
        [helper.make_tensor_value_info("y", elem_type, shape)],
    )
    return _model(graph)


# Every v2 datatype onnxruntime can take as a model input, by ONNX element type.
ALL_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def all_types() -> onnx.ModelProto:
    """One Identity per datatype: input ``in_<TYPE>`` [-1, 3] returns as ``out_<TYPE>``."""
    nodes, inputs, outputs = [], [], []
    for name, elem_type in ALL_TYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem_type, ["n", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem_type, ["n", 3]))
    return _model(helper.make_graph(nodes, "all_types", inputs, outputs))


def slow_mlp(width: int = 1024, repeats: int = 200) -> onnx.ModelProto:
    """``x @ W`` repeated ``repeats`` times with one shared weight: the batch size sets how
    long a run takes (batch 2048 takes seconds on two cores) while the file stays small."""
    weight = np.eye(width, dtype=np.float32)
    nodes, current = [], "x"
    for index in range(repeats):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"h{index}"]))
        current = f"h{index}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    return _model(graph)


def gather(table_rows: int = 10, width: int = 3) -> onnx.ModelProto:
    """``y = table[indices]``: an out-of-range index fails inside onnxruntime at run time."""
    table = np.arange(table_rows * width, dtype=np.float32).reshape(table_rows, width)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "indices"], ["y"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return _model(graph)


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write a model to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def sample_model() -> onnx.ModelProto:
    """The bundled sample: a 2-layer MLP taking [batch, 4] and returning [batch, 3]."""
    return mlp(width=16, layers=2, in_features=4, out_features=3, seed=7)


if __name__ == "__main__":
    print(save(sample_model(), SAMPLE_MODEL))
