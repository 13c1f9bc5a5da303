"""Can a file come from the Hugging Face Hub here? Answered before any download is tried.

Offline without HF_HUB_OFFLINE=1, huggingface_hub retries a failed request five times with back-off: measured on a
2-core machine with no network, `cached_file` for SmolLM2's weights took 26 s and `from_pretrained` 23 s, printing a
retry warning each time, before saying what one TCP connection says in milliseconds. So labkit asks first: the file
is in the local cache, or the Hub's endpoint answers a connection within a few seconds (`reachable`, asked once per
process). Behind a proxy (HTTPS_PROXY, ALL_PROXY) the endpoint is never dialled directly: the library is trusted.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline() -> bool:
    """HF_HUB_OFFLINE=1, as huggingface_hub read it on import or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def reachable(endpoint: str | None = None, timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to the Hub's endpoint opens within `timeout_s` (or a proxy is configured).

    Args:
        endpoint: the Hub's URL; None: huggingface_hub's (HF_ENDPOINT, by default https://huggingface.co).
        timeout_s: seconds to wait for the connection to the name's first address (the name lookup itself is the
            system resolver's; offline it fails at once).
    Returns:
        False when HF_HUB_OFFLINE=1, or the name does not resolve, or the connection fails or times out. A dial's
        answer is kept for the process (a lab asks several times).
    """
    from huggingface_hub import constants

    if offline():
        return False
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True  # the proxy decides; a direct dial would fail where the library succeeds
    return _dial(endpoint or constants.ENDPOINT, timeout_s)


@functools.lru_cache(maxsize=4)
def _dial(endpoint: str, timeout_s: float) -> bool:
    # one address, one timeout: `socket.create_connection` waits `timeout_s` per address, and a name with four
    # unanswering addresses took 12 s
    url = urlsplit(endpoint)
    if not url.hostname:  # no scheme ("huggingface.co"): not a URL huggingface_hub could use either
        return False
    try:
        family, kind, proto, _, address = socket.getaddrinfo(url.hostname, url.port or (
            443 if url.scheme == "https" else 80), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.settimeout(timeout_s)
            s.connect(address)
            return True
    except OSError:  # no DNS, refused, unreachable, timed out
        return False


def unavailable(repo_id: str, filename: str) -> str | None:
    """Why `repo_id`'s `filename` cannot be had here, or None when it can (cached, or the Hub is reachable).

    Args:
        repo_id: a Hub model id, e.g. "HuggingFaceTB/SmolLM2-135M". filename: a file of it, e.g. "config.json".
    Returns:
        None, or "not in this machine's Hugging Face cache and <why>", <why> naming HF_HUB_OFFLINE=1 or the
        endpoint that did not answer.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        return None
    if offline():
        return "not in this machine's Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE=1)"
    if not reachable():
        return f"not in this machine's Hugging Face cache and {constants.ENDPOINT} cannot be reached (no network?)"
    return None
