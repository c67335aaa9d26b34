"""Opt-in retry of requests the server refused as overloaded (-32000 / HTTP 503)."""

from __future__ import annotations

from dataclasses import dataclass

from toolrpc.errors import Overloaded


@dataclass(frozen=True)
class Retry:
    """Retry a refused request up to `attempts` times in all, waiting what the server asks
    (`retry_after_s`), at most `max_wait_s` each time. Only `Overloaded` is retried: it is the
    one refusal that says the same request will succeed later; anything else would fail again.
    """

    attempts: int = 3
    max_wait_s: float = 10.0

    def wait_s(self, error: Overloaded, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up (raise `error`)."""
        if attempt >= self.attempts:
            return None
        return min(max(error.retry_after_s, 0.0), self.max_wait_s)


NO_RETRY = Retry(attempts=1)
"""The default: a refused request raises `Overloaded` at once."""
