"""The training run: model, loop, regularizers, memory saving, logs, checkpoints, final measurements."""

from __future__ import annotations

import argparse
import bisect
import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from invertible import InvertibleModule
from invertible.checkpoint import CheckpointError
from invertible.memory import MemorySaving
from invertible.models import FlowStep, INNClassifier
from invertible.regularizers import fd_direction, forward_fd, inverse_fd, nf_term

from ..common import distributed
from ..common.runs import Run, open_run, read_csv
from ..common.study import RUNNER_KEYS
from ..common.training import Clock, Meter, ResumableLoop, Step, seed_everything
from . import figures, measure
from .data import FIXED, ClassifierData, load
from .options import NON_RESULT

__all__ = ["ConfigError", "EPOCH_FIELDS", "EVERY_N_FIELDS", "ITERATION_FIELDS", "SVD_FIELDS", "build_model",
           "check_resume", "prepare", "run"]

_log = logging.getLogger("experiments.classification")

_STATS = [f"{p}_{s}" for p in ("w", "g", "z") for s in ("norm", "min", "max", "mean", "std")]
#: Columns of iteration_log.csv (every iteration). ``global_iteration`` counts the updates done so far.
ITERATION_FIELDS = ["global_iteration", "epoch", "time_elapsed", "lr", "xentropy_loss", "loss", "nf_term",
                    "fd_term", "fd_inv_term", "train_acc", *_STATS]
#: Columns of every_N_log.csv (every --log-every iterations; reconstruction errors on the fixed test batch).
EVERY_N_FIELDS = [*ITERATION_FIELDS[:10], "min_recons_error", "max_recons_error", "mean_recons_error",
                  "std_recons_error", "max_relative_recons_error", "nonfinite_recons", "grad_angle",
                  "grad_rel_error", *_STATS]
#: Columns of svd_log.csv (every --svd-every iterations).
SVD_FIELDS = ["global_iteration", "mean_recons_error", "condition_num", "max_sv", "min_sv", "inverse_condition_num",
              "inverse_max_sv", "inverse_min_sv", "condition_num_train_dtype", "logdet_error"]
#: Columns of epoch_log.csv (every --eval-every epochs and after the last one). ``invertible`` is the library's
#: verdict over the whole train and test sets (1: every reconstruction finite and within ``NONINVERTIBLE_RTOL``
#: relative), ``kappa_at_worst`` the condition number (exact, float64) at the worst-reconstructed image of either.
EPOCH_FIELDS = ["epoch", "global_iteration", "time_elapsed", "lr", "train_loss", "test_loss", "train_acc", "test_acc",
                "mean_train_recons_error", "std_train_recons_error", "max_train_recons_error",
                "max_relative_train_recons_error", "nonfinite_train_recons", "mean_test_recons_error",
                "std_test_recons_error", "max_test_recons_error", "max_relative_test_recons_error",
                "nonfinite_test_recons", "invertible", "kappa_at_worst"]
#: Columns of grad_log.csv (every --grad-check-every iterations): memory-saving against standard gradients of the
#: classification loss on a fixed batch of training images (eval mode), beside the condition number (exact, float64,
#: largest over the first --svd-samples images of the batch) and the batch's reconstruction errors.
GRAD_FIELDS = ["global_iteration", "grad_angle", "grad_rel_error", "grad_finite", "kappa", "sigma_min",
               "max_relative_recons_error", "nonfinite_recons"]


class ConfigError(ValueError):
    """The flags describe a model or run that cannot be built (e.g. too many levels for the image size)."""


class _Net(nn.Module):
    """What DistributedDataParallel wraps: the classifier run through ``flow`` (plain or memory-saving)."""

    def __init__(self, model: INNClassifier, flow: InvertibleModule) -> None:
        super().__init__()
        self.model, self.flow = model, flow

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model(x, flow=self.flow)


