"""The two MMLU prompt formats against transcriptions of the harnesses' own code, on real questions.

Each reference renderer below is written from its harness's source, not from our prompt builder:
- lm-eval 0.4.13, default `mmlu` task: the YAML fields are copied verbatim from the wheel
  (`lm_eval/tasks/mmlu/default/_default_template_yaml`, the per-subject `description` as
  `_generate_configs.py` writes it) and the Jinja template is rendered with the environment of
  `lm_eval/utils.py` (`keep_trailing_newline=True`); the context is assembled as
  `ConfigurableTask.fewshot_context` + `build_qa_turn` do for a plain-text model (no chat template,
  no system instruction): description, each shot as text + target_delimiter + choice + fewshot_delimiter,
  then the question's text. Documents come from the CSV as the HF `hendrycks_test` builder makes them
  (csv.reader; question = column 0, choices = columns 1-4, answer = index of the letter).
- FlagPerf llama2_7b_mmlu (inference/benchmarks/llama2_7b_mmlu/pytorch/dataloader.py, commit 26dde69):
  `format_subject`, `format_example` and `gen_prompt`, transcribed over lists instead of DataFrames.
"""

import csv
import functools
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.builders import MMLU_DIR
from workers.tasks.mmlu_data import PROMPT_FORMATS, build_prompt, load_mmlu, prompt_format

