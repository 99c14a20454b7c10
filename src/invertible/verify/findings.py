"""What each failure of a peer layer is, with the evidence: a defect of the peer, a documented limitation, or an
artefact of the adapter (or, where our error model has no term for what the peer computes, an open item of ours).

A :class:`Finding` classifies the failures of one catalogue entry (in the dtypes it names) and carries a minimal
reproduction: a function that needs only the peer library and torch, measures the cause directly (not through our
checker) and returns the figures as a sentence. ``python -m invertible.verify`` runs every reproduction and writes
its source and its result into ``docs/results/peers.md``; a failure no finding covers is listed as unclassified.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["FINDINGS", "KINDS", "Finding", "classify"]

#: The classes of a finding.
KINDS = {
    "defect": "a defect of the peer",
    "limitation": "a documented limitation of the peer (an iterative inverse's tolerance, a stochastic log-det, "
                  "a layer documented as not exactly invertible)",
    "adapter": "an artefact of the adapter (how we wrapped or cast the layer)",
    "ours": "an open item of our checker (its error model has no term for what the peer computes)",
    "open": "not yet established whether the peer or our error model is off; not claimed as a defect",
}

DT = torch.float64


@dataclass(frozen=True)
class Finding:
    """The classification of one entry's failures (``dtypes``: the dtypes it covers, by name)."""

    key: str
    kind: str
    summary: str
    reproduce: Callable[[], str]
    dtypes: tuple[str, ...] = ("float64", "float32")

    @property
    def source(self) -> str:
        """The reproduction as a standalone script (its decorator dropped, its call appended)."""
        lines = inspect.getsource(self.reproduce).splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("def "))
        body = "\n".join(lines[start:])
        return f"import torch\n\nDT = torch.float64\n\n\n{body}\n\n\nprint({self.reproduce.__name__}())"


FINDINGS: list[Finding] = []


def finding(key: str, kind: str, summary: str, dtypes: tuple[str, ...] = ("float64", "float32")
            ) -> Callable[[Callable[[], str]], Callable[[], str]]:
    if kind not in KINDS:
        raise ValueError(f"finding {key!r}: kind must be one of {sorted(KINDS)}, got {kind!r}")

    def add(reproduce: Callable[[], str]) -> Callable[[], str]:
        FINDINGS.append(Finding(key, kind, summary, reproduce, dtypes))
        return reproduce

    return add


def classify(key: str, dtype: str) -> Finding | None:
    """The finding that covers the failures of entry ``key`` in ``dtype`` (``None``: unclassified)."""
    return next((f for f in FINDINGS if f.key == key and dtype in f.dtypes), None)


@finding("FrEIA.AllInOneBlock(permute_soft=True)", "defect",
         "the soft permutation W (a random rotation drawn in float64 by scipy) and its inverse W^T are stored as "
         "two float32 tensors; after .double() W^T W is not the identity (round trip ~1e-7 off) and log|det W|, "
         "which the block takes to be 0, is ~1e-8", dtypes=("float64",))
def _all_in_one_soft() -> str:
    import numpy as np
    from FrEIA.modules import AllInOneBlock

    np.random.seed(0)
    block = AllInOneBlock([(6,)], subnet_constructor=lambda i, o: torch.nn.Linear(i, o), permute_soft=True).double()
    w, w_inv = block.w_perm.reshape(6, 6), block.w_perm_inv.reshape(6, 6)
    off = float((w_inv @ w - torch.eye(6, dtype=DT)).abs().max())
    logdet = float(torch.linalg.slogdet(w)[1])
    return f"max|W_inv W - I| = {off:.2g}, log|det W| = {logdet:.2g} (reported: 0), in {w.dtype}"


@finding("FrEIA.FixedLinearTransform", "defect",
         "M^-1 and log|det M| are computed once at construction, in the dtype of the M given; .double() then casts "
         "the float32-rounded inverse and log-det instead of recomputing them (with M given in float64 the block "
         "is exact)", dtypes=("float64",))