def build_model(args: argparse.Namespace, shape: tuple[int, int, int], num_classes: int) -> INNClassifier:
    """The classifier described by the flags (a :class:`ConfigError` if it cannot exist)."""
    try:
        step = FlowStep(hidden=args.hidden_channels, coupling=args.coupling, permutation=args.permutation,
                        actnorm=args.use_actnorm, actnorm_eps=args.an_stable_eps,
                        net_actnorm=args.use_actnorm_in_blocks, scale_fn=args.affine_scale_fn,
                        zero_init=args.zero_init)
        return INNClassifier(
            shape, num_classes, levels=args.n_levels, depth=args.depth, step=step, affine_eps=args.affine_eps,
            zs_dim=args.zs_dim, inj_pad=args.inj_pad, prior=args.use_prior, learn_top=args.learntop,
            n_bits=args.n_bits_x, seed=args.seed)
    except ValueError as exc:
        c, h, w = shape
        raise ConfigError(f"impossible architecture for {args.dataset} ({c}x{h}x{w} images): {exc}") from exc


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def _direction(shape: tuple[int, ...], like: Tensor, variant: str, generator: torch.Generator) -> Tensor:
    """Finite-difference directions for the global batch, drawn on the CPU with the step's generator (the same
    numbers on any device and for any number of processes), then moved to ``like``'s device."""
    return fd_direction(torch.empty(shape, dtype=like.dtype), variant, generator).to(like.device)


def _train_step(net: nn.Module, model: INNClassifier, flow: InvertibleModule, data: ClassifierData, step: Step,
                args: argparse.Namespace, optimizer: torch.optim.Optimizer, check: bool
                ) -> tuple[dict[str, float], dict[str, Any]]:
    """One update on this process's share of the global batch; returns its stats and the memory-saving check."""
    x_global = data.augmented(step.global_indices, step.generator)
    x = step.local(x_global)
    y = data.train.labels[step.indices].to(x.device)
    world, n, n_global = distributed.world_size(), len(y), len(step.global_indices)
    weight = n * world / n_global  # DDP averages over processes: this makes it the global batch mean
    checking = flow.checking(check) if isinstance(flow, MemorySaving) else contextlib.nullcontext()
    with checking as run_check:
        logits, z, logdet = net(x)
        xent = model.loss(logits, y)
        means: dict[str, Tensor] = {}
        sums: dict[str, Tensor] = {}
        if step.global_step % args.regularize_every == 0:
            if args.nf_coeff > 0:
                extra = model.log_prior(z) if model.learn_top else 0.0
                means["nf"] = nf_term(z, logdet + extra, args.nf_coeff, prior=args.use_prior and not model.learn_top,
                                      levels=round(2 ** args.n_bits_x))
            fd_terms = sums if args.fd_variant == "original" else means
            x_in = model.flow_input(x)
            if args.fd_coeff > 0:
                d = step.local(_direction((n_global, *x_in.shape[1:]), x_in, args.fd_variant, step.generator))
                fd_terms["fd"] = forward_fd(flow, x_in, z=z, coeff=args.fd_coeff, eps=args.fd_eps,
                                            variant=args.fd_variant, direction=d)
            if args.fd_inv_coeff > 0:
                d = step.local(_direction((n_global, *z.shape[1:]), z, args.fd_variant, step.generator))
                fd_terms["fd_inv"] = inverse_fd(flow, x_in, z=z, coeff=args.fd_inv_coeff, eps=args.fd_eps,
                                                variant=args.fd_variant, direction=d)
        objective = weight * (xent + sum(means.values())) + world * sum(sums.values())
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
    optimizer.step()
    loss = xent + sum(means.values()) + sum(sums.values())
    stats = measure.step_stats(z, logits, y, xent, xent + sum(means.values()))
    stats.update({f"mean_{k}": float(v.detach()) * n for k, v in means.items()})
    stats.update({f"sum_{k}": float(v.detach()) for k, v in sums.items()})
    stats["sum_loss_part"] = float(sum(sums.values()).detach()) if sums else 0.0
    result = run_check.result if run_check is not None else None
    extra = {"local_loss": float(loss.detach()),
             "grad_angle": result.angle if result is not None else None,
             "grad_rel_error": result.rel_error if result is not None else None}
    return stats, extra


def _combine(parts: list[dict[str, float]]) -> dict[str, float]:
    """Global-batch values of one step from every process's stats."""
    row = measure.combine_step_stats(parts)
    n = row["n"]
    row["loss"] += sum(p["sum_loss_part"] for p in parts)
    for name in ("nf", "fd", "fd_inv"):
        if f"mean_{name}" in parts[0]:
            row[f"{name}_term"] = sum(p[f"mean_{name}"] for p in parts) / n
        elif f"sum_{name}" in parts[0]:
            row[f"{name}_term"] = sum(p[f"sum_{name}"] for p in parts)
    return row


