"""Training utilities: seeding, RNG capture, device choice, progress bars and a resumable loop.

:class:`ResumableLoop` makes a run that is killed at any moment and continued with ``--resume`` end with exactly
the metrics and CSV logs of an uninterrupted run::

    run = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite)
    seed_everything(args.seed)
    model, opt, meter = ..., ..., Meter()
    loop = ResumableLoop(run, epochs=args.epochs, seed=args.seed, num_examples=len(train),
                         batch_size=args.batch_size, checkpoint_every=100)
    loop.track(model=model, optimizer=opt, meter=meter)
    loop.restore()                       # no-op on a fresh run
    for epoch in loop.epochs():
        for step in loop.steps():        # resumes mid-epoch where the checkpoint left off
            x = augment(train.images[step.indices], step.generator)
            ...; meter.add(loss=loss.item() * n, count=n); log.log(step=step.global_step, ...)
        epoch_log.log(epoch=epoch, **meter.means()); meter.reset()   # per-epoch resets at the END

Rules that keep resumption exact: every piece of state that outlives a step lives in a tracked object (anything with
``state_dict``/``load_state_dict``); randomness comes from the global RNGs (captured in checkpoints) or from
``step.generator`` (a function of seed, epoch and step); code between ``for epoch`` and ``for step`` runs again when
an epoch is resumed, so resets belong at the end of the epoch body.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

from invertible.checkpoint import get_rng_state, set_rng_state

from . import distributed
from .data.batches import epoch_batches, make_generator, shard
from .data.batches import steps_per_epoch as count_steps
from .runs import Run

__all__ = [
    "DeviceError",
    "seed_everything",
    "capture_rng_state",
    "restore_rng_state",
    "resolve_device",
    "progress",
    "Meter",
    "Step",
    "ResumableLoop",
    "Stopwatch",
    "Clock",
]

_log = logging.getLogger(__name__)

capture_rng_state = get_rng_state
"""Capture python, numpy, torch (and CUDA) RNG states as checkpoint-safe data."""
restore_rng_state = set_rng_state
"""Restore RNG states captured by :func:`capture_rng_state`."""


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python's, numpy's and torch's global RNGs (all CUDA devices included); optionally force determinism."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device, with a clear error if CUDA is absent."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise DeviceError(f"--device {spec} was requested but no CUDA device is available (torch "
                          f"{torch.__version__} {built}); use --device cpu or --device auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {spec} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str | None = None,
             enabled: bool | None = None, **kwargs: Any) -> Any:
    """A tqdm progress bar, disabled when stderr is not a terminal or on non-zero ranks (unless ``enabled``)."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = distributed.is_main() and sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True, **kwargs)


class Meter:
    """Running sums of metrics (float64 python floats) with a checkpointable state."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0.0

    def add(self, count: float = 1.0, **sums: float) -> None:
        """Add per-batch sums (e.g. loss * batch size) and the number of examples they cover."""
        for key, value in sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += float(count)

    def means(self, reduce: bool = True) -> dict[str, float]:
        """Means over all examples added (over all processes when distributed and ``reduce``)."""
        if reduce and distributed.is_distributed():
            return distributed.reduce_metrics(self.sums, self.count)
        if self.count == 0:
            return {k: float("nan") for k in self.sums}
        return {k: v / self.count for k, v in self.sums.items()}

    def reset(self) -> None:
        """Forget everything added."""
        self.sums, self.count = {}, 0.0

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.sums, self.count = dict(state["sums"]), float(state["count"])


@dataclass(frozen=True)
class Step:
    """One training step: its position, example indices (if any) and its own generator.

    ``indices`` are this process's slice of ``global_indices`` (equal when not distributed). For a distributed
    run to match a single-process run exactly, draw random augmentation for the global batch with ``generator``
    and keep this process's part with :meth:`local`.
    """

    epoch: int
    index: int  # step number within the epoch
    global_step: int  # steps completed before this one, over all epochs
    indices: torch.Tensor | None
    global_indices: torch.Tensor | None
    generator: torch.Generator

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a tensor computed for the whole global batch."""
        return shard(batch, distributed.rank(), distributed.world_size())


