"""The mmlu task with a tiny random Llama and an offline BPE tokenizer, through the real load paths."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoTokenizer
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.metrics.subjects import group_table
from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import MMLU_DIR, mmlu_job, save_bpe_tokenizer, save_tiny_llama_with_tokenizer, stored_rows
from workers.actor import BenchWorker
from workers.contract import ShardTask
from workers.errors import UserError
from workers.specs import DataSpec, MMLUTask
from workers.tasks import Batch
from workers.tasks.mmlu import MMLU, choice_token_ids, encode_prompts, prompt_limit
from workers.tasks.mmlu_data import PROMPT_FORMATS, build_prompt, load_mmlu

LM_EVAL = PROMPT_FORMATS["lm-eval"]

SUBJECTS = ["abstract_algebra", "anatomy", "virology"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return save_tiny_llama_with_tokenizer(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def tokenizer(llama):
    return AutoTokenizer.from_pretrained(llama)


def make_task(llama, tokenizer, seq_len=2048, **options) -> MMLU:
    """The worker's view of questions prepared in this process (what every worker once did itself)."""
    task = MMLUTask(**{"subjects": SUBJECTS, "limit": 4, **options})
    return MMLU(MMLU.prepare(task, DataSpec(path=str(MMLU_DIR)), tokenizer, AutoConfig.from_pretrained(llama),
                             seq_len, seed=0))


def predictions(llama, bs: int, ranges: list[tuple[int, int]]) -> dict[int, dict]:
    """Records by question, from BenchWorker's val pass over `ranges` (one shard each)."""
    worker = BenchWorker(validate(mmlu_job(str(llama), bs=bs), "t").worker_config())
    try:
        records = {}
        for shard_id, (start, stop) in enumerate(ranges):
            result = worker.run_shard(ShardTask(shard_id, start, stop, "val"))
            assert result.error is None, result.error
            records.update({r["example"]: r for r in result.records})
        return records
    finally:
        worker.close()


def test_choice_letters_are_single_tokens_or_refused(tmp_path, tokenizer):
    ids = choice_token_ids(tokenizer)
    assert [tokenizer.decode([i]) for i in ids] == [" A", " B", " C", " D"]
    save_bpe_tokenizer(tmp_path, vocab_size=300)  # too few merges for "ĠA" .. "ĠD"
    with pytest.raises(UserError, match=r"model.tokenizer: ' A' after 'Answer:' is 2 tokens"):
        choice_token_ids(AutoTokenizer.from_pretrained(tmp_path))


def test_prediction_does_not_depend_on_bs_or_shards(llama):
    whole = predictions(llama, 1, [(0, 12)])
    batched = predictions(llama, 4, [(0, 12)])
    sharded = predictions(llama, 4, [(0, 5), (5, 9), (9, 12)])
    assert sorted(whole) == list(range(12))
    assert len({r["predicted"] for r in whole.values()}) > 1  # the random model does not answer one letter
    for other in (batched, sharded):
        for i, rec in whole.items():
            assert other[i]["predicted"] == rec["predicted"]
            assert other[i]["logit_A"] == pytest.approx(rec["logit_A"], abs=1e-4)
            assert other[i]["logit_D"] == pytest.approx(rec["logit_D"], abs=1e-4)


def test_batches_sort_by_length_pad_right_and_count_real_tokens(llama, tokenizer):
    task = make_task(llama, tokenizer)
    batches = list(task.batches(2, 11, 4))
    assert sorted(i for b in batches for i in b.payload) == list(range(2, 11))
    lengths = [n for b in batches for n in b.lengths]
    assert lengths == sorted(lengths)
    first = batches[0]
    assert first.items == sum(first.lengths) == int(first.inputs["attention_mask"].sum())
    row = first.lengths.index(min(first.lengths))
    assert first.inputs["attention_mask"][row, : first.lengths[row]].all()
    assert not first.inputs["attention_mask"][row, first.lengths[row]:].any()


def test_both_scorings_on_hand_built_logits(llama, tokenizer):
    """Row 0: a non-letter token tops the vocabulary, the gold letter tops the letters. Row 1: gold on top."""
    tasks = {s: make_task(llama, tokenizer, scoring=s) for s in ("lm-eval", "flagperf")}
    task = tasks["lm-eval"]
    batch = Batch({}, items=0, lengths=[3, 5], payload=[0, 1])
    logits = torch.zeros(2, 5, len(tokenizer))
    gold = [task.choice_ids["ABCD".index(task.gold(i))] for i in (0, 1)]
    logits[0, 2, 7] = 9.0
    logits[0, 2, gold[0]] = 5.0
    logits[0, 4, gold[0]] = 50.0  # a padded position: must be ignored
    logits[1, 4, gold[1]] = 9.0
    lm_eval, flagperf = (tasks[s].score(batch, logits) for s in ("lm-eval", "flagperf"))
    assert (lm_eval.scored, lm_eval.correct, flagperf.correct) == (2, 2, 1)
    assert flagperf.records[0]["predicted"] is None and flagperf.records[0]["scoring"] == "flagperf"
    assert flagperf.records[0]["prompt_format"] == "flagperf-llama2_7b_mmlu@26dde69"
    data = load_mmlu(MMLU_DIR, "test", SUBJECTS, 4, 5)
    q = data.questions[0]
    for scoring, task in tasks.items():  # each variant tokenises its own harness's prompt
        expected = tokenizer.encode(build_prompt(q, data.dev[q.subject][:5], PROMPT_FORMATS[scoring]))
        assert task.prompt(0).tolist() == expected
    assert tasks["lm-eval"].prompt(0).tolist() != tasks["flagperf"].prompt(0).tolist()
    assert lm_eval.records[0][f"logit_{task.gold(0)}"] == 5.0


