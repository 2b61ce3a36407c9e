# A multiprocessing worker (start method from argv: fork or spawn) that crashes in a
# function of this file; the parent survives and reports the worker's exit code.
import ctypes
import multiprocessing as mp
import os
import sys


def crash_in_worker():
    print(os.getpid(), flush=True)
    ctypes.string_at(0)


if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    p = ctx.Process(target=crash_in_worker)
    p.start()
    p.join()
    print("exitcode", p.exitcode, flush=True)
