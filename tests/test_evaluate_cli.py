"""`sidecar evaluate` end to end: a real subprocess, a stand-in endpoint, a live sidecar.

evaluate -> register -> route; Ψ is what the graded answers imply; a run
killed with SIGKILL resumes without repeating the calls it had cached; a run
with too many failures registers nothing; and bad set-ups are refused before
any call is made.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT, Client, two_topic_prompts
from uniroute.v1 import registry_pb2, router_pb2

from sidecar import Sidecar
from sidecar._clustering import load_clustering
from sidecar._jsonl import read_results
from sidecar._profiles import profile_from_results
from sidecar._readiness import wait_until
from tools.standin_llm import Script, StandinLLM

SIDECAR = [sys.executable, "-m", "sidecar._cli"]
TOKEN = "evaluate-test-token-0123456789"


def reference(item_id: str) -> int:
    return 180 + int(item_id.split("-")[1])


def good_answer(item_id: str) -> str:
    if item_id.startswith("code"):
        return "```python\ndef solve(xs):\n    return sorted(xs)\n```"
    return f"Bake it at **{reference(item_id)}** °C."


def bad_answer(item_id: str) -> str:
    return "Sorry, I can't write code." if item_id.startswith("code") else "answer: 250 degrees"


@pytest.fixture
def valset(tmp_path: Path) -> Path:
    """The two-topic validation items: code items graded by `contains`, cooking by `number`."""
    _, val = two_topic_prompts()
    lines: list[dict[str, Any]] = []
    for item_id, prompt, topic in val:
        if topic == "code":
            lines.append({"id": item_id, "prompt": prompt, "grader": "contains", "answer": "def"})
        else:
            lines.append(
                {"id": item_id, "prompt": prompt, "grader": "number", "answer": reference(item_id)}
            )
    path = tmp_path / "sval.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def standin() -> Iterator[StandinLLM]:
    """'coder' is right on code and on 3 of 10 cooking items; 'chef' on cooking and 2 code."""
    _, val = two_topic_prompts()
    table = {}
    for item_id, prompt, topic in val:
        n = int(item_id.split("-")[1])
        coder_right = topic == "code" or n < 3
        chef_right = topic == "cook" or n < 2
        table[("coder", prompt)] = Script(
            good_answer(item_id) if coder_right else bad_answer(item_id)
        )
        table[("chef", prompt)] = Script(
            good_answer(item_id) if chef_right else bad_answer(item_id)
        )
    llm = StandinLLM(table).start()
    yield llm
    llm.stop()


@pytest.fixture
def leader(
    make_sidecar: Callable[..., Sidecar], topic_artifact: Path, tmp_path: Path
) -> tuple[Sidecar, Path]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return make_sidecar(artifact_dir=topic_artifact, write_tokens=(TOKEN,)), token_file


def evaluate(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SIDECAR, "evaluate", *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"evaluate failed ({result.returncode}): {result.stderr}")
    return result


def common(valset: Path, standin: StandinLLM, model: str, out: Path) -> list[str]:
    return [
        "--val", str(valset), "--base-url", standin.base_url, "--model", model,
        "--out", str(out), "--backoff", "0.01",
    ]  # fmt: skip


def total_calls(llm: StandinLLM) -> int:
    with llm.lock:
        return sum(llm.calls.values())


def test_evaluate_register_route(
    valset: Path, standin: StandinLLM, leader: tuple[Sidecar, Path], topic_artifact: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    sidecar, token_file = leader
    server = ["--server", f"127.0.0.1:{sidecar.port}", "--token-file", str(token_file)]
    prices = ["--price-in", "1.5", "--price-out", "6"]
    outs = {name: tmp_path / "runs" / name for name in ("coder", "chef")}
    for name, out in outs.items():
        result = evaluate(
            *common(valset, standin, name, out), *prices, *server, "--register", "--json"
        )
        summary = json.loads(result.stdout)
        assert summary["registered"]["name"] == name
        assert summary["calls"] == {"made": 20, "cached": 0}
    assert total_calls(standin) == 40

    client = Client(sidecar.port)
    try:
        clustering = load_clustering(topic_artifact)
        assignment = dict(zip(clustering.item_ids, map(int, clustering.item_clusters), strict=True))
        for name, out in outs.items():
            summary = json.loads((out / "summary.json").read_text())
            scores = dict(read_results(out / "results.jsonl"))
            expected = profile_from_results(scores, assignment, clustering.k)
            model = client.registry.GetModel(registry_pb2.GetModelRequest(name=name))
            assert list(model.error_rates) == pytest.approx(expected.error_rates.tolist())
            assert summary["preview"]["error_rates"] == pytest.approx(list(model.error_rates))
            assert model.result_count == 20
            assert model.cost == pytest.approx(summary["cost"]["measured_per_request"])
            graded = [json.loads(line) for line in (out / "graded.jsonl").read_text().splitlines()]
            right = sum(g["score"] for g in graded)
            assert right == (13 if name == "coder" else 12)
        routes = {
            prompt: client.router.Route(router_pb2.RouteRequest(prompt=prompt, cost_weight=0.0))
            for prompt in (CODE_PROMPT, COOK_PROMPT)
        }
        assert routes[CODE_PROMPT].model == "coder"
        assert routes[COOK_PROMPT].model == "chef"
    finally:
        client.close()

    # Regrading from the cache calls nothing and gives the same results.
    before = (outs["coder"] / "results.jsonl").read_text()
    result = evaluate(
        "--val", str(valset), "--model", "coder", "--out", str(outs["coder"]), "--regrade"
    )
    assert "0 call(s) made, 20 answer(s) from the cache" in result.stdout
    assert (outs["coder"] / "results.jsonl").read_text() == before
    assert total_calls(standin) == 40

    # Registering the same name again needs --update; the refusal comes before any call.
    again = evaluate(*common(valset, standin, "coder", tmp_path / "again"), *prices, *server,
                     "--register", check=False)  # fmt: skip
    assert again.returncode == 1 and "--update" in again.stderr
    assert total_calls(standin) == 40


def test_a_killed_run_resumes_without_repeating_calls(valset: Path, tmp_path: Path) -> None:
    _, val = two_topic_prompts()
    llm = StandinLLM({("*", p): Script(good_answer(i)) for i, p, _ in val}, delay_seconds=0.15)
    llm.start()
    out = tmp_path / "run"
    cache = out / "responses.jsonl"
    try:
        args = [*SIDECAR, "evaluate", *common(valset, llm, "coder", out), "--concurrency", "2"]
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            wait_until(lambda: cache.exists() and len(cache.read_text().splitlines()) >= 6, 60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        cached_ids = {json.loads(line)["id"] for line in cache.read_text().splitlines()}
        assert 6 <= len(cached_ids) < 20
        calls_before = total_calls(llm)
        assert calls_before <= len(cached_ids) + 2  # at most the 2 in flight were lost

        result = evaluate(*common(valset, llm, "coder", out), "--json")
        summary = json.loads(result.stdout)
        assert summary["calls"] == {"made": 20 - len(cached_ids), "cached": len(cached_ids)}
        assert summary["graded"] == 20 and summary["accuracy"] == 1.0
        prompt_of = {i: p for i, p, _ in val}
        with llm.lock:
            for item_id in cached_ids:
                assert llm.calls[prompt_of[item_id]] == 1, item_id  # never asked again
            assert all(llm.calls[p] >= 1 for p in prompt_of.values())
        assert total_calls(llm) == calls_before + 20 - len(cached_ids)
    finally:
        llm.stop()


def test_too_many_failures_do_not_register(
    valset: Path, standin: StandinLLM, leader: tuple[Sidecar, Path], tmp_path: Path
) -> None:
    sidecar, token_file = leader
    _, val = two_topic_prompts()
    for _, prompt, _ in val[:3]:
        standin.table[("coder", prompt)].faults = ["500"] * 2  # both attempts of the first run
    server = ["--server", f"127.0.0.1:{sidecar.port}", "--token-file", str(token_file)]
    base = [*common(valset, standin, "coder", tmp_path / "run"), "--cost", "0.01", *server]
    result = evaluate(*base, "--register", "--max-attempts", "2", "--max-failures", "2",
                      check=False)  # fmt: skip
    assert result.returncode == 1
    assert "3 item(s) failed" in result.stderr and "not registering" in result.stderr
    assert "code-0: failed: HTTP 500" in result.stdout
    client = Client(sidecar.port)
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.registry.GetModel(registry_pb2.GetModelRequest(name="coder"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # The failures are retried by a rerun (the stand-in now answers), and then it registers.
        result = evaluate(*base, "--register", "--max-failures", "10%")
        assert "3 call(s) made, 17 answer(s) from the cache" in result.stdout
        model = client.registry.GetModel(registry_pb2.GetModelRequest(name="coder"))
        assert model.result_count == 20 and model.cost == pytest.approx(0.01)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--register"], 2, "--register needs --server"),
        (["--register", "--server", "127.0.0.1:1"], 2, "--register needs a cost"),
        (["--price-in", "1"], 2, "give both --price-in and --price-out"),
        (["--max-failures", "many"], 2, "--max-failures must be"),
        (["--concurrency", "0"], 2, "--concurrency must be at least 1"),
    ],
)
def test_bad_setups_are_refused_before_any_call(
    valset: Path, standin: StandinLLM, tmp_path: Path, extra: list[str], code: int, message: str
) -> None:
    result = evaluate(*common(valset, standin, "coder", tmp_path / "run"), *extra, check=False)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert total_calls(standin) == 0


def test_ids_missing_from_the_clustering_are_refused_before_any_call(
    standin: StandinLLM, leader: tuple[Sidecar, Path], tmp_path: Path
) -> None:
    sidecar, token_file = leader
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"id": "new-1", "prompt": "p", "grader": "exact", "answer": "a"}))
    result = evaluate(
        "--val", str(path), "--base-url", standin.base_url, "--model", "coder",
        "--out", str(tmp_path / "run"), "--cost", "1", "--register",
        "--server", f"127.0.0.1:{sidecar.port}", "--token-file", str(token_file), check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "1 item id(s)" in result.stderr and "'new-1'" in result.stderr
    assert total_calls(standin) == 0


def test_an_unreachable_endpoint_fails_every_item_and_says_so(valset: Path, tmp_path: Path) -> None:
    llm = StandinLLM().start()
    url = llm.base_url
    llm.stop()
    started = time.monotonic()
    result = evaluate(
        "--val", str(valset), "--base-url", url, "--model", "m", "--out", str(tmp_path / "r"),
        "--max-attempts", "2", "--backoff", "0.01", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "20 item(s) failed" in result.stderr
    assert "connection failed" in result.stdout
    assert time.monotonic() - started < 60


def test_get_clustering_lists_the_assignment_only_on_request(
    leader: tuple[Sidecar, Path], topic_artifact: Path
) -> None:
    sidecar, _ = leader
    client = Client(sidecar.port)
    try:
        plain = client.registry.GetClustering(registry_pb2.GetClusteringRequest())
        assert not plain.validation_item_ids and not plain.validation_clusters
        full = client.registry.GetClustering(
            registry_pb2.GetClusteringRequest(include_assignment=True)
        )
    finally:
        client.close()
    clustering = load_clustering(topic_artifact)
    assert list(full.validation_item_ids) == list(clustering.item_ids)
    assert list(full.validation_clusters) == [int(c) for c in clustering.item_clusters]
    assert full.version == plain.version


def test_evaluate_stays_light(valset: Path, standin: StandinLLM, tmp_path: Path) -> None:
    """Other commands never load openai, nor does a cached rerun; evaluate loads no server stack."""
    out = tmp_path / "run"
    evaluate(*common(valset, standin, "coder", out))
    code = (
        "import sys\n"
        "from sidecar._cli import main\n"
        "assert 'openai' not in sys.modules\n"
        f"main(['evaluate', '--val', {str(valset)!r}, '--model', 'coder', '--out', {str(out)!r},"
        " '--regrade'])\n"
        "heavy = [m for m in ('numba', 'onnxruntime', 'sklearn', 'torch') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        # A rerun with every answer cached opens no client: openai is never imported.
        f"main(['evaluate', '--val', {str(valset)!r}, '--model', 'coder', '--out', {str(out)!r},"
        f" '--base-url', {standin.base_url!r}])\n"
        "print('OPENAI=' + str('openai' in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "HEAVY=\n" in result.stdout
    assert "OPENAI=False" in result.stdout
