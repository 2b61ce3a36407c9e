# A two-rank job under the real torchrun (gloo over loopback): rank 1 segfaults inside a
# training step while rank 0 waits for it in all_reduce; the elastic agent then stops
# rank 0 with SIGTERM. Each rank prints "rank R pid P" first.
import ctypes
import os
import time

import torch
import torch.distributed as dist


def train_step(rank):
    grads = torch.ones(1024)
    if rank == 1:
        # Rank 0 is in all_reduce by then.
        time.sleep(1.0)
        ctypes.string_at(0)
    dist.all_reduce(grads)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # One write, so the two ranks' lines on the shared pipe never interleave (print
    # writes the text and its newline apart).
    os.write(1, f"rank {rank} pid {os.getpid()}\n".encode())
    train_step(rank)