def _fixed_linear() -> str:
    from FrEIA.modules import FixedLinearTransform

    m = torch.eye(6) + 0.3 * torch.randn(6, 6, generator=torch.Generator().manual_seed(4))
    errs = []
    for given in (m, m.double()):
        block = FixedLinearTransform([(6,)], M=given).double()
        inv_err = float((block.M @ block.M_inv - torch.eye(6, dtype=DT)).abs().max())  # M holds M^T
        ld_err = abs(float(block.logDetM) - float(torch.linalg.slogdet(block.M)[1]))
        errs.append(f"M given in {given.dtype}: max|M_inv M - I| = {inv_err:.2g}, log-det off by {ld_err:.2g}")
    return "; ".join(errs)


@finding("FrEIA.Fixed1x1Conv", "defect",
         "as FixedLinearTransform: the inverse kernel and log-det are computed at construction in the dtype of M "
         "and only cast by .double()", dtypes=("float64",))
def _fixed_conv() -> str:
    from FrEIA.modules import Fixed1x1Conv

    m = torch.eye(4) + 0.3 * torch.randn(4, 4, generator=torch.Generator().manual_seed(4))
    block = Fixed1x1Conv([(4, 4, 4)], M=m).double()
    inv_err = float((block.M.reshape(4, 4) @ block.M_inv.reshape(4, 4) - torch.eye(4, dtype=DT)).abs().max())
    ld_err = abs(float(block.logDetM) - float(torch.linalg.slogdet(block.M.reshape(4, 4))[1]))
    return f"after .double(): max|M_inv M - I| = {inv_err:.2g}, log|det M| off by {ld_err:.2g}"


@finding("FrEIA.OrthogonalTransform", "defect",
         "the weight is orthogonalised once (torch.svd in float32) and the inverse uses its transpose and the "
         "log-det ignores det W: in float64 W is orthogonal only to float32 precision (round trip ~7e-7 off). In "
         "float32 the state-dict check's 1% change of W makes the transpose wrong: documented (FrEIA re-projects W "
         "onto the orthogonal matrices in a backward hook during training), not a defect", dtypes=("float64",))
def _orthogonal() -> str:
    from FrEIA.modules import OrthogonalTransform

    torch.manual_seed(0)
    w = OrthogonalTransform([(6,)]).double().weights
    off = float((w.T @ w - torch.eye(6, dtype=DT)).abs().max())
    return f"after .double(): max|W^T W - I| = {off:.2g}, log|det W| = {float(torch.linalg.slogdet(w)[1]):.2g}"


FINDINGS.append(Finding("FrEIA.OrthogonalTransform", "limitation", FINDINGS[-1].summary, _orthogonal,
                        ("float32",)))


@finding("FrEIA.LearnedElementwiseScaling", "defect",
         "the inverse returns the forward's log-det, +sum(s), instead of -sum(s)")
def _learned_scaling() -> str:
    from FrEIA.modules import LearnedElementwiseScaling

    block = LearnedElementwiseScaling([(6,)])
    with torch.no_grad():
        block.s.add_(0.1)
    x = torch.randn(3, 6)
    (y,), ld = block([x], jac=True)
    (_,), ld_inv = block([y], rev=True, jac=True)
    return f"forward log-det {float(ld[0]):.3g}, inverse log-det {float(ld_inv[0]):.3g} (should be {-float(ld[0]):.3g})"


@finding("FrEIA.InvAutoFC", "limitation",
         "an invertible-autoencoder layer: the inverse is the transposed weight, exact only once training has made "
         "it so, and FrEIA warns that its log-det is not tractable")
def _inv_auto_fc() -> str:
    import warnings

    from FrEIA.modules import InvAutoFC

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        block = InvAutoFC([(6,)])
        x = torch.randn(3, 6)
        (y,), _ = block([x], jac=True)
        (x_back,), _ = block([y], rev=True, jac=True)
    said = next((str(w.message) for w in caught), "")
    return f"round trip off by {float((x_back - x).abs().max()):.3g}; FrEIA warns: {said.strip()[:80]}"


@finding("FrEIA.InvAutoConv2D", "limitation",
         "as InvAutoFC: the inverse is the transposed convolution of the same kernel, and FrEIA warns that the "
         "log-det is not tractable")
