"""Peak dense FLOP/s of a device, looked up by its whole model name: the denominator of MFU.

A device name (`torch.cuda.get_device_name`, which is NVML's) is read as a model word and a form
factor: "NVIDIA A100-SXM4-40GB" is (A100, SXM), "NVIDIA H100 80GB HBM3" is (H100, SXM: the SXM5
part is the one with HBM3; the PCIe card says "PCIe", the NVL card "NVL"), "NVIDIA H200" is (H200,
SXM: NVIDIA names the SXM part with no form word). The model word must equal an entry's, so
"NVIDIA L40" is never the L4 and "NVIDIA A10G" is not the A10. A device the table does not know,
or whose form factor matters and cannot be told, gets no peak and a reason, never a neighbour's
figure: MFU is then blank and says why (METRICS.md, "Peak FLOP/s").

Figures are dense (NVIDIA's datasheets print the 2:4-sparsity figure with an asterisk: half of it
is the dense figure). fp16/bf16 are Tensor Core figures; fp32 is the plain (non-Tensor Core) FP32
figure, since torch does not use TF32 for matmuls unless asked; tf32 is kept for reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

T = 1e12


def tensor_core(fp16: float, tf32: float, fp32: float) -> dict[str, float]:
    """Dense TFLOP/s -> FLOP/s by precision; bf16 equals fp16 on every GPU listed here that has it."""
    return {"fp16": fp16 * T, "bf16": fp16 * T, "tf32": tf32 * T, "fp32": fp32 * T}


@dataclass(frozen=True)
class Peak:
    model: str  # the model word of the device name, matched whole ("L40" is not "L40S")
    form: str | None  # "SXM", "PCIe" or "NVL"; None when every form factor has the same figures
    flops: dict[str, float]  # dense FLOP/s by precision
    source: str  # the datasheet and the figures read from it


PEAKS: tuple[Peak, ...] = (
    Peak("A100", None, tensor_core(312, 156, 19.5),
         "NVIDIA A100 Tensor Core GPU datasheet: FP16 and BF16 Tensor Core 312 TFLOPS (624 sparse), TF32 156 "
         "(312 sparse), FP32 19.5; the same for the 40 GB and 80 GB, PCIe and SXM4 parts"),
    Peak("H100", "SXM", tensor_core(989, 494, 67),
         "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: FP16 and BF16 Tensor Core 1,979 TFLOPS sparse = 989 "
         "dense, TF32 989 sparse = 494 dense, FP32 67"),
    Peak("H100", "PCIe", tensor_core(756, 378, 51),
         "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: FP16 and BF16 1,513 TFLOPS sparse = 756 dense, TF32 "
         "756 sparse = 378 dense, FP32 51"),
    Peak("H100", "NVL", tensor_core(835, 417, 60),
         "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL (per GPU): FP16 and BF16 1,671 TFLOPS sparse = 835 "
         "dense, TF32 835 sparse = 417 dense, FP32 60"),
    Peak("H200", "SXM", tensor_core(989, 494, 67),
         "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: FP16 and BF16 1,979 TFLOPS sparse = 989 dense, TF32 989 "
         "sparse = 494 dense, FP32 67"),
    Peak("H200", "NVL", tensor_core(835, 417, 60),
         "NVIDIA H200 Tensor Core GPU datasheet, H200 NVL: FP16 and BF16 1,671 TFLOPS sparse = 835 dense, TF32 835 "
         "sparse = 417 dense, FP32 60"),
    Peak("H800", "SXM", tensor_core(989, 494, 67),
         "NVIDIA H800 Tensor Core GPU product brief, H800 SXM: FP16 and BF16 1,979 TFLOPS sparse = 989 dense, "
         "TF32 989 sparse = 494 dense, FP32 67 (the H100 SXM's compute figures)"),
    Peak("H800", "PCIe", tensor_core(756, 378, 51),
         "NVIDIA H800 Tensor Core GPU product brief, H800 PCIe: FP16 and BF16 1,513 TFLOPS sparse = 756 dense, "
         "TF32 756 sparse = 378 dense, FP32 51 (the H100 PCIe's compute figures)"),
    Peak("L40S", None, tensor_core(362, 183, 91.6),
         "NVIDIA L40S datasheet: FP16 and BF16 Tensor Core 362.05 TFLOPS (733 sparse), TF32 183 (366 sparse), "
         "FP32 91.6"),
    Peak("L40", None, tensor_core(181, 90.5, 90.5),
         "NVIDIA L40 datasheet: FP16 and BF16 Tensor Core 181.05 TFLOPS (362.1 sparse), TF32 90.5 (181 sparse), "
         "FP32 90.5"),
    Peak("L4", None, tensor_core(121, 60, 30.3),
         "NVIDIA L4 Tensor Core GPU datasheet: FP16 and BF16 Tensor Core 242 TFLOPS sparse = 121 dense, TF32 120 "
         "sparse = 60 dense, FP32 30.3"),
    Peak("A10", None, tensor_core(125, 62.5, 31.2),
         "NVIDIA A10 Tensor Core GPU datasheet: FP16 and BF16 Tensor Core 125 TFLOPS (250 sparse), TF32 62.5 "
         "(125 sparse), FP32 31.2"),
    Peak("A30", None, tensor_core(165, 82, 10.3),
         "NVIDIA A30 Tensor Core GPU datasheet: FP16 and BF16 Tensor Core 165 TFLOPS (330 sparse), TF32 82 "
         "(165 sparse), FP32 10.3"),
    Peak("V100", "SXM", {"fp16": 125 * T, "fp32": 15.7 * T},
         "NVIDIA V100 Tensor Core GPU datasheet, V100 SXM2: Tensor Performance 125 TFLOPS, single precision 15.7"),
    Peak("V100", "PCIe", {"fp16": 112 * T, "fp32": 14 * T},
         "NVIDIA V100 Tensor Core GPU datasheet, V100 PCIe: Tensor Performance 112 TFLOPS, single precision 14"),
    Peak("T4", None, {"fp16": 65 * T, "fp32": 8.1 * T},
         "NVIDIA T4 Tensor Core GPU datasheet: mixed precision (FP16/FP32) 65 TFLOPS, single precision 8.1"),
)

VENDOR_WORDS = {"NVIDIA", "TESLA"}
FORM_WORDS = {"PCIE": "PCIe", "NVL": "NVL", "SXM": "SXM", "SXM2": "SXM", "SXM4": "SXM", "SXM5": "SXM",
              "HBM3": "SXM"}  # the H100 with HBM3 is the SXM5 part; the PCIe card has HBM2e and says "PCIe"
BARE_FORM = {"H200": "SXM", "H800": "SXM"}  # NVIDIA names these SXM parts with no form word


def parse_device_name(name: str) -> tuple[str, str | None]:
    """(model word, form factor or None): "NVIDIA A100 80GB PCIe" -> ("A100", "PCIe")."""
    words = [w for w in re.split(r"[\s\-_]+", name.strip().upper()) if w]
    while words and words[0] in VENDOR_WORDS:
        words = words[1:]
    if not words:
        return "", None
    model = words[0]
    forms = {FORM_WORDS[w] for w in words[1:] if w in FORM_WORDS}
    for form in ("PCIe", "NVL", "SXM"):  # an explicit PCIe/NVL wins over a memory word
        if form in forms:
            return model, form
    return model, BARE_FORM.get(model)


@dataclass(frozen=True)
class PeakLookup:
    flops: float | None  # dense FLOP/s, None when unknown
    label: str  # which entry was chosen, with its source ("" when none)
    reason: str  # why there is no figure ("" when there is one)


def peak_lookup(device_name: str, precision: str) -> PeakLookup:
    """The dense peak of `device_name` at `precision`, with the entry chosen or the reason for none."""
    if device_name.startswith("CPU"):
        return PeakLookup(None, "", "no peak FLOP/s for CPUs: MFU is for the GPUs in workers/measure/peaks.py")
    model, form = parse_device_name(device_name)
    entries = [p for p in PEAKS if p.model == model]
    if not entries:
        return PeakLookup(None, "", f"'{device_name}' is not in the peak FLOP/s table (workers/measure/peaks.py); "
                                    "MFU is left blank rather than use another device's peak")
    chosen = next((p for p in entries if p.form is None or p.form == form), None)
    if chosen is None:
        forms = ", ".join(p.form or "" for p in entries)
        return PeakLookup(None, "", f"which {model} ({forms}) '{device_name}' is cannot be told from its name; "
                                    "MFU is left blank")
    if precision not in chosen.flops:
        return PeakLookup(None, "", f"no {precision} peak for the {model} in workers/measure/peaks.py")
    flops = chosen.flops[precision]
    where = f"{model} {chosen.form}" if chosen.form else model
    return PeakLookup(flops, f"{where} {precision} {flops / T:g} TFLOP/s dense ({chosen.source})", "")


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak dense FLOP/s of the named device at `precision`, or None when the table does not know it."""
    return peak_lookup(device_name, precision).flops
