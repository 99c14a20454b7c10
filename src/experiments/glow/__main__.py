"""Entry point of ``python -m experiments.glow``."""

from . import STUDY

STUDY.cli()
