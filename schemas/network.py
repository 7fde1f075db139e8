"""The one rule of what a listen address reaches: the fail-closed start checks (HTTP app, MLLP, model worker).

Input: a host as given to a setting. Output: whether only this machine can connect. Pure, no I/O.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``; ``0.0.0.0``, ``::``, "" and any other name may be reached from
    outside (a name may resolve to anything: it is not trusted to be loopback)."""
    host = host.strip()
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
