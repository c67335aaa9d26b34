"""Turning a stream of token bytes into text, with stop strings.

Tokens may end in the middle of a UTF-8 character, and a stop string may span tokens, so text is
released only when it can no longer change: bytes wait for the rest of their character, and a
tail that could still become a stop string waits for the next token.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    """Accumulates token bytes and releases text that is final, cutting at the first stop string."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.is_stopped = False

    def push(self, data: bytes) -> str:
        """Add one token's bytes; return the text that is now final ("" if none).

        After a stop string is seen `is_stopped` is set, the text before it is returned and
        everything after it is dropped.
        """
        if self.is_stopped:
            return ""
        self._held += self._decoder.decode(data)
        found = [at for at in (self._held.find(stop) for stop in self._stop) if at >= 0]
        if found:  # cut at the earliest stop string, whichever comes first in the list
            self.is_stopped = True
            text, self._held = self._held[: min(found)], ""
            return text
        keep = self._longest_stop_prefix_suffix()
        cut = len(self._held) - keep
        text, self._held = self._held[:cut], self._held[cut:]
        return text

    def flush(self) -> str:
        """Return whatever is still held (generation ended without a stop string)."""
        if self.is_stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _longest_stop_prefix_suffix(self) -> int:
        """Length of the longest tail of the held text that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(self._held)), best, -1):
                if self._held.endswith(stop[:n]):
                    best = n
                    break
        return best
