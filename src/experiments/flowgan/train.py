"""Adversarial training of a Glow (FlowGAN), one run per variant, then the stability analysis of every snapshot."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from invertible import allow_nonfinite
from invertible.checkpoint import CheckpointError
from invertible.models import Glow, bits_per_dim

from ..feature_classifier import FeatureClassifier, classifier_features, frechet_distance, get_feature_classifier
from ..plots import line_panels
from ..runs import Run, open_run, read_csv
from ..training import Meter, ResumableLoop, resolve_device, seed_everything
from ..glow.data import GlowData
from ..glow.model import build_glow, mark_actnorm_initialized
from ..glow.train import (_USER_ERRORS, Clock, analyze_folders, evaluate, finish_study, load_data, model_args,
                          open_model_run, sample_grid, summary, zero_nonfinite_grads)
from . import options
from .discriminator import Discriminator, gradient_penalty

__all__ = ["EVAL_FIELDS", "TRAIN_FIELDS", "FrechetScorer", "main", "train_variant"]

_log = logging.getLogger("experiments.flowgan")

#: Columns of ``train_log.csv`` (every step).
TRAIN_FIELDS = ["step", "epoch", "d_loss", "gp", "g_loss", "mle_bpd", "d_real_acc", "d_fake_acc", "grad_norm",
                "nonfinite_grad", "batch_nonfinite_samples"]
#: Columns of ``eval_log.csv``.
EVAL_FIELDS = ["step", "epoch", "seconds", "test_bpd", "sample_nonfinite", "sample_max_abs", "pad", "sample_pad",
               "fd", "fd_samples"]
EVAL_BATCH = 64


class FrechetScorer:
    """The Fréchet distance between a model's samples (from one fixed latent) and the test images, in the features
    of the study's own classifier; ``reference`` is the distance of as many training images to the test images."""

    def __init__(self, classifier: FeatureClassifier, data: GlowData, n: int, latent: Sequence[int], seed: int) -> None:
        self.classifier = classifier
        g = torch.Generator().manual_seed(seed + 3)
        n = min(n, len(data.test))
        test = data.to_model(data.test.images[torch.randperm(len(data.test), generator=g)[:n]], g)
        train = data.to_model(data.train.images[torch.randperm(len(data.train), generator=g)[:n]], g)
        self.test_features = classifier_features(classifier, test.float())
        self.reference = frechet_distance(classifier_features(classifier, train.float()), self.test_features)
        self.z = torch.randn((n, *latent), generator=g, dtype=torch.float64).to(data.device, data.dtype)

    def __call__(self, model: Glow) -> tuple[float, int]:
        """``(distance, number of finite samples it used)``; NaN when fewer than two samples are finite."""
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), allow_nonfinite():
                samples = model.inverse(self.z)[0]
        finally:
            model.train(was)
        ok = torch.isfinite(samples.flatten(1)).all(dim=1)
        if int(ok.sum()) < 2:
            return math.nan, int(ok.sum())
        features = classifier_features(self.classifier, samples[ok].float())
        if not bool(torch.isfinite(features).all()):
            return math.inf, int(ok.sum())
        return frechet_distance(features, self.test_features), int(ok.sum())


def _generate(model: Glow, n: int, generator: torch.Generator, data: GlowData) -> Tensor:
    """``n`` samples ``f^-1(z)`` with ``z ~ N(0, I)`` drawn from ``generator``, differentiable in the flow."""
    z = torch.randn((n, *model.latent_shape), generator=generator, dtype=data.dtype).to(data.device)
    with allow_nonfinite():
        return model.inverse(z)[0]


