from . import REPORT

REPORT.cli()
