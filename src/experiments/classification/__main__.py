"""Entry point of ``python -m experiments.classification``."""

from . import STUDY

STUDY.cli()
