"""Memory resident only where the KV cache is used: the pages of a freshly cleared cache given back.

llama.cpp allocates a context's whole KV cache up front (every slot's `context_length` tokens)
and clears it to zero, which makes every page of it resident: 360 MiB at the defaults (8 slots x
2,048 tokens, f16) that short conversations never fill. Linux gives a private anonymous page
dropped with `madvise(MADV_DONTNEED)` back as a zero page on its next touch, so dropping the
cleared pages changes no byte the model reads: a page becomes resident again when a token's
keys or values are written into it. Resident memory then grows with the KV actually in use (the
high-water mark of each slot: positions trimmed later stay resident until reused), up to the
whole cache when every slot is full; the reservation, and so `--kv-memory`'s slot count, is
unchanged.

The cache's pages are found without llama.cpp's internals: among the private anonymous mappings
that appeared while the context was created, the run of all-zero pages exactly the cache's size
(the cache is one buffer, page-aligned: 92,160 pages of zeros at the defaults). A run of another
length is left alone, so nothing but the cache is ever dropped; `MADV_NOHUGEPAGE` keeps a touch
from making a whole 2 MiB page resident where transparent huge pages are always on. The server
loads its model before it serves, so no other thread writes to fresh memory meanwhile. Anywhere
this cannot be done (not Linux, a llama.cpp that lays its cache out otherwise) the cache stays
resident as before and a debug line says so. The clearing itself still makes the cache resident
for a moment while the context is created, so the peak at start is what the steady state was.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
MADV_NOHUGEPAGE = 15
MAPS = Path("/proc/self/maps")


@dataclass(frozen=True)
class Region:
    """A private, writable, anonymous address range [start, end)."""

    start: int
    end: int


def anonymous_regions(maps: Path = MAPS) -> list[Region]:
    """The process's private writable anonymous mappings (none where /proc is missing)."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    regions = []
    for line in lines:
        fields = line.split()
        if len(fields) == 5 and fields[1] == "rw-p" and fields[4] == "0":
            start, end = (int(part, 16) for part in fields[0].split("-"))
            regions.append(Region(start, end))
    return regions


def new_ranges(before: list[Region], after: list[Region]) -> list[Region]:
    """The parts of `after` that no region of `before` covered (mappings merge as they grow)."""
    ranges = []
    for region in after:
        pieces = [region]
        for old in before:
            pieces = [piece for p in pieces for piece in _minus(p, old)]
        ranges += pieces
    return ranges


def release_cleared(before: list[Region], size: int) -> int:
    """Drop the pages of the zeroed buffer of `size` bytes allocated since `before` was read
    (module docstring); returns the bytes dropped (0 when no such buffer is found)."""
    if size <= 0:
        return 0
    pages = -(-size // PAGE)
    runs = [
        run
        for region in new_ranges(before, anonymous_regions())
        if region.end - region.start >= (pages - 1) * PAGE
        for run in _zero_runs(region)
        if pages - 1 <= (run.end - run.start) // PAGE <= pages
    ]
    if len(runs) != 1:
        logger.debug("KV cache stays resident: %d zero runs of %d bytes", len(runs), size)
        return 0
    run = runs[0]
    libc = ctypes.CDLL(None, use_errno=True)
    length = run.end - run.start
    libc.madvise(ctypes.c_void_p(run.start), ctypes.c_size_t(length), MADV_NOHUGEPAGE)
    if libc.madvise(ctypes.c_void_p(run.start), ctypes.c_size_t(length), MADV_DONTNEED) != 0:
        logger.debug("KV cache stays resident: madvise failed (errno %d)", ctypes.get_errno())
        return 0
    return length


def _zero_runs(region: Region) -> list[Region]:
    """Maximal runs of all-zero pages in `region` (reading an untouched page maps the shared
    zero page: nothing becomes resident)."""
    length = region.end - region.start
    buffer = (ctypes.c_char * length).from_address(region.start)
    words = np.frombuffer(memoryview(buffer), dtype=np.uint64).reshape(-1, PAGE // 8)
    zero = ~words.any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], zero, [False])).astype(np.int8)))
    return [
        Region(region.start + int(first) * PAGE, region.start + int(last) * PAGE)
        for first, last in zip(edges[::2], edges[1::2], strict=True)
    ]


def _minus(region: Region, old: Region) -> list[Region]:
    if old.end <= region.start or old.start >= region.end:
        return [region]
    pieces = []
    if region.start < old.start:
        pieces.append(Region(region.start, old.start))
    if old.end < region.end:
        pieces.append(Region(old.end, region.end))
    return pieces
