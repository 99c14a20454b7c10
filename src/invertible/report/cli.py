"""The command line: ``python -m invertible.report MODEL [options]`` (also the ``invertible-report`` script).

Exit status: 0 the report was written (and, with ``--fail-on non-invertible``, the model is invertible on every
measured set); 1 ``--fail-on non-invertible`` and the verdict is non-invertible; 2 a usage error (bad flag value,
missing or unreadable model or data, wrong shapes), reported before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import NOISE_SETS, make_report, summary, write_report
from .measure import Options
from .sources import ReportError, load_subject

__all__ = ["build_parser", "main"]

EPILOG = """\
MODEL is a classification run folder (runs/classification/<run>) or one of its checkpoints, a y0ast Glow folder or
glow.zip, an rtqichen Residual Flow .pth, or package.module:factory (a callable returning a flow, or (flow, inputs)).

Default budget: every input of the model's data (a run's test set), 256 inputs of each noise set, condition numbers
at two inputs per set, the layer table on 8 inputs, the attack on 8 inputs for 20 steps. On the classification
study's default model (64 dimensions) this takes seconds on 2 CPU cores; on 32x32x3 flows the matrix-free
estimates dominate: lower --layer-inputs, --n-noise, --attack-steps, or pass --no-kappa.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is integers separated by commas, e.g. 1,8,8; got {text!r}")
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"every dimension must be >= 1, got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m invertible.report", description="A stability report for a trained "
                                "flow: is it numerically invertible on its inputs, and if not, which layer, where and "
                                "why.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the model (see below)")
    p.add_argument("--state-dict", help="weights for a package.module:factory MODEL (our checkpoint or a state dict)")
    p.add_argument("--checkpoint", default="latest", help="which checkpoint of a run folder (default: latest)")
    p.add_argument("--data", action="append", metavar="SET",
                   help="input sets: 'default' (the model's own data), 'digits' (scikit-learn's 8x8 digits) or a .npy "
                        "file of inputs in the flow's input space; repeatable (default: default)")
    p.add_argument("--noise", nargs="*", default=list(NOISE_SETS), metavar="KIND",
                   help=f"noise sets ({', '.join(NOISE_SETS)}); --noise with nothing for none (default: all)")
    p.add_argument("--n-noise", type=_positive_int, default=256, help="inputs per noise set (default: 256)")
    p.add_argument("--limit", type=_positive_int, default=None, help="at most this many inputs per data set")
    p.add_argument("--shape", type=_shape, help="the flow's input shape, e.g. 1,8,8, where the model does not say")
    p.add_argument("--rtol", type=_positive_float, default=Options.rtol,
                   help="the verdict's threshold on the relative error (default: the library's, %(default)g)")
    p.add_argument("--no-kappa", action="store_true", help="skip the condition numbers per set")
    p.add_argument("--layer-inputs", type=_positive_int, default=8, help="inputs of the layer table, 0 to skip "
                   "(default: 8)")
    p.add_argument("--attack-inputs", type=_positive_int, default=8, help="inputs attacked (default: 8)")
    p.add_argument("--attack-steps", type=_positive_int, default=20, help="attack steps, 0 to skip (default: 20)")
    p.add_argument("--attack-radius", type=_positive_float, default=0.05,
                   help="l-inf radius of the attack, in the flow's input units (default: 0.05)")
    p.add_argument("--samples", type=_positive_int, default=None, help="samples of a generative flow whose "
                   "reconstruction is judged too (default: 64 for y0ast Glow and Residual Flow files, else 0)")
    p.add_argument("--gradient-check", type=_positive_int, default=None, metavar="N",
                   help="memory-saving gradient self-check on N inputs (default: 8 for runs trained with "
                        "--mem-saving, else 0)")
    p.add_argument("--max-exact-dims", type=_positive_int, default=1024,
                   help="exact Jacobians up to this many entries per input, matrix-free above (default: 1024)")
    p.add_argument("--out", type=Path, help="output folder (default: <run folder>/report for a run, else "
                   "report-<name>)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fail-on", choices=["never", "non-invertible"], default="never",
                   help="exit with status 1 when the verdict is non-invertible (for CI)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise sets and the attack (default: 0)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads, 0 for torch's choice "
                   "(default: 1)")
    return p


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    if args.out is not None:
        return args.out
    model = Path(args.model)
    if model.is_dir() and (model / "config.json").is_file():
        return model / "report"
    if model.parent.name == "checkpoints" and (model.parent.parent / "config.json").is_file():
        return model.parent.parent / "report"
    return Path(f"report-{name}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    command = "python -m invertible.report " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        start = time.perf_counter()
        subject = load_subject(args.model, state_dict=args.state_dict, checkpoint=args.checkpoint)
        if args.shape is not None:
            if subject.input_shape is not None and subject.input_shape != args.shape:
                raise ReportError(f"--shape {args.shape} contradicts the model's input shape {subject.input_shape}")
            subject.input_shape = args.shape
        load_s = time.perf_counter() - start
        out = _out_dir(args, subject.name)
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {out} is a file; give a folder")
        opts = Options(rtol=args.rtol, kappa=not args.no_kappa, max_exact_dims=args.max_exact_dims,
                       layer_inputs=args.layer_inputs, attack_inputs=args.attack_inputs,
                       attack_steps=args.attack_steps, attack_radius=args.attack_radius,
                       gradient_inputs=(8 if subject.memory_saving else 0) if args.gradient_check is None
                       else args.gradient_check,
                       samples=(64 if subject.generative else 0) if args.samples is None else args.samples)
        report = make_report(subject, opts, data=args.data, noise=args.noise, n_noise=args.n_noise, limit=args.limit,
                             seed=args.seed, command=command, load_s=load_s, progress=not args.no_progress)
    except (ReportError, FileNotFoundError) as exc:
        print(f"invertible.report: error: {exc}", file=sys.stderr)
        return 2
    write_report(report, out, figures=not args.no_figures)
    print(summary(report, str(out)))
    if args.fail_on == "non-invertible" and not report["measurement"]["invertible"]:
        return 1
    return 0