# -------------------------------------------------------------------- lm-eval 0.4.13 transcription
LM_EVAL_TEMPLATE_YAML = r'''
dataset_path: cais/mmlu
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
'''
# lm_eval/tasks/mmlu/default/mmlu_moral_disputes.yaml, verbatim (the folded scalar is the real spelling)
LM_EVAL_MORAL_DISPUTES_YAML = r'''
"dataset_name": "moral_disputes"
"description": "The following are multiple choice questions (with answers) about moral\
  \ disputes.\n\n"
"tag": "mmlu_humanities_tasks"
"include": "_default_template_yaml"
"task": "mmlu_moral_disputes"
"task_alias": "moral_disputes"
'''
TARGET_DELIMITER, FEWSHOT_DELIMITER = " ", "\n\n"  # TaskConfig defaults; the MMLU YAML sets neither
JINJA = jinja2.Environment(loader=jinja2.BaseLoader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def lm_eval_description(subject: str) -> str:
    """`_generate_configs.py`: the description of every subject YAML."""
    return f"The following are multiple choice questions (with answers) about {' '.join(subject.split('_'))}.\n\n"


def hf_docs(path: Path) -> list[dict]:
    """The HF builder's documents: csv.reader rows as question / choices / answer index."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5])} for r in csv.reader(fh)]


def lm_eval_context(subject: str, doc: dict, shots: int) -> str:
    config = yaml.safe_load(LM_EVAL_TEMPLATE_YAML)
    to_text = JINJA.from_string(config["doc_to_text"])
    choices = config["doc_to_choice"]
    description = JINJA.from_string(lm_eval_description(subject)).render(**doc)  # resolve_field(doc, description)
    fewshot = hf_docs(MMLU_DIR / "dev" / f"{subject}_dev.csv")[:shots]  # FirstNSampler: pool[:n]
    turns = "".join(to_text.render(**s) + TARGET_DELIMITER + choices[s["answer"]] + FEWSHOT_DELIMITER for s in fewshot)
    return description + turns + to_text.render(**doc)


# ----------------------------------------------------------------------- FlagPerf transcription
FLAGPERF_CHOICES = ["A", "B", "C", "D"]


def flagperf_format_subject(subject: str) -> str:
    s = ""
    for entry in subject.split("_"):
        s += " " + entry
    return s


def flagperf_format_example(row: list[str], include_answer: bool = True) -> str:
    prompt = row[0]
    k = len(row) - 2
    for j in range(k):
        prompt += "\n{}. {}".format(FLAGPERF_CHOICES[j], row[j + 1])
    prompt += "\nAnswer:"
    if include_answer:
        prompt += " {}\n\n".format(row[k + 1])
    return prompt


def flagperf_prompt(subject: str, row: list[str], shots: int) -> str:
    with open(MMLU_DIR / "dev" / f"{subject}_dev.csv", newline="", encoding="utf-8") as fh:
        dev = list(csv.reader(fh))[:shots]
    train_prompt = "The following are multiple choice questions (with answers) about {}.\n\n".format(
        flagperf_format_subject(subject))
    for r in dev:
        train_prompt += flagperf_format_example(r)
    return train_prompt + flagperf_format_example(row, include_answer=False)


# ---------------------------------------------------------------------------------------- tests
# Subjects whose test questions or dev shots begin or end with whitespace: leading spaces
# (moral_disputes: every test question), trailing spaces (moral_scenarios, public_relations),
# trailing newlines (nutrition: test and dev), padded shots (high_school_statistics, machine_learning).
SUBJECTS = ["formal_logic", "high_school_statistics", "machine_learning", "marketing", "moral_disputes",
            "moral_scenarios", "nutrition", "public_relations", "world_religions"]


def padded_questions(per_subject: int = 6):
    """(subject, row index, raw CSV row): each subject's first 2 test questions (their shots are the
    subject's dev rows, padded in several subjects) and up to `per_subject` padded test questions."""
    found = []
    for subject in SUBJECTS:
        with open(MMLU_DIR / "test" / f"{subject}_test.csv", newline="", encoding="utf-8") as fh:
            rows = list(enumerate(csv.reader(fh)))
        padded = [(i, r) for i, r in rows[2:] if r[0] != r[0].strip()]
        found += [(subject, i, r) for i, r in rows[:2] + padded[:per_subject]]
    return found


@functools.cache
def subject_data(subject: str):
    return load_mmlu(MMLU_DIR, "test", [subject], None, 5)


def ours(subject: str, index: int, scoring: str, shots: int = 5) -> str:
    data = subject_data(subject)
    return build_prompt(data.questions[index], data.dev[subject][:shots], prompt_format(scoring))


def test_the_real_questions_cover_leading_and_trailing_whitespace_in_questions_and_shots():
    questions = padded_questions()
    assert sum(r[0] != r[0].strip() for _, _, r in questions) >= 30
    assert any(r[0][0].isspace() for _, _, r in questions) and any(r[0][-1] == "\n" for _, _, r in questions)
    assert any(r[0][-1] == " " for _, _, r in questions)
    shots = [d["question"] for s in SUBJECTS for d in hf_docs(MMLU_DIR / "dev" / f"{s}_dev.csv")]
    assert sum(q != q.strip() for q in shots) >= 15  # formal_logic, marketing, nutrition, world_religions ...


@pytest.mark.parametrize("shots", [5, 0])
def test_lm_eval_prompt_equals_the_transcribed_template_on_padded_real_questions(shots):
    for subject, index, row in padded_questions():
        expected = lm_eval_context(subject, {"question": row[0], "choices": row[1:5], "answer": "ABCD".index(row[5])},
                                   shots)
        assert ours(subject, index, "lm-eval", shots) == expected, (subject, index)


def test_lm_eval_description_yaml_and_the_strip_that_matters():
    assert yaml.safe_load(LM_EVAL_MORAL_DISPUTES_YAML)["description"] == lm_eval_description("moral_disputes")
    prompt = ours("moral_disputes", 0, "lm-eval", shots=0)
    # the question is " Just war theory's ..." in the CSV; lm-eval's template strips it
    assert prompt == ("The following are multiple choice questions (with answers) about moral disputes.\n\n"
                      "Just war theory's principle of military necessity belongs to\nA. jus in bello.\n"
                      "B. jus ad bellum.\nC. moral nihilism.\nD. all of the above\nAnswer:")


@pytest.mark.parametrize("shots", [5, 0])
def test_flagperf_prompt_equals_its_transcribed_code_on_padded_real_questions(shots):
    for subject, index, row in padded_questions():
        assert ours(subject, index, "flagperf", shots) == flagperf_prompt(subject, row, shots), (subject, index)


def test_where_the_two_formats_differ():
    """FlagPerf: two spaces after "about" and the question as the file has it; the rest is the same."""
    lm, fp = ours("moral_disputes", 0, "lm-eval"), ours("moral_disputes", 0, "flagperf")
    assert "about  moral disputes.\n\n" in fp and "about moral disputes.\n\n" in lm
    assert "\n\n Just war theory's" in fp and "\n\nJust war theory's" in lm
    # moral_disputes' dev shots have no padding: those two are the only differences
    assert fp.replace("about  ", "about ", 1).replace("\n\n Just war", "\n\nJust war") == lm


def test_prompt_formats_are_named_with_their_version():
    assert {k: v.id for k, v in PROMPT_FORMATS.items()} == {
        "lm-eval": "lm-eval-mmlu-default@0.4.13", "flagperf": "flagperf-llama2_7b_mmlu@26dde69"}
