"""Structured progress lines (``key=value``, one event a line) for the dev control plane."""

from __future__ import annotations

import sys
import time


def format_event(event: str, fields: dict[str, object]) -> str:
    """``event=NAME k=v ...``; values with spaces are quoted so the line stays parseable."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if not text or any(c.isspace() or c == '"' for c in text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def log_event(event: str, **fields: object) -> None:
    """Print one progress line to stderr with a wall-clock timestamp."""
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {format_event(event, fields)}", file=sys.stderr, flush=True)
