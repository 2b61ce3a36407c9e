# A Python crash three Python calls deep, through ctypes.
import ctypes


def third():
    return ctypes.string_at(0)


def second():
    return third()


def first():
    return second()


first()
