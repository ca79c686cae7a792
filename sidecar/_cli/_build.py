"""Offline commands that build artifacts: export-embedder and fit.

Both are slow, run by people or CI, and pull in heavy libraries (torch for
the export, scikit-learn for K-means) that serving never loads, so every
import happens inside the command.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO


class ProgressBar:
    """A dependency-free progress bar on stderr; plain periodic lines when not a TTY."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def update(self, done: int) -> None:
        fraction = min(done / self.total, 1.0)
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_clock((self.total - done) / rate)}" if 0 < done < self.total else ""
        text = f"{self.label}: {done}/{self.total} ({rate:.1f}/s{eta})"
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {text}")
            if done >= self.total:
                self.stream.write("\n")
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        if minutes >= 60
        else f"{minutes}:{secs:02d}"
    )


def cmd_export_embedder(args: argparse.Namespace) -> int:
    if args.kind == "static":
        return _export_static(args)
    from .._embedder_manifest import default_embedder_dir
    from .._export import export_embedder  # torch is needed only here

    out = args.out or default_embedder_dir()
    manifest = export_embedder(
        out,
        args.source,
        quantize=not args.no_quantize,
        max_tokens=args.max_tokens,
        min_cosine=args.min_cosine,
        **({"truncation": args.truncation} if args.truncation else {}),
    )
    probe = manifest["probe"]
    print(
        f"wrote {out}: dim={manifest['dim']} max_tokens={manifest['max_tokens']} "
        f"quantization={manifest['quantization']} probe mean cosine={probe['mean_cosine']:.4f} "
        f"fingerprint={manifest['fingerprint'][:16]}…"
    )
    return 0


