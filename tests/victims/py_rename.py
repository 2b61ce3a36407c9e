# Renames the main thread (and so the process) the way PyTorch's DataLoader workers do,
# then crashes: `--comm python` must still catch it through the executable's name.
import ctypes

PR_SET_NAME = 15
libc = ctypes.CDLL(None)
libc.prctl(PR_SET_NAME, b"pt_data_worker", 0, 0, 0)


def crash_renamed():
    ctypes.string_at(0)


crash_renamed()
