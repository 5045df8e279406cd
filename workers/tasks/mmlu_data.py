"""MMLU on disk -> questions and prompt strings (METRICS.md "MMLU scoring"). No tokenizer, no torch.

The folder has the original hendrycks/test layout: `dev/<subject>_dev.csv` (the shots),
`test/<subject>_test.csv` and `val/<subject>_val.csv`, no header, six columns
`question, A, B, C, D, answer`. Fields may hold commas, quotes and newlines, so rows are read with
the csv module (RFC 4180 quoting), never split by hand. Field text is kept exactly as in the file: some
questions begin or end with whitespace (648 test questions begin with a space, 315 end in one or in
a newline), and what happens to it is the prompt format's business, not the reader's.

Prompt formats (`PROMPT_FORMATS`, picked by `task.scoring`), each named with the version of the
code it was transcribed from; the name is stored in every row and prediction, so results of
different prompts are never mixed silently:
- `lm-eval-mmlu-default@0.4.13`: lm-evaluation-harness's default `mmlu` task (its
  `tasks/mmlu/default/_default_template_yaml` and the per-subject `description`), rendered as its
  `ConfigurableTask.fewshot_context` does for a plain-text model: the description
  "The following are multiple choice questions (with answers) about {subject words}.\n\n", then
  each shot as `doc_to_text` + target_delimiter " " + its letter + fewshot_delimiter "\n\n", then
  the question's `doc_to_text`, which is
  "{{question.strip()}}\nA. {{choices[0]}}\nB. ...\nD. {{choices[3]}}\nAnswer:". Only the question is
  stripped (Python's str.strip); choices are inserted as they are. Shots: the subject's first dev
  rows in file order (sampler first_n). The same prompt from lm-eval 0.4.4 to 0.4.13; 0.4.2 and
  0.4.3 end the description in one "\n" (their Jinja environment dropped a trailing newline).
- `flagperf-llama2_7b_mmlu@26dde69`: FlagPerf's inference/benchmarks/llama2_7b_mmlu/pytorch/
  dataloader.py (commit 26dde69, the seed's harness; itself hendrycks/test's evaluate.py):
  "...about" + "".join(" " + word) + ".\n\n", so two spaces after "about", and every field as
  the file holds it (no strip). FlagPerf reads the CSVs with pandas' defaults: pandas >= 2.0
  reads a cell "None" as missing and prints it "nan" (12 answer choices of the real test and val
  files, e.g. college_mathematics test 8, 21, 60); pandas < 2.0 and this reader keep "None".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from workers.errors import UserError, did_you_mean

LETTERS = ("A", "B", "C", "D")
COLUMNS = "question, A, B, C, D, answer"


@dataclass(frozen=True)
class Question:
    subject: str
    index: int  # row number within its subject's file, from 0
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # one of LETTERS


def read_csv(path: Path, subject: str) -> list[Question]:
    """Every row of one subject file; a malformed row is a one-line error naming file and line."""
    try:
        fh = open(path, newline="", encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"data.path: {path} is missing (every subject needs a dev and a test/val file)") from exc
    rows: list[Question] = []
    with fh:
        reader = csv.reader(fh)
        line = 1  # physical line where the next record starts (records may span lines)
        try:
            for fields in reader:
                rows.append(_question(fields, path, line, subject, len(rows)))
                line = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UserError(f"data.path: {path} line {line}: not a readable UTF-8 CSV row ({exc})") from exc
    return rows


def _question(fields: list[str], path: Path, line: int, subject: str, index: int) -> Question:
    if len(fields) != 6:
        raise UserError(f"data.path: {path} line {line}: expected 6 columns ({COLUMNS}), found {len(fields)}")
    answer = fields[5].strip()
    if answer not in LETTERS:
        raise UserError(f"data.path: {path} line {line}: answer {fields[5]!r} is not one of A, B, C, D")
    return Question(subject, index, fields[0], (fields[1], fields[2], fields[3], fields[4]), answer)


def list_subjects(folder: Path, split: str) -> list[str]:
    """Subjects with a file in `split/`, sorted (the global question order starts here)."""
    if not folder.is_dir():
        raise UserError(f"data.path: '{folder}' is not a folder (mmlu needs the MMLU folder with dev/ and {split}/)")
    for needed in ("dev", split):
        if not (folder / needed).is_dir():
            raise UserError(f"data.path: '{folder}' has no {needed}/ folder (expected dev/<subject>_dev.csv and "
                            f"{split}/<subject>_{split}.csv, the original MMLU layout)")
    subjects = sorted(p.name.removesuffix(f"_{split}.csv") for p in (folder / split).glob(f"*_{split}.csv"))
    if not subjects:
        raise UserError(f"data.path: '{folder / split}' holds no <subject>_{split}.csv files")
    return subjects


def choose_subjects(available: list[str], wanted: list[str] | None) -> list[str]:
    """The requested subjects (sorted, so order never depends on how the list was written)."""
    if wanted is None:
        return available
    for name in wanted:
        if name not in available:
            raise UserError(f"task.subjects: unknown subject '{name}'.{did_you_mean(name, available)}")
    return sorted(set(wanted))


@dataclass(frozen=True)
class MMLUData:
    """Test (or val) questions in the global order, and each subject's dev rows (the shots)."""

    questions: list[Question]
    dev: dict[str, list[Question]]


