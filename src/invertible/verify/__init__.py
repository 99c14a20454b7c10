"""``python -m invertible.verify``: the contract suite over the layers of FrEIA, nflows, normflows and zuko.

- :mod:`invertible.verify.catalog`: the peers' layers, built as their users would and wrapped by
  :mod:`invertible.adapters` (the libraries are imported only when an entry is built);
- :mod:`invertible.verify.findings`: the classification of each failure, with a reproduction without our checker;
- :mod:`invertible.verify.run`: runs the checks and writes ``docs/results/peers.md``.
"""