class ResumableLoop:
    """Epoch/step iteration that checkpoints tracked state and resumes bit-for-bit (see the module docstring)."""

    def __init__(self, run: Run | None, *, epochs: int, seed: int, num_examples: int | None = None,
                 batch_size: int | None = None, steps_per_epoch: int | None = None, shuffle: bool = True,
                 drop_last: bool = False, checkpoint_every: int = 0, progress_bar: bool | None = None,
                 desc: str = "train") -> None:
        if (num_examples is None) == (steps_per_epoch is None):
            raise ValueError("give either num_examples and batch_size, or steps_per_epoch")
        if num_examples is not None and batch_size is None:
            raise ValueError("num_examples needs batch_size")
        self.run, self.epochs_total, self.seed = run, epochs, seed
        self.num_examples, self.batch_size, self.shuffle, self.drop_last = num_examples, batch_size, shuffle, drop_last
        self.steps_per_epoch = (steps_per_epoch if steps_per_epoch is not None
                                else count_steps(num_examples, batch_size, drop_last))  # type: ignore[arg-type]
        self.checkpoint_every = checkpoint_every
        self.epoch = self.step_in_epoch = self.global_step = 0
        self._tracked: dict[str, Any] = {}
        self._bar: Any = None
        self._bar_enabled, self._desc = progress_bar, desc

    def track(self, **objects: Any) -> None:
        """Register objects (models, optimizers, schedulers, meters) whose state_dict goes into checkpoints."""
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"{name!r} has no state_dict/load_state_dict, so it cannot be checkpointed")
            self._tracked[name] = obj

    @property
    def finished(self) -> bool:
        """True when all epochs are done."""
        return self.epoch >= self.epochs_total

    def restore(self) -> bool:
        """Load tracked state, RNG states and position from the run's resume checkpoint; False if there is none."""
        state = self.run.resume_state if self.run is not None else None
        if not state or "loop" not in state:
            return False
        missing = sorted(set(self._tracked) - set(state["state"]))
        if missing:
            raise ValueError(f"the checkpoint has no state for {missing}; it holds {sorted(state['state'])}")
        for name, obj in self._tracked.items():
            obj.load_state_dict(state["state"][name])
        position = state["loop"]
        self.epoch, self.step_in_epoch, self.global_step = position["epoch"], position["step"], position["global"]
        rngs = state["rng"]
        r = distributed.rank()
        if len(rngs) != distributed.world_size():
            _log.warning("checkpoint has RNG states of %d processes, now %d run; using rank 0's", len(rngs),
                         distributed.world_size())
            r = 0
        restore_rng_state(rngs[r])
        _log.info("resumed at epoch %d, step %d (global step %d)", self.epoch, self.step_in_epoch, self.global_step)
        return True

    def checkpoint(self) -> None:
        """Save position, tracked state and every process's RNG states to the run's latest.pt (collective)."""
        rngs = distributed.all_gather_objects(capture_rng_state())
        if self.run is None:
            return
        self.run.save_checkpoint(
            loop={"epoch": self.epoch, "step": self.step_in_epoch, "global": self.global_step},
            state={name: obj.state_dict() for name, obj in self._tracked.items()},
            rng=rngs,
        )

    def epochs(self) -> Iterator[int]:
        """Yield the remaining epoch numbers; after each epoch body, advance and checkpoint."""
        try:
            while self.epoch < self.epochs_total:
                yield self.epoch
                if self.step_in_epoch < self.steps_per_epoch:
                    raise RuntimeError(f"epoch {self.epoch} ended after {self.step_in_epoch} of "
                                       f"{self.steps_per_epoch} steps; iterate loop.steps() to the end")
                self.epoch += 1
                self.step_in_epoch = 0
                self.checkpoint()
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def steps(self) -> Iterator[Step]:
        """Yield the remaining steps of the current epoch; after each step body, advance and maybe checkpoint."""
        if self._bar is None:
            self._bar = progress(total=self.epochs_total * self.steps_per_epoch, desc=self._desc,
                                 enabled=self._bar_enabled, initial=self.global_step)
        batches: Iterator[torch.Tensor] | None = None
        if self.num_examples is not None:
            batches = epoch_batches(self.num_examples, self.batch_size, self.seed, self.epoch,  # type: ignore[arg-type]
                                    shuffle=self.shuffle, drop_last=self.drop_last, start=self.step_in_epoch)
        for index in range(self.step_in_epoch, self.steps_per_epoch):
            indices = global_indices = None
            if batches is not None:
                global_indices = next(batches)
                indices = shard(global_indices, distributed.rank(), distributed.world_size())
            yield Step(self.epoch, index, self.global_step, indices, global_indices,
                       make_generator(self.seed, self.epoch, index))
            self.step_in_epoch = index + 1
            self.global_step += 1
            self._bar.update(1)
            if self.checkpoint_every and self.global_step % self.checkpoint_every == 0:
                self.checkpoint()

    def set_postfix(self, **values: Any) -> None:
        """Show ``values`` beside the progress bar."""
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()},
                                  refresh=False)


class Stopwatch:
    """CPU time of this process and wall-clock time since it was started, for a run's metrics.

    Example:
        >>> watch = Stopwatch()
        >>> sorted(watch.seconds())
        ['cpu_seconds', 'wall_seconds']
    """

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> dict[str, float]:
        """``{"cpu_seconds": ..., "wall_seconds": ...}`` elapsed since construction."""
        return {"cpu_seconds": time.process_time() - self.cpu, "wall_seconds": time.perf_counter() - self.wall}


class Clock:
    """Wall and CPU time of a run (this process), carried across resumptions: track it in the checkpoints
    (``loop.track(clock=clock)``) and the times of a resumed run continue from where the checkpoint left them."""

    def __init__(self) -> None:
        self.offset, self.cpu_offset = 0.0, 0.0
        self.start, self.cpu_start = time.time(), time.process_time()

    def elapsed(self) -> float:
        """Wall seconds so far."""
        return self.offset + time.time() - self.start

    def cpu(self) -> float:
        """CPU seconds of this process so far (all its threads)."""
        return self.cpu_offset + time.process_time() - self.cpu_start

    def state_dict(self) -> dict[str, float]:
        """Checkpointable state."""
        return {"elapsed": self.elapsed(), "cpu": self.cpu()}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Continue from :meth:`state_dict`."""
        self.offset, self.cpu_offset = float(state["elapsed"]), float(state.get("cpu", 0.0))
        self.start, self.cpu_start = time.time(), time.process_time()
