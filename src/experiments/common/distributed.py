"""torch.distributed helpers: init from torchrun's environment, rank queries, reductions, rank-0-only work.

Everything degrades to a no-op in a plain single process: ``rank() == 0``, ``world_size() == 1``,
``all_reduce_mean(x)`` returns ``x``. Launch a distributed run with
``python -m torch.distributed.run --standalone --nproc_per_node=N -m experiments.STUDY ...``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "init_distributed",
    "shutdown",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "all_reduce_mean",
    "reduce_metrics",
    "all_gather_objects",
    "broadcast_object",
    "main_only",
    "wrap_model",
    "configure_logging",
    "GlobalBatchNorm",
    "convert_batchnorm",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, backend and device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def rank() -> int:
    """This process's rank: from the process group, else from torchrun's RANK variable, else 0."""
    return dist.get_rank() if is_distributed() else _env_int("RANK", 0)


def world_size() -> int:
    """Number of processes: from the process group, else from torchrun's WORLD_SIZE variable, else 1."""
    return dist.get_world_size() if is_distributed() else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK, else 0)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0, the process that writes files and logs."""
    return rank() == 0


def _require_group() -> bool:
    """True if collectives must run; raise if launched for several processes but never initialised."""
    if is_distributed():
        return True
    if world_size() > 1:
        raise RuntimeError(f"launched with WORLD_SIZE={world_size()} but the process group is not initialised; "
                           "call experiments.common.distributed.init_distributed() first")
    return False


def init_distributed(device: torch.device | str = "cpu", backend: str | None = None,
                     timeout_s: float = 300.0) -> DistInfo:
    """Join the process group described by torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    Uses nccl for CUDA devices and gloo otherwise; each CUDA process gets device ``cuda:LOCAL_RANK``. Without
    those variables (a plain ``python`` launch) nothing happens and a single-process DistInfo is returned.
    """
    device = torch.device(device)
    if world_size() <= 1 and not is_distributed():
        return DistInfo(0, 1, 0, None, device)
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing and not is_distributed():
        raise RuntimeError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {', '.join(missing)} unset; launch with "
                           "python -m torch.distributed.run --nproc_per_node=N ...")
    lrank = local_rank()
    if device.type == "cuda":
        device = torch.device("cuda", lrank)
        torch.cuda.set_device(device)
    if not is_distributed():
        chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(chosen, init_method="env://", timeout=_dt.timedelta(seconds=timeout_s),
                                **({"device_id": device} if chosen == "nccl" else {}))
    info = DistInfo(dist.get_rank(), dist.get_world_size(), lrank, dist.get_backend(), device)
    _log.info("joined process group: rank %d of %d (%s on %s)", info.rank, info.world_size, info.backend, device)
    return info


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all processes (no-op when not distributed)."""
    if _require_group():
        dist.barrier()


def _collective_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (a new tensor; the input is left alone)."""
    if not _require_group():
        return tensor.clone()
    out = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes."""
    return all_reduce_sum(tensor) / world_size()


def reduce_metrics(sums: Mapping[str, float], count: float) -> dict[str, float]:
    """Global means of per-process metric sums: sum_r sums[k] / sum_r count, reduced in float64."""
    keys = sorted(sums)
    packed = torch.tensor([float(sums[k]) for k in keys] + [float(count)], dtype=torch.float64)
    total = all_reduce_sum(packed)
    if total[-1] == 0:
        raise ValueError("cannot average metrics over zero examples")
    return {k: float(total[i] / total[-1]) for i, k in enumerate(keys)}


def all_gather_objects(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable; exchanged only between this job's own processes)."""
    if not _require_group():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every process."""
    if not _require_group():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: run ``fn`` on rank 0 only; other ranks get None."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


def wrap_model(model: torch.nn.Module, device: torch.device | None = None, **ddp_kwargs: Any) -> torch.nn.Module:
    """Wrap ``model`` in DistributedDataParallel when distributed; return it unchanged otherwise."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device is not None and device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index])
    return DistributedDataParallel(model, **ddp_kwargs)


def configure_logging(level: int = logging.INFO, file: str | os.PathLike[str] | None = None) -> None:
    """Log at ``level`` on rank 0 (also to ``file`` if given) and only warnings, prefixed with the rank, elsewhere."""
    r = rank()
    prefix = f"[rank {r}] " if world_size() > 1 else ""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if file is not None and r == 0:
        handlers.append(logging.FileHandler(file))
    logging.basicConfig(level=level if r == 0 else logging.WARNING, handlers=handlers, force=True,
                        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return all_reduce_sum(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return all_reduce_sum(grad)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the *global* batch of all processes, on any device (gloo included).

    In training mode under torch.distributed, the mean and variance are all-reduced (differentiably) over the
    processes, so a DDP step on shards equals a single-process step on the whole batch, BatchNorm included
    (``nn.SyncBatchNorm`` does this on GPUs only). Outside a process group, or in eval mode, it is a plain
    BatchNorm. Accepts ``(N, C)``, ``(N, C, L)`` and ``(N, C, H, W)`` inputs; build it with
    :func:`convert_batchnorm`.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = all_reduce(x.new_tensor([x.numel() / x.shape[1]]))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / count  # biased, as BatchNorm normalises with it
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in ``module`` by a :class:`GlobalBatchNorm` sharing its parameters and
    buffers (in place for submodules; returns the converted module)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
