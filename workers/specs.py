"""What a worker is told to do: the parts of a job spec that cross to the actor.

These pydantic models are the edge where YAML becomes objects (the orchestrator's `JobSpec` extends
`WorkerConfig` with the driver-only fields). Everything is strict (unknown keys are errors) and
frozen; downstream code trusts these objects and never re-checks raw dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from workers.contract import PassName
from workers.errors import did_you_mean

Precision = Literal["fp32", "fp16", "bf16", "tf32"]  # tf32: fp32 weights, TF32 matmuls (its own peak)


def expand_model(value: Any) -> Any:
    """`model: bert-large-uncased` and `model: "random:bert-large-uncased"` are accepted."""
    if isinstance(value, str):
        if value.startswith("random:"):
            return {"random": value.removeprefix("random:").strip()}
        return {"source": value}
    return value


def expand_data(value: Any) -> Any:
    """`data: synthetic` and `data: path/to/file` are accepted."""
    if value == "synthetic":
        return {"synthetic": {}}
    if isinstance(value, str):
        return {"path": value}
    return value


def expand_named(value: Any) -> Any:
    """`engine: torch` means `engine: {name: torch}` (likewise for task)."""
    return {"name": value} if isinstance(value, str) else value


SHORTHANDS = {"model": expand_model, "data": expand_data, "engine": expand_named, "task": expand_named}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Registered(StrictModel):
    """Options of one engine or task. The class is the registry entry: its `name` default is what
    users write in YAML, `implementation` the "module:Class" the actor imports (lazily, so the
    driver never imports tensorrt), `extra` the pip extra that installs its library."""

    implementation: ClassVar[str]  # the Engine (one forward pass per batch); "" for an engine that only generates
    generator: ClassVar[str] = ""  # engines: the Generator it runs for the generate task ("" for none)
    extra: ClassVar[str | None] = None
    tensor_parallel: ClassVar[bool] = False  # engines: runs a model sharded over a TP group (parallel.tp > 1)
    generates: ClassVar[bool] = False  # tasks: requests decoded token by token (engines' `generator`), not scored batches
    continuous: ClassVar[bool] = False  # engines: its generator takes new requests while others decode

    @classmethod
    def registered_name(cls) -> str:
        return cls.model_fields["name"].default


# --------------------------------------------------------------------------------------- model
class ModelSpec(StrictModel):
    """Where the weights come from: a hub id or local folder, or a config for random weights."""

    source: str | None = Field(None, description="Hugging Face hub id or local folder")
    random: dict[str, Any] | str | None = Field(
        None,
        description="random weights: a transformers config as a mapping (with model_type), "
        "or a hub id / folder whose config.json gives the shape",
    )
    tokenizer: str | None = Field(
        None, description="hub id, folder, a WordPiece vocab.txt or a .gguf file (its vocabulary), or "
        "pkg:<package>/<path> for one inside an installed package; default: the source"
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `source` (dequantized on load)")
    revision: str | None = Field(None, description="hub branch, tag or commit of `source`; default: the main branch")
    trust_remote_code: bool = Field(False, description="let transformers run model code shipped with the weights")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return expand_model(value)

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.source is None) == (self.random is None):
            raise ValueError("give exactly one of model.source (hub id or path) or model.random (a config)")
        if isinstance(self.random, dict) and "model_type" not in self.random:
            raise ValueError("model.random needs a 'model_type' key (e.g. bert, llama)")
        if self.gguf_file and self.source is None:
            raise ValueError("model.gguf_file needs model.source (the folder or hub id holding it)")
        return self

    @property
    def label(self) -> str:
        """A short name for tables: the source, or random:<model_type or config source>."""
        if self.source is not None:
            return self.source + (f"#{self.gguf_file}" if self.gguf_file else "")
        if isinstance(self.random, dict):
            return f"random:{self.random['model_type']}"
        return f"random:{self.random}"


def looks_like_local_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else (or anything that exists) is a path, and so
    is `pkg:<package>/<path>`, a path inside an installed package (workers/data/package_files.py)."""
    return (
        name.startswith("pkg:")
        or Path(name).expanduser().exists()
        or name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or name.endswith((".txt", ".json", ".gguf"))
    )


