"""Tests run on the CPU: Triton kernels in Triton's interpreter, with flashsuite's fixes for
its bfloat16 handling (harness/interpreter.py). This must run before any kernel module is
imported, which conftest.py guarantees."""

from harness import interpreter

interpreter.enable()