def load_mmlu(folder: Path, split: str, subjects: list[str] | None, limit: int | None, shots: int) -> MMLUData:
    """Questions ordered by subject name, then row order in the subject's file; `limit` per subject."""
    chosen = choose_subjects(list_subjects(folder, split), subjects)
    questions: list[Question] = []
    dev: dict[str, list[Question]] = {}
    for subject in chosen:
        dev[subject] = read_csv(folder / "dev" / f"{subject}_dev.csv", subject)
        if len(dev[subject]) < shots:
            raise UserError(f"task.shots: {shots} shots, but {folder / 'dev' / f'{subject}_dev.csv'} has only "
                            f"{len(dev[subject])} rows")
        rows = read_csv(folder / split / f"{subject}_{split}.csv", subject)
        questions.extend(rows[:limit] if limit is not None else rows)
    return MMLUData(questions, dev)


@dataclass(frozen=True)
class PromptFormat:
    """One harness's MMLU prompt. `id` goes into rows and predictions (the version is part of it)."""

    id: str
    after_about: str  # what separates "about" from the subject's words
    strip_question: bool

    def header(self, subject: str) -> str:
        words = " ".join(subject.split("_"))
        return f"The following are multiple choice questions (with answers) about{self.after_about}{words}.\n\n"

    def block(self, q: Question, with_answer: bool) -> str:
        """One question: the question text, the four choices, "Answer:" (and " <letter>\n\n" for a shot)."""
        text = q.question.strip() if self.strip_question else q.question
        body = text + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices)) + "\nAnswer:"
        return body + f" {q.answer}\n\n" if with_answer else body

    def prompt(self, q: Question, shots: list[Question]) -> str:
        """Header, the shots with their answers, the question ending in "Answer:" (nothing after it)."""
        return self.header(q.subject) + "".join(self.block(s, True) for s in shots) + self.block(q, False)


PROMPT_FORMATS = {
    "lm-eval": PromptFormat("lm-eval-mmlu-default@0.4.13", after_about=" ", strip_question=True),
    "flagperf": PromptFormat("flagperf-llama2_7b_mmlu@26dde69", after_about="  ", strip_question=False),
}


def prompt_format(scoring: str) -> PromptFormat:
    """The prompt format of a `task.scoring` variant (each variant is one harness, prompt and scoring)."""
    return PROMPT_FORMATS[scoring]


def build_prompt(q: Question, shots: list[Question], fmt: PromptFormat) -> str:
    return fmt.prompt(q, shots)