def _epoch_row(epoch: int, iteration: int, clock: Clock, lr: float, train: dict[str, Any], test: dict[str, Any],
               model: INNClassifier, data: ClassifierData) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "global_iteration": iteration, "time_elapsed": clock.elapsed(), "lr": lr,
                           "train_loss": train["loss"], "test_loss": test["loss"], "train_acc": train["acc"],
                           "test_acc": test["acc"]}
    for split, values in (("train", train), ("test", test)):
        row.update({f"mean_{split}_recons_error": values["recons_mean"],
                    f"std_{split}_recons_error": values["recons_std"],
                    f"max_{split}_recons_error": values["recons_max"],
                    f"max_relative_{split}_recons_error": values["recons_max_relative"],
                    f"nonfinite_{split}_recons": values["recons_nonfinite"]})
    verdicts = {split: measure.set_verdict(values["relative"], data.dtype)
                for split, values in (("train", train), ("test", test))}
    row["invertible"] = int(all(v.invertible for v in verdicts.values()))
    split = max(verdicts, key=lambda k: verdicts[k].worst_relative)
    worst = verdicts[split].worst_index
    images = (data.train if split == "train" else data.test).images
    at = measure.condition_at(model, data.to_model(images[worst:worst + 1]), [worst],
                              (train if split == "train" else test)["relative"])
    row["kappa_at_worst"] = at.kappa_forward[0]
    return row


def _verdict(model: INNClassifier, data: ClassifierData, split: str, values: dict[str, Any], fixed: list[int],
             kappa_at: int = 3) -> dict[str, Any]:
    """The library's verdict on the whole ``split`` set, with the conditioning at its ``kappa_at`` worst-reconstructed
    images and at the ``fixed`` ones, as plain data."""
    relative = values["relative"]
    verdict = measure.set_verdict(relative, data.dtype)
    images = (data.train if split == "train" else data.test).images
    order = [int(i) for i in torch.argsort(relative.nan_to_num(nan=math.inf), descending=True, stable=True)]
    for attr, chosen in (("at_worst", order[:kappa_at]), ("at_fixed", fixed)):
        if chosen:
            setattr(verdict, attr, measure.condition_at(model, data.to_model(images[chosen]), chosen, relative))
    return verdict.to_dict()


def _final_metrics(model: INNClassifier, data: ClassifierData, args: argparse.Namespace,
                   train: dict[str, float], test: dict[str, float], fixed: tuple[Tensor, Tensor]
                   ) -> dict[str, Any]:
    """The numbers a run ends with (computed on the main process; collectives happen before)."""
    x_fixed, y_fixed = fixed
    svd = measure.svd_stats(model, x_fixed[: args.svd_samples], inverse=True)
    try:
        grads = measure.gradient_agreement(model, x_fixed, y_fixed)
    except (RuntimeError, ValueError) as exc:  # a flow too broken to differentiate
        _log.warning("memory-saving gradient check failed: %s", exc)
        grads = {"grad_angle": math.nan, "grad_rel_error": math.nan, "grad_finite": False}
    window = range(*FIXED.indices(len(data.test))) if len(data.test) >= FIXED.stop else range(min(128, len(data.test)))
    fixed_test = list(window)[: args.svd_samples]
    verdicts = {"train": _verdict(model, data, "train", train, list(range(min(args.svd_samples, len(data.train))))),
                "test": _verdict(model, data, "test", test, fixed_test)}
    non_invertible = not all(v["invertible"] for v in verdicts.values())
    metrics: dict[str, Any] = {"test_acc": test["acc"], "test_loss": test["loss"], "train_acc": train["acc"],
                               "train_loss": train["loss"]}
    for split, values in (("train", train), ("test", test)):
        for key in ("mean", "std", "max", "max_relative", "nonfinite"):
            metrics[f"recons_{split}_{key}"] = values[f"recons_{key}"]
    metrics.update({"cond_forward": svd.get("condition_num"), "sigma_max": svd.get("max_sv"),
                    "sigma_min": svd.get("min_sv"), "cond_inverse": svd.get("inverse_condition_num"),
                    "inverse_sigma_max": svd.get("inverse_max_sv"), "inverse_sigma_min": svd.get("inverse_min_sv"),
                    "cond_forward_train_dtype": svd.get("condition_num_train_dtype"),
                    "logdet_error": svd.get("logdet_error"), "svd_samples": min(args.svd_samples, len(x_fixed)),
                    **grads, "non_invertible": bool(non_invertible), "invertible": not non_invertible,
                    "verdicts": verdicts, "noninvertible_rtol": measure.NONINVERTIBLE_RTOL})
    worst = max(verdicts.values(), key=lambda v: v["worst_relative"])
    metrics["kappa_at_worst"] = worst["at_worst"]["kappa_forward"][0] if worst.get("at_worst") else None
    return metrics


