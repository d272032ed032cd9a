"""Gate for ``precision: int8``: only static, symmetric QDQ models may build INT8 engines.

TensorRT builds INT8 from explicit quantization (QuantizeLinear/DequantizeLinear pairs whose
scales are constants) and supports only symmetric quantization, i.e. zero-points of zero.
Anything else would need a calibration table, which ortkube does not manage, or would build
an engine with silently wrong numerics, so it is refused before any build starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ortkube.runtime.engine.errors import Int8ModelError

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, (str, Path)):
        return onnx.load(str(model))
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    if isinstance(model, onnx.GraphProto):
        return onnx.helper.make_model(model)
    return model


def _constants(graphs: list[Any]) -> dict[str, Any]:
    """Tensors known at load time: initializers and outputs of Constant nodes."""
    import onnx

    constants: dict[str, Any] = {}
    for graph in graphs:
        constants.update({init.name: init for init in graph.initializer})
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        constants[node.output[0]] = onnx.helper.get_attribute_value(attr)
    return constants


def _describe(node: Any) -> str:
    return f"{node.op_type} node {node.name or '(unnamed)'!r} (output {node.output[0]!r})"


def _check_node(node: Any, constants: dict[str, Any], base_dir: str | None) -> None:
    from onnx import numpy_helper

    scale = node.input[1] if len(node.input) > 1 else ""
    if scale not in constants:
        raise Int8ModelError(
            f"{_describe(node)}: scale {scale!r} is computed at run time; TensorRT INT8 needs "
            "static quantization (scales stored as initializers or Constant nodes)"
        )
    zero_point = node.input[2] if len(node.input) > 2 else ""
    if not zero_point:
        return
    if zero_point not in constants:
        raise Int8ModelError(
            f"{_describe(node)}: zero-point {zero_point!r} is computed at run time; TensorRT "
            "INT8 needs static, symmetric quantization"
        )
    values = numpy_helper.to_array(constants[zero_point], base_dir=base_dir or "")
    if values.size and values.any():
        raise Int8ModelError(
            f"{_describe(node)}: zero-point {zero_point!r} is not zero (found "
            f"{values.ravel()[:4].tolist()}...); TensorRT supports symmetric INT8 only: "
            "re-quantize with symmetric activations and weights (zero-point 0)"
        )


def _graphs(graph: Any) -> list[Any]:
    """The graph and every subgraph in it (If/Loop/Scan bodies)."""
    graphs = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                graphs.extend(_graphs(attr.g))
            for sub in attr.graphs:
                graphs.extend(_graphs(sub))
    return graphs


def check_int8_model(model: Any) -> None:
    """Raise ``Int8ModelError`` unless the model is a static, symmetric QDQ model.

    ``model``: ONNX bytes, a path, an ``onnx.ModelProto`` or an ``onnx.GraphProto``.
    """
    base_dir = str(Path(model).parent) if isinstance(model, (str, Path)) else None
    proto = _load(model)
    graphs = _graphs(proto.graph)
    nodes = [node for graph in graphs for node in graph.node]
    dynamic = [n for n in nodes if n.op_type == "DynamicQuantizeLinear"]
    if dynamic:
        raise Int8ModelError(
            f"{_describe(dynamic[0])}: dynamic quantization cannot build a TensorRT INT8 engine; "
            "export a static QDQ model (QuantizeLinear/DequantizeLinear with constant scales)"
        )
    found = {op: sum(n.op_type == op for n in nodes) for op in _QDQ}
    if not all(found.values()):
        raise Int8ModelError(
            f"precision int8 needs a QDQ model, but this one has {found['QuantizeLinear']} "
            f"QuantizeLinear and {found['DequantizeLinear']} DequantizeLinear nodes; quantize it "
            "first (e.g. onnxruntime.quantization.quantize_static with QuantFormat.QDQ and "
            "symmetric activations and weights) or use precision fp16"
        )
    constants = _constants(graphs)
    for node in nodes:
        if node.op_type in _QDQ:
            _check_node(node, constants, base_dir)
