"""Routing quality with the static embedder against MiniLM int8, next to a random-table control.

The protocol is bench/quality.py's, run per embedder through its ``Evaluator``
(real in-process servers, RegisterModel, RouteBatch, the λ sweep): K and
K-NN's k chosen on a held-out 30% of train, K-means never on S_val, N_val in
{100, 300, all}, 5 seeds. Series:

* ``minilm-int8``: the default embedder (int8 MiniLM, head_tail:64);
* ``static``: the shipped static artifact (var/embedder-static);
* ``random``: the control, a table of random vectors per word piece, weighted
  and mean-pooled exactly like ``static`` (what a bag of word pieces alone does);
* static variants, one change each from ``static``: PCA dimension (128, 256,
  384), weighting (none, sif:1e-3, sif:1e-4, sif:1e-5), and the prompt cut to
  MiniLM's window (head_tail:64 of 256 tokens) instead of the whole prompt (a
  variant that restates the shipped recipe is not run twice).

The static recipe (PCA dimension and weighting) is chosen on the held-out train
split, like K. Goal (issue 10): static minus MiniLM UniRoute Area, paired by
seed, within ±0.005 (or better) at every N_val.

The token table before PCA (every vocabulary id through MiniLM, ~5-10 minutes
on 2 cores) is cached under bench/out/cache/, like the prompt embeddings.

    python -m bench.quality_static [--data DIR] [--quick] [--only NAME ...] [--time-limit 3600]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench._common import add_time_limit, guarded, record, verdict
from bench.quality import (
    CACHE_DIR,
    GRID_SEEDS,
    K_GRID,
    KNN_KS,
    LEARNED_K_GRID,
    N_VALS,
    QUICK_CHOICE,
    QUICK_N_VAL,
    QUICK_SEEDS,
    SEEDS,
    Evaluator,
    Split,
    load_split,
    log,
    select_label,
    selection_area,
    sha256_file,
    summarise,
    uni_name,
)
from bench.routerbench import data_dir, read_rows
from sidecar._export import _resolve_source
from sidecar._export_static import distil_raw, reduce, token_weights
from sidecar._static_embedder import StaticEmbedder, static_fingerprint
from sidecar._truncation import TokenWindow

GOAL_DIFF = 0.005
TIME_LIMIT_S = 60 * 60
# name -> (pca_dims, weighting, table, window): None = the shipped artifact's;
# table "distilled" or "random"
VARIANTS: dict[str, tuple[int | None, str | None, str, str | None]] = {
    "static": (None, None, "distilled", None),
    "random": (None, None, "random", None),
    "static-128": (128, None, "distilled", None),
    "static-256": (256, None, "distilled", None),
    "static-384": (384, None, "distilled", None),
    "static-weights-none": (None, "none", "distilled", None),
    "static-sif-1e-3": (None, "sif:1e-3", "distilled", None),
    "static-sif-1e-4": (None, "sif:1e-4", "distilled", None),
    "static-sif-1e-5": (None, "sif:1e-5", "distilled", None),
    "static-head_tail:64": (None, None, "distilled", "head_tail:64"),
}
RECIPES = ("static", "static-128", "static-256", "static-384", "static-weights-none",
           "static-sif-1e-3", "static-sif-1e-4", "static-sif-1e-5")  # fmt: skip


class WindowedStatic(StaticEmbedder):
    """The static embedder fed only the tokens MiniLM's window keeps (the truncation variant)."""

    window: TokenWindow

    def tokens(self, text: str) -> npt.NDArray[np.int32]:
        ids = super().tokens(text)
        kept, _ = self.window.apply(ids.astype(np.int64))
        return np.ascontiguousarray(kept, dtype=np.int32)


def raw_table() -> npt.NDArray[np.float32]:
    src = _resolve_source(None)
    path = CACHE_DIR / f"static-raw-{sha256_file(src / 'model.safetensors')[:16]}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    log("distilling the raw token table (every vocabulary id through MiniLM; cache miss)")
    raw, _ = distil_raw(src)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, raw)
    os.replace(tmp, path)
    return raw


