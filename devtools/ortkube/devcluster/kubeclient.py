"""The kubernetes client, as the dev cluster uses it: plain dicts in, plain dicts out.

The generated client's models are typed, but the podrunner and the control plane build their
objects as dicts (the shape the API documents) and read responses as JSON; the API objects are
typed ``Any`` here so that one choice is made in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def api_client(kubeconfig: Path) -> Any:
    """An ApiClient authenticated by ``kubeconfig``."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]


def core_api(client_: Any) -> Any:
    """CoreV1Api on ``client_``."""
    from kubernetes import client

    return client.CoreV1Api(client_)


def api(kind: str, client_: Any) -> Any:
    """Any generated API class by name (``StorageV1Api``, ``CoordinationV1Api``...)."""
    from kubernetes import client

    return getattr(client, kind)(client_)


def body(response: Any) -> dict[str, Any]:
    """The JSON body of a call made with ``_preload_content=False``."""
    decoded: dict[str, Any] = json.loads(response.data)
    return decoded


def new_watch() -> Any:
    """A kubernetes.watch.Watch."""
    from kubernetes import watch

    return watch.Watch()  # type: ignore[no-untyped-call]
