"""Kubernetes' ``$(VAR)`` expansion and the podrunner's mount-path rewriting (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` the way the kubelet does for command, args and env values.

    ``$$`` is an escaped ``$``; an undefined ``$(VAR)`` stays as written; a ``$`` not followed
    by ``(`` or ``$`` and an unterminated ``$(`` are kept literally.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            end = text.find(")", i + 2)
            if end == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(variables[name] if name in variables else text[i : end + 1])
            i = end + 1
        else:
            out.append(char + following)
            i += 2
    return "".join(out)


def rewrite_mount_paths(text: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Replace each container mountPath prefix in ``text`` with its local folder.

    ``mounts`` is (mountPath, local path). A mountPath matches only as a whole path prefix
    (``/etc/app`` rewrites ``/etc/app/x.yaml`` and ``--config=/etc/app`` but not ``/etc/apple``
    nor ``/opt/etc/app``); the longest mountPath wins, so nested mounts resolve correctly.
    """
    if not mounts:
        return text
    ordered = sorted(mounts, key=lambda m: len(m[0].rstrip("/")), reverse=True)
    local_by_path = {path.rstrip("/") or "/": local for path, local in ordered}
    pattern = re.compile(
        r"(?<![\w.\-/])("
        + "|".join(re.escape(path.rstrip("/") or "/") for path, _ in ordered)
        + r")(?=/|$|[^\w.\-])"
    )
    return pattern.sub(lambda match: local_by_path[match.group(1)], text)
