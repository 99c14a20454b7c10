"""The results pages under docs/results/, each regenerated from runs of the studies by one report.

``python -m experiments.reports.<page>`` for each page of :data:`PAGES` makes the runs its page needs that are
missing (``--report-only``: none), then writes ``docs/results/<page>.md`` and its figures. A report is a package
``experiments/reports/<page>/``: its runs as data, its claims, and its prose as Markdown fragments beside the code;
``experiments.reports.common`` is what every report shares (CONTRIBUTING.md, "How to add a study's results page").
"""

#: Every results page, in the README's order.
PAGES = ("classification", "toy", "glow", "flowgan", "ood", "attack")
