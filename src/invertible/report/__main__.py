"""``python -m invertible.report``: see :mod:`invertible.report.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
