"""The paper's studies, one package each, all run by one runner (:mod:`experiments.common.study`).

``python -m experiments.<name> --help`` for each name in :data:`STUDIES`; ``experiments.common`` holds what studies
share (command line, run folders, training loop, distributed helpers, plots, data sets, the Glow and image-flow
parts used by several studies); ``experiments.reports`` regenerates the results pages under ``docs/results/``.
"""

#: Every study, in the README's order: ``experiments.<name>`` declares ``STUDY``.
STUDIES = ("classification", "toy_regression", "flows2d", "attack2d", "glow", "flowgan", "ood", "attack")