def _first_failures(run: Run) -> dict[str, Any]:
    """When the failure appeared: the first evaluation over the whole sets whose verdict is non-invertible, the first
    at which a reconstruction was non-finite (epoch log), the first fixed-batch log whose worst reconstruction is off
    by more than ``NONINVERTIBLE_RTOL`` (every-N log), and the first gradient check whose angle exceeds 0.1 rad or is
    not finite; -1 where it never happened."""
    def first(name: str, bad: Any) -> int:
        for row in read_csv(run.path / f"{name}.csv") if (run.path / f"{name}.csv").is_file() else []:
            try:
                if bad(row):
                    return int(float(row["global_iteration"]))
            except (KeyError, ValueError):
                continue
        return -1

    rtol = measure.NONINVERTIBLE_RTOL
    number = lambda text: float(text) if text not in ("", None) else math.nan  # noqa: E731
    return {"first_noninvertible_iteration": first("epoch_log", lambda r: r["invertible"] == "0"),
            "first_nonfinite_iteration": first("epoch_log", lambda r: number(r["nonfinite_train_recons"]) > 0
                                               or number(r["nonfinite_test_recons"]) > 0),
            "first_fixed_batch_above_rtol_iteration": first(
                "every_N_log", lambda r: not number(r["max_relative_recons_error"]) <= rtol),
            "first_grad_angle_above_0.1_iteration": first(
                "grad_log", lambda r: not number(r["grad_angle"]) <= 0.1)}


_TRACKED = ("model", "optimizer", "scheduler", "meter", "clock")


def check_resume(args: argparse.Namespace, inputs: tuple[ClassifierData, INNClassifier], parts: dict[str, Any]
                 ) -> None:
    """Refuse a resume checkpoint that does not hold this run's model (before the run folder is touched)."""
    model = inputs[1]
    where = f"{args.out}/checkpoints/latest.pt"
    state = parts.get("state")
    if not isinstance(state, dict) or "loop" not in parts or set(_TRACKED) - set(state):
        raise CheckpointError(f"{where} is not a checkpoint of this study (it holds {sorted(parts)}); start afresh "
                              "with --overwrite or choose another --out")
    saved, own = state["model"], model.state_dict()
    wrong = sorted(k for k in set(saved) | set(own) if k not in saved or k not in own
                   or tuple(saved[k].shape) != tuple(own[k].shape))
    if wrong:
        raise CheckpointError(f"{where} holds another model: {len(wrong)} tensors differ in name or shape (first: "
                              f"{wrong[0]}); start afresh with --overwrite or choose another --out")


def prepare(args: argparse.Namespace, device: torch.device) -> tuple[ClassifierData, INNClassifier]:
    """Data and model, before the run folder exists: a missing data set or an impossible architecture leaves no
    folder behind."""
    seed_everything(args.seed)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    data = load(args, device, dtype)
    model = build_model(args, data.shape, data.train.num_classes).to(device, dtype)
    return data, model