# ---------------------------------------------------------------------------------------- data
class SyntheticData(StrictModel):
    """Seeded random token ids: no files, any size; for smoke runs and measuring the tool itself."""

    seed: int = Field(0, description="seed of the random token ids")
    size: int = Field(64, gt=0, description="number of examples (sequences for masked_lm)")


class DataSpec(StrictModel):
    path: str | None = Field(None, description="a text file (masked_lm; generate: prompts cut from it) or an MMLU "
                             "folder (mmlu; generate: its questions as prompts)")
    synthetic: SyntheticData | None = Field(None, description="seeded random token ids instead of a file")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return expand_data(value)

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.path or data.synthetic")
        return self

    @property
    def label(self) -> str:
        return self.path if self.path is not None else f"synthetic(seed={self.synthetic.seed}, size={self.synthetic.size})"


# --------------------------------------------------------------------------------------- tasks
class MaskedLMTask(Registered):
    """Top-1 masked-LM accuracy over a text stream (METRICS.md, seed 000)."""

    implementation = "workers.tasks.masked_lm:MaskedLM"
    variable_length: ClassVar[bool] = False  # every batch has one shape: the strict latency-CV rule applies

    name: Literal["masked_lm"] = "masked_lm"
    mask_prob: float = Field(0.10, gt=0, lt=1, description="share of the text tokens replaced by [MASK], under `seed`")
    skip_headings: bool = Field(True, description="drop WikiText ` = Heading = ` lines before tokenising")
    limit: int | None = Field(None, gt=0, description="use only the first `limit` windows (quick runs)")


class MMLUTask(Registered):
    """5-shot multiple-choice accuracy on MMLU (METRICS.md, seed 002)."""

    implementation = "workers.tasks.mmlu:MMLU"
    variable_length: ClassVar[bool] = True  # prompts of 250 to 3,000 tokens: stability is judged against a cost fit

    name: Literal["mmlu"] = "mmlu"
    subjects: list[str] | None = Field(None, description="subset of subjects (file names, e.g. anatomy); all by default")
    limit: int | None = Field(None, gt=0, description="at most this many test questions per subject (the first ones)")
    shots: int = Field(5, ge=0, description="dev rows of the subject shown before each question")
    split: Literal["test", "val"] = Field("test", description="the folder the questions come from (shots: dev/)")
    scoring: Literal["lm-eval", "flagperf"] = Field(
        "lm-eval", description="lm-eval: lm-eval's default MMLU prompt, argmax over ' A'..' D'; "
        "flagperf: FlagPerf's prompt, argmax over the whole vocabulary"
    )
    max_prompt_tokens: int | None = Field(
        None, gt=0, description="cut prompts to this many tokens by dropping shots (default: seq_len; flagperf: 2048)"
    )

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("list each subject once, or leave subjects out for all of them")
        return value


class Lengths(StrictModel):
    """A length drawn per request under the job's seed: fixed, uniform over [min, max], or normal
    (mean, std) rounded and clipped to [min, max]. `input_tokens: 128` is `{distribution: fixed, mean: 128}`."""

    distribution: Literal["fixed", "uniform", "normal"] = Field("fixed", description="how lengths are drawn")
    mean: int | None = Field(None, gt=0, description="fixed: the length; normal: the mean")
    std: float | None = Field(None, gt=0, description="normal: the standard deviation")
    min: int | None = Field(None, gt=0, description="uniform: the shortest; normal: clipped below here (default 1)")
    max: int | None = Field(None, gt=0, description="uniform: the longest; normal: clipped above here (required)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a length is a number of tokens, not true/false")
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"a length must be at least 1 token, not {value}")
        return {"distribution": "fixed", "mean": value} if isinstance(value, int) else value

    @model_validator(mode="after")
    def _complete(self) -> "Lengths":
        need = {"fixed": ("mean",), "uniform": ("min", "max"), "normal": ("mean", "std", "max")}[self.distribution]
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.distribution} length needs {' and '.join(missing)}")
        if self.distribution != "fixed" and (self.min or 1) > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    @property
    def longest(self) -> int:
        return self.mean if self.distribution == "fixed" else self.max

    @property
    def shortest(self) -> int:
        return self.mean if self.distribution == "fixed" else (self.min or 1)

    def draw(self, rng: Any, count: int) -> Any:
        """`count` lengths from numpy Generator `rng` (int64 array)."""
        import numpy as np

        if self.distribution == "fixed":
            return np.full(count, self.mean, dtype=np.int64)
        low = self.min or 1
        if self.distribution == "uniform":
            return rng.integers(low, self.max + 1, size=count, dtype=np.int64)
        return np.clip(np.rint(rng.normal(self.mean, self.std, size=count)), low, self.max).astype(np.int64)

    @property
    def label(self) -> str:
        if self.distribution == "fixed":
            return str(self.mean)
        if self.distribution == "uniform":
            return f"uniform({self.min},{self.max})"
        return f"normal({self.mean},{self.std:g},[{self.min or 1},{self.max}])"


