"""Entry point of ``python -m experiments.toy_regression``."""

from . import STUDY

STUDY.cli()