def test_prompt_limit_takes_the_smallest_cap(llama):
    config = AutoConfig.from_pretrained(llama)
    assert prompt_limit(MMLUTask(), 4096, config) == 2048  # the model's positions
    long_context = AutoConfig.from_pretrained(llama, max_position_embeddings=8192)
    assert prompt_limit(MMLUTask(scoring="flagperf"), 4096, long_context) == 2048
    assert prompt_limit(MMLUTask(max_prompt_tokens=700), 1024, config) == 700


def test_long_prompts_drop_shots_from_the_front_and_count_them(llama, tokenizer):
    data = load_mmlu(MMLU_DIR, "test", SUBJECTS, 4, 5)
    encoded = encode_prompts(data, tokenizer, 5, 450, LM_EVAL)
    used = [e.shots_used for e in encoded]
    assert 0 < min(used) and max(used) < 5  # 5-shot prompts here are 530-660 tokens
    for q, e in zip(data.questions, encoded):
        dev = data.dev[q.subject]
        kept = tokenizer.encode(build_prompt(q, dev[5 - e.shots_used:], LM_EVAL))
        one_more = tokenizer.encode(build_prompt(q, dev[4 - e.shots_used:], LM_EVAL))
        assert e.ids.tolist() == kept and len(kept) <= 450 < len(one_more) and not e.truncated
    task = make_task(llama, tokenizer, seq_len=450)  # the prepared table holds exactly these prompts
    batch = next(task.batches(0, len(encoded), len(encoded)))
    by_example = {r["example"]: r for r in task.score(batch, torch.zeros(len(encoded), 450, len(tokenizer))).records}
    for i, e in enumerate(encoded):
        assert task.prompt(i).tolist() == e.ids.tolist()
        assert (by_example[i]["shots_used"], by_example[i]["truncated"]) == (e.shots_used, e.truncated)


def test_a_question_longer_than_the_context_is_cut_from_the_left(llama, tokenizer):
    data = load_mmlu(MMLU_DIR, "test", SUBJECTS, 1, 5)
    zero_shot = tokenizer.encode(build_prompt(data.questions[0], [], LM_EVAL))
    e = encode_prompts(data, tokenizer, 5, 40, LM_EVAL)[0]
    assert (e.shots_used, e.truncated, len(e.ids)) == (0, True, 40)
    assert e.ids[0] == tokenizer.bos_token_id and e.ids[1:].tolist() == zero_shot[-39:]
    assert e.ids[-1] == zero_shot[-1]  # still ends in "Answer:"
    assert make_task(llama, tokenizer, seq_len=40, limit=1).prompt(0).tolist() == e.ids.tolist()


def test_synthetic_data_and_a_mismatched_tokenizer_are_refused(llama, tokenizer):
    config = AutoConfig.from_pretrained(llama)
    with pytest.raises(UserError, match="data.synthetic: the mmlu task reads an MMLU folder"):
        MMLU.prepare(MMLUTask(), DataSpec(synthetic={"size": 4}), tokenizer, config, 2048, 0)
    small = AutoConfig.from_pretrained(llama, vocab_size=256)
    with pytest.raises(UserError, match="outside the model's vocabulary"):
        MMLU.prepare(MMLUTask(subjects=["anatomy"], limit=1), DataSpec(path=str(MMLU_DIR)), tokenizer, small, 2048, 0)


def test_run_job_accuracy_equals_the_stored_predictions(llama, tmp_path):
    spec = validate(mmlu_job(str(llama), bs=4, shard_size=4, passes=["val", "infer"], warmup=1), "t")
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    table = pq.read_table(result.run_dir / "predictions.parquet").to_pylist()
    assert result.row.item_unit == "tok" and result.row.shards == 3
    row = result.row
    assert row.prompt_format == "lm-eval-mmlu-default@0.4.13"
    assert row.latency_shard_cv is None  # 3 batches per pass: too few to fit a cost
    assert {r["prompt_format"] for r in table} == {"lm-eval-mmlu-default@0.4.13"}
    for pass_name, acc, items in (("val", row.acc_val, row.items_val), ("infer", row.acc_infer, row.items_infer)):
        rows = [r for r in table if r["pass"] == pass_name]
        assert len(rows) == 12 and {r["subject"] for r in rows} == set(SUBJECTS)
        assert acc == sum(r["correct"] for r in rows) / len(rows)
        assert items == sum(r["prompt_tokens"] for r in rows)
    groups = {g.name: g for g in group_table([r for r in table if r["pass"] == "infer"])}
    assert groups["STEM"].total == 4 and groups["other"].total == 8


def test_bad_folder_exits_2_in_one_line_and_writes_nothing(llama, tmp_path):
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(mmlu_job(str(llama), data=str(tmp_path / "mmlu"))))
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, ["submit", str(job), "--no-ray", "--results", str(results)])
    assert outcome.exit_code == 2
    assert "has no dev/ folder" in outcome.output and outcome.output.count("\n") == 1
    assert stored_rows(results) == [] and not (results / "runs").exists()
