"""Small ONNX models generated with ``onnx.helper``, for tests, benchmarks and GPU checks.

Deterministic (seeded weights), so the same call gives the same bytes and the same SHA-256.
"""

from __future__ import annotations

from typing import Any

# onnx.helper stamps its own newest IR version, which older onnxruntime releases refuse
# ("Unsupported model IR version: 14, max supported IR version: 13" on ORT 1.31); IR 9
# carries opset 17 and loads on every onnxruntime this project supports.
IR_VERSION = 9


def _tensor(name: str, array: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def dynamic_mlp(
    features: int = 16, hidden: int = 32, outputs: int = 4, seed: int = 0, opset: int = 17
) -> Any:
    """``x[batch, features] -> MatMul/Add/Relu/MatMul -> y[batch, outputs]``, batch dynamic."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((hidden, outputs)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["y"]),
        ],
        "dynamic_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        [_tensor("w1", w1), _tensor("b1", b1), _tensor("w2", w2)],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )


def two_input_model(opset: int = 17) -> Any:
    """Dynamic ``image[batch, 3, h, w]`` and ``mask[batch, seq]``, static ``scale[1]``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["pooled"], keepdims=0, axes=[2, 3]),
            helper.make_node("Mul", ["pooled", "scale"], ["scaled"]),
            helper.make_node("ReduceSum", ["mask"], ["count"], keepdims=1),
            helper.make_node("Cast", ["count"], ["countf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["scaled", "countf"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )


def qdq_model(
    zero_point: int = 0, zero_point_as_input: bool = False, with_zero_point: bool = True
) -> Any:
    """A QDQ MatMul (int8 weights): symmetric by default; options make it fail the INT8 gate."""
    import numpy as np
    from onnx import TensorProto, helper

    weights = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    initializers = [
        _tensor("w_q", weights),
        _tensor("scale", np.array(0.05, dtype=np.float32)),
        _tensor("zp", np.array(zero_point, dtype=np.int8)),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])]
    if zero_point_as_input:
        initializers = initializers[:2]
        inputs.append(helper.make_tensor_value_info("zp", TensorProto.INT8, []))
    qdq_inputs = ["scale", "zp"] if with_zero_point else ["scale"]
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", *qdq_inputs], ["x_q"], name="quant_x"),
            helper.make_node("DequantizeLinear", ["x_q", *qdq_inputs], ["x_dq"], name="dequant_x"),
            helper.make_node("DequantizeLinear", ["w_q", *qdq_inputs], ["w"], name="dequant_w"),
            helper.make_node("MatMul", ["x_dq", "w"], ["y"]),
        ],
        "qdq",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )


def conv_stack(blocks: int = 12, channels: int = 32, seed: int = 0) -> Any:
    """``x[batch, channels, 32, 32]`` through Conv+BatchNorm+Relu blocks: much to optimize."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "x"
    for i in range(blocks):
        names = [f"w{i}", f"b{i}", f"gamma{i}", f"beta{i}", f"mean{i}", f"var{i}"]
        arrays = [
            rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.05,
            rng.standard_normal(channels).astype(np.float32),
            rng.uniform(0.5, 1.5, channels).astype(np.float32),
            rng.standard_normal(channels).astype(np.float32),
            rng.standard_normal(channels).astype(np.float32),
            rng.uniform(0.5, 1.5, channels).astype(np.float32),
        ]
        initializers += [_tensor(n, a) for n, a in zip(names, arrays, strict=True)]
        nodes += [
            helper.make_node("Conv", [current, names[0], names[1]], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [f"c{i}", *names[2:]], [f"n{i}"], epsilon=1e-5),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"]),
        ]
        current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "conv_stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, 32, 32])],
        initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
