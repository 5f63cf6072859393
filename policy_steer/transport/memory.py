"""Give large message buffers back to the operating system when they are freed.

A server receives frames of many sizes on libzmq's I/O thread and frees them on another. glibc serves
an allocation above its mmap threshold with its own mapping (returned to the system on free), but it
*raises* that threshold each time such a block is freed, up to 32 MiB; after that, multi-megabyte
frames come from the heaps of whichever threads touched them and stay resident once freed. Measured
on the fuzz test (8 MiB frames among 10,400 malformed messages from 4 clients): the resident memory
after each of ten identical rounds wandered between 52 and 84 MiB (and reached 106 MiB once on a loaded
machine), in steps of 8 MiB, without a trend; with the threshold fixed it stayed at 52-53 MiB in every
round. No leak: allocator retention, which a fixed threshold removes.

:func:`return_large_buffers` fixes the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns the
adjustment off). The processes that serve call it at start (``policy-steer serve`` and the fixed-chunk
test server); a library user embedding :class:`~policy_steer.transport.server.PolicyServer` may too.
Frames below the threshold (a 640x480 RGB image is 0.9 MiB) are not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
DEFAULT_THRESHOLD = 1 << 20


def return_large_buffers(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Blocks of ``threshold`` bytes or more get their own mapping, unmapped on free. True if applied
    (glibc only; elsewhere nothing changes)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return ok
