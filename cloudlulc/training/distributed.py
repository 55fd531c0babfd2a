"""Process-group setup for data-parallel training launched by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and tells each its
place through ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them, joins the process group (NCCL on CUDA, gloo on the CPU) and picks the
device of the local rank. Without those variables training runs in one process and every helper
here is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cloudlulc.errors import CloudLULCError
from cloudlulc.inference.device import resolve_device


class DistributedSetupError(CloudLULCError, RuntimeError):
    """The torchrun environment and the requested device do not fit together."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    #: this call joined the process group, so :func:`teardown` leaves it
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and artifacts."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over every process (a new tensor; the input itself when not distributed)."""
        if not self.distributed:
            return tensor
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (if any) and choose this process's device.

    ``device="auto"`` or ``"cuda"`` under torchrun uses ``cuda:LOCAL_RANK`` when GPUs exist, else the
    CPU with gloo. A process group the caller has already initialised is used as is.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise DistributedSetupError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise DistributedSetupError(
                f"LOCAL_RANK {local_rank} has no GPU: this node has {n}; start torchrun with "
                f"--nproc_per_node {n} (one process per GPU) or train on the CPU with device='cpu'"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise DistributedSetupError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {dev}")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev, owns_group=owns
    )


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` joined it (after a last barrier)."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
