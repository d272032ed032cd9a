"""What one running operator is configured with (flags and environment), alike for all models."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# The name the Dockerfile's runtime target and the chart use.
DEFAULT_RUNTIME_IMAGE = "ortkube-runtime:0.1.0"


@dataclass(frozen=True)
class OperatorSettings:
    """Operator-wide defaults that render fills in where a model's spec leaves them out."""

    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    image_pull_policy: str = "IfNotPresent"
    default_engine_cache_uri: str | None = None
    default_engine_cache_secret: str | None = None
    # The safety net only: children's own events drive reconciling; each model is also looked
    # at once per interval, at a random moment within it, in case a watch missed something.
    resync_interval_s: float = 300.0
    runtime_status_timeout_s: float = 2.0
    # How often a starting pod's /ortkube/status is read (its phases change with no Pod event).
    runtime_status_poll_s: float = 1.0
    # Backpressure: models reconciled at once, and apiserver requests in flight at once.
    workers: int = 8
    max_inflight: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Settings from ORTKUBE_* environment variables (flags override them in the CLI)."""
        env = os.environ if env is None else env
        return cls(
            runtime_image=env.get("ORTKUBE_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE),
            image_pull_policy=env.get("ORTKUBE_IMAGE_PULL_POLICY", "IfNotPresent"),
            default_engine_cache_uri=env.get("ORTKUBE_ENGINE_CACHE_URI") or None,
            default_engine_cache_secret=env.get("ORTKUBE_ENGINE_CACHE_SECRET") or None,
            resync_interval_s=float(env.get("ORTKUBE_RESYNC_INTERVAL", "300")),
            workers=int(env.get("ORTKUBE_WORKERS", "8")),
            max_inflight=int(env.get("ORTKUBE_MAX_INFLIGHT", "8")),
        )
