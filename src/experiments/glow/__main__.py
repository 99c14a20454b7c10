"""Entry point of ``python -m experiments.glow``."""

import logging
import sys

from .. import distributed
from .train import main

if __name__ == "__main__":
    distributed.configure_logging(logging.INFO)
    sys.exit(main())
