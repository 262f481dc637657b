"""Keep the memory XLA:CPU frees inside the process, so a train step's temporary buffers are
reused instead of page-faulted in afresh every step.

XLA:CPU allocates each step's temporaries (3.5 GB for a SmolLM2-135M step at 4 x 512) with
`malloc` from its worker threads and frees them when the step ends. With glibc's defaults a
request that size from a worker thread is served by a fresh `mmap` and returned by `munmap`,
so the next step touches brand-new pages: ~950,000 page faults per step, ~10% of the step.
Serving everything from the main heap (one arena, no `mmap`) and never trimming it makes
the second and later steps fault-free. The cost: the process keeps its peak memory, which a
training run reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import platform

# <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_freed_host_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from one heap it never shrinks.

    Returns True when applied, False where the C library is not glibc (nothing changes).
    Affects allocations made after the call; safe to call more than once.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # -1 converts to SIZE_MAX inside glibc: a top-of-heap free is never given back.
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    return all(mallopt(param, value) == 1 for param, value in settings)