def _inv_auto_conv() -> str:
    import warnings

    from FrEIA.modules import InvAutoConv2D

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = InvAutoConv2D([(4, 4, 4)])
        x = torch.randn(2, 4, 4, 4)
        (y,), _ = block([x], jac=True)
        (x_back,), _ = block([y], rev=True, jac=True)
    return f"round trip off by {float((x_back - x).abs().max()):.3g}"


@finding("FrEIA.HaarDownsampling", "defect",
         "the inverse (order_by_wavelet=False, the default) scales the tensor it is given in place "
         "(x_perm = inp; x_perm *= fac_rev): the caller's y is changed")
def _haar() -> str:
    from FrEIA.modules import HaarDownsampling

    block = HaarDownsampling([(4, 4, 4)])
    (y,), _ = block([torch.randn(2, 4, 4, 4)], jac=True)
    kept = y.clone()
    block([y], rev=True, jac=True)
    return f"y changed by the inverse by up to {float((y - kept).abs().max()):.3g}"


@finding("nflows.NaiveLinear", "defect",
         "cannot be built with the installed torch: its initialisation calls torch.qr, removed from torch")
def _naive_linear() -> str:
    from nflows.transforms import NaiveLinear

    try:
        NaiveLinear(6)
    except RuntimeError as err:
        return f"NaiveLinear(6) raises RuntimeError: {str(err).splitlines()[0][:90]} (torch {torch.__version__})"
    return f"NaiveLinear(6) builds with torch {torch.__version__}"


@finding("nflows.LeakyReLU", "defect",
         "log(negative_slope) is a float32 tensor kept as a plain attribute (not a buffer), so .double() leaves it "
         "in float32: a float64 call returns a float32 log-det, off by ~1e-7", dtypes=("float64",))
def _leaky_relu() -> str:
    from nflows.transforms import LeakyReLU

    layer = LeakyReLU(negative_slope=0.3).double()
    x = -torch.ones(2, 6, dtype=DT)
    _, logdet = layer(x)
    exact = 6 * torch.log(torch.tensor(0.3, dtype=DT))
    return f"log-det dtype {logdet.dtype} for float64 input, off by {abs(float(logdet[0]) - float(exact)):.2g}"


@finding("normflows.Permute(shuffle)", "defect",
         "returns torch.zeros(len(z)) as its log-det: float32 whatever the input's dtype (the value, 0, is right)",
         dtypes=("float64",))
def _permute() -> str:
    import normflows as nf

    _, logdet = nf.flows.Permute(6, mode="shuffle").double()(torch.zeros(2, 6, dtype=DT))
    return f"log-det dtype {logdet.dtype} for float64 input"


@finding("normflows.NormalizingFlow.forward_and_log_det", "defect",
         "the model accumulates its layers' log-dets into torch.zeros(len(z)) (float32) in place, so a float64 "
         "model returns float32 log-dets, each sum rounded to float32", dtypes=("float64",))
def _normalizing_flow() -> str:
    import normflows as nf

    torch.manual_seed(0)
    flows = [nf.flows.AffineCouplingBlock(nf.nets.MLP([3, 16, 6], init_zeros=False)) for _ in range(2)]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(6), flows).double()
    z = torch.randn(4, 6, dtype=DT)
    _, logdet = model.forward_and_log_det(z)
    exact, v = torch.zeros(4, dtype=DT), z
    for flow in flows:
        v, ld = flow(v)
        exact = exact + ld
    return (f"log-det dtype {logdet.dtype} for float64 input, off by up to "
            f"{float((logdet.double() - exact).abs().max()):.2g} from the float64 sum of the layers' log-dets")


@finding("zuko.CNF transform (free-form Jacobian, exact trace)", "limitation",
         "an adaptive ODE solve (atol=1e-6, rtol=1e-5 by default) bounds the local, not the global, error: the round "
         "trip and the integrated log-det are off by ~1e-4, and fall with the solver's tolerances")