def variant(name: str, shipped: StaticEmbedder, raw: npt.NDArray[np.float32]) -> StaticEmbedder:
    """An in-memory static embedder for one variant (the shipped artifact for "static")."""
    want_dims, want_weighting, kind, window = VARIANTS[name]
    dims = want_dims or int(shipped.manifest["pca_dims"])
    weighting = want_weighting or str(shipped.manifest["weighting"])
    same_recipe = (dims, weighting) == (shipped.manifest["pca_dims"], shipped.manifest["weighting"])
    if name == "static" or (kind == "distilled" and window is None and same_recipe):
        return shipped  # a variant that only restates the shipped recipe
    manifest = {**shipped.manifest, "pca_dims": dims, "dim": dims, "weighting": weighting}
    manifest["quantization"] = "none"
    if kind == "random":
        table = np.random.default_rng(0).standard_normal((raw.shape[0], dims)).astype(np.float32)
        manifest["distill"] = "random normal vectors, seed 0 (control)"
    else:
        table = reduce(raw, dims)
    if window is not None:
        manifest["truncation_variant"] = window
        manifest["distill"] = f"{manifest['distill']}; {window} of 256 tokens"
    manifest["fingerprint"] = static_fingerprint(manifest)
    cls = WindowedStatic if window is not None else StaticEmbedder
    embedder = cls(
        path=shipped.path,
        manifest=manifest,
        wordpiece=shipped.wordpiece,
        table=table,
        weight=token_weights(table.shape[0], weighting),
    )
    if isinstance(embedder, WindowedStatic) and window is not None:
        embedder.window = TokenWindow.parse(window, 256)
    return embedder


class EmbedderEvaluator(Evaluator):
    """bench.quality's Evaluator over any embedder's vectors (embedded here, not cached)."""

    def __init__(
        self, name: str, embedder: Any, models: Sequence[str], train: Split, test: Split, work: Path
    ) -> None:
        self.models = list(models)
        self.train, self.test, self.workdir = train, test, work
        self.embedder = embedder
        self.truncation = name
        self.train_vectors = embedder.embed_batch(list(train.prompts)).vectors
        self.test_vectors = embedder.embed_batch(list(test.prompts)).vectors
        self.train_cost = train.cost.mean(axis=0)
        self.runs = 0


