"""setuptools shim: everything is in pyproject.toml except the cffi module."""

from setuptools import setup

setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
