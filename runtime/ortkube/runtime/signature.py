"""A model's inputs and outputs as the v2 protocol describes them, read from an ORT session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ortkube.runtime.datatypes import TensorType, from_ort

DYNAMIC = -1


class _NodeArg(Protocol):
    name: str
    type: str
    shape: Sequence[Any]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, element type, and shape with -1 for dynamic dims."""

    name: str
    type: TensorType
    shape: tuple[int, ...]

    @property
    def datatype(self) -> str:
        """The v2 datatype name."""
        return self.type.v2

    def metadata(self) -> dict[str, Any]:
        """The v2 metadata entry for this tensor."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """All inputs and outputs of a model, in graph order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        """The input called ``name``, or None."""
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        """The output called ``name``, or None."""
        return next((spec for spec in self.outputs if spec.name == name), None)


def _dim(value: Any) -> int:
    # ORT reports symbolic dims as strings and unknown ones as None: both are dynamic to us.
    return value if isinstance(value, int) and value >= 0 else DYNAMIC


def tensor_spec(arg: _NodeArg) -> TensorSpec:
    """Convert an ORT NodeArg into a TensorSpec."""
    return TensorSpec(arg.name, from_ort(arg.type), tuple(_dim(d) for d in arg.shape))


def signature_of(inputs: Sequence[_NodeArg], outputs: Sequence[_NodeArg]) -> ModelSignature:
    """Build the signature from ``session.get_inputs()`` and ``session.get_outputs()``."""
    return ModelSignature(
        tuple(tensor_spec(arg) for arg in inputs), tuple(tensor_spec(arg) for arg in outputs)
    )
