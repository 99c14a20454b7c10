"""A tiny study (an MLP on sklearn digits) that the tests use to check exact resumption and DDP equivalence.

It uses the shared infrastructure the real studies use: common CLI arguments, a run folder, CSV logs, metrics, the
resumable loop (model, optimizer, LR scheduler and a meter tracked), seeded per-step augmentation, dropout (global
RNG) and, under torchrun, DistributedDataParallel with sharded batches and all-reduced metrics. It can crash itself
at a chosen point, by SIGKILL or by raising, to simulate a killed run.

Run: python tests/experiments/tiny_study.py --out /tmp/tiny [--resume] [--crash-at-step K]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

import torch
import torch.nn.functional as F

from experiments.common import distributed
from experiments.common.cli import add_common_args
from experiments.common.data import load_dataset, random_hflip, to_float
from experiments.common.runs import open_run
from experiments.common.training import Meter, ResumableLoop, resolve_device, seed_everything

CRASH_KEYS = ("crash_at_step", "crash_at_epoch_end", "crash_mode")


class Crash(Exception):
    """Raised to simulate a run killed at a chosen point (in-process tests)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser, epochs=4, batch_size=32, default_out=None)
    parser.add_argument("--hidden", type=int, default=32, help="Width of the hidden layer.")
    parser.add_argument("--dropout", type=float, default=0.1, help="Dropout probability (uses the global RNG).")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate.")
    parser.add_argument("--float64", action="store_true", help="Train in float64.")
    parser.add_argument("--checkpoint-every", type=int, default=20, help="Steps between checkpoints.")
    parser.add_argument("--crash-at-step", type=int, default=-1, help="Crash after this global step's update.")
    parser.add_argument("--crash-at-epoch-end", type=int, default=-1, help="Crash after logging this epoch.")
    parser.add_argument("--crash-mode", choices=["kill", "raise"], default="kill", help="How to crash.")
    return parser


def _crash(mode: str) -> None:
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise Crash()


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Loss and accuracy on (x, y), each process taking its shard, reduced over processes."""
    part = torch.tensor_split(torch.arange(len(y)), distributed.world_size())[distributed.rank()]
    model.eval()
    with torch.no_grad():
        out = model(x[part])
        loss = F.cross_entropy(out, y[part], reduction="sum").item()
        correct = (out.argmax(1) == y[part]).sum().item()
    model.train()
    return distributed.reduce_metrics({"loss": loss, "acc": correct}, len(part))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    run = None
    try:
        run = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite, ignore=CRASH_KEYS)
        seed_everything(args.seed)
        dtype = torch.float64 if args.float64 else torch.float32
        train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
        test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
        x_test = to_float(test.images, test.levels, dtype=dtype).flatten(1)

        model = torch.nn.Sequential(
            torch.nn.Linear(64, args.hidden), torch.nn.Tanh(), torch.nn.Dropout(args.dropout),
            torch.nn.Linear(args.hidden, 10),
        ).to(dtype)
        net = distributed.wrap_model(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        meter = Meter()
        loop = ResumableLoop(run, epochs=args.epochs, seed=args.seed, num_examples=len(train),
                             batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, progress_bar=False)
        loop.track(model=model, optimizer=optimizer, scheduler=scheduler, meter=meter)
        loop.restore()
        steps_log = run.csv("steps", ["step", "epoch", "loss", "lr"])
        epoch_log = run.csv("epochs", ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"])

        for epoch in loop.epochs():
            for step in loop.steps():
                # Augment the whole global batch with the step's generator, then keep this process's part.
                images = random_hflip(train.images[step.global_indices], step.generator)
                x = step.local(to_float(images, train.levels, dtype=dtype).flatten(1))
                y = train.labels[step.indices]
                out = net(x)
                loss = F.cross_entropy(out, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step.global_step == args.crash_at_step:
                    _crash(args.crash_mode)
                meter.add(count=len(y), loss=loss.item() * len(y), acc=(out.argmax(1) == y).sum().item())
                steps_log.log(step=step.global_step, epoch=epoch,
                              loss=distributed.all_reduce_mean(loss.detach()).item(), lr=scheduler.get_last_lr()[0])
            train_means = meter.means()
            test_means = _evaluate(model, x_test, test.labels)
            epoch_log.log(epoch=epoch, train_loss=train_means["loss"], train_acc=train_means["acc"],
                          test_loss=test_means["loss"], test_acc=test_means["acc"])
            if epoch == args.crash_at_epoch_end:
                _crash(args.crash_mode)
            meter.reset()
            scheduler.step()

        final = _evaluate(model, x_test, test.labels)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        spread = max((f - flat).abs().max().item() for f in distributed.all_gather_objects(flat))
        run.update_metrics(test_loss=final["loss"], test_acc=final["acc"], steps=loop.global_step,
                           rank_param_spread=spread, world_size=distributed.world_size())
        return dict(run.metrics)
    finally:
        if run is not None:
            run.close()
        distributed.shutdown()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