class GenerateTask(Registered):
    """LLM generation: prompts decoded token by token by the engine's generator; TTFT, TPOT, ITL and
    tokens/s (docs/measurement.md). Prompts: seeded random token ids (data: synthetic), windows cut
    from a text file, or MMLU questions (a folder); every request's lengths are drawn under `seed`."""

    implementation = "workers.tasks.generate:Generate"
    # calls differ in shape by design (rows, prompt and output lengths): judged against the cost fit,
    # each call's shape being its rows and the positions each row runs through (prompt + decode steps)
    variable_length: ClassVar[bool] = True
    generates: ClassVar[bool] = True

    name: Literal["generate"] = "generate"
    input_tokens: Lengths = Field(default_factory=lambda: Lengths(mean=128), description="prompt length in tokens: "
                                  "synthetic and text prompts are drawn this long; MMLU questions keep their own length, "
                                  "cut from the left to at most the longest")
    max_new_tokens: Lengths = Field(default_factory=lambda: Lengths(mean=128), description="tokens to generate per "
                                    "request (all of them with ignore_eos; at most this many otherwise)")
    ignore_eos: bool = Field(True, description="generate max_new_tokens whatever the model says (the throughput "
                             "convention); false: stop at the end-of-sequence token")
    temperature: float = Field(0.0, ge=0, description="0: greedy (the default; checked against plain greedy "
                               "generate); > 0: sampling at this temperature (recorded in the row's `sampling`)")
    top_p: float = Field(1.0, gt=0, le=1, description="sampling: nucleus probability mass")
    top_k: int = Field(0, ge=0, description="sampling: keep the k most likely tokens (0: all)")
    limit: int | None = Field(None, gt=0, description="text and MMLU prompts: at most this many requests (text: the "
                              "first windows; MMLU: questions drawn under `seed`); synthetic: data.synthetic.size")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def beyond_positions(self, limit: int | None) -> str | None:
        """Why the longest prompt plus the longest output does not fit a model of `limit` positions."""
        longest = self.input_tokens.longest + self.max_new_tokens.longest
        if limit is None or longest <= limit:
            return None
        return (f"task.max_new_tokens: the longest prompt ({self.input_tokens.longest}) plus the longest output "
                f"({self.max_new_tokens.longest}) is {longest} tokens, above the model's maximum of {limit} positions")

    @property
    def sampling_label(self) -> str:
        if self.greedy:
            return "greedy"
        return f"temperature={self.temperature:g}, top_p={self.top_p:g}, top_k={self.top_k}"


TASK_OPTIONS = (MaskedLMTask, MMLUTask, GenerateTask)
TASKS = {cls.registered_name(): cls for cls in TASK_OPTIONS}
TaskSpec = Annotated[Union[TASK_OPTIONS], Field(discriminator="name")]


# ------------------------------------------------------------------------------------- engines
class TorchEngineOptions(Registered):
    """PyTorch eager: the model as loaded, cast to the job's precision."""

    implementation = "workers.engines.torch_eager:TorchEager"
    generator = "workers.engines.torch_generate:TorchGenerator"  # static batches, transformers' KV cache
    tensor_parallel = True
    name: Literal["torch"] = "torch"


