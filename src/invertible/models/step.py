"""``FlowStep``: one flow step ``[ActNorm] -> channel mixing -> coupling`` as data, passed whole to the models
that repeat it (:class:`~invertible.models.Glow`, :class:`~invertible.models.INNClassifier`,
:class:`~invertible.models.DenseFlow`)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from ..base import InvertibleModule
from ..layers import ActNorm, AdditiveCoupling, AffineCoupling, Invertible1x1Conv, Permutation
from ..layers.scale import ScaleFunction, make_scale

__all__ = ["COUPLINGS", "PERMUTATIONS", "FlowStep", "flow_step"]

#: Channel mixing choices: dense 1x1 conv, LU 1x1 conv, random shuffle, reversal.
PERMUTATIONS = ("conv", "lu", "shuffle", "reverse")
#: Coupling choices.
COUPLINGS = ("affine", "additive")


@dataclass(frozen=True)
class FlowStep:
    """One flow step: ``[ActNorm] -> permutation or 1x1 conv -> coupling`` (Glow's step).

    The defaults are Glow's; models that repeat a step take one (``step=FlowStep(...)``) and build it
    ``depth`` times (:meth:`layers`). :meth:`replace` returns a changed copy.

    Attributes:
        hidden: width of the coupling network.
        coupling: ``"affine"`` or ``"additive"``.
        permutation: one of :data:`PERMUTATIONS` (``"conv"``/``"lu"``: a learned 1x1 convolution, dense or LU).
        actnorm, actnorm_eps, actnorm_max_scale, actnorm_data_init: the leading ActNorm and its stabilisers
            (see :class:`~invertible.ActNorm`).
        net: the coupling network, ``"conv"`` (images) or ``"mlp"`` (flat data).
        net_actnorm, zero_init: ActNorm inside the conv net; zero-initialised last layer.
        scale_fn, shift, eps, max_scale, order: the affine coupling's scale function (a registered name with
            its parameters, or a :class:`~invertible.layers.scale.ScaleFunction`) and order (see
            :class:`~invertible.AffineCoupling`); ignored by additive couplings.

    Example:
        >>> step = FlowStep(hidden=8, coupling="additive", permutation="shuffle", net="mlp")
        >>> [type(layer).__name__ for layer in step.layers(4)]
        ['ActNorm', 'Permutation', 'AdditiveCoupling']
        >>> step.replace(coupling="affine", scale_fn="bounded").scale()
        Bounded(shift=2.0)
    """

    hidden: int = 512
    coupling: str = "affine"
    permutation: str = "lu"
    actnorm: bool = True
    actnorm_eps: float = 0.0
    actnorm_max_scale: float | None = None
    actnorm_data_init: bool = True
    net: str = "conv"
    net_actnorm: bool = False
    zero_init: bool = True
    scale_fn: str | ScaleFunction = "sigmoid"
    shift: float | None = None
    eps: float | None = None
    max_scale: float | None = None
    order: str = "glow"

    def __post_init__(self) -> None:
        checks = [
            (self.coupling in COUPLINGS, f"coupling must be one of {COUPLINGS}, got {self.coupling!r}"),
            (self.permutation in PERMUTATIONS, f"permutation must be one of {PERMUTATIONS}, got {self.permutation!r}"),
            (self.net in ("conv", "mlp"), f"net must be 'conv' or 'mlp', got {self.net!r}"),
            (self.order in ("glow", "realnvp"), f"order must be 'glow' or 'realnvp', got {self.order!r}"),
            (isinstance(self.hidden, int) and self.hidden >= 1, f"hidden must be an int >= 1, got {self.hidden!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"FlowStep: {message}")
        try:
            self.scale()
        except ValueError as exc:
            raise ValueError(f"FlowStep: {exc}") from None

    def scale(self) -> ScaleFunction:
        """The affine coupling's scale function."""
        return make_scale(self.scale_fn, shift=self.shift, eps=self.eps, max_scale=self.max_scale)

    def replace(self, **changes: Any) -> FlowStep:
        """A copy with some fields changed; an unknown name is refused with the list of fields."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"FlowStep has no field {', '.join(unknown)}; its fields are "
                            f"{', '.join(f.name for f in fields(self))}")
        if "scale_fn" in changes and isinstance(changes["scale_fn"], ScaleFunction):
            # an object carries its own parameters: drop the ones that were for a name
            changes = {"shift": None, "eps": None, "max_scale": None, **changes}
        return replace(self, **changes)

    def layers(self, channels: int, generator: torch.Generator | None = None) -> list[InvertibleModule]:
        """The step's layers for ``channels`` channels (``generator`` draws the permutation or 1x1 conv)."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        out: list[InvertibleModule] = []
        if self.actnorm:
            out.append(ActNorm(channels, data_init=self.actnorm_data_init, eps=self.actnorm_eps,
                               max_scale=self.actnorm_max_scale))
        if self.permutation in ("conv", "lu"):
            out.append(Invertible1x1Conv(channels, lu=self.permutation == "lu", generator=generator))
        else:
            out.append(Permutation(channels, kind=self.permutation, generator=generator))
        net = {"hidden": self.hidden, "net": self.net, "zero_init": self.zero_init, "net_actnorm": self.net_actnorm}
        if self.coupling == "additive":
            out.append(AdditiveCoupling(channels, **net))  # type: ignore[arg-type]
        else:
            out.append(AffineCoupling(channels, **net, scale_fn=self.scale(), order=self.order))  # type: ignore[arg-type]
        return out


def step_from(step: FlowStep | None, default: FlowStep, fields_: dict[str, Any], where: str) -> FlowStep:
    """``step`` (or ``default``) with the keyword fields applied: the models' older keyword spelling."""
    try:
        return (step if step is not None else default).replace(**fields_)
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None


def flow_step(
    channels: int,
    *,
    hidden: int,
    coupling: str = "affine",
    permutation: str = "lu",
    actnorm: bool = True,
    actnorm_eps: float = 0.0,
    actnorm_max_scale: float | None = None,
    net: str = "conv",
    generator: torch.Generator | None = None,
    **coupling_args: Any,
) -> list[InvertibleModule]:
    """One Glow step's layers: ``FlowStep(hidden=hidden, ...).layers(channels, generator)``.

    ``coupling_args`` are the other :class:`FlowStep` fields (``scale_fn``, ``eps``, ``shift``, ``max_scale``,
    ``order``, ``zero_init``, ``net_actnorm``).
    """
    step = FlowStep(hidden=hidden, coupling=coupling, permutation=permutation, actnorm=actnorm,
                    actnorm_eps=actnorm_eps, actnorm_max_scale=actnorm_max_scale, net=net)
    return step_from(step, step, coupling_args, "flow_step").layers(channels, generator)
