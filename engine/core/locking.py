"""Keys of PostgreSQL advisory locks, shared by the catalog's locks and the sinks' DDL lock."""

from __future__ import annotations

import zlib

__all__ = ["advisory_key"]


def advisory_key(namespace: str, name: str) -> tuple[int, int]:
    """Two int4 keys for `pg_advisory_lock(k1, k2)`, stable across processes and versions
    (crc32, not Python's salted hash); pg_locks shows them as classid and objid."""

    def int4(text: str) -> int:
        value = zlib.crc32(text.encode())
        return value - 2**32 if value >= 2**31 else value

    return int4(namespace), int4(name)
