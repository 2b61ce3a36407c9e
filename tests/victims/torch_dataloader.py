# A real PyTorch DataLoader worker that segfaults in the dataset: the worker renames itself
# pt_data_worker and installs PyTorch's SIGSEGV handler, which re-raises. The main process
# then fails with "DataLoader worker (pid N) is killed by signal: Segmentation fault".
import ctypes
import os
import sys

from torch.utils.data import DataLoader, Dataset


class CrashingDataset(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        print(os.getpid(), flush=True)
        ctypes.string_at(0)


if __name__ == "__main__":
    loader = DataLoader(CrashingDataset(), num_workers=1)
    try:
        next(iter(loader))
    except RuntimeError as e:
        print("main:", e, flush=True)
        sys.exit(1)
