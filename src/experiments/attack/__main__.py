"""Entry point of ``python -m experiments.attack``."""

from . import STUDY

STUDY.cli()
