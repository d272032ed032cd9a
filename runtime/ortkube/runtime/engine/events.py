"""One structured log line per engine event: ``event=NAME key=value ...``."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("ortkube.runtime.engine")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    # Quote only what would break key=value parsing; keeps the common case readable.
    if not text or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_event(event: str, **fields: Any) -> str:
    """The text of one event line; None values are left out."""
    parts = [f"event={event}"]
    parts += [f"{name}={_value(value)}" for name, value in fields.items() if value is not None]
    return " ".join(parts)


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event line on the engine logger."""
    if log.isEnabledFor(level):
        log.log(level, "%s", format_event(event, **fields))
