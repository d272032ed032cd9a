"""The dev cluster's address plan: every address it hands out lies in 127.0.0.0/8.

This machine may send traffic to loopback only, so pods, Services and nodes all get loopback
addresses, each kind from its own range (docs/dev-control-plane.md says why these).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
# Where the control plane listens, and every node's InternalIP.
HOST = "127.0.0.1"
# Pods the podrunner runs as local processes, one address each (bound by the pod's server).
PODRUNNER_POD_CIDR = ipaddress.IPv4Network("127.1.0.0/16")
# Pods on kwok's fake GPU nodes: kwok hands these out; nothing listens on them.
KWOK_POD_CIDR = ipaddress.IPv4Network("127.2.0.0/16")
# Service ClusterIPs: 65,534 Services (a /24 ran out at 254 with 1000 OrtModels).
SERVICE_CIDR = ipaddress.IPv4Network("127.3.0.0/16")
# The apiserver gives the `kubernetes` Service the first address of the range.
KUBERNETES_SERVICE_IP = str(SERVICE_CIDR.network_address + 1)


def kwok_cidr_flag() -> str:
    """kwok's ``--cidr``: an address inside the range plus its prefix (kwok's own format)."""
    return f"{KWOK_POD_CIDR.network_address + 1}/{KWOK_POD_CIDR.prefixlen}"


def plan() -> dict[str, str]:
    """The plan as recorded in a state dir: an older or other plan means a stale state dir."""
    return {
        "host": HOST,
        "podrunner_pods": str(PODRUNNER_POD_CIDR),
        "kwok_pods": str(KWOK_POD_CIDR),
        "services": str(SERVICE_CIDR),
    }


def stale_reason(recorded: Mapping[str, str] | None) -> str | None:
    """Why a state dir recorded with ``recorded`` must not be reused, or None if it may."""
    if recorded is None:
        return "made by an older `ortkube dev up` that recorded no address plan"
    if dict(recorded) != plan():
        return f"address plan {dict(recorded)} differs from {plan()}"
    return None


def node_addresses(name: str) -> list[dict[str, str]]:
    """A Node's ``status.addresses``: loopback as its only IP (the apiserver dials that)."""
    return [{"type": "InternalIP", "address": HOST}, {"type": "Hostname", "address": name}]


def is_loopback(address: str) -> bool:
    """True for an IPv4 address in 127.0.0.0/8 or the IPv6 ``::1``."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return parsed.is_loopback


def not_loopback(named: Iterable[tuple[str, str]]) -> list[str]:
    """``what=address`` for every (what, address) pair whose address is not loopback."""
    return [f"{what}={address or '<none>'}" for what, address in named if not is_loopback(address)]
