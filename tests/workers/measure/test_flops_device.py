import pytest
import torch

from tests.builders import TINY_BERT
from workers.errors import UserError
from workers.measure.device import check_precision
from workers.measure.flops import FlopsModel, flops_model
from workers.measure.peaks import PEAKS, parse_device_name, peak_flops, peak_lookup


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


def test_the_lm_head_is_counted_at_the_tokens_it_ran_on():
    """A tied-embedding causal LM (SmolLM2's shape, tiny): the head is vocab x hidden of the matmul
    weights; a prompt whose logits are computed at its last token only counts it once."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.builders import TINY_LLAMA

    options = dict(TINY_LLAMA, vocab_size=96, tie_word_embeddings=True)
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    fm = flops_model(AutoModelForCausalLM.from_config(config), config, causal=True)
    assert fm.head_params == 96 * 32
    attention = 4 * 2 * 32 * (10 * 11 / 2)
    assert fm.sequence_flops(10) == 2 * fm.matmul_params * 10 + attention  # the head at every token
    assert fm.sequence_flops(10, head_tokens=1) == 2 * (fm.matmul_params - fm.head_params) * 10 + 2 * 96 * 32 + attention


def test_causal_attention_counts_half_the_pairs():
    fm = FlopsModel(matmul_params=0, n_layers=1, attn_width=1, causal=True)
    assert fm.sequence_flops(4) == 4 * (4 * 5 / 2)


# Names as torch.cuda.get_device_name / nvidia-smi report them, and the dense fp16 peak each must get.
DEVICE_PEAKS = [
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40", 181e12),
    ("NVIDIA L40S", 362e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA A30", 165e12),
    ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA A100-SXM4-40GB", 312e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA H200 NVL", 835e12),
    ("NVIDIA H800", 989e12),
    ("NVIDIA H800 PCIe", 756e12),
    ("Tesla V100-SXM2-16GB", 125e12),
    ("Tesla V100-PCIE-32GB", 112e12),
]


@pytest.mark.parametrize("name, fp16", DEVICE_PEAKS)
def test_peak_is_the_whole_model_names(name, fp16):
    assert peak_flops(name, "fp16") == fp16
    looked = peak_lookup(name, "bf16" if "V100" not in name else "fp16")
    assert looked.flops == fp16 and looked.reason == "" and ("datasheet" in looked.label or "brief" in looked.label)


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA GH200 480GB", "NVIDIA RTX A6000", "NVIDIA L20",
                                  "NVIDIA H100", "Some Accelerator 9000", "CPU AMD EPYC x2"])
def test_a_device_the_table_does_not_know_gets_no_peak_and_a_reason(name):
    """Never a neighbour's figure: the A10G is not the A10, a bare 'H100' is not told SXM from PCIe."""
    looked = peak_lookup(name, "fp16")
    assert looked.flops is None and looked.label == "" and looked.reason
    assert peak_flops(name, "fp16") is None


def test_names_are_read_as_model_and_form_factor():
    assert parse_device_name("NVIDIA A100-SXM4-40GB") == ("A100", "SXM")
    assert parse_device_name("NVIDIA H100 80GB HBM3") == ("H100", "SXM")
    assert parse_device_name("NVIDIA H100 NVL") == ("H100", "NVL")
    assert parse_device_name("NVIDIA L40S") == ("L40S", None)


def test_every_entry_cites_its_datasheet_and_is_dense():
    for peak in PEAKS:
        assert "datasheet" in peak.source or "product brief" in peak.source, peak
        assert peak.flops["fp16"] > peak.flops["fp32"]
    # the 2:4-sparsity figures are twice these: e.g. the H100 SXM's 1,979 TFLOPS is not used
    assert max(p.flops["fp16"] for p in PEAKS) == 989e12


def test_tf32_and_fp32_are_separate_figures():
    assert peak_flops("NVIDIA A100-SXM4-40GB", "tf32") == 156e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "fp32") == 19.5e12
    assert peak_lookup("Tesla T4", "bf16").reason.startswith("no bf16 peak")


def test_precision_checks():
    cpu = torch.device("cpu")
    assert check_precision(cpu, "bf16", False) == "bf16"
    assert check_precision(cpu, "fp16", True) == "fp32"
    with pytest.raises(UserError, match="precision: fp16"):
        check_precision(cpu, "fp16", False)


def test_bf16_is_refused_before_ampere_by_compute_capability(monkeypatch):
    """torch.cuda.is_bf16_supported() counts emulation: on a V100 (7.0) it makes a bf16 tensor and
    answers True, so the old check let bf16 run emulated; the capability decides now."""
    from tests.fakes.fake_gpu import FakeGpu, install

    cuda0 = torch.device("cuda:0")
    install(monkeypatch, [FakeGpu(name="Tesla V100-SXM2-32GB", major=7)], cuda_runtime=True)
    assert torch.cuda.is_bf16_supported()  # torch's own answer on the fake V100: emulation counts
    with pytest.raises(UserError, match=r"^precision: bf16 needs an Ampere or newer GPU \(compute capability 8.0\); "
                                        r"Tesla V100-SXM2-32GB is 7.0: use fp16$"):
        check_precision(cuda0, "bf16", False)
    assert check_precision(cuda0, "fp16", False) == "fp16"
    install(monkeypatch, [FakeGpu(name="NVIDIA A100-SXM4-40GB", major=8)], cuda_runtime=True)
    assert check_precision(cuda0, "bf16", False) == "bf16"


def test_tf32_is_refused_on_a_cpu_and_has_its_own_peak():
    with pytest.raises(UserError, match=r"^precision: tf32 is not supported on a CPU worker"):
        check_precision(torch.device("cpu"), "tf32", fallback=False)
    assert check_precision(torch.device("cpu"), "tf32", fallback=True) == "fp32"
    assert peak_lookup("NVIDIA A100-SXM4-40GB", "tf32").flops == 156e12
    assert peak_lookup("NVIDIA A100-SXM4-40GB", "fp32").flops == 19.5e12


def test_fp32_passes_run_with_torchs_tf32_switches_off(monkeypatch):
    """cuDNN convolutions default to TF32 in torch and a library may have turned matmul TF32 on:
    an fp32 pass sets both off, on every engine; a tf32 pass (GPU only) sets them on."""
    from orchestrator.spec import validate
    from tests.builders import job, run_on, worker_runtime
    from workers.contract import ShardTask
    from workers.measure.device import set_matmul_precision

    set_matmul_precision("tf32")  # as a library or an earlier tf32 job in this process left them
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    runtime, _ = worker_runtime(validate(job(engine="torch", passes=["val", "infer"]), "x").worker_config())
    seen = []
    forward = runtime.engines["infer"].forward
    monkeypatch.setattr(runtime.engines["infer"], "forward", lambda inputs: seen.append(
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)) or forward(inputs))
    set_matmul_precision("tf32")
    run_on(runtime, ShardTask(0, 0, 8, "infer"))
    runtime.close()
    assert seen and set(seen) == {(False, False)}
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
