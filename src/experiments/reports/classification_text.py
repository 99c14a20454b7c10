"""The prose of docs/results/classification.md (kept apart from the code that measures)."""

INTRO: list[str] = []
FINDINGS: list[str] = []
