"""Imports a Ray worker process can do before it is asked to become a BenchWorker.

`cluster.yaml` starts Ray with RAY_preload_python_modules=workers.preload, so the raylet's idle
(prestarted) Python workers import torch, transformers' auto classes, the BERT and Llama model code
and our runtime ahead of time. A new worker actor then skips ~3 s of imports, which is most of
the time from `bench submit` to the first measured batch on a warm cluster. The price: every idle
Ray worker process holds these modules (~350 MB resident each).
"""

import transformers  # noqa: F401
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM  # noqa: F401
from transformers.models.bert import modeling_bert  # noqa: F401
from transformers.models.llama import modeling_llama  # noqa: F401

import workers.shard.runtime  # noqa: F401
