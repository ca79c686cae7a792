"""Times aurelio semantic-router in process; run by bench.peer with the peer venv's Python.

Imports only the standard library, semantic-router and what it brings (torch,
transformers), so it runs in `.venv-peer` (`make peer`), never in the sidecar's
venv. Reads a JSON job from stdin, prints one JSON result on stdout:
{"model": DIR, "routes": {name: [utterance, ...]}, "prompts": {label: [...]}, "warm": N}
-> {"seconds": {label: [per-call seconds, ...]}, "versions": {...}}
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    job = json.load(sys.stdin)
    import semantic_router  # type: ignore[import-not-found]
    import torch
    from semantic_router import IndexedRouter, Route
    from semantic_router.encoders import HuggingFaceEncoder  # type: ignore[import-not-found]

    encoder = HuggingFaceEncoder(name=job["model"], device="cpu")
    routes = [Route(name=name, utterances=list(u)) for name, u in job["routes"].items()]
    router = IndexedRouter(encoder=encoder, routes=routes)
    seconds: dict[str, list[float]] = {}
    for label, prompts in job["prompts"].items():
        for prompt in prompts[: job["warm"]]:
            router(prompt)
        samples = []
        for prompt in prompts:
            t0 = time.perf_counter()
            router(prompt)
            samples.append(time.perf_counter() - t0)
        seconds[label] = samples
    versions = {"semantic-router": semantic_router.__version__, "torch": torch.__version__,
                "torch_threads": torch.get_num_threads()}  # fmt: skip
    json.dump({"seconds": seconds, "versions": versions}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