def _cnf() -> str:
    from zuko.flows import FFJTransform

    torch.manual_seed(0)
    out = []
    for atol, rtol in ((1e-6, 1e-5), (1e-9, 1e-8)):
        t = FFJTransform(6, hidden_features=(16, 16), exact=True, atol=atol, rtol=rtol).double()()
        x = torch.randn(4, 6, dtype=DT)
        y, ladj = t.call_and_ladj(x)
        x_back, ladj_inv = t.inv.call_and_ladj(y)
        out.append(f"atol={atol:g}, rtol={rtol:g}: round trip {float((x_back - x).abs().max()):.2g}, "
                   f"log-det pair {float((ladj + ladj_inv).abs().max()):.2g}")
    return "; ".join(out)


@finding("zuko.RotationTransform", "ours",
         "zuko returns log|det J| = 0, exact for the rotation exp(A - A^T); the matrix it computes is orthogonal "
         "only to rounding (det off by ~1e-14 in float64), which is beyond our log-det error model's rounding of "
         "the sum (u (D + T)): the model has no term for a map whose own matrix is rounded. Not a defect of zuko",
         dtypes=("float64",))
def _rotation() -> str:
    from zuko.transforms import RotationTransform

    out = []
    for scale in (1.0, 3.0):  # the catalogue's jittered A is about as large as the second
        a = scale * torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=DT)
        r = RotationTransform(a).R
        out.append(f"||A|| x{scale:g}: max|R^T R - I| = {float((r.T @ r - torch.eye(6, dtype=DT)).abs().max()):.2g}, "
                   f"log|det R| = {float(torch.linalg.slogdet(r)[1]):.2g} (reported: 0)")
    return "; ".join(out)


@finding("nflows.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(context)", "ours",
         "in float32 a sample's log-det alone and in the batch differ by 1.72e-5, 1% above the batch-independence "
         "tolerance: both are within float32 rounding of the float64 log-det (the network rounds differently at "
         "another batch size); the batch tolerance has no term for the log-det's condition under the network's "
         "rounding (C), which the exact log-det tolerance has", dtypes=("float32",))
def _rq_maf_batch() -> str:
    from nflows.transforms import MaskedPiecewiseRationalQuadraticAutoregressiveTransform as MPRQ

    torch.manual_seed(0)
    t = MPRQ(6, hidden_features=16, context_features=3, num_bins=4, tails="linear", tail_bound=3.0).eval()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
        x, c = torch.randn(4, 6), torch.randn(4, 3)
        ld_batch = t(x, context=c)[1]
        ld_alone = torch.cat([t(x[i : i + 1], context=c[i : i + 1])[1] for i in range(4)])
        ld64 = t.double()(x.double(), context=c.double())[1]
    return (f"float32 log-det in the batch off the float64 one by {float((ld_batch.double() - ld64).abs().max()):.2g}, "
            f"alone by {float((ld_alone.double() - ld64).abs().max()):.2g}; batch vs alone "
            f"{float((ld_batch - ld_alone).abs().max()):.2g}")


@finding("zuko.BPF transform (Bernstein polynomial)", "open",
         "in float32 the log-det is off the float64 reference by ~1.5e-5 (about 125 u), 5x the tolerance, while "
         "the map itself is accurate; not analysed further (the Bernstein derivative's rounding or a term our "
         "error model lacks)", dtypes=("float32",))
def _bpf() -> str:
    import copy

    from zuko.flows import BPF

    torch.manual_seed(0)
    t32 = BPF(6, transforms=1, hidden_features=(16, 16)).transform
    with torch.no_grad():
        for p in t32.parameters():
            p.add_(0.3 * torch.randn_like(p))
    t64 = copy.deepcopy(t32).double()
    x = torch.randn(4, 6)
    y32, ld32 = t32().call_and_ladj(x)
    y64, ld64 = t64().call_and_ladj(x.double())
    ld32 = ld32.sum(-1) if ld32.dim() > 1 else ld32
    ld64 = ld64.sum(-1) if ld64.dim() > 1 else ld64
    return (f"float32 output off float64 by {float((y32.double() - y64).abs().max()):.2g}, "
            f"log-det by {float((ld32.double() - ld64).abs().max()):.2g}")
