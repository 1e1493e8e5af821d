"""setuptools shim: only to hand the cffi build script to setuptools (cffi_modules)."""

from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffibuilder"])
