import pytest
import torch

from tests.builders import TINY_BERT
from workers.device import check_precision, peak_flops
from workers.errors import UserError
from workers.flops import FlopsModel, flops_model


def test_bert_flops_match_the_config_formula():
    from transformers import AutoConfig, AutoModelForMaskedLM

    options = dict(TINY_BERT)
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    model = AutoModelForMaskedLM.from_config(config)
    d, ff, layers, vocab = 32, 64, 2, 512
    # per layer: Q, K, V, O (4 d^2) + FFN (2 d ff); head: transform d^2 + decoder d x vocab (tied, still a matmul)
    expected_params = layers * (4 * d * d + 2 * d * ff) + d * d + d * vocab
    fm = flops_model(model, config, causal=False)
    assert fm.matmul_params == expected_params
    assert fm.sequence_flops(64) == 2 * expected_params * 64 + 4 * layers * d * 64 * 64


def test_causal_attention_counts_half_the_pairs():
    fm = FlopsModel(matmul_params=0, n_layers=1, attn_width=1, causal=True)
    assert fm.sequence_flops(4) == 4 * (4 * 5 / 2)


def test_peak_lookup_by_device_name():
    assert peak_flops("NVIDIA A100-SXM4-40GB", "fp16") == 312e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "fp16") == 756e12
    assert peak_flops("NVIDIA H200", "fp16") == 989e12
    assert peak_flops("CPU AMD EPYC x2", "fp32") is None


def test_precision_checks():
    cpu = torch.device("cpu")
    assert check_precision(cpu, "bf16", False) == "bf16"
    assert check_precision(cpu, "fp16", True) == "fp32"
    with pytest.raises(UserError, match="precision: fp16"):
        check_precision(cpu, "fp16", False)
