"""Real OpenAI-compatible servers for tests: `transformers serve` on a tiny random Llama with SmolLM2's
tokenizer, on the CPU (the mock of known behaviour is tests/fakes/openai_server.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from tests.builders import SMOLLM2_GGUF, save_tiny_llama, smollm2_package_dir
from tests.cluster import free_port

START_S = 180.0


@contextlib.contextmanager
def tiny_llama_serve(folder: Path) -> Iterator[tuple[str, str]]:
    """`transformers serve` of a random 2-layer Llama saved in `folder`: yields (base URL, model name
    as the server knows it: the folder); stopped by its process group."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_package_dir(), gguf_file=SMOLLM2_GGUF)
    tokenizer.save_pretrained(folder)
    save_tiny_llama(folder, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id)
    port = free_port()
    log = open(folder / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", str(folder), "--device",
                             "cpu", "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_S
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    said = (folder / "serve.log").read_text()[-2000:]
                    raise RuntimeError(f"transformers serve did not start: {said}")
                time.sleep(0.5)
        yield url, str(folder)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
