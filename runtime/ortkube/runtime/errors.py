"""Exceptions a user can act on, each mapped to one HTTP status by the server."""

from __future__ import annotations


class RuntimeServingError(Exception):
    """Base for errors the server turns into a JSON ``{"error": ...}`` answer."""

    http_status = 500


class InvalidRequest(RuntimeServingError):
    """The request does not match the model or the protocol; the message names what is wrong."""

    http_status = 400


class ModelNotFound(RuntimeServingError):
    """The URL names a model (or version) this server does not serve."""

    http_status = 404


class ModelNotReady(RuntimeServingError):
    """The model is still loading, building or warming up, or failed to load."""

    http_status = 503


class ModelSourceError(Exception):
    """The model could not be fetched or failed verification."""


class ModelDownloadError(ModelSourceError):
    """Downloading failed on errors a later attempt may not meet (5xx, timeouts, resets)."""


class ModelLoadError(Exception):
    """onnxruntime could not create a session for the model."""
