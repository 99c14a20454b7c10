"""What every report shares: runs declared as data, claims and their verdicts, the invertibility word, numbers,
tables, figures, fragments of prose, the page and the command line.

A report is a package ``experiments/reports/<page>/`` that declares ``REPORT = Report(...)``: its runs
(:class:`RunSpec`), and ``write(runs, page)``, which reads the finished runs (:class:`Runs`) and adds to the
page its claims (:class:`Claim`), sections, fragments of prose (``<page>/*.md``) and figures. See CONTRIBUTING.md,
"How to add a study", for a worked example.
"""

from .claims import (MIN_SEEDS, Claim, ClaimSet, ClaimText, Criterion, Observation, Verdict, claims_table,
                     load_texts)
from .figures import Figures
from .fragments import Fragments
from .invertibility import (INVERTIBLE, NON_INVERTIBLE, UNDETERMINED, Judgement, combine, find_stored, judge,
                            judge_errors, relative_of, stored)
from .numbers import fmt, minutes, num, percent, spread
from .page import Page, footer
from .report import DEFAULT_ROOT, Report, by_setting
from .runs import ReportError, RunRecord, Runs, RunSpec, make_runs, seeded, state
from .tables import table

__all__ = ["DEFAULT_ROOT", "INVERTIBLE", "MIN_SEEDS", "NON_INVERTIBLE", "UNDETERMINED", "Claim", "ClaimSet",
           "ClaimText", "Criterion", "Figures", "Fragments", "Judgement", "Observation", "Page", "Report",
           "ReportError", "RunRecord", "RunSpec", "Runs", "Verdict", "by_setting", "claims_table", "combine",
           "find_stored", "fmt", "footer", "judge", "judge_errors", "load_texts", "make_runs", "minutes",
           "num", "percent", "relative_of", "seeded", "spread", "state", "stored", "table"]
