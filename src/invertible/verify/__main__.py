"""``python -m invertible.verify [--out docs/results/peers.md] [--only KEY] [--dtypes float64,float32]``.

Runs the contract suite over the layers of FrEIA, nflows, normflows and zuko (those installed:
``pip install -e ".[peers]"``) and writes the markdown page of :func:`invertible.verify.run.markdown`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .run import markdown, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m invertible.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/peers.md"), help="the markdown page")
    parser.add_argument("--only", default=None, help="only the entries whose key contains this text")
    parser.add_argument("--dtypes", default="float64,float32", help="comma-separated: float64,float32")
    args = parser.parse_args(argv)
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    bad = [d for d in dtypes if d not in ("float64", "float32")]
    if bad:
        parser.error(f"--dtypes: unknown {bad}; choose among float64,float32")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results, versions = verify(dtypes=dtypes, only=args.only)
    if not results:
        parser.error("no peer library is installed (pip install -e \".[peers]\") or --only matched nothing")
    command = "python -m invertible.verify" + ("" if argv is None and len(sys.argv) <= 1 else
                                                " " + " ".join(argv if argv is not None else sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(results, versions, command))
    failed = sum(r.status != "pass" for r in results)
    logging.getLogger("invertible.verify").info("%d checks (%d failed) written to %s", len(results), failed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
