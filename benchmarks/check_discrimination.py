"""The smallest defects ``check_invertible`` catches on ill-conditioned registered flows, in float32 and float64.

A wrapper breaks a registered flow by ``eps``: its inverse returns ``(1 + eps) f^-1(y)`` (off by ``eps``
relative), or its forward log-det is off by ``eps`` nats. Bisection (in log scale) finds the smallest ``eps`` that
the round-trip checks (``roundtrip_forward``, ``roundtrip_inverse``) and the log-det checks (``logdet_exact``,
``logdet_inverse``) catch, per example and dtype.

``--check-file`` measures another version of ``invertible/testing/check.py`` (e.g. main's, before the error model)
with the same wrappers and inputs: ``git show main:src/invertible/testing/check.py > /tmp/check_main.py``.

Run: ``python benchmarks/check_discrimination.py [--check-file FILE]`` (about a minute); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from invertible.base import Bounds, InvertibleModule
from invertible.testing import exact_jacobian, get_example

EXAMPLES = [("glow", {"split": False, "coupling": "affine"}),
            ("affine_coupling", {"scale_fn": "exp", "order": "glow"}),
            ("affine_coupling", {"scale_fn": "exp", "order": "realnvp"})]


class Broken(InvertibleModule):
    """``inner`` with its inverse scaled by ``1 + eps`` (``kind="inverse"``) or its log-det shifted by ``eps``."""

    def __init__(self, inner: InvertibleModule, kind: str, eps: float) -> None:
        super().__init__(channels=None, ranks=(2, 4))
        self.inner, self.kind, self.eps = inner, kind, eps

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.inner(x)
        return y, logdet + (self.eps if self.kind == "logdet" else 0.0)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = self.inner.inverse(y)
        return (x * (1 + self.eps) if self.kind == "inverse" else x), logdet

    def lipschitz_bounds(self) -> Bounds:
        return self.inner.lipschitz_bounds()

    def inverse_atol(self) -> float:
        return self.inner.inverse_atol()


def load_check(path: Path | None) -> Callable[..., object]:
    if path is None:
        from invertible.testing import check_invertible

        return check_invertible
    spec = importlib.util.spec_from_file_location("invertible.testing._measured_check", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.check_invertible  # type: ignore[no-any-return]


def smallest_caught(check: Callable[..., object], inner: InvertibleModule, x: Tensor, kind: str,
                    checks: tuple[str, ...]) -> float:
    """Smallest ``eps`` in [1e-14, 1e3] (to 5%) whose defect fails ``checks``; ``inf`` if none does."""

    def caught(eps: float) -> bool:
        report = check(Broken(copy.deepcopy(inner), kind, eps), x, checks=checks, raise_on_failure=False)
        return not report.ok  # type: ignore[attr-defined]

    if caught(0.0):
        raise RuntimeError("the healthy module fails the checks: no discrimination to measure")
    lo, hi = math.log(1e-14), math.log(1e3)
    if not caught(math.exp(hi)):
        return math.inf
    while hi - lo > 0.05:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if caught(math.exp(mid)) else (mid, hi)
    return math.exp(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-file", type=Path, default=None, help="another check.py to measure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    check = load_check(args.check_file)
    print("| example | dtype | kappa | smallest inverse error caught (relative) | smallest log-det error caught (nats) |")
    print("|---|---|---|---|---|")
    for name, config in EXAMPLES:
        inner64, x64 = get_example(name).build(**config)
        inner64.eval()
        with torch.no_grad():
            inner64(x64)
        sv = torch.linalg.svdvals(exact_jacobian(lambda v: inner64(v)[0], x64).detach())
        kappa = float((sv[:, 0] / sv[:, -1]).max())
        for dtype in (torch.float32, torch.float64):
            inner, x = copy.deepcopy(inner64).to(dtype), x64.to(dtype)
            inv = smallest_caught(check, inner, x, "inverse", ("roundtrip_forward", "roundtrip_inverse"))
            ld = smallest_caught(check, inner, x, "logdet", ("logdet_exact", "logdet_inverse"))
            label = f"{name}[{','.join(f'{k}={v}' for k, v in config.items())}]"
            print(f"| {label} | {str(dtype)[6:]} | {kappa:.3g} | {inv:.2g} | {ld:.2g} |", flush=True)


if __name__ == "__main__":
    main()
