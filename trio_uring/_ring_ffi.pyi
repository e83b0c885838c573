# Type stub for the cffi-compiled ring core (csrc/ring.c, built by csrc/build_ffi.py).
from typing import Any

ffi: Any
lib: Any
