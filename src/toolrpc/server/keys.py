"""API keys: loaded from flags, `TOOLRPC_API_KEYS` and `--api-keys-file`, checked in constant time.

Only SHA-256 hashes are kept: a key given in clear is hashed at load, and a file may hold
`sha256:<hex>` lines so the keys themselves never sit on the server's disk. A presented key is
hashed and compared with every stored hash by `hmac.compare_digest`, without stopping at the first
match, so the time taken says nothing about which key (or how much of one) matched. The owner of
a request (sessions are scoped by it) is its key's hash in hex; keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class ApiKeys:
    """The SHA-256 hashes of the keys this server accepts (empty: no keys, every caller in)."""

    hashes: tuple[bytes, ...] = ()

    @property
    def is_enabled(self) -> bool:
        """True when requests must carry a key."""
        return bool(self.hashes)

    @classmethod
    def of(cls, keys: Iterable[str], file: Path | None = None) -> ApiKeys:
        """Keys given in clear or as `sha256:<hex>`, plus the lines of `file` (blank lines and
        `#` comments skipped). Raises `ValueError` when the file cannot be read."""
        entries = list(keys)
        if file is not None:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read API keys from {file}: {exc}") from exc
            entries += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return cls(tuple(dict.fromkeys(_hash_of_entry(entry) for entry in entries)))

    def owner_of(self, authorization: str | None) -> str | None:
        """The owner (hex hash) of the key in an `Authorization: Bearer KEY` header, or None when
        the header is missing, malformed, or names no key of this server."""
        if authorization is None:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = hashlib.sha256(key.strip().encode("utf-8")).digest()
        matched = None
        for stored in self.hashes:
            if hmac.compare_digest(presented, stored):
                matched = stored
        return matched.hex() if matched is not None else None


def _hash_of_entry(entry: str) -> bytes:
    hashed = _HASHED.match(entry)
    if hashed:
        return bytes.fromhex(hashed.group(1))
    return hashlib.sha256(entry.encode("utf-8")).digest()
