"""Entry point of ``python -m experiments.flowgan``."""

from . import STUDY

STUDY.cli()
