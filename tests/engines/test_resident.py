"""Giving back the pages of a cleared buffer (engines/resident.py), on real memory mappings."""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

import pytest

from toolrpc.engines import resident
from toolrpc.engines.resident import Region

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")

PAGES = 64
PAGE = mmap.PAGESIZE
SIZE = PAGES * PAGE


def allocate() -> tuple[list[Region], memoryview, int]:
    """The regions before, then a private anonymous buffer written with zeros (as llama.cpp
    clears its KV cache) between two pages holding data (neighbours of zeros would make the run
    longer), the buffer and its address."""
    before = resident.anonymous_regions()
    mapping = mmap.mmap(-1, SIZE + 2 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping[0] = mapping[SIZE + PAGE] = 1
    buffer = memoryview(mapping)[PAGE : PAGE + SIZE]
    buffer[:] = bytes(SIZE)
    return before, buffer, ctypes.addressof(ctypes.c_char.from_buffer(mapping)) + PAGE


def resident_bytes(address: int) -> int:
    """Rss of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no mapping holds the address")


def test_the_zeroed_buffer_is_given_back_and_reads_as_zeros_then_takes_writes() -> None:
    before, buffer, address = allocate()
    resident_before = resident_bytes(address)

    released = resident.release_cleared(before, SIZE)

    assert released == SIZE
    assert resident_bytes(address) <= resident_before - SIZE
    assert buffer[:] == bytes(SIZE)
    buffer[5 * PAGE] = 7
    assert buffer[5 * PAGE] == 7


def test_a_buffer_with_data_in_it_is_left_resident() -> None:
    before, buffer, address = allocate()
    buffer[SIZE // 2] = 1  # two zero runs, neither of the buffer's size
    resident_before = resident_bytes(address)

    assert resident.release_cleared(before, SIZE) == 0

    assert resident_bytes(address) >= resident_before
    assert buffer[SIZE // 2] == 1


def test_no_run_of_another_size_is_given_back() -> None:
    before, buffer, address = allocate()

    assert resident.release_cleared(before, SIZE * 2) == 0
    assert resident.release_cleared(before, SIZE // 2) == 0
    assert resident.release_cleared(before, 0) == 0
    assert resident_bytes(address) >= SIZE
    buffer.release()


def test_memory_mapped_before_is_never_looked_at() -> None:
    _, buffer, address = allocate()

    assert resident.release_cleared(resident.anonymous_regions(), SIZE) == 0
    assert resident_bytes(address) >= SIZE
    buffer.release()


def test_new_ranges_are_what_grew_or_appeared() -> None:
    before = [Region(100, 200), Region(300, 400)]
    after = [Region(50, 200), Region(300, 450), Region(500, 600)]

    assert resident.new_ranges(before, after) == [
        Region(50, 100),
        Region(400, 450),
        Region(500, 600),
    ]
