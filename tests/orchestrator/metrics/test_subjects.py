"""Per-subject and per-group MMLU accuracy from prediction records (orchestrator/metrics/subjects.py)."""

from collections import Counter

from orchestrator.metrics.subjects import GROUP_OF, GROUPS, UNMAPPED, group_table, subject_table, subjects_markdown
from tests.builders import MMLU_DIR


def rec(subject: str, correct: bool) -> dict:
    return {"subject": subject, "correct": correct}


def test_the_mapping_covers_the_57_subjects_of_the_real_copy_in_the_usual_group_sizes():
    on_disk = sorted(p.name.removesuffix("_test.csv") for p in (MMLU_DIR / "test").glob("*_test.csv"))
    assert sorted(GROUP_OF) == on_disk and len(on_disk) == 57
    assert Counter(GROUP_OF.values()) == {"STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    assert (GROUP_OF["abstract_algebra"], GROUP_OF["professional_law"], GROUP_OF["sociology"],
            GROUP_OF["anatomy"]) == ("STEM", "humanities", "social sciences", "other")


def test_groups_are_micro_averaged_over_questions_not_subjects():
    # STEM: astronomy 1/1, college_physics 1/3 -> 2/4 = 0.5 (the mean of subject accuracies would be 0.667)
    records = [rec("astronomy", True)] + [rec("college_physics", c) for c in (True, False, False)]
    records += [rec("philosophy", False), rec("my_own_subject", True)]
    groups = {g.name: g for g in group_table(records)}
    assert [g.name for g in group_table(records)] == list(GROUPS)
    assert (groups["STEM"].correct, groups["STEM"].total, groups["STEM"].accuracy) == (2, 4, 0.5)
    assert (groups["humanities"].accuracy, groups["other"].total, groups["other"].accuracy) == (0.0, 0, None)
    subjects = subject_table(records)
    assert [s.name for s in subjects] == ["astronomy", "college_physics", "my_own_subject", "philosophy"]
    assert subjects[2].group == UNMAPPED  # listed, but counted in no group
    assert sum(s.total for s in subjects) == len(records)


def test_markdown_lists_groups_then_subjects():
    text = subjects_markdown([rec("virology", True), rec("virology", False)], scoring="lm-eval")
    assert "| group (scoring: lm-eval) |" in text
    assert "| other | 2 | 1 | 0.5000 |" in text and "| STEM | 0 | 0 | - |" in text
    assert "| virology | other | 2 | 1 | 0.5000 |" in text