class TorchCompileOptions(Registered):
    implementation = "workers.engines.torch_compile:TorchCompile"
    generator = "workers.engines.compile_generate:CompiledGenerator"  # static cache, compiled decode step
    tensor_parallel = True

    name: Literal["torch_compile"] = "torch_compile"
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile's mode (inductor only)")
    backend: str = Field("inductor", description="torch.compile's backend")
    dynamic: bool | None = Field(None, description="torch.compile's dynamic shapes; default: torch decides")
    fullgraph: bool = Field(False, description="fail on a graph break instead of splitting the graph there")


class OnnxRuntimeOptions(Registered):
    implementation = "workers.engines.onnxruntime:OnnxRuntime"
    extra = "onnx"

    name: Literal["onnxruntime"] = "onnxruntime"
    opset: int = Field(18, ge=14, description="ONNX opset of the export")
    providers: list[str] | None = Field(None, description="default: CUDA when present, else CPU")
    intra_op_threads: int | None = Field(None, gt=0, description="ONNX Runtime's intra-op threads; default: its own")
    io_binding: bool = Field(True, description="on CUDA, bind device inputs and a preallocated output to the session")


class TensorRTOptions(Registered):
    implementation = "workers.engines.tensorrt:TensorRT"
    extra = "tensorrt"

    name: Literal["tensorrt"] = "tensorrt"
    opset: int = Field(18, ge=14, description="ONNX opset of the export TensorRT parses")
    workspace_gib: float = Field(8.0, gt=0, description="the builder's workspace memory limit, GiB")
    optimization_level: int = Field(3, ge=0, le=5, description="the builder's optimisation level")
    min_bs: int = Field(1, gt=0, description="the profile's smallest batch (its largest is bs)")
    min_seq_len: int = Field(1, gt=0, description="the profile's shortest sequence (its longest is seq_len)")


class SyntheticEngineOptions(Registered):
    """The null system under test (MLPerf LoadGen's analogue): a fixed wait, deterministic outputs."""

    implementation = "workers.engines.synthetic:Synthetic"
    generator = "workers.engines.synthetic_generate:SyntheticGenerator"
    tensor_parallel = True  # it only waits; every rank waits alike (a way to time the group's orchestration)
    name: Literal["synthetic"] = "synthetic"
    latency_ms: float = Field(10.0, ge=0, description="per-batch latency, spent waiting, not computing")
    prefill_ms_per_token: float = Field(
        0.0, ge=0, description="generate: prefill waits this long per prompt token of the batch (every row's), then "
        "makes every request's first token")
    decode_ms_per_step: float = Field(
        0.0, ge=0, description="generate: each later decode step waits this long and makes one token for every "
        "request still running")
    fail_shards: list[int] = Field(
        default_factory=list, description="fault injection: these shard ids always raise (for reliability tests)"
    )
    fail_workers: list[int] = Field(
        default_factory=list, description="fault injection: these worker ids fail every shard at once (a bad device)"
    )
    fail_setup_workers: list[int] = Field(
        default_factory=list, description="fault injection: these worker ids fail their setup (a bad device found "
        "while loading: the worker is dropped and the others go on)"
    )
    batch_dependent: bool = Field(
        False, description="fault injection: logits tilted by 1e-3 across the vocabulary, the tilt's sign following "
        "the parity of the batch's row count, so near-ties rank differently at bs 1 than at bs 2, as a kernel "
        "chosen by batch size may make them (for tests of invariance_check)"
    )


class ContinuousBatchingOptions(Registered):
    """transformers' own continuous batching (`init_continuous_batching`): new requests join the
    running batch between decode steps, a finished one leaves it; paged KV cache. Generate only."""

    implementation = ""
    generator = "workers.engines.continuous_batching:ContinuousBatching"
    continuous = True
    name: Literal["continuous_batching"] = "continuous_batching"
    page_size: int = Field(32, gt=0, description="tokens per KV-cache page (block)")
    num_blocks: int | None = Field(None, gt=0, description="KV-cache pages; default: enough for bs requests of the "
                                   "longest prompt + output, plus a fifth (transformers' own default sizes the "
                                   "cache from free memory: 60 % of a CPU's RAM)")
    max_batch_tokens: int | None = Field(None, gt=0, description="tokens one forward step may hold (prefill chunks and "
                                         "decode tokens); default: transformers' (8192)")
    scheduler: Literal["fifo", "prefill_first"] = Field(
        "fifo", description="fifo: running requests decode first, then waiting ones prefill; prefill_first: the reverse")


