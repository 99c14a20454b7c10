"""Entry point of ``python -m experiments.flows2d``."""

from . import STUDY

STUDY.cli()
