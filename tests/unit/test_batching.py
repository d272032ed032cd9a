"""Dynamic batching's pure parts: which models can batch, merging and splitting rows."""

from __future__ import annotations

import numpy as np

from ortkube.runtime.batching import batchable, merge_feeds, split_outputs
from ortkube.runtime.datatypes import from_ort
from ortkube.runtime.signature import ModelSignature, TensorSpec

FLOAT = from_ort("tensor(float)")


def test_only_models_with_a_dynamic_first_dim_everywhere_can_batch() -> None:
    dynamic = ModelSignature((TensorSpec("x", FLOAT, (-1, 4)),), (TensorSpec("y", FLOAT, (-1, 3)),))
    assert batchable(dynamic) is None
    static_out = ModelSignature((TensorSpec("x", FLOAT, (-1, 4)),), (TensorSpec("y", FLOAT, (3,)),))
    assert batchable(static_out) == "'y' has no dynamic first (batch) dimension ([3])"


def test_merged_rows_split_back_to_each_request_in_order() -> None:
    a = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    b = {"x": np.arange(8, 20, dtype=np.float32).reshape(3, 4)}
    merged = merge_feeds([a, b])
    assert merged["x"].shape == (5, 4)
    parts = split_outputs([merged["x"] * 2, merged["x"][:, :1]], [2, 3])
    np.testing.assert_array_equal(parts[0][0], a["x"] * 2)
    np.testing.assert_array_equal(parts[1][0], b["x"] * 2)
    np.testing.assert_array_equal(parts[1][1], b["x"][:, :1])