def train_variant(run: Run, args: argparse.Namespace, spec: options.Variant, data: GlowData, device: torch.device,
                  scorer_parts: tuple[FeatureClassifier, int]) -> dict[str, Any]:
    """Train one FlowGAN variant in the model run folder ``run``; return its metrics."""
    seed_everything(args.seed)
    margs = argparse.Namespace(**{**vars(args), "actnorm_max_scale": spec.actnorm_max_scale})
    model = build_glow(margs, data.shape, spec.model).to(device, data.dtype)
    if args.n_init_batches:
        with torch.no_grad():
            model(data.init_batch(args.seed, args.n_init_batches * args.batch_size))
    else:
        mark_actnorm_initialized(model)
    disc = Discriminator(data.shape, width=args.disc_width).to(device, data.dtype)
    opt_g = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.99))
    meter, totals, clock = Meter(), Meter(), Clock()
    loop = ResumableLoop(run, epochs=args.epochs, seed=args.seed, num_examples=len(data.train),
                         batch_size=args.batch_size, drop_last=True, checkpoint_every=args.checkpoint_every,
                         desc=spec.name)
    loop.track(model=model, discriminator=disc, optimizer=opt_g, disc_optimizer=opt_d, meter=meter, totals=totals,
               clock=clock)
    try:
        loop.restore()
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{run.checkpoint_dir / 'latest.pt'} does not hold a checkpoint of this run ({exc}); "
                              "start afresh with --overwrite") from exc
    train_log, eval_log = run.csv("train_log", TRAIN_FIELDS), run.csv("eval_log", EVAL_FIELDS)
    g = torch.Generator().manual_seed(args.seed + 2)
    fixed = data.to_model(data.test.images[:EVAL_BATCH], g)
    z = torch.randn((EVAL_BATCH, *model.latent_shape), generator=g, dtype=torch.float64).to(device, data.dtype)
    scorer = FrechetScorer(scorer_parts[0], data, scorer_parts[1], model.latent_shape, args.seed)
    total_steps = args.epochs * loop.steps_per_epoch
    D = data.dims

    def eval_now(step: int, epoch: int) -> None:
        values = evaluate(model, data, fixed, z, args.seed)
        samples = values.pop("samples")
        fd, used = scorer(model)
        eval_log.log(step=step, epoch=epoch, seconds=clock.elapsed(), fd=fd, fd_samples=used, **values)
        run.save_checkpoint(f"step_{step}", model=model.state_dict(), step=step)
        if run.main:
            sample_grid(run, step, samples)
        _log.info("%s step %d/%d: test bpd %.4f, non-finite samples %.3f, Frechet distance %.4g, PAD %.3g", spec.name,
                  step, total_steps, values["test_bpd"], values["sample_nonfinite"], fd, values["pad"])

    if loop.global_step == 0 and loop.epoch == 0:
        eval_now(0, 0)
    for epoch in loop.epochs():
        for step in loop.steps():
            real = data.batch(step.indices, step.generator)
            n = len(real)
            row: dict[str, Any] = {"step": step.global_step + 1, "epoch": epoch}
            if spec.gan:
                # discriminator step on detached samples; non-finite pixels set to 0 as the original does
                with torch.no_grad():
                    fake = _generate(model, n, step.generator, data).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
                logits_real, logits_fake = disc(real), disc(fake)
                gp = gradient_penalty(disc, real, fake, step.generator)
                d_loss = 0.5 * (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                                + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
                d_total = d_loss + args.gp_weight * gp
                opt_d.zero_grad(set_to_none=True)
                d_total.backward()
                opt_d.step()
                row.update(d_loss=d_loss.item(), gp=gp.item(), d_real_acc=float((logits_real > 0).double().mean()),
                           d_fake_acc=float((logits_fake < 0).double().mean()))
            flow_loss = real.new_zeros(())
            if spec.gan:
                disc.requires_grad_(False)
                fake = _generate(model, n, step.generator, data)
                row["batch_nonfinite_samples"] = float((~torch.isfinite(fake.flatten(1)).all(dim=1)).double().mean())
                logits = disc(fake)
                g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
                disc.requires_grad_(True)
                flow_loss = flow_loss + spec.gan * g_loss
                row["g_loss"] = g_loss.item()
            if spec.mle:
                log_p = model.log_prob(real)  # nats per image, as the original's prior + logdet sums
                flow_loss = flow_loss + spec.mle * (-log_p.mean())
                row["mle_bpd"] = float(bits_per_dim(log_p.detach(), D, data.levels).mean())
            opt_g.zero_grad(set_to_none=True)
            flow_loss.backward()
            bad = zero_nonfinite_grads(model)
            row.update(grad_norm=float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)),
                       nonfinite_grad=int(bad))
            opt_g.step()
            totals.add(count=1, nonfinite_grad=float(bad))
            train_log.log(**row)
            loop.set_postfix(**{k: row[k] for k in ("g_loss", "mle_bpd") if k in row})
            iteration = step.global_step + 1
            if iteration % args.eval_every == 0 or iteration == total_steps:
                eval_now(iteration, epoch)
    rows = read_csv(run.path / "eval_log.csv")
    last = rows[-1] if rows else {}
    metrics: dict[str, Any] = {k: float(last[k]) for k in ("test_bpd", "sample_nonfinite", "pad", "sample_pad", "fd")
                               if last.get(k, "") != ""}
    metrics.update(status="completed", steps=loop.global_step, seconds=clock.elapsed(),
                   nonfinite_grad_steps=totals.sums.get("nonfinite_grad", 0.0), fd_reference=scorer.reference,
                   first_nonfinite_sample_step=next((int(r["step"]) for r in rows
                                                     if float(r["sample_nonfinite"] or 0) > 0), None))
    run.update_metrics(**metrics)
    if run.main:
        _training_plot(run.path)
    return dict(run.metrics)


