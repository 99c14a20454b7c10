"""The README's quick start runs exactly as written, and does what it says: a conditional density of two-moons
points given their moon, trained, sampled and checked.

The block is read from README.md (the first ``python`` block under "## Quick start") and executed as it is. Then:

- it trained: the test NLL on fresh two-moons points (another seed) is below 0.3 nats per point. An untrained
  flow (the identity: ``N(0, I)`` scores the moons) measures 2.30 here; trained flows measured -0.30 to -0.36 over
  5 seeds of ``benchmarks/two_moons.py`` (the same configuration), so the threshold leaves a margin of 0.6 on the
  trained side and 2.0 on the untrained side;
- the context matters: the upper moon's samples (context ``[1, 0]``) lie left and above the lower moon's (moon
  centres at ``(0, 0.64)`` and ``(1, -0.14)``; measured sample means within 0.05 of them); a flow that ignored
  the context would draw both from the mixture and fail;
- ``check_invertible`` ran on the trained flow at the given contexts (it raises on any failure).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _make_moons():  # noqa: ANN202 - sklearn's function
    reason = "the quick start uses scikit-learn (the experiments extra)"
    return pytest.importorskip("sklearn.datasets", reason=reason).make_moons


def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md: no python block under '## Quick start'"
    return blocks[0]


def test_the_quick_start_runs_as_written_and_learns_the_conditional_density() -> None:
    make_moons = _make_moons()

    code = quick_start_code()
    assert "context" in code and "check_invertible" in code and "flow.sample" in code
    namespace: dict = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    flow, upper = namespace["flow"], namespace["upper"]
    points, moon = make_moons(2000, noise=0.05, random_state=1234)
    x_test = torch.tensor(points, dtype=torch.float64)
    c_test = torch.nn.functional.one_hot(torch.tensor(moon), 2).double()
    with torch.no_grad():
        nll = float(-flow.log_prob(x_test, c_test).mean())
        lower = flow.sample(500, context=torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert nll < 0.3, f"test NLL {nll:.3f}: the quick start did not learn the moons"
    assert upper.shape == (500, 2) and lower.shape == (500, 2)
    up, low = upper.double().mean(0), lower.mean(0)
    assert float(up[0]) < 0.5 < float(low[0]) and float(up[1]) > 0.25 > float(low[1]), (up, low)


def test_negative_control_an_untrained_flow_fails_the_same_checks() -> None:
    make_moons = _make_moons()

    from invertible.models import SPLINE_STEP, DenseFlow

    flow = DenseFlow(2, steps=6, step=SPLINE_STEP, context=2).double()
    points, moon = make_moons(2000, noise=0.05, random_state=1234)
    x_test = torch.tensor(points, dtype=torch.float64)
    c_test = torch.nn.functional.one_hot(torch.tensor(moon), 2).double()
    with torch.no_grad():
        nll = float(-flow.log_prob(x_test, c_test).mean())
        upper = flow.sample(500, context=torch.tensor([1.0, 0.0], dtype=torch.float64), generator=torch.Generator()
                            .manual_seed(0))
        lower = flow.sample(500, context=torch.tensor([0.0, 1.0], dtype=torch.float64), generator=torch.Generator()
                            .manual_seed(1))
    assert nll > 0.3
    up, low = upper.mean(0), lower.mean(0)
    assert not (float(up[0]) < 0.5 < float(low[0]) and float(up[1]) > 0.25 > float(low[1]))
