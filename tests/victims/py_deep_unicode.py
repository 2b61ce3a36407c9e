# 1000 Python calls deep in a function with a non-ASCII name, then a crash.
import ctypes
import sys

sys.setrecursionlimit(5000)


def 深い(n):
    if n == 0:
        ctypes.string_at(0)
    return 深い(n - 1)


深い(1000)
