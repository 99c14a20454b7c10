"""Registered examples of the rational-quadratic spline layers: the elementwise spline and the spline coupling.

Two spline settings: ``"default"`` (the layers' defaults: minimum bin sizes 1e-3 of the interval, knot
derivatives in ``[1e-3, 1e3]``, so the global bounds are valid but loose) and ``"tight"`` (minimum bin sizes 0.1,
knot derivatives in ``[0.25, 4]``, where the global bounds of the coupling are within a few orders of magnitude of
the measured singular values). Inputs are drawn wider than the bound ``B`` at ``scale=3``, so the linear tails are
covered too. The examples are float64 (as every registered example); the contract and reference suites convert
them to float32 themselves.
"""

from __future__ import annotations

from typing import Any

from ...base import InvertibleModule
from ...layers.spline import RationalQuadraticSpline, SplineCoupling
from ..registry import randomize_, register
from .core import input_shape, sample_input

SHAPES = ("image", "flat")
SETTINGS: dict[str, dict[str, float]] = {
    "default": {},
    "tight": {"min_width": 0.1, "min_height": 0.1, "min_derivative": 0.25, "max_derivative": 4.0},
}


def _space(**choices: Any) -> Any:
    from hypothesis import strategies as st

    space = {"batch": st.integers(1, 3), "seed": st.integers(0, 2**16), "scale": st.sampled_from([0.5, 1.0, 3.0]),
             "bins": st.integers(2, 5), "bound": st.sampled_from([1.0, 2.0]),
             "settings": st.sampled_from(["default", "tight"])}
    space.update({k: v if hasattr(v, "example") else st.sampled_from(v) for k, v in choices.items()})
    return space


def _spline_args(bins: int, bound: float, settings: str) -> dict[str, Any]:
    if settings not in SETTINGS:
        raise ValueError(f"unknown spline settings {settings!r}; choose one of {sorted(SETTINGS)}")
    return {"bins": bins, "bound": bound, **SETTINGS[settings]}


@register("rq_spline", layer=RationalQuadraticSpline,
          configs=[{"kind": k} for k in SHAPES] + [{"kind": "flat", "bins": 2}, {"kind": "flat", "settings": "tight"},
                                                 {"kind": "flat", "scale": 3.0, "noise": 2.0}],
          # noise 2 (the fixed configuration above) makes gradcheck's finite differences fail in 4 of 60 draws (the
          # inverse's derivative reaches 5e5; the analytic one agrees with 1e-10-step central differences to 1e-7):
          # the search space stops at 1 (0 of 60)
          space=lambda: _space(kind=SHAPES, channels=(1, 2, 3), noise=(0.5, 1.0), size=(2, 3)))
def rq_spline(kind: str = "flat", bins: int = 4, bound: float = 2.0, settings: str = "default", channels: int = 3,
              size: int = 3, batch: int = 3, seed: int = 0, scale: float = 1.5, noise: float = 1.0
              ) -> tuple[InvertibleModule, Any]:
    module = RationalQuadraticSpline(channels, **_spline_args(bins, bound, settings))
    randomize_(module, noise, seed)
    return module.double(), sample_input(input_shape(kind, batch, channels, size), seed, scale)


@register("spline_coupling", layer=SplineCoupling,
          configs=[{"kind": k, "swap": s} for k in SHAPES for s in (False, True)]
          + [{"kind": "flat", "settings": "tight"}, {"kind": "flat", "bins": 2, "channels": 3},
             {"kind": "image", "settings": "tight", "channels": 3}],
          space=lambda: _space(kind=SHAPES, swap=(False, True), channels=(2, 3, 4, 5), strength=(0.5, 1.0)))
def spline_coupling(kind: str = "flat", swap: bool = False, bins: int = 4, bound: float = 2.0,
                    settings: str = "default", channels: int = 4, size: int = 4, batch: int = 3, seed: int = 0,
                    scale: float = 1.5, strength: float = 1.0) -> tuple[InvertibleModule, Any]:
    """Parameter noise ``strength * 0.4`` (flat) or ``strength * 0.2`` (image: the conv net's last layer has the
    gain ``exp(3 logs)``). Strengths above 1 drive the raw spline parameters to ~1e1..1e3, where the softmaxes
    saturate and ``g'`` reaches 1e-8: ``gradcheck``'s finite differences (step 1e-6) are not accurate there
    (measured: 0/10 failures at strength 1, 3/10 at 2 on images; 0/20 at 1, 5/20 at 2.5 on vectors; the
    analytic gradients agree with 1e-8-step central differences to 4e-5), and the reference suite's float64
    inverse tolerance (1e-12, not scaled by the conditioning) is below ``u / g'``. That regime is checked with
    conditioning-aware tolerances in ``tests/numerical/test_spline.py``."""
    noise = strength * (0.2 if kind == "image" else 0.4)
    module = SplineCoupling(channels, hidden=6, net="conv" if kind == "image" else "mlp", swap=swap,
                            **_spline_args(bins, bound, settings))
    randomize_(module, noise, seed)
    return module.double(), sample_input(input_shape(kind, batch, channels, size), seed, scale)
