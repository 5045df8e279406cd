"""MMLU predictions -> per-subject and per-group accuracy. Pure functions over plain records.

The input is the records of one pass as stored in `runs/<run_id>/predictions.parquet` (dicts with
at least `subject` and `correct`). Every figure is correct/total over questions (micro average):
a group's accuracy is never the mean of its subjects' accuracies, so it matches the overall
accuracy's definition in METRICS.md.

The subject -> group mapping is the one of the MMLU authors (hendrycks/test, categories.py):
each subject has a subcategory, and subcategories fall into STEM, humanities, social sciences and
other (the paper's "other (business, health, misc.)"): 18, 13, 12 and 14 subjects.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics", "business_ethics": "business",
    "clinical_knowledge": "health", "college_biology": "biology", "college_chemistry": "chemistry",
    "college_computer_science": "computer science", "college_mathematics": "math", "college_medicine": "health",
    "college_physics": "physics", "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering", "elementary_mathematics": "math",
    "formal_logic": "philosophy", "global_facts": "other", "high_school_biology": "biology",
    "high_school_chemistry": "chemistry", "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health", "human_sexuality": "culture",
    "international_law": "law", "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business", "marketing": "business",
    "medical_genetics": "health", "miscellaneous": "other", "moral_disputes": "philosophy",
    "moral_scenarios": "philosophy", "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law", "professional_medicine": "health",
    "professional_psychology": "psychology", "public_relations": "politics", "security_studies": "politics",
    "sociology": "culture", "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
CATEGORIES = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other": ("other", "business", "health"),
}
GROUPS = tuple(CATEGORIES)
GROUP_OF = {subject: next(g for g, subs in CATEGORIES.items() if sub in subs) for subject, sub in SUBCATEGORY.items()}
UNMAPPED = "unmapped"  # a subject outside the 57 (a user's own data): listed, but in no group


@dataclass(frozen=True)
class Accuracy:
    name: str  # a subject, or a group name
    group: str  # the subject's group (a group's own row: the group name)
    correct: int
    total: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def _counts(records: Iterable[Mapping[str, Any]]) -> tuple[Counter, Counter]:
    correct: Counter = Counter()
    total: Counter = Counter()
    for rec in records:
        total[rec["subject"]] += 1
        correct[rec["subject"]] += bool(rec["correct"])
    return correct, total


def subject_table(records: Iterable[Mapping[str, Any]]) -> list[Accuracy]:
    """One row per subject present in the records, sorted by subject (57 rows for a full run)."""
    correct, total = _counts(records)
    return [Accuracy(s, GROUP_OF.get(s, UNMAPPED), correct[s], total[s]) for s in sorted(total)]


def group_table(records: Iterable[Mapping[str, Any]]) -> list[Accuracy]:
    """The four groups in the usual order, micro-averaged; a group with no question has total 0."""
    rows = subject_table(records)
    return [
        Accuracy(g, g, sum(r.correct for r in rows if r.group == g), sum(r.total for r in rows if r.group == g))
        for g in GROUPS
    ]


def _cell(row: Accuracy) -> str:
    return "-" if row.accuracy is None else f"{row.accuracy:.4f}"


def subjects_markdown(records: list[Mapping[str, Any]], scoring: str = "") -> str:
    """The groups, then every subject, as Markdown (for the run folder's metrics.md)."""
    how = f" (scoring: {scoring})" if scoring else ""
    lines = [f"| group{how} | questions | correct | acc |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.total} | {r.correct} | {_cell(r)} |" for r in group_table(records)]
    lines += ["", "| subject | group | questions | correct | acc |", "|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.group} | {r.total} | {r.correct} | {_cell(r)} |" for r in subject_table(records)]
    return "\n".join(lines) + "\n"


def subjects_rich(records: list[Mapping[str, Any]], title: str):
    """The groups, then every subject, as one rich table for the terminal."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("subject / group", "group", "questions", "correct", "acc"):
        table.add_column(column, justify="right" if column in ("questions", "correct", "acc") else "left")
    for row in group_table(records):
        table.add_row(f"[bold]{row.name}", "", str(row.total), str(row.correct), _cell(row))
    table.add_section()
    for row in subject_table(records):
        table.add_row(row.name, row.group, str(row.total), str(row.correct), _cell(row))
    return table
