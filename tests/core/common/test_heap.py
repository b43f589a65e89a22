"""retained_heap: a loop's freed blocks are reused inside it (no page faults), and handed back when it ends.

Faults and resident memory depend on what the process allocated before, so they are measured in a fresh
interpreter."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading

import pytest

from sae_assets.core.common import heap

MEASURE = """
import json, resource, torch
from sae_assets.core.common.heap import retained_heap

BLOCK = 10 * 1024 * 1024  # float32 values: 40 MiB, above glibc's largest dynamic mmap threshold (32 MiB)

def faults(iterations=6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(iterations):
        block = torch.ones(BLOCK)  # written: every page is touched
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

out = {"pages": BLOCK * 4 // resource.getpagesize(), "outside": faults()}
with retained_heap():
    faults(24)  # glibc settles on reusing the block within the first ten or so
    out["inside"] = faults()
before = rss()
with retained_heap():
    block = torch.ones(BLOCK * 3 // 2)  # 60 MiB
    del block
    out["kept"] = rss() - before
out["returned"] = rss() - before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def measured() -> dict[str, int]:
    if heap._LIBC is None:
        pytest.skip(f"glibc only ({platform.system()} {platform.libc_ver()})")
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_blocks_are_reused_inside_and_faulted_in_each_time_outside(measured: dict[str, int]) -> None:
    # mapped and unmapped every iteration: each of its pages faulted in again (fewer faults where the kernel backs
    # the block with transparent huge pages, but at least one per iteration)
    assert measured["outside"] >= 6
    assert measured["inside"] * 10 < min(measured["outside"], 5 * measured["pages"])  # reused


def test_memory_is_returned_on_leaving(measured: dict[str, int]) -> None:
    assert measured["kept"] > 40 * 2**20  # freed, but kept for the next iteration
    assert measured["returned"] < 16 * 2**20


def test_nested_and_concurrent_uses_restore_once_the_last_leaves() -> None:
    started, release = threading.Event(), threading.Event()

    def other() -> None:
        with heap.retained_heap():
            started.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with heap.retained_heap():
        thread.start()
        started.wait(10)
        with heap.retained_heap():
            assert heap.active()
        assert heap.active()
    assert heap.active()  # the thread still holds it
    release.set()
    thread.join(10)
    assert not heap.active()