class VllmOptions(Registered):
    """vLLM's offline engine (`vllm.LLMEngine`, stepped so each token is stamped as it exists): GPU
    nodes only; continuous batching and paged attention of its own. Generate only."""

    implementation = ""
    generator = "workers.engines.vllm_generate:Vllm"
    continuous = True
    extra = "vllm"
    name: Literal["vllm"] = "vllm"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of the GPU's memory vLLM may take "
                                          "(weights and KV cache)")
    enforce_eager: bool = Field(False, description="no CUDA graphs (faster start, slower decode)")
    max_num_seqs: int | None = Field(None, gt=0, description="requests vLLM runs at once; default: bs")


ENGINE_OPTIONS = (TorchEngineOptions, TorchCompileOptions, OnnxRuntimeOptions, TensorRTOptions, SyntheticEngineOptions,
                  ContinuousBatchingOptions, VllmOptions)
ENGINES = {cls.registered_name(): cls for cls in ENGINE_OPTIONS}
EngineSpec = Annotated[Union[ENGINE_OPTIONS], Field(discriminator="name")]


def _named_choice(kind: str, known: dict[str, type], value: Any) -> Any:
    """Accept `engine: torch` for `engine: {name: torch}` and name typos with a suggestion."""
    value = expand_named(value)
    if isinstance(value, dict):
        name = value.get("name")
        if name not in known:
            raise ValueError(f"Unknown {kind} '{name}'.{did_you_mean(str(name), known)}")
    return value


# ---------------------------------------------------------------------------------- parallel
class ParallelSpec(StrictModel):
    """How one worker spans devices. `tp` ranks of one node share one model, each holding a slice of
    every sharded weight (transformers' tensor-parallel plan); the driver sees the group as one worker."""

    tp: int = Field(1, ge=1, description="tensor-parallel ranks per worker: GPUs of one node that share one model")
    timeout_s: float = Field(
        600.0, gt=0, description="how long a rank waits for the others (joining the group, each collective) before "
        "the group fails; NCCL cannot see a dead peer sooner than this")
    fault_timeout_s: float = Field(
        60.0, gt=0, description="rank 0 watches its followers while it runs a shard: once one died or failed (or "
        "finished this long before rank 0), it aborts the communicator so the shard fails within this time, not "
        "timeout_s")


