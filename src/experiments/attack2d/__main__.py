"""Entry point of ``python -m experiments.attack2d``."""

from . import STUDY

STUDY.cli()
