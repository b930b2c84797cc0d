"""Running a test function in real torch.distributed processes (gloo, 127.0.0.1)."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, size: int, port: int, args: tuple, backend: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
                      NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=size)
    try:
        fn(rank, size, *args)
        # Every rank done before any tears its group down: gloo destroyed while a peer still
        # talks to it aborts the process ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(fn, size: int = 2, *args, backend: str = "gloo") -> None:
    """`fn(rank, size, *args)` in `size` processes (gloo; "nccl": one GPU each); a failure
    in any re-raises here with that process's traceback (torch.multiprocessing.spawn)."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(fn, size, free_port(), args, backend), nprocs=size, join=True)
