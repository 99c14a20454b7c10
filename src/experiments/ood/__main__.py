"""Entry point of ``python -m experiments.ood``."""

from . import STUDY

STUDY.cli()