# ------------------------------------------------------------------------------- worker config
class WorkerConfig(StrictModel):
    """Everything one worker actor needs to build its model and engine and run shards."""

    task: TaskSpec = Field(default_factory=MaskedLMTask, description="the benchmark case and its options")
    model: ModelSpec = Field(description="the weights and tokenizer")
    data: DataSpec = Field(description="the dataset")
    engine: EngineSpec = Field(default_factory=TorchEngineOptions, description="the infer pass's engine and its options")
    precision: Precision = Field("fp32", description="precision of the infer pass (and of val unless val_precision)")
    val_precision: Precision | None = Field(None, description="precision of the val pass; default: precision")
    precision_fallback: bool = Field(
        False, description="on a CPU, run fp16 as fp32 instead of refusing (the row records both)"
    )
    bs: int = Field(8, gt=0, description="batch size")
    seq_len: int = Field(128, gt=0, description="tokens per sequence (masked_lm) or the prompt cap (mmlu)")
    warmup: int = Field(2, ge=0, description="warm-up batches per pass per worker, excluded from timings")
    seed: int = Field(0, description="random weights (model.random) and the masked_lm mask are drawn under it")
    passes: tuple[PassName, ...] = Field(("val", "infer"), description="passes to run; val is the reference")
    engine_cache: str | None = Field(None, description="engine cache folder; default ~/.cache/raybench/engines")
    data_cache: str | None = Field(None, description="prepared-data cache folder; default ~/.cache/raybench/data")
    measure_peak: bool = Field(
        True, description="measure the device's dense matmul peak for MFU_measured at worker setup: about 1 s per "
        "GPU (and per precision and GPU setting) the first time, then read from the engine cache; false skips it "
        "(MFU_measured blank)")
    parallel: ParallelSpec = Field(default_factory=ParallelSpec, description="how one worker spans devices")

    @field_validator("task", mode="before")
    @classmethod
    def _task_name(cls, value: Any) -> Any:
        return _named_choice("task", TASKS, value)

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_name(cls, value: Any) -> Any:
        return _named_choice("engine", ENGINES, value)

    @field_validator("engine")
    @classmethod
    def _graphs_for_every_shape(cls, value: Any, info: ValidationInfo) -> Any:
        """CUDA graphs (torch.compile's reduce-overhead, and max-autotune, which implies them) are
        recorded per input shape; variable-length work (mmlu) brings new prompt lengths inside timed
        batches, so a graph would be recorded there and timed as inference."""
        task = info.data.get("task")
        if value.name == "torch_compile" and value.mode in ("reduce-overhead", "max-autotune") and task is not None \
                and task.variable_length and not type(task).generates:  # generate's compiled step has one shape
            raise ValueError(f"mode {value.mode} records a CUDA graph for every new input shape, and {task.name}'s "
                             "inputs vary in length (graphs would be recorded inside timed batches); use mode default "
                             "or max-autotune-no-cudagraphs")
        return value

    @field_validator("passes")
    @classmethod
    def _passes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("passes must list val and/or infer, each once")
        return tuple(p for p in ("val", "infer") if p in value)

    @field_validator("parallel")
    @classmethod
    def _parallel(cls, value: ParallelSpec, info: ValidationInfo) -> ParallelSpec:
        """tp > 1 needs an engine that runs a sharded torch model, and one precision: the sharded model
        is loaded once per rank and cannot be copied to a second precision (its layers' forward hooks
        point at the original modules)."""
        if value.tp == 1:
            return value
        engine = info.data.get("engine")
        if engine is not None and not type(engine).tensor_parallel:
            how = "; TensorRT-LLM is the path to tensor-parallel TensorRT" if engine.name == "tensorrt" else ""
            raise ValueError(f"tp={value.tp}: engine {engine.name} runs a whole model on one device; tensor "
                             f"parallel needs engine torch or torch_compile{how}")
        precision, val_precision = info.data.get("precision"), info.data.get("val_precision")
        if val_precision is not None and val_precision != precision:
            raise ValueError(f"tp={value.tp}: val_precision ({val_precision}) must equal precision ({precision}); "
                             "a sharded model is loaded at one precision")
        return value

    @model_validator(mode="before")
    @classmethod
    def _generate_runs_infer_only(cls, value: Any) -> Any:
        """A generate job has one pass, infer: its reference is plain greedy `generate` of each prompt
        alone (invariance_check), not a second pass over every request."""
        if isinstance(value, dict) and "passes" not in value and expand_named(value.get("task")) is not None:
            task = expand_named(value.get("task"))
            if isinstance(task, dict) and task.get("name") == "generate":
                return {**value, "passes": ["infer"]}
        return value

    @model_validator(mode="after")
    def _engine_fits_the_task(self) -> "WorkerConfig":
        engine, generates = type(self.engine), type(self.task).generates
        decoders = ", ".join(name for name, cls in ENGINES.items() if cls.generator)
        if generates and not engine.generator:
            raise ValueError(f"engine: {self.engine.name} runs one forward pass per batch; task generate needs an "
                             f"engine that decodes token by token: {decoders}")
        if not generates and not engine.implementation:
            raise ValueError(f"engine: {self.engine.name} only generates (task generate); task {self.task.name} needs "
                             "an engine that runs one forward pass per batch")
        if generates and "val" in self.passes:
            raise ValueError("passes: task generate has no val pass (its reference is plain greedy generate of each "
                             "prompt alone: invariance_check); use passes: [infer]")
        if generates and self.parallel.tp > 1:
            raise ValueError(f"parallel.tp={self.parallel.tp}: generation on tensor-parallel workers is not built yet "
                             "(the ranks would have to decode in step); use tp 1")
        return self

    @model_validator(mode="after")
    def _mmlu_needs_a_folder(self) -> "WorkerConfig":
        if self.task.name == "mmlu" and self.data.path is None:
            raise ValueError("data: the mmlu task reads an MMLU folder (data: path/to/mmlu), not synthetic data")
        return self

    @property
    def val_dtype_name(self) -> Precision:
        return self.val_precision or self.precision
