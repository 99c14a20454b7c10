"""``Flow``: a :class:`~invertible.Sequential` scored by a base distribution (``N(0, I)`` unless given)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..base import InvertibleModule, Sequential, allow_nonfinite
from .distributions import BaseDistribution, FlowDistribution, StandardNormal, as_base, standard_normal_log_prob

__all__ = ["Flow", "bits_per_dim", "standard_normal_log_prob"]


def bits_per_dim(log_prob: Tensor, dims: int, levels: int | None = None) -> Tensor:
    """Bits per dimension ``-(log p - D log L) / (D ln 2)`` of data on ``L`` levels scaled to unit range.

    ``levels=None`` omits the discretisation term (use it when a :class:`~invertible.Dequantize` layer already
    contributes ``-D log L`` to the log-det).
    """
    correction = 0.0 if levels is None else dims * math.log(levels)
    return -(log_prob - correction) / (dims * math.log(2.0))


class Flow(Sequential):
    r"""A normalizing flow: ``z = f(x)`` with ``z ~ p_Z`` (the base), so ``log p(x) = log p_Z(f(x)) + log|det J_f(x)|``.

    Sampling runs the inverse: ``x = f^-1(z)``, ``z ~ p_Z``; :meth:`rsample` keeps the graph (the
    reparameterisation trick: gradients reach the flow's and the base's parameters), :meth:`sample` does not.
    A conditional flow (its layers built with ``context=F``) takes the context in every method: ``log p(x | c)``
    and draws from ``p(x | c)``. :meth:`distribution` wraps the flow (at a context) as a
    ``torch.distributions.Distribution``.

    Args:
        layers: the invertible layers, applied in order.
        latent_shape: the shape of ``z`` per sample (used by :meth:`sample`); ``inverse`` refuses latents of
            another shape.
        in_shape: the shape of ``x`` per sample that the flow was built for (``forward`` refuses others), or
            ``None`` to accept any input its layers accept.
        base: the base distribution ``p_Z`` over ``latent_shape``: ``None`` (``N(0, I)``), a
            ``torch.distributions.Distribution`` (its ``batch_shape + event_shape`` must be ``latent_shape``), or
            a :class:`~invertible.models.distributions.BaseDistribution` module (moves and saves with the flow).

    Example:
        >>> import torch, invertible
        >>> from invertible.models import Flow
        >>> base = torch.distributions.Independent(torch.distributions.Laplace(torch.zeros(2), torch.ones(2)), 1)
        >>> flow = Flow(invertible.SplineCoupling(2, hidden=8, context=1), latent_shape=(2,), base=base)
        >>> c = torch.ones(5, 1)
        >>> x = flow.rsample(5, context=c)                 # differentiable draws from p(x | c)
        >>> flow.log_prob(x, c).shape, flow.distribution(c).sample((3,)).shape
        (torch.Size([5]), torch.Size([3, 5, 2]))
    """

    def __init__(self, *layers: InvertibleModule, latent_shape: tuple[int, ...],
                 in_shape: tuple[int, ...] | None = None, base: BaseDistribution | Distribution | None = None
                 ) -> None:
        super().__init__(*layers)
        self.latent_shape = tuple(latent_shape)
        self.out_shape = self.latent_shape
        if in_shape is not None:
            self.in_shape = tuple(in_shape)
            self.ranks = (len(self.in_shape) + 1,)
            self.channels, self.out_channels = self.in_shape[0], self.latent_shape[0]
        self.base = as_base(base, self.latent_shape)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(x)`` per sample (``log p(x | context)`` for a conditional flow)."""
        z, logdet = self(x, context)
        return self.base.log_prob(z) + logdet

    def bits_per_dim(self, x: Tensor, levels: int | None = None, context: Tensor | None = None) -> Tensor:
        """Bits per dimension per sample (see :func:`bits_per_dim`)."""
        return bits_per_dim(self.log_prob(x, context), x[0].numel(), levels)

    def _like(self) -> tuple[torch.dtype, torch.device]:
        tensor = next((t for t in self.parameters() if t.is_floating_point()), None)
        if tensor is None:
            tensor = next((t for t in self.buffers() if t.is_floating_point()), None)
        return (torch.get_default_dtype(), torch.device("cpu")) if tensor is None else (tensor.dtype, tensor.device)

    def _contexts(self, n: int, context: Tensor | None) -> Tensor | None:
        """The context per draw: rows ``(n, F, ...)`` as given, one row ``(1, F, ...)`` or ``(F,)`` repeated."""
        if context is None or not isinstance(context, Tensor):
            return context
        if self.context_features is not None and context.dim() == 1:
            context = context.unsqueeze(0)
        if context.dim() >= 2 and context.shape[0] == 1 and n != 1:
            context = context.expand(n, *context.shape[1:])
        return context

    def rsample_and_log_prob(self, n: int, context: Tensor | None = None, *, temperature: float = 1.0,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` differentiable draws ``x = f^-1(z)`` and their ``log p(x)`` in one pass of the inverse
        (``log p(x) = log p_Z(z) - log|det J_{f^-1}(z)|``), e.g. for a reverse-KL objective. ``context``: one row
        per draw, or one row for all of them."""
        dtype, device = self._like()
        z = self.base.rsample(n, generator=generator, dtype=dtype, device=device, temperature=temperature)
        x, logdet_inv = self.inverse(z, self._contexts(n, context))
        return x, self.base.log_prob(z) - logdet_inv

    def rsample(self, n: int, context: Tensor | None = None, *, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``x = f^-1(T z)``, ``z ~ p_Z``, with the graph kept (gradients reach the parameters)."""
        dtype, device = self._like()
        z = self.base.rsample(n, generator=generator, dtype=dtype, device=device, temperature=temperature)
        return self.inverse(z, self._contexts(n, context))[0]

    @torch.no_grad()
    def sample(self, n: int, context: Tensor | None = None, *, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``x = f^-1(T z)``, ``z ~ p_Z`` (``T``: ``temperature``, for the standard normal base),
        without a graph; non-finite samples are returned as they are. ``context``: one row per draw, or one row
        for all of them."""
        dtype, device = self._like()
        z = self.base.rsample(n, generator=generator, dtype=dtype, device=device, temperature=temperature)
        with allow_nonfinite():
            return self.inverse(z, self._contexts(n, context))[0]

    def distribution(self, context: Tensor | None = None) -> FlowDistribution:
        """This flow as a ``torch.distributions.Distribution`` (at ``context``, one batch entry per row):
        :class:`~invertible.models.distributions.FlowDistribution`."""
        return FlowDistribution(self, context)

    @property
    def standard_base(self) -> bool:
        """Whether the base distribution is ``N(0, I)``."""
        return type(self.base) is StandardNormal