def _training_plot(folder: Path) -> None:
    train, evals = read_csv(folder / "train_log.csv"), read_csv(folder / "eval_log.csv")

    def col(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
        pairs = [(float(r["step"]), float(r[key])) for r in rows if r.get(key, "") != ""]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    line_panels({"losses": {"D": col(train, "d_loss"), "G": col(train, "g_loss")},
                 "bits per dimension": {"test": col(evals, "test_bpd")},
                 "Fréchet distance (own classifier)": {"samples vs test": col(evals, "fd")},
                 "non-finite samples (share)": {"eval": col(evals, "sample_nonfinite")}},
                folder / "plots" / "training.png", xlabel="training step", logy=[False, False, True, False],
                title=folder.name)


def _study(args: argparse.Namespace, device: torch.device) -> int:
    wall, cpu = time.time(), time.process_time()
    data = load_data(args, device)  # before the folder exists: missing data leaves nothing behind
    study = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite, ignore=options.NON_RESULT)
    try:
        cache = args.classifier_dir or (Path("runs/feature_classifier")
                                        / f"{args.dataset}-m{2 ** args.n_levels}-s{args.seed}")
        classifier, info = get_feature_classifier(args.dataset, data_dir=args.data_dir, cache=cache,
                                                  multiple=2**args.n_levels, epochs=args.classifier_epochs,
                                                  seed=args.seed, device=device)
        study.update_metrics(feature_classifier={"folder": str(cache), "test_accuracy": info["test_accuracy"]})
        variants = {}
        for name in args.variants:
            spec = options.variant(name)
            config = model_args(args, spec.model, data, label=name, variant=name, weight_gan=spec.gan,
                                weight_mle=spec.mle, actnorm_max_scale=spec.actnorm_max_scale)
            run = open_model_run(study, name, config, options.NON_RESULT)
            try:
                variants[name] = train_variant(run, args, spec, data, device, (classifier, args.fd_samples))
            finally:
                run.close()
        study.update_metrics(variants=variants)
        rows = finish_study(study, args, device, wall, cpu)
        print(f"FlowGAN on {args.dataset}: {study.path}\n" + summary(rows, variants))
        for name, m in variants.items():
            print(f"{name:<22} Fréchet distance (own classifier) {m.get('fd', math.nan):.4g} "
                  f"(train vs test reference {m['fd_reference']:.4g})")
    finally:
        study.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.flowgan``: returns the exit status (0 ok, 2 bad input)."""
    args = options.parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.analyze is not None:
            print(summary(analyze_folders(args.analyze, args.out, args, device)))
            return 0
        return _study(args, device)
    except _USER_ERRORS as exc:
        _log.debug("stopped by a user error", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
