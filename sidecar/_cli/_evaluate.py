"""`sidecar evaluate`: run S_val against a model's endpoint, grade it, and register it.

The steps live in plain modules (`_valset`, `_endpoint`, `_graders`,
`_code_grader`, `_evaluation`); this command checks everything it can before
the first paid call (the file, the flags, the leader's clustering and the
model name), shows progress, prints the report and registers through the
same client path as `sidecar register`. Like the other client commands it
loads no server stack; the `openai` client is imported only when calls start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from .._errors import AlreadyExists, FailedPrecondition, InvalidArgument, SidecarError

if TYPE_CHECKING:
    from .._profiles import Assignment
from ._build import ProgressBar
from ._client import (
    clustering_assignment,
    labels_from_flags,
    model_exists,
    register_model,
)

EXIT_TOO_MANY_FAILURES = 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .._evaluation import Run, answer_missing, grade_all, missing, summarise, write_outputs
    from .._valset import read_valset

    items = read_valset(args.val)
    _check_flags(args, items)
    preview = clustering_assignment(args) if args.server else None
    if args.register:
        _check_registration(args, items, preview)
    run = Run(
        out=args.out,
        model=args.model,
        settings={"temperature": args.temperature, "max_tokens": args.max_tokens},
        concurrency=args.concurrency,
        code_limits=_code_limits(args),
    )
    stop = threading.Event()
    calls_made, cached = 0, len(items)
    if not args.regrade and missing(items, run):  # all cached: no client, no openai import
        with _endpoint(args, args.base_url, args.model, args.api_key_env, stop) as endpoint:
            bar: ProgressBar | None = None

            def progress(done: int, total: int) -> None:
                nonlocal bar
                if bar is None:
                    bar = ProgressBar(total, f"calling {args.model}") if total else None
                if bar is not None:
                    bar.update(done)

            calls_made, cached = answer_missing(items, endpoint, run, progress)
    sandbox = _sandbox(items)
    judge_url = args.judge_base_url
    with _endpoint(args, judge_url, args.judge_model, args.judge_api_key_env, stop) as judge:
        grading = ProgressBar(len(items), "grading")
        results = grade_all(items, run, judge, lambda done, _: grading.update(done))
    summary = summarise(
        results,
        model=args.model,
        price_in=args.price_in,
        price_out=args.price_out,
        cost_override=args.cost,
        calls_made=calls_made,
        cached=cached,
        sandbox=sandbox,
    )
    if preview is not None:
        summary["preview"] = _preview(results, *preview)
    write_outputs(args.out, results, summary)
    too_many = summary["failed"] + summary["unknown"] > _failure_limit(args, len(items))
    if args.register:
        summary["registered"] = None if too_many else _register(args, summary)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        _print_report(summary, args)
        if summary.get("registered"):
            print(
                f"registered {args.name or args.model} at revision "
                f"{summary['registered']['revision']}: cost={summary['registered']['cost']:g}"
            )
    if too_many:
        print(
            f"error: {summary['failed']} item(s) failed and {summary['unknown']} could not be "
            f"graded, more than --max-failures {args.max_failures}"
            + ("; not registering" if args.register else "")
            + f". Rerun the same command to retry only those (the answers are cached in "
            f"{args.out}).",
            file=sys.stderr,
        )
        return EXIT_TOO_MANY_FAILURES
    return 0


def _check_flags(args: argparse.Namespace, items: list[Any]) -> None:
    """Everything that would otherwise fail after money was spent, checked first."""
    if not args.regrade and not args.base_url:
        raise InvalidArgument("--base-url is required (or --regrade to grade the cache only)")
    if args.concurrency < 1:
        raise InvalidArgument("--concurrency must be at least 1")
    _failure_limit(args, len(items))
    judged = sum(item.grader == "judge" for item in items)
    if judged and not args.regrade and not (args.judge_base_url and args.judge_model):
        raise InvalidArgument(
            f"{judged} item(s) use the judge grader: give --judge-base-url and --judge-model"
        )
    for flag in ("price_in", "price_out", "cost"):
        value = getattr(args, flag)
        if value is not None and not value >= 0:
            raise InvalidArgument(f"--{flag.replace('_', '-')} must be >= 0")
    if (args.price_in is None) != (args.price_out is None):
        raise InvalidArgument("give both --price-in and --price-out (per million tokens)")
    if args.register:
        if not args.server:
            raise InvalidArgument("--register needs --server LEADER")
        if args.cost is None and args.price_in is None:
            raise InvalidArgument(
                "--register needs a cost: --price-in and --price-out (per million tokens), "
                "or --cost"
            )


def _check_registration(
    args: argparse.Namespace, items: list[Any], preview: tuple[str, int, Assignment] | None
) -> None:
    assert preview is not None
    version, _, assignment = preview
    unknown = [item.id for item in items if item.id not in assignment.clusters]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise FailedPrecondition(
            f"{len(unknown)} item id(s) of {args.val} are not in the leader's active clustering "
            f"({version}): {shown}. Fit and activate a clustering with this validation file "
            "(sidecar fit --val ...), or evaluate without --register."
        )
    name = args.name or args.model
    if not args.update and model_exists(args, name):
        raise AlreadyExists(f"model {name!r} is already registered: add --update to replace it")


def _endpoint(
    args: argparse.Namespace,
    base_url: str | None,
    model: str | None,
    key_env: str,
    stop: threading.Event,
) -> Any:
    """An Endpoint as a context manager, or a null one when there is nothing to call."""
    import contextlib

    if not base_url or not model:
        return contextlib.nullcontext(None)
    try:
        from .._endpoint import Endpoint, EndpointConfig
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SidecarError(
            f"sidecar evaluate needs the openai client ({exc.name} is missing): "
            "pip install 'uniroute-sidecar[evaluate]'"
        ) from exc
    api_key = os.environ.get(key_env, "")
    if not api_key and key_env != "OPENAI_API_KEY":
        raise InvalidArgument(f"${key_env} is not set (given by --*api-key-env)")
    config = EndpointConfig(
        base_url=base_url,
        model=model,
        api_key=api_key or "unused",  # local endpoints often need none; the client wants one
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        timeout_s=args.call_timeout,
        max_attempts=args.max_attempts,
        backoff_s=args.backoff,
        max_backoff_s=args.max_backoff,
    )
    endpoint = Endpoint(config, stop)
    return contextlib.closing(endpoint)


def _code_limits(args: argparse.Namespace) -> Any:
    from .._code_grader import CodeLimits

    return CodeLimits(timeout_s=args.code_timeout, memory_mb=args.code_memory_mb)


def _sandbox(items: list[Any]) -> Any:
    if not any(item.grader == "code" for item in items):
        return None
    from .._code_grader import Sandbox

    return Sandbox.probe()


def _failure_limit(args: argparse.Namespace, n: int) -> int:
    """--max-failures N, or P% of the items (rounded down)."""
    text = str(args.max_failures).strip()
    try:
        limit = int(float(text[:-1]) * n / 100) if text.endswith("%") else int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise InvalidArgument(f"--max-failures must be a count >= 0 or a percentage, got {text!r}")
    return limit


def _preview(results: list[Any], version: str, k: int, assignment: Assignment) -> dict[str, Any]:
    """Ψ per cluster as the leader would compute it from these graded results."""
    scores = {r.id: r.score for r in results if r.status == "graded" and r.score is not None}
    profile = assignment.profile(scores)
    return {
        "clustering_version": version,
        "k": k,
        "error_rates": [float(e) for e in profile.error_rates],
        "validation_counts": [int(n) for n in profile.validation_counts],
        "overall_error": profile.overall_error,
        "items_not_in_clustering": sorted(set(scores) - set(assignment.clusters)),
    }


def _register(args: argparse.Namespace, summary: dict[str, Any]) -> dict[str, Any]:
    from .._evaluation import RESULTS
    from .._jsonl import read_results

    cost = summary["cost"]["per_request"]
    if cost is None:
        raise FailedPrecondition(
            "no cost to register: the responses carried no token usage; give --cost"
        )
    model = register_model(
        args,
        name=args.name or args.model,
        cost=cost,
        results=read_results(args.out / RESULTS),
        description=args.description,
        labels=labels_from_flags(args.label),
        update=args.update,
    )
    return {
        "name": model.name,
        "revision": model.revision,
        "cost": model.cost,
        "error_rates": list(model.error_rates),
        "overall_error": model.overall_error,
    }


def _print_report(summary: dict[str, Any], args: argparse.Namespace) -> None:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    calls = summary["calls"]
    print(
        f"{summary['model']}: {summary['graded']}/{summary['items']} graded, accuracy "
        f"{pct(summary['accuracy'])} ({calls['made']} call(s) made, {calls['cached']} answer(s) "
        "from the cache)"
    )
    for grader, stats in summary["per_grader"].items():
        print(f"  {grader:<9} {stats['graded']:>4}/{stats['items']:<4} {pct(stats['accuracy'])}")
    tokens, latency, cost = summary["tokens"], summary["latency_s"], summary["cost"]
    print(f"tokens: {tokens['prompt']} prompt, {tokens['completion']} completion", end="")
    print(f" ({tokens['responses_without_usage']} response(s) without usage)")
    if latency["p50"] is not None:
        print(
            f"latency: p50 {latency['p50']:.3f}s p90 {latency['p90']:.3f}s "
            f"p99 {latency['p99']:.3f}s max {latency['max']:.3f}s"
        )
    measured = cost["measured_per_request"]
    print(
        "cost per request: "
        + ("-" if measured is None else f"{measured:.6g} measured")
        + ("" if cost["override"] is None else f", {cost['override']:g} given by --cost")
    )
    if "preview" in summary:
        p = summary["preview"]
        print(f"Ψ preview on clustering {p['clustering_version']} (K={p['k']}):")
        for k, (rate, n) in enumerate(zip(p["error_rates"], p["validation_counts"], strict=True)):
            print(f"  cluster {k:<3} error={rate:.3f}  items={n}")
    if summary["failures"]:
        print(f"failures ({summary['failed']} failed, {summary['unknown']} ungraded):")
        for failure in summary["failures"][:20]:
            print(f"  {failure['id']}: {failure['status']}: {failure['detail'][:160]}")
    print(f"wrote {args.out}/ (graded.jsonl, results.jsonl, summary.json)")
