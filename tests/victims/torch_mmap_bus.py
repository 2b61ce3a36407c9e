# A real PyTorch DataLoader worker that reads a memory-mapped dataset file which is
# truncated under it: the read past the file's new end is a SIGBUS, which PyTorch's worker
# handler reports ("insufficient shared memory") and re-raises.
import mmap
import os
import sys

from torch.utils.data import DataLoader, Dataset


class MappedDataset(Dataset):
    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 4

    def __getitem__(self, index):
        with open(self.path, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        print(os.getpid(), flush=True)
        os.truncate(self.path, 4096)
        return m[3 * 4096 + 8]


if __name__ == "__main__":
    path = sys.argv[1]
    with open(path, "wb") as f:
        f.write(b"\x01" * (16 * 4096))
    loader = DataLoader(MappedDataset(path), num_workers=1)
    try:
        next(iter(loader))
    except RuntimeError as e:
        print("main:", e, flush=True)
        sys.exit(1)
