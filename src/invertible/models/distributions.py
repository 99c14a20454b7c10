r"""Base distributions of flows, and a flow seen as a ``torch.distributions.Distribution``.

A :class:`~invertible.models.Flow` scores its latents ``z = f(x)`` with a base distribution. Any of these works:

- ours, :class:`BaseDistribution` modules (their tensors follow the flow's ``.to()``, ``.double()``, state dict):
  :class:`StandardNormal` (the default, ``N(0, I)``) and :class:`DiagonalNormal` (learned mean and log-scale);
- any ``torch.distributions.Distribution`` whose samples have the latent shape (``Independent(Normal(...), 1)``,
  ``MultivariateNormal``, ``StudentT`` over the entries, ...), wrapped by :class:`TorchBase`. Its tensors stay
  where they were created: samples are moved to the flow's dtype and device, and log-densities summed per sample.

:class:`FlowDistribution` is the other direction: a flow (and a fixed context) as a ``Distribution`` with
``log_prob``, ``sample`` and a differentiable ``rsample``, so code written for ``torch.distributions`` (variational
inference with the reparameterisation trick, say) takes a flow as it is (:meth:`Flow.distribution
<invertible.models.Flow.distribution>`).

Example:
    >>> import torch
    >>> base = DiagonalNormal((2,))
    >>> base.log_prob(torch.zeros(3, 2)).shape, base.rsample(4).shape
    (torch.Size([3]), torch.Size([4, 2]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

__all__ = ["BaseDistribution", "DiagonalNormal", "FlowDistribution", "StandardNormal", "TorchBase", "as_base",
           "standard_normal_log_prob"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per sample."""
    return -0.5 * (z.flatten(1).pow(2) + math.log(2 * math.pi)).sum(1)


class BaseDistribution(nn.Module):
    """A distribution over latents of shape ``event_shape`` (per sample), as a module.

    Subclasses implement ``log_prob(z) -> (batch,)`` and ``rsample(n, *, generator, dtype, device) -> (n, *event)``
    (differentiable in the distribution's parameters). ``temperature`` scales the draws where the distribution
    defines it (:class:`StandardNormal`), and is refused elsewhere.
    """

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)

    def log_prob(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rsample(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                device: torch.device | None = None, temperature: float = 1.0) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"


def _no_temperature(where: str, temperature: float) -> None:
    if temperature != 1.0:
        raise ValueError(f"{where}: temperature scales draws of the standard normal base; this base distribution "
                         "does not define it (use temperature=1)")


class StandardNormal(BaseDistribution):
    """``N(0, I)`` over ``event_shape``: ``log_prob`` per sample, draws ``T z`` with ``z ~ N(0, I)`` at temperature
    ``T``. Holds no tensors: draws take the dtype and device they are asked for."""

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def rsample(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                device: torch.device | None = None, temperature: float = 1.0) -> Tensor:
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=dtype, device=device)
        return z * temperature


class DiagonalNormal(BaseDistribution):
    """``N(mu, diag(exp(2 l)))`` over ``event_shape`` with learned ``mu`` and log-scale ``l`` (zero-initialised:
    the standard normal at first)."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return standard_normal_log_prob(u) - self.log_scale.sum()

    def rsample(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                device: torch.device | None = None, temperature: float = 1.0) -> Tensor:
        _no_temperature("DiagonalNormal", temperature)
        eps = torch.randn((n, *self.event_shape), generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        return (self.loc + torch.exp(self.log_scale) * eps).to(dtype=dtype, device=device)


class TorchBase(BaseDistribution):
    """A ``torch.distributions.Distribution`` as a base: draws of shape ``(n, *event_shape)`` are moved to the
    flow's dtype and device, ``log_prob`` is summed over the entries of each sample."""

    def __init__(self, distribution: Distribution) -> None:
        shape = tuple(distribution.batch_shape) + tuple(distribution.event_shape)
        super().__init__(shape)
        self.distribution = distribution

    def log_prob(self, z: Tensor) -> Tensor:
        return self.distribution.log_prob(z).reshape(z.shape[0], -1).sum(1).to(z.dtype)

    def rsample(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                device: torch.device | None = None, temperature: float = 1.0) -> Tensor:
        _no_temperature(type(self.distribution).__name__, temperature)
        if generator is not None:
            raise ValueError("a torch.distributions base draws from the global generator (torch.manual_seed), not "
                             "from a generator argument")
        dist = self.distribution
        z = dist.rsample((n,)) if dist.has_rsample else dist.sample((n,))
        return z.to(dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"{self.distribution!r}"


def as_base(base: BaseDistribution | Distribution | None, latent_shape: tuple[int, ...]) -> BaseDistribution:
    """``base`` as a :class:`BaseDistribution` over ``latent_shape`` (``None``: the standard normal); a
    distribution of another shape is refused."""
    if base is None:
        return StandardNormal(latent_shape)
    if isinstance(base, Distribution):
        base = TorchBase(base)
    if not isinstance(base, BaseDistribution):
        raise TypeError(f"base must be a torch.distributions.Distribution or an invertible BaseDistribution, got "
                        f"{type(base).__name__}")
    if base.event_shape != tuple(latent_shape):
        raise ValueError(f"the base distribution is over shape {base.event_shape}, but the flow's latents have shape "
                         f"{tuple(latent_shape)} (batch_shape + event_shape of a torch distribution must be that)")
    return base


class FlowDistribution(Distribution):
    """A flow at a fixed context as a ``torch.distributions.Distribution`` (module docstring).

    Without a context: ``batch_shape = ()``, ``event_shape`` the flow's data shape; ``log_prob`` takes values of
    shape ``(*sample_shape, *event_shape)``. With a context of ``B`` rows: ``batch_shape = (B,)``, values of shape
    ``(*sample_shape, B, *event_shape)``, row ``b`` scored (and drawn) at ``context[b]``. ``rsample`` keeps the graph
    (reparameterised through the flow's inverse); ``sample`` does not.
    """

    arg_constraints: dict[str, Any] = {}
    has_rsample = True

    def __init__(self, flow: Any, context: Tensor | None = None) -> None:
        self.flow, self.context = flow, context
        event = tuple(flow.in_shape or flow.latent_shape)
        batch = () if context is None else (int(context.shape[0]),)
        super().__init__(torch.Size(batch), torch.Size(event), validate_args=False)

    @property
    def support(self) -> Any:  # type: ignore[override]
        return constraints.independent(constraints.real, len(self.event_shape))

    def _contexts(self, copies: int) -> Tensor | None:
        if self.context is None:
            return None
        return self.context.repeat(copies, *([1] * (self.context.dim() - 1)))

    def log_prob(self, value: Tensor) -> Tensor:
        lead = value.shape[: value.dim() - len(self.event_shape)]
        flat = value.reshape(-1, *self.event_shape)
        copies = flat.shape[0] // max(1, math.prod(self.batch_shape))
        return self.flow.log_prob(flat, self._contexts(copies)).reshape(lead)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        copies = math.prod(sample_shape)
        context = self._contexts(copies)
        x = self.flow.rsample(copies * max(1, math.prod(self.batch_shape)), context=context)
        return x.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
