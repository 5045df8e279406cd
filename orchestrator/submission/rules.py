"""What MLPerf's submission checker (mlcommons/inference tools/submission/submission_checker, v6.1, the
round whose seeds LoadGen 6.0.17's mlperf.conf carries) asks of a tree, as data: the folder names, the
required files and fields, and the mlperf.conf names of the checker's benchmark names."""

from __future__ import annotations

TEST_DURATION_MS = 600_000  # constants.py TEST_DURATION_MS: every scenario's min_duration setting
MAX_ACCURACY_LOG_SIZE = 10 * 1024  # a submitted mlperf_log_accuracy.json is truncated below this
VIEWABLE_SIZE = 4096  # truncate_accuracy_log.py keeps this much of its head and of its tail

REQUIRED_PERF_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
REQUIRED_ACC_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json")
REQUIRED_MEASURE_FILES = ("user.conf", "README.md")  # beside measurements.json, non-empty
MEASUREMENTS_FIELDS = ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                       "weight_transformations")
SYSTEM_FIELDS = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect",
    "accelerator_interconnect", "accelerator_interconnect_topology", "accelerator_memory_configuration",
    "accelerator_on-chip_memories", "cooling", "hw_notes", "sw_notes", "host_network_card_count",
    "system_type_detail",
)
# The fields the checker wants a meaningful (non-empty) answer in (SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS).
# `is_network` is left out: the checker reads any non-empty string there as a network submission.
SYSTEM_MEANINGFUL = (
    "division", "submitter", "system_type", "status", "system_name", "number_of_nodes",
    "host_processor_model_name", "host_processors_per_node", "host_processor_core_count", "host_memory_capacity",
    "host_memory_configuration", "host_storage_capacity", "host_storage_type", "host_networking",
    "host_network_card_count", "host_networking_topology", "accelerators_per_node", "accelerator_model_name",
    "accelerator_memory_capacity", "accelerator_host_interconnect", "accelerator_memory_configuration",
    "accelerator_interconnect", "cooling", "framework", "operating_system", "other_software_stack",
)
# The samples an accuracy run must cover (v6.1 "accuracy-sample-count", else "dataset-size").
ACCURACY_SAMPLES = {
    "resnet": 50000, "bert-99": 10833, "bert-99.9": 10833, "3d-unet-99": 43, "3d-unet-99.9": 43,
    "llama3.1-8b": 13368, "llama3.1-8b-edge": 5000, "llama2-70b-99.9": 24576, "stable-diffusion-xl": 5000,
    "rgat": 788379, "deepseek-r1": 4388, "whisper": 1633, "gpt-oss-120b": 4395, "qwen3-vl-235b-a22b": 48289,
    "wan-2.2-t2v-a14b": 248, "dlrm-v3": 349823, "yolo-95": 1525, "yolo-99": 1525,
}
STATUSES = ("available", "preview", "rdi")
SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge", "edge,datacenter")
DIVISIONS = ("closed", "open")
# The checker's detail-log metric per scenario (constants.py RESULT_FIELD_NEW).
METRIC_KEY = {"Offline": "result_samples_per_second", "SingleStream": "early_stopping_latency_ss",
              "MultiStream": "early_stopping_latency_ms", "Server": "result_completed_samples_per_sec"}
EARLY_STOPPING_SCENARIOS = ("SingleStream", "MultiStream", "Server")
# The checker's benchmark folder names and the mlperf.conf model each reads its settings under (the
# checker's model_mapping and the reference harnesses); any other name is its own.
CONF_OF = {"resnet": "resnet50", "bert-99": "bert", "bert-99.9": "bert", "dlrm-v2-99": "dlrm-v2",
           "dlrm-v2-99.9": "dlrm-v2", "3d-unet-99": "3d-unet", "3d-unet-99.9": "3d-unet",
           "llama2-70b-99": "llama2-70b", "llama2-70b-99.9": "llama2-70b", "gptj-99": "gptj", "gptj-99.9": "gptj",
           "yolo-95": "yolo", "yolo-99": "yolo", "llama3.1-8b": "llama3_1-8b", "llama3.1-405b": "llama3_1-405b",
           "llama3.1-8b-edge": "llama3_1-8b-edge"}
COMPLIANCE_TESTS = ("TEST01", "TEST04")


def conf_model_of(benchmark: str) -> str:
    """The mlperf.conf name the checker's benchmark name reads its settings under."""
    return CONF_OF.get(benchmark, benchmark)


def benchmark_of(conf_model: str) -> str:
    """The checker's folder name for an mlperf.conf model: the first (99 %) variant where there are two."""
    return next((name for name, conf in CONF_OF.items() if conf == conf_model), conf_model)
