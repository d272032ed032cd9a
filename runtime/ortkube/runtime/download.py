"""A download being written to disk: hashed as it streams, progress logged every 2 s."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("ortkube.runtime.source")

PROGRESS_EVERY_S = 2.0


class PartialDownload:
    """A ``.part`` file in ``directory``; removed unless the download completes."""

    def __init__(self, directory: Path, uri: str, total: int | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, suffix=".part")
        self.path = Path(name)
        self.uri, self.total, self.received = uri, total, 0
        self._out = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._started = self._last_report = time.monotonic()

    def add(self, chunk: bytes) -> None:
        """Write and hash one chunk; log progress when it is time."""
        self._out.write(chunk)
        self._digest.update(chunk)
        self.received += len(chunk)
        now = time.monotonic()
        if now - self._last_report >= PROGRESS_EVERY_S:
            self._last_report = now
            log.info(
                "event=model_download_progress url=%s bytes=%d total=%s elapsed_s=%.1f",
                self.uri,
                self.received,
                self.total if self.total is not None else "unknown",
                now - self._started,
            )

    def finish(self) -> tuple[Path, str]:
        """Flush to disk; (path, sha256). A short body raises ValueError."""
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        if self.total is not None and self.received != self.total:
            raise ValueError(f"download ended at {self.received} of {self.total} bytes")
        return self.path, self._digest.hexdigest()

    def __enter__(self) -> PartialDownload:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:
            self._out.close()
            self.path.unlink(missing_ok=True)
