"""setuptools shim: everything is in pyproject.toml except the C modules.

* ``trio_uring._ring_ffi`` (cffi, API mode): the ring core, csrc/ring.c.
* ``trio_uring._speedups`` (CPython C API): the per-operation hot path of
  native ops, csrc/speedups.c (see its design comment).
"""

from setuptools import Extension, setup

setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    ext_modules=[
        Extension(
            "trio_uring._speedups",
            sources=["csrc/speedups.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
        )
    ],
)
