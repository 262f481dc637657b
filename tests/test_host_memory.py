"""`keep_freed_host_memory`: a large block freed by a worker thread is reused by the next
allocation without page faults (what a CPU train step's temporaries need), while glibc's
default maps fresh pages each time."""

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc settings")

_PROBE = """
import ctypes, json, resource, sys, threading
from easylm_imitate.train.host_memory import keep_freed_host_memory

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

applied = keep_freed_host_memory() if sys.argv[1] == "keep" else None
faults = []

def round_trip():  # malloc, touch every page, free: as XLA:CPU does a step's temporaries
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(256 * 2**20)
    ctypes.memset(block, 1, 256 * 2**20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

for _ in range(3):
    worker = threading.Thread(target=round_trip)
    worker.start()
    worker.join()
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    default = _faults("default")
    kept = _faults("keep")
    assert kept["applied"] is True
    # By default every round maps fresh pages and faults them all in again (one fault per
    # page; per huge page where the kernel backs anonymous memory with them).
    assert default["faults"][0] > 0 and min(default["faults"][1:]) >= default["faults"][0] // 2, default
    # Kept: only the first round faults its pages in; later rounds reuse them.
    assert kept["faults"][0] >= default["faults"][0] // 2, kept
    assert max(kept["faults"][1:]) <= min(default["faults"][1:]) // 100, (kept, default)
