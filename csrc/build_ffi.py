"""cffi build script: compiles csrc/ring.c into ``trio_uring._ring_ffi`` (API mode).

Used by setup.py (``cffi_modules``); needs only a C compiler and the kernel UAPI
headers (``<linux/io_uring.h>``), no liburing.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _cdef_from_header(header: Path) -> str:
    """ring.h minus comments and preprocessor lines: the single declaration
    of the C core's interface, so cffi's cdef cannot drift from it."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#define TU_"):
            continue
        lines.append(line)
    return "\n".join(lines)


CDEF = _cdef_from_header(HERE / "ring.h")

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "trio_uring._ring_ffi",
    '#include "ring.h"',
    sources=[str((HERE / "ring.c").relative_to(HERE.parent))],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
