"""Adversarial training of a Glow (FlowGAN), one run per variant, then the stability analysis of every snapshot."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from invertible import allow_nonfinite
from invertible.checkpoint import CheckpointError
from invertible.models import Glow, bits_per_dim

from ..common.glow.analysis import analyze_study, summary
from ..common.glow.data import GlowData, load_data
from ..common.glow.model import build_glow
from ..common.glow.training import (EvalInputs, init_actnorm, last_eval, model_args, snapshot, train_models,
                                    training_plot, zero_nonfinite_grads)
from ..common.runs import Run, read_csv
from ..common.training import Clock, Meter, ResumableLoop, seed_everything
from . import options
from .discriminator import Discriminator, gradient_penalty
from .features import FeatureClassifier, classifier_features, frechet_distance, get_feature_classifier

__all__ = ["EVAL_FIELDS", "TRAIN_FIELDS", "FrechetScorer", "prepare", "run", "train_variant"]

_log = logging.getLogger("experiments.flowgan")

#: Columns of ``train_log.csv`` (every step).
TRAIN_FIELDS = ["step", "epoch", "d_loss", "gp", "g_loss", "mle_bpd", "d_real_acc", "d_fake_acc", "grad_norm",
                "nonfinite_grad", "batch_nonfinite_samples"]
#: Columns of ``eval_log.csv``.
EVAL_FIELDS = ["step", "epoch", "seconds", "test_bpd", "sample_nonfinite", "sample_max_abs", "pad", "sample_pad",
               "fd", "fd_samples"]


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
    init_actnorm(model, data, args)
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
    inputs = EvalInputs(data, model.latent_shape, args.seed)
    scorer = FrechetScorer(scorer_parts[0], data, scorer_parts[1], model.latent_shape, args.seed)
    total_steps = args.epochs * loop.steps_per_epoch
    D = data.dims

    def eval_now(step: int, epoch: int) -> None:
        values = snapshot(run, model, data, inputs, step, clock)
        fd, used = scorer(model)
        eval_log.log(step=step, epoch=epoch, fd=fd, fd_samples=used, **values)
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
    metrics: dict[str, Any] = last_eval(run, ("test_bpd", "sample_nonfinite", "pad", "sample_pad", "fd"))
    metrics.update(status="completed", steps=loop.global_step, seconds=clock.elapsed(),
                   nonfinite_grad_steps=totals.sums.get("nonfinite_grad", 0.0), fd_reference=scorer.reference,
                   first_nonfinite_sample_step=next((int(r["step"]) for r in rows
                                                     if float(r["sample_nonfinite"] or 0) > 0), None))
    run.update_metrics(**metrics)
    if run.main:
        training_plot(run.path, {"losses": {"D": ("train_log", "d_loss"), "G": ("train_log", "g_loss")},
                                 "bits per dimension": {"test": ("eval_log", "test_bpd")},
                                 "Fréchet distance (own classifier)": {"samples vs test": ("eval_log", "fd")},
                                 "non-finite samples (share)": {"eval": ("eval_log", "sample_nonfinite")}},
                      logy=[False, False, True, False])
    return dict(run.metrics)


def prepare(args: argparse.Namespace, device: torch.device) -> tuple[GlowData, FeatureClassifier, dict[str, Any]]:
    """The data and the feature classifier (trained on first use, then cached), before the run folder exists."""
    data = load_data(args, device)
    classifier, info = get_feature_classifier(args.dataset, data_dir=args.data_dir, cache=_classifier_dir(args),
                                              multiple=2**args.n_levels, epochs=args.classifier_epochs,
                                              seed=args.seed, device=device)
    return data, classifier, info


def _classifier_dir(args: argparse.Namespace) -> Path:
    default = Path("runs/feature_classifier") / f"{args.dataset}-m{2 ** args.n_levels}-s{args.seed}"
    return args.classifier_dir or default


def run(study: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Train every ``--variants`` entry in ``<study>/models/<variant>``, then analyse their snapshots."""
    data, classifier, info = study.inputs
    study.update_metrics(feature_classifier={"folder": str(_classifier_dir(args)),
                                             "test_accuracy": info["test_accuracy"]})
    specs = {name: options.variant(name) for name in args.variants}
    configs = {name: model_args(args, spec.model, data, label=name, variant=name, weight_gan=spec.gan,
                                weight_mle=spec.mle, actnorm_max_scale=spec.actnorm_max_scale)
               for name, spec in specs.items()}
    variants = train_models(study, configs, lambda run, name: train_variant(
        run, args, specs[name], data, study.device, (classifier, args.fd_samples)), options.NON_RESULT)
    study.update_metrics(variants=variants)
    rows = analyze_study(study, args, study.device)
    print(f"FlowGAN on {args.dataset}: {study.path}\n" + summary(rows, variants))
    for name, m in variants.items():
        print(f"{name:<22} Fréchet distance (own classifier) {m.get('fd', math.nan):.4g} "
              f"(train vs test reference {m['fd_reference']:.4g})")
    return {"variants": variants}
