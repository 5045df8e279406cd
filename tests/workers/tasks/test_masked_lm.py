import numpy as np
import pytest
import torch

from tests.builders import TINY_BERT, WIKITEXT, bert_vocab
from workers.errors import UserError
from workers.specs import DataSpec, MaskedLMTask
from workers.tasks.masked_lm import MaskedLM, mask_stream, read_text, score_masked


class Config:
    def __init__(self, vocab_size):
        self.vocab_size = vocab_size


def make(options, data, tokenizer, config, seq_len, seed) -> MaskedLM:
    """The worker's view of a table prepared in this process (what every worker once did itself)."""
    return MaskedLM(MaskedLM.prepare(options, data, tokenizer, config, seq_len, seed))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab=str(bert_vocab()))


def test_score_counts_masked_positions_only():
    inputs = np.array([[101, 103, 5, 103], [103, 7, 103, 102]])
    labels = np.array([[101, 8, 5, 9], [4, 7, 6, 102]])
    pred = np.array([[101, 8, 5, 1], [4, 7, 0, 102]])  # right at 2 of the 4 masked positions
    assert score_masked(pred, inputs, labels, mask_id=103) == (4, 2)


def test_task_score_on_hand_built_logits(tmp_path):
    """Logits that are right at exactly every other masked position give accuracy 0.5 (or the odd share)."""
    task = make(MaskedLMTask(), DataSpec(synthetic={"seed": 3, "size": 6}), None, Config(64), seq_len=16, seed=0)
    batch = next(task.batches(0, 6, 6))
    lo, hi = batch.payload
    labels = torch.from_numpy(task.labels[lo:hi].copy())
    masked = batch.inputs["input_ids"] == task.mask_id
    wrong = (labels + 1) % 64
    positions = masked.nonzero()
    pick = torch.zeros_like(masked)
    pick[tuple(positions[::2].T)] = True  # every other masked position predicted right
    pred = torch.where(pick, labels, wrong)
    logits = torch.nn.functional.one_hot(pred, 64).float()
    score = task.score(batch, logits)
    assert score.scored == int(masked.sum())
    assert score.correct == (score.scored + 1) // 2


def test_masking_is_seeded_and_never_touches_the_wrapping():
    tokens = np.arange(1000, 21000)
    a_in, a_lab = mask_stream(tokens, 103, 101, 102, 0.10, seed=7)
    b_in, _ = mask_stream(tokens, 103, 101, 102, 0.10, seed=7)
    c_in, _ = mask_stream(tokens, 103, 101, 102, 0.10, seed=8)
    assert np.array_equal(a_in, b_in) and not np.array_equal(a_in, c_in)
    assert (a_in[0], a_in[-1], a_lab[0], a_lab[-1]) == (101, 102, 101, 102)
    assert 0.09 < (a_in == 103).mean() < 0.11
    assert np.array_equal(a_lab[1:-1], tokens)


def test_batches_do_not_depend_on_how_the_range_is_split():
    task = make(MaskedLMTask(), DataSpec(synthetic={"seed": 1, "size": 20}), None, Config(512), seq_len=32, seed=0)
    whole = torch.cat([b.inputs["input_ids"] for b in task.batches(0, 20, 8)])
    parts = torch.cat([b.inputs["input_ids"] for lo, hi in [(0, 3), (3, 11), (11, 20)] for b in task.batches(lo, hi, 4)])
    assert torch.equal(whole, parts)
    assert whole.shape == (20, 32)


def test_headings_and_blank_lines_dropped(tmp_path):
    path = tmp_path / "t.raw"
    path.write_text(" = Valkyria = \r\n\r\n Senjō no Valkyria 3 . \r\n = = Gameplay = = \r\n It is a game . \r\n")
    assert read_text(path, skip_headings=True) == "Senjō no Valkyria 3 .\nIt is a game ."
    assert "Gameplay" in read_text(path, skip_headings=False)


def test_missing_text_file_is_a_user_error(tmp_path, tokenizer):
    with pytest.raises(UserError, match="data.path"):
        make(MaskedLMTask(), DataSpec(path=str(tmp_path / "none.txt")), tokenizer, Config(30522), 128, 0)


def test_real_wikitext_with_real_bert_vocab(tokenizer):
    assert len(tokenizer) == 30522 and tokenizer.mask_token_id == 103
    task = make(MaskedLMTask(), DataSpec(path=str(WIKITEXT)), tokenizer, Config(30522), seq_len=128, seed=0)
    stream = task.inputs.reshape(-1)
    # 267,411 WordPiece tokens once headings and blank lines are dropped, + [CLS] and [SEP], in windows of 128
    assert task.num_examples() == (267_411 + 2) // 128
    assert stream[0] == tokenizer.cls_token_id
    masked = (task.inputs == 103).mean()
    assert 0.095 < masked < 0.105
    first = tokenizer.decode(task.labels[0][1:12].tolist())
    assert first.startswith("robert boulter is an english film")
    again = make(MaskedLMTask(), DataSpec(path=str(WIKITEXT)), tokenizer, Config(30522), seq_len=128, seed=0)
    assert again.fingerprint() == task.fingerprint()


def test_tokenizer_bigger_than_model_vocab_is_refused(tokenizer):
    with pytest.raises(UserError, match="outside the model's vocabulary"):
        make(MaskedLMTask(limit=2), DataSpec(path=str(WIKITEXT)), tokenizer, Config(TINY_BERT["vocab_size"]), 64, 0)
