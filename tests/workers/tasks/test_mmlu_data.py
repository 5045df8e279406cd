"""MMLU on disk: the real copy in ../shared/data/mmlu, the exact prompt, and malformed folders and rows."""

import shutil
from pathlib import Path

import pytest

from tests.builders import MMLU_DIR
from workers.errors import UserError
from workers.tasks.mmlu_data import PROMPT_FORMATS, build_prompt, list_subjects, load_mmlu, read_csv

LM_EVAL = PROMPT_FORMATS["lm-eval"]

# abstract_algebra: its 5 dev rows as shots, then test row 0, exactly as METRICS.md lays the prompt out.
ABSTRACT_ALGEBRA_TEST_0 = (
    "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
    "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are "
    "subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\n"
    "Answer: B\n\n"
    "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The "
    "symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\n"
    "Answer: C\n\n"
    "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup "
    "of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: A\n\n"
    "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
    "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
)


def test_real_copy_has_57_subjects_14042_test_and_285_dev_questions():
    data = load_mmlu(MMLU_DIR, "test", None, None, 5)
    assert len(data.dev) == 57
    assert len(data.questions) == 14_042
    assert sum(len(rows) for rows in data.dev.values()) == 285
    assert [q.answer for q in data.questions].count("D") == 3776  # README: test letters 3222/3462/3582/3776
    subjects = [q.subject for q in data.questions]
    assert subjects == sorted(subjects)  # the global order: subjects sorted, then file row order
    assert len(load_mmlu(MMLU_DIR, "val", None, None, 5).questions) == 1531


def test_prompt_of_a_known_question_is_exact():
    data = load_mmlu(MMLU_DIR, "test", ["abstract_algebra"], 1, 5)
    q = data.questions[0]
    assert (q.subject, q.index, q.answer) == ("abstract_algebra", 0, "B")
    assert build_prompt(q, data.dev["abstract_algebra"][:5], LM_EVAL) == ABSTRACT_ALGEBRA_TEST_0


def test_quoted_fields_with_commas_quotes_and_newlines(tmp_path):
    path = tmp_path / "x_test.csv"
    path.write_text('"Is it ""a, b""\nor c?",1,"2,3",x,y,C\nplain,a,b,c,d, D\n', encoding="utf-8")
    first, second = read_csv(path, "x")
    assert first.question == 'Is it "a, b"\nor c?' and first.choices == ("1", "2,3", "x", "y")
    assert (second.index, second.answer) == (1, "D")


def test_subjects_and_limit_pick_the_first_rows_in_sorted_subject_order():
    data = load_mmlu(MMLU_DIR, "test", ["virology", "anatomy"], 3, 5)
    assert [(q.subject, q.index) for q in data.questions] == [("anatomy", i) for i in range(3)] + [
        ("virology", i) for i in range(3)]


@pytest.fixture
def small_copy(tmp_path: Path) -> Path:
    """Two subjects of the real copy, to break on purpose."""
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
        for subject in ("anatomy", "virology"):
            shutil.copy(MMLU_DIR / split / f"{subject}_{split}.csv", tmp_path / split)
    return tmp_path


def test_folder_without_dev_or_test_names_the_missing_folder(small_copy):
    shutil.rmtree(small_copy / "test")
    with pytest.raises(UserError, match=r"has no test/ folder"):
        list_subjects(small_copy, "test")
    shutil.rmtree(small_copy / "dev")
    with pytest.raises(UserError, match=r"has no dev/ folder"):
        list_subjects(small_copy, "test")


def test_row_with_5_columns_names_file_and_line(small_copy):
    path = small_copy / "test" / "virology_test.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + "What?,a,b,c,A\n" + "".join(lines[2:]), encoding="utf-8")
    with pytest.raises(UserError, match=r"virology_test.csv line 3: expected 6 columns .* found 5"):
        load_mmlu(small_copy, "test", None, None, 5)


def test_answer_outside_a_to_d_names_file_and_line(small_copy):
    path = small_copy / "dev" / "anatomy_dev.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "Which?,a,b,c,d,E\n", encoding="utf-8")
    line = text.count("\n") + 1
    with pytest.raises(UserError, match=rf"anatomy_dev.csv line {line}: answer 'E' is not one of A, B, C, D"):
        load_mmlu(small_copy, "test", None, None, 5)


def test_unknown_subject_suggests_the_closest():
    with pytest.raises(UserError, match=r"task.subjects: unknown subject 'astronmy'. Did you mean: astronomy\?"):
        load_mmlu(MMLU_DIR, "test", ["astronmy"], None, 5)


def test_more_shots_than_dev_rows_is_refused():
    with pytest.raises(UserError, match=r"task.shots: 6 shots, but .*anatomy_dev.csv has only 5 rows"):
        load_mmlu(MMLU_DIR, "test", ["anatomy"], None, 6)