def choice_label(choices: dict[str, dict[str, Any]]) -> str:
    """The map and K chosen with all labels, e.g. "kmeans K=5"."""
    c = choices[select_label(0)] if select_label(0) in choices else next(iter(choices.values()))
    return f"{c['map']} K={c['learned_k'] if c['map'] == 'learned' else c['k']}"


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """UniRoute Area of a minus b per N_val, paired by seed (same splits and S_val)."""
    out = {}
    for label, block in a["by_n_val"].items():
        x = np.asarray(block["area"][uni_name(a)]["values"], dtype=np.float64)
        y = np.asarray(b["by_n_val"][label]["area"][uni_name(b)]["values"], dtype=np.float64)
        stats = summarise((x - y).tolist())
        se = stats["std"] / math.sqrt(x.size) if x.size > 1 and stats["std"] else 0.0
        stats["t"] = float(stats["mean"] / se) if se > 0 else None
        out[label] = stats
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_static", description=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="the RouterBench folder")
    parser.add_argument(
        "--quick", action="store_true", help="N_val=300, 2 seeds, fixed K, 3 series"
    )
    parser.add_argument("--only", nargs="+", default=None, help="series to run (and minilm-int8)")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    with guarded(args.time_limit, "bench.quality_static"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    folder = data_dir(args.data)
    train_path, test_path = folder / "train.jsonl", folder / "test.jsonl"
    if not (train_path.is_file() and test_path.is_file()):
        print(f"bench.quality_static: skipped, no RouterBench data at {folder}")
        return 0
    from sidecar._export_static import default_static_dir

    names = args.only or (["static", "random"] if args.quick else list(VARIANTS))
    n_vals = (QUICK_N_VAL,) if args.quick else N_VALS
    seeds = QUICK_SEEDS if args.quick else SEEDS
    models = sorted(read_rows(test_path)[0]["correct"])
    train, test = load_split(train_path, models), load_split(test_path, models)
    shipped = StaticEmbedder.from_dir(default_static_dir())
    raw = raw_table() if any(n != "static" for n in names) else None
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-static-") as tmp:
        for name in ["minilm-int8", *names]:
            t0 = time.monotonic()
            log(f"== {name}")
            work = Path(tmp) / name
            work.mkdir()
            if name == "minilm-int8":
                ev: Evaluator = Evaluator("head_tail", models, train, test, work)
            else:
                assert raw is not None or name == "static"
                empty = np.empty((0, 0), dtype=np.float32)
                embedder = variant(name, shipped, raw if raw is not None else empty)
                if name != "static" and embedder is shipped:
                    log("   the shipped recipe itself: see `static`")
                    continue
                ev = EmbedderEvaluator(name, embedder, models, train, test, work)
            selection = None
            if args.quick:
                choices = {select_label(n): dict(QUICK_CHOICE) for n in n_vals}
            else:
                selection = ev.choose_settings(K_GRID, LEARNED_K_GRID, KNN_KS, GRID_SEEDS)
                choices = selection["chosen"]
            result = ev.evaluate(choices, n_vals, seeds, keep_points_for=None)
            result["k_selection"] = selection
            result["choices"] = choices
            result["name"] = name
            results[name] = result
            timings[name] = time.monotonic() - t0
            log(f"   {choice_label(choices)}, done in {timings[name]:.0f} s")
    markdown, data = report(results, args.quick, timings)
    # A run of some series only keeps the full run's section: it gets its own.
    section = "quality_static" + ("_quick" if args.quick else "") + ("_only" if args.only else "")
    record(section, data, markdown)
    return 0


def report(
    results: dict[str, Any], quick: bool, timings: dict[str, float]
) -> tuple[str, dict[str, Any]]:
    base = results["minilm-int8"]
    labels = list(base["by_n_val"])
    diffs = {n: paired(r, base) for n, r in results.items() if n != "minilm-int8"}
    vs_static = {n: paired(r, results["static"]) for n, r in results.items()
                 if n not in ("static", "minilm-int8") and "static" in results}  # fmt: skip
    held_out = {
        n: selection_area(r) for n, r in results.items() if r.get("k_selection") is not None
    }
    recipes = [n for n in RECIPES if n in held_out]
    chosen = max(recipes, key=lambda n: held_out[n]) if recipes else None
    lines = [
        "RouterBench, the protocol of the `quality` section (bench/quality.py's Evaluator: "
        "the map (K-means or LearnedMap), its K and K-NN's k chosen on a held-out 30% of "
        "train per N_val, the map never fitted on S_val, "
        f"{len(next(iter(base['by_n_val'].values()))['area'][uni_name(base)]['values'])} seeds). "
        "UniRoute test Area, mean ± std; map and K chosen per series (shown: with all labels).",
        "",
        "| series | map, K | "
        + " | ".join(f"N_val = {lab}" for lab in labels)
        + " | held-out Area (all) |",
        "|---|---|" + "---|" * (len(labels) + 1),
    ]
    for name, r in results.items():
        cells = [
            f"{r['by_n_val'][lab]['area'][uni_name(r)]['mean']:.4f} ± "
            f"{r['by_n_val'][lab]['area'][uni_name(r)]['std']:.4f}"
            for lab in labels
        ]
        hold = f"{held_out[name]:.4f}" if name in held_out else "—"
        shown = choice_label(r["choices"])
        lines.append(f"| {name} | {shown} | " + " | ".join(cells) + f" | {hold} |")
    lines += [
        "",
        "Paired by seed, UniRoute Area minus minilm-int8's (mean ± std, t):",
        "",
        "| series | " + " | ".join(f"N_val = {lab}" for lab in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, d in diffs.items():
        lines.append(f"| {name} | " + " | ".join(_fmt_diff(d[lab]) for lab in labels) + " |")
    if vs_static:
        lines += [
            "",
            "What each variant loses or gains against `static`, paired by seed:",
            "",
            "| variant | " + " | ".join(f"N_val = {lab}" for lab in labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for name, d in vs_static.items():
            lines.append(f"| {name} | " + " | ".join(_fmt_diff(d[lab]) for lab in labels) + " |")
    goals = {}
    if "static" in diffs:
        goals = {
            lab: {
                "diff": diffs["static"][lab]["mean"],
                "pass": diffs["static"][lab]["mean"] >= -GOAL_DIFF,
            }
            for lab in labels
        }
        lines += ["", "Goals (informational):", ""]
        for lab, g in goals.items():
            lines.append(
                f"- {verdict(g['pass'])}: static − minilm-int8 at N_val = {lab} is "
                f"{g['diff']:+.4f} (goal ≥ −{GOAL_DIFF}: within ±{GOAL_DIFF} or better)"
            )
    if "random" in diffs:
        lab = labels[-1]
        lines += [
            "",
            f"Control: the random table minus minilm-int8 at N_val = {lab} is "
            f"{diffs['random'][lab]['mean']:+.4f}; when that is near 0 this benchmark cannot "
            "tell embedders apart (RouterBench routing is telling its three tasks apart).",
        ]
    if chosen is not None and not quick:
        lines += [
            "",
            f"Static recipe chosen on held-out train (best held-out Area with all labels): "
            f"**{chosen}** ({held_out[chosen]:.4f}); the shipped default is `static` "
            f"({held_out.get('static', float('nan')):.4f}).",
        ]
    if quick:
        lines += ["", "**Quick mode**: N_val = 300, 2 seeds, fixed map, K and k; a smoke test."]
    lines += ["", "Runtime: " + ", ".join(f"{n} {t:.0f} s" for n, t in timings.items()) + "."]
    data = {
        "results": results,
        "paired_vs_minilm": diffs,
        "paired_vs_static": vs_static,
        "held_out": held_out,
        "chosen_recipe": chosen,
        "goals": goals,
        "timings_s": timings,
    }
    return "\n".join(lines), data


def _fmt_diff(d: dict[str, Any]) -> str:
    t = "" if d.get("t") is None else f" (t = {d['t']:+.1f})"
    return f"{d['mean']:+.4f} ± {d['std']:.4f}{t}"


if __name__ == "__main__":
    raise SystemExit(main())