def run(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Train and measure in the open run folder; the metrics' status says whether the run diverged. With ``--twin``,
    then train the unregularized twin (same flags and seed, no NF/FD terms) in ``twin/`` and show both."""
    data, model = run.inputs
    metrics = _train(run, args, run.device, data, model)
    if not args.twin:
        return metrics
    twin_args = twin_arguments(args, run.path / "twin")
    seed_everything(args.seed)
    twin_model = build_model(twin_args, data.shape, data.train.num_classes).to(run.device, data.dtype)
    resume = run.resumed and (twin_args.out / "config.json").is_file()
    twin_run = open_run(twin_args.out, twin_args, resume=resume, overwrite=not resume,
                        ignore=set(NON_RESULT) | set(RUNNER_KEYS) - {"seed"}, main=run.main)
    try:
        twin_run.device = run.device
        twin = _train(twin_run, twin_args, run.device, data, twin_model)
        twin_run.update_metrics(**twin)
    finally:
        twin_run.close()
    if run.main:
        run.update_metrics(twin=twin)
        print(figures.side_by_side(args, run.metrics, twin))
    # the run's status is the regularized model's: a twin that diverges is a result, not a failure of the run
    return dict(run.metrics) if run.main else metrics


def twin_arguments(args: argparse.Namespace, out: Path) -> argparse.Namespace:
    """The flags of ``args``'s unregularized twin: the same run without the NF and finite-difference terms."""
    twin = argparse.Namespace(**vars(args))
    twin.nf_coeff, twin.fd_coeff, twin.fd_inv_coeff, twin.twin = -1.0, 0.0, 0.0, False
    twin.out, twin.resume, twin.overwrite = out, False, False
    return twin


def _train(run: Run, args: argparse.Namespace, device: torch.device, data: ClassifierData, model: INNClassifier
           ) -> dict[str, Any]:
    main_process = distributed.is_main()
    with torch.no_grad():  # data-dependent ActNorm initialisation on a seeded batch, the same on every process
        model.eval()
        model(data.init_batch(args.seed))
        model.train()
    if distributed.is_distributed():
        distributed.convert_batchnorm(model)
    flow: InvertibleModule = MemorySaving(model.flow, on_mismatch="ignore") if args.mem_saving else model.flow
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.wdecay)
    milestones = list(args.lr_decay_epochs)  # MultiStepLR's state holds a Counter, which checkpoints refuse
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: args.lr_decay ** bisect.bisect_right(milestones, epoch))
    meter, clock = Meter(), Clock()
    loop = ResumableLoop(run, epochs=args.epochs, seed=args.seed, num_examples=len(data.train),
                         batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, desc="train")
    loop.track(model=model, optimizer=optimizer, scheduler=scheduler, meter=meter, clock=clock)
    try:
        loop.restore()
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{run.checkpoint_dir / 'latest.pt'} does not hold a checkpoint of this run's model "
                              f"and cannot be resumed ({exc}); start afresh with --overwrite") from exc
    net = distributed.wrap_model(_Net(model, flow), device, find_unused_parameters=model.learn_top)
    logs = {"iteration": run.csv("iteration_log", ITERATION_FIELDS), "every_n": run.csv("every_N_log", EVERY_N_FIELDS),
            "svd": run.csv("svd_log", SVD_FIELDS), "epoch": run.csv("epoch_log", EPOCH_FIELDS),
            "grad": run.csv("grad_log", GRAD_FIELDS)}
    fixed = data.fixed_batch()
    check_batch = data.check_batch()
    flow_params = list(model.flow.parameters())

    def check_gradients(iteration: int) -> None:
        """The grad log after ``iteration`` updates (main process only)."""
        if not main_process or not args.grad_check_every or iteration % args.grad_check_every:
            return
        x, y = check_batch
        try:
            grads = measure.gradient_agreement(model, x, y)
        except (RuntimeError, ValueError) as exc:  # a flow too broken to differentiate
            _log.warning("memory-saving gradient check failed at iteration %d: %s", iteration, exc)
            grads = {"grad_angle": math.nan, "grad_rel_error": math.nan, "grad_finite": False}
        svd = measure.svd_stats(model, x[: args.svd_samples], inverse=False)
        recons = measure.reconstruction_rows(model, x)
        logs["grad"].log(global_iteration=iteration, **grads, kappa=svd.get("condition_num"),
                         sigma_min=svd.get("min_sv"), max_relative_recons_error=recons["max_relative_recons_error"],
                         nonfinite_recons=recons["nonfinite_recons"])

    def measure_now(iteration: int, row: dict[str, Any], grad: dict[str, Any] | None) -> None:
        """The every-N and SVD logs after ``iteration`` updates (main process only)."""
        if not main_process:
            return
        log_now = iteration % args.log_every == 0
        svd_now = not args.no_svd and iteration % args.svd_every == 0
        if not (log_now or svd_now):
            return
        recons = measure.reconstruction_rows(model, fixed[0])
        if log_now:
            logs["every_n"].log(**{k: v for k, v in row.items() if k in EVERY_N_FIELDS}, **recons, **(grad or {}))
        if svd_now:
            svd = measure.svd_stats(model, fixed[0][: args.svd_samples], inverse=not args.no_inverse_svd)
            logs["svd"].log(global_iteration=iteration, mean_recons_error=recons["mean_recons_error"], **svd)

    if loop.global_step == 0 and loop.epoch == 0:  # a fresh start (or a resume before the first checkpoint)
        run.save_checkpoint("init", model=model.state_dict())
        measure_now(0, {"global_iteration": 0, "epoch": 0, "time_elapsed": clock.elapsed(),
                        "lr": optimizer.param_groups[0]["lr"], **measure.tensor_stats("w", _flat(flow_params))},
                    None)
        check_gradients(0)
    status, last_eval = "completed", None
    for epoch in loop.epochs():
        last_eval = None
        for step in loop.steps():
            iteration = step.global_step + 1
            check = args.mem_saving and iteration % args.log_every == 0
            stats, extra = _train_step(net, model, flow, data, step, args, optimizer, check)
            row = _combine(distributed.all_gather_objects(stats))
            meter.add(count=row["n"], correct=row["correct"])
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in flow_params]
            row.update(global_iteration=iteration, epoch=epoch, time_elapsed=clock.elapsed(),
                       lr=optimizer.param_groups[0]["lr"], train_acc=meter.means(reduce=False)["correct"],
                       **measure.tensor_stats("w", _flat(flow_params)), **measure.tensor_stats("g", _flat(grads)))
            logs["iteration"].log(**{k: v for k, v in row.items() if k in ITERATION_FIELDS})
            loop.set_postfix(loss=row["loss"], acc=row["train_acc"])
            if not math.isfinite(row["loss"]):
                status = f"diverged: non-finite loss at iteration {iteration}"
                _log.error("%s; stopping (as the original does)", status)
                break
            measure_now(iteration, row, {"grad_angle": extra["grad_angle"], "grad_rel_error": extra["grad_rel_error"]}
                        if check else None)
            check_gradients(iteration)
            if args.save_every and iteration % args.save_every == 0:
                run.save_checkpoint(f"iter_{iteration}", model=model.state_dict())
        if status != "completed":
            break
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            train_eval = measure.evaluate(model, data.train, data.to_model)
            test_eval = measure.evaluate(model, data.test, data.to_model)
            logs["epoch"].log(**_epoch_row(epoch, loop.global_step, clock, optimizer.param_groups[0]["lr"],
                                           train_eval, test_eval, model, data))
            last_eval = (train_eval, test_eval)
            _log.info("epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | test recon mean %.3g "
                      "max %.3g", epoch + 1, args.epochs, train_eval["loss"], train_eval["acc"], test_eval["loss"],
                      test_eval["acc"], test_eval["recons_mean"], test_eval["recons_max"])
        meter.reset()
        scheduler.step()

    train_eval, test_eval = last_eval if last_eval is not None else (
        measure.evaluate(model, data.train, data.to_model), measure.evaluate(model, data.test, data.to_model))
    flat = _flat(list(model.parameters())).cpu()
    spread = max(float((f - flat).abs().max()) for f in distributed.all_gather_objects(flat))
    if main_process:
        metrics = _final_metrics(model, data, args, train_eval, test_eval, fixed)
        metrics.update(_first_failures(run))
        metrics.update(status=status, steps=loop.global_step, epochs=loop.epoch, seconds=clock.elapsed(),
                       cpu_seconds=clock.cpu(),
                       world_size=distributed.world_size(), rank_param_spread=spread,
                       parameters=sum(p.numel() for p in model.parameters()),
                       flow_parameters=sum(p.numel() for p in flow_params))
        run.update_metrics(**metrics)
        figures.make_plots(run.path, model, data, fixed[0], plot_iterations=args.plot_csv)
        print(figures.summary(run.path, args, run.metrics, device))
    distributed.barrier()
    return dict(run.metrics) if main_process else {"status": status}
