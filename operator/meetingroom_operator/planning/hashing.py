"""Stable hashes for consistent hashing: the same on every process and every run."""

from __future__ import annotations

import hashlib
from functools import lru_cache


@lru_cache(maxsize=1 << 16)
def h64(key: str) -> int:
    """An unsigned 64-bit hash of ``key`` (blake2b), stable across processes."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
