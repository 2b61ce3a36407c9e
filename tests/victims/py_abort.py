# os.abort() two calls deep.
import os


def inner():
    os.abort()


def outer():
    inner()


outer()
