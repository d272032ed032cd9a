"""Loopback addresses for pods: each pod gets its own 127.x.y.z, unique while it lives."""

from __future__ import annotations

import ipaddress
import threading

from ortkube.devcluster.network import PODRUNNER_POD_CIDR

# 127.0.0.0/8 answers on every Linux host without setup; the podrunner's pods have their own
# /16 of it, apart from the control plane (127.0.0.1), kwok's pods and Service ClusterIPs.
FIRST = PODRUNNER_POD_CIDR.network_address + 1
LAST = PODRUNNER_POD_CIDR.broadcast_address - 1


class AddressPool:
    """Hands out one address per pod uid; released addresses are reused last."""

    def __init__(self, first: ipaddress.IPv4Address = FIRST, last: ipaddress.IPv4Address = LAST):
        self._next = int(first)
        self._last = int(last)
        self._by_uid: dict[str, str] = {}
        self._free: list[str] = []
        self._lock = threading.Lock()

    def allocate(self, uid: str, preferred: str = "") -> str:
        """The pod's address: the same one again for the same uid, ``preferred`` if free.

        A pod keeps the IP it already has in its status (the API refuses to change podIP once
        set), so a restarted podrunner passes it as ``preferred``.
        """
        with self._lock:
            if uid in self._by_uid:
                return self._by_uid[uid]
            taken = set(self._by_uid.values())
            usable = preferred and preferred not in taken
            address = preferred if usable else self._fresh(taken)
            self._by_uid[uid] = address
            return address

    def _fresh(self, taken: set[str]) -> str:
        while self._next <= self._last:
            address = str(ipaddress.IPv4Address(self._next))
            self._next += 1
            if address not in taken:
                return address
        for address in self._free:
            if address not in taken:
                self._free.remove(address)
                return address
        raise RuntimeError("no loopback addresses left for pods")

    def release(self, uid: str) -> None:
        """Give the pod's address back."""
        with self._lock:
            address = self._by_uid.pop(uid, None)
            if address is not None:
                self._free.append(address)
