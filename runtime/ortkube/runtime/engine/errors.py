"""Engine-layer failures, one type per thing a user (or the operator) can act on."""

from __future__ import annotations


class EngineError(Exception):
    """Base for every engine-layer error; the message says what to change."""


class ProfileError(EngineError, ValueError):
    """Declared shape profiles do not fit the model (an input left out, a wrong rank...)."""


class Int8ModelError(EngineError, ValueError):
    """precision int8 was asked for a model that is not a static, symmetric QDQ model."""


class EngineBuildError(EngineError):
    """Building an engine (or an optimized model) failed; the cause is chained."""


class EngineBuildTimeout(EngineError, TimeoutError):
    """Waited too long for another replica's build of the same engine."""

    def __init__(self, key: str, waited_s: float, holder: str | None) -> None:
        self.key = key
        self.waited_s = waited_s
        self.holder = holder
        who = f"held by {holder}" if holder else "no lock held"
        super().__init__(
            f"engine {key}: still not built after waiting {waited_s:.0f}s ({who}); raise "
            "engine_cache.build_timeout_s or check the builder's logs"
        )


class EngineCacheError(EngineError):
    """The engine cache (a directory or an S3 bucket) could not be read or written."""


class EngineLockLost(EngineError):
    """Our build lock expired and was taken by another builder before we renewed it."""