def _export_static(args: argparse.Namespace) -> int:
    from .._errors import InvalidArgument
    from .._export_static import (
        DEFAULT_PCA_DIMS,
        DEFAULT_WEIGHTING,
        default_static_dir,
        export_static,
    )

    if args.truncation:
        raise InvalidArgument("the static embedder embeds the whole prompt: drop --truncation")
    out = args.out or default_static_dir()
    manifest = export_static(
        out,
        args.source,
        pca_dims=args.pca_dims or DEFAULT_PCA_DIMS,
        weighting=args.weighting or DEFAULT_WEIGHTING,
        quantize=not args.no_quantize,
    )
    probe = manifest["probe"]
    print(
        f"wrote {out}: kind=static dim={manifest['dim']} weighting={manifest['weighting']} "
        f"quantization={manifest['quantization']} int8 vs float32 mean cosine="
        f"{probe['mean_cosine']:.5f} in {manifest['export_seconds']:.0f} s "
        f"fingerprint={manifest['fingerprint'][:16]}…"
    )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """Embeds, chooses K if asked, fits K-means or a LearnedMap, assigns S_val, saves."""
    from .._choose_k import choose_k, rule_k
    from .._clustering import fit_clustering, save_clustering
    from .._embedder_manifest import default_embedder_dir
    from .._embedders import load_embedder
    from .._errors import InvalidArgument
    from .._jsonl import read_items, read_prompts
    from .._learned_map import DEFAULT_L2, fit_learned_clustering

    learned = args.map == "learned"
    if learned and args.train_results is None:
        raise InvalidArgument(
            "--map learned needs --train-results DIR: the training LLMs' graded results on "
            "the --train prompts"
        )
    if args.train_results is not None:
        train_ids, train = read_items(args.train)
        names, scores = _training_labels(args.train_results, train_ids)
    else:
        train, names, scores = read_prompts(args.train), (), None
    val_ids, val_prompts = read_items(args.val)
    embedder = load_embedder(
        args.embedder or default_embedder_dir(), threads=args.threads, truncation=args.truncation
    )
    # Train and val often overlap (or are the same file): embed each distinct prompt once.
    distinct = list(dict.fromkeys([*train, *val_prompts]))
    row_of = {prompt: row for row, prompt in enumerate(distinct)}
    embedded = _embed_with_progress(embedder, distinct, "embedding prompts")
    train_vectors = embedded.vectors[[row_of[p] for p in train]]
    val_vectors = embedded.vectors[[row_of[p] for p in val_prompts]]
    info: dict[str, object] = {"train_file": args.train.name, "val_file": args.val.name}
    k = args.k
    if k == "auto":
        if scores is None:
            choice = rule_k(len(val_ids), len({row_of[p] for p in train}))
        else:
            costs = _training_costs(args, names)
            print(f"choosing K: cross-validation over {len(names)} training LLMs ({args.map})")
            choice = choose_k(
                train_vectors,
                scores,
                costs,
                n_val=len(val_ids),
                map_kind=args.map,
                seed=args.seed,
                reps=args.cv_reps,
                l2=DEFAULT_L2 if args.l2 is None else args.l2,
                progress=lambda line: print("  " + line, flush=True),
            )
        print(choice.table())
        info["k_selection"] = choice.info()
        k = choice.k
    common = {
        "k": k,
        "embedder_fingerprint": embedder.fingerprint,
        "seed": args.seed,
        "info": info,
    }
    if learned:
        assert scores is not None
        info["train_llms"] = list(names)
        l2 = DEFAULT_L2 if args.l2 is None else args.l2
        clustering, report = fit_learned_clustering(
            train_vectors, scores, val_ids, val_vectors, l2=l2, **common
        )
        print(
            f"LearnedMap: temperature {report.temperature:g}, cross-fitted log loss "
            f"{report.loss_kmeans:.4f} (K-means) -> {report.loss_start:.4f} (start) -> "
            f"{report.loss_end:.4f} in {report.iterations} iterations"
        )
    else:
        clustering = fit_clustering(train_vectors, val_ids, val_vectors, **common)
    save_clustering(clustering, args.out)
    counts = clustering.cluster_counts()
    print(
        f"wrote {args.out}: version={clustering.version} map={clustering.map_kind} "
        f"k={clustering.k} train={len(train)} val={len(val_ids)} "
        f"distinct prompts={len(distinct)} truncated={int(embedded.truncated.sum())}"
    )
    print(f"validation items per cluster: {counts.tolist()}")
    empty = [i for i, n in enumerate(counts) if n == 0]
    if empty and not learned:
        print(
            f"warning: cluster(s) {empty} have no validation items; models will get their "
            "overall error there. Add validation items or lower -k.",
            file=sys.stderr,
        )
    return 0


def _training_labels(directory: Path, train_ids: Sequence[str]) -> tuple[tuple[str, ...], Any]:
    """(LLM names, (n_train, L) scores with NaN for unknown) from --train-results."""
    from .._jsonl import read_results_dir
    from .._learned_map import label_matrix

    return label_matrix(train_ids, read_results_dir(directory))


def _training_costs(args: argparse.Namespace, names: Sequence[str]) -> Any:
    """Each training LLM's cost, from --train-costs or a costs.tsv in/above the results dir."""
    import numpy as np

    from .._errors import InvalidArgument
    from .._jsonl import read_costs

    path = args.train_costs
    if path is None:
        found = [
            d / "costs.tsv"
            for d in (args.train_results, args.train_results.parent)
            if (d / "costs.tsv").exists()
        ]
        if not found:
            raise InvalidArgument(
                "-k auto with --train-results needs each training LLM's cost: give "
                "--train-costs FILE (`name<TAB>cost` lines), or put a costs.tsv in or above "
                "the results folder"
            )
        path = found[0]
    costs = read_costs(path)
    missing = [n for n in names if n not in costs]
    if missing:
        raise InvalidArgument(f"{path}: no cost for training LLM(s) {', '.join(missing)}")
    return np.asarray([costs[n] for n in names], dtype=np.float64)


def _embed_with_progress(embedder: Any, texts: Sequence[str], label: str) -> Any:
    bar = ProgressBar(len(texts), label)
    return embedder.embed_batch(texts, progress=bar.update)
