"""Data-parallel training across processes: ``torch.distributed`` + ``DistributedDataParallel``.

Launched by ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); without those variables, or with ``WORLD_SIZE=1``, training is the single
process it always was and nothing here is initialised. Backend: NCCL for CUDA devices (rank r
trains on ``cuda:LOCAL_RANK``), gloo on CPU. Every collective has the ``--dist-timeout``, so a
rendezvous that never completes or a peer that died ends the run with an error, not a hang.

What a step is across ranks (``loop.Trainer.train_step``): W ranks x B sequences per rank, the
sequence of global index ``(step * W + rank) * B + b``; each sequence draws its queries and
dropout from its own seed (seed, index), so the same sequences give the same numbers whichever
rank trains them. Gradients are averaged over all W * B sequences (DDP averages over ranks, each
rank over its B); every sequence samples from the hard-example map as it was at the start of the
step, and the map's changes are summed over all sequences (an all-reduce) at its end.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch

from model_def.errors import UserError

ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(UserError):
    """The process group cannot be formed or a peer is gone."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs and writes checkpoints."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """This rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
        return f"cuda:{self.local_rank}" if self.enabled and device == "cuda" else device

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (every rank must call it)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=self._collective_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over the ranks (float64)."""
        if not self.enabled:
            return np.asarray(values, np.float64)
        t = torch.from_numpy(np.ascontiguousarray(values, np.float64)).to(self._collective_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t.cpu().numpy()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel`` around ``module`` (broadcasts rank 0's weights). Unused
        parameters are allowed: the L_feat connectors train only with a teacher, the dense heads
        only in windows with depth. ``device_ids=None``: the module is on one device already, and
        the inputs (event windows, numpy arrays) are not tensors to move."""
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # a few weights (2x2 patch convolutions) have strides the reducer's buckets do not copy
        # without a copy: a speed note torch prints on every rank, not a fault
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(module, device_ids=None, find_unused_parameters=True)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _collective_device(self) -> torch.device:
        return (torch.device(f"cuda:{self.local_rank}")
                if torch.distributed.get_backend() == "nccl" else torch.device("cpu"))


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def peer_lost(exc: BaseException) -> bool:
    """Whether a collective failed because another rank is gone (or did not answer in time)."""
    backend_error = getattr(torch.distributed, "DistBackendError", ())
    text = str(exc)
    return (isinstance(exc, backend_error) or "closed by peer" in text or "Connection reset" in text
            or "Timed out" in text or "timed out" in text)


def _env_int(name: str, default: str | None = None) -> int:
    text = os.environ.get(name) or default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise DistributedError(f"${name}={text!r} is not an integer: launch with torchrun (it sets it)") from None


def from_environment(device: str, timeout_s: float) -> Dist:
    """The process group torchrun asked for (``Dist()`` when it asked for none)."""
    world = _env_int("WORLD_SIZE", "1")
    if world <= 1:
        return Dist()
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with "
                               "torchrun (it sets them), e.g. torchrun --nproc-per-node 2 -m eventspd_export train ...")
    dist = Dist(_env_int("RANK"), world, _env_int("LOCAL_RANK"))
    if not 0 <= dist.rank < world:  # would otherwise wait out the rendezvous timeout for a peer that cannot exist
        raise DistributedError(f"RANK={dist.rank} is not in 0..{world - 1} (WORLD_SIZE={world}): launch with torchrun")
    if dist.local_rank < 0:
        raise DistributedError(f"LOCAL_RANK={dist.local_rank} is negative: launch with torchrun")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(dist.local_rank)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        torch.distributed.init_process_group(backend, rank=dist.rank, world_size=world,
                                             timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as exc:  # the store raises several types for a missing or refused peer
        raise DistributedError(f"rank {dist.rank}: no rendezvous with the other {world - 1} process(es) at "
                               f"{where} within {timeout_s:g} s ({first_line(exc)}); are all ranks launched "
                               "with the same --nnodes/--nproc-per-node and rendezvous address?") from None
    return dist
