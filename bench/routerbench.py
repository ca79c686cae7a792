"""Turn RouterBench rows into what the sidecar's CLI consumes.

RouterBench lines are ``{id, task, prompt, correct: {model: 0|1}, cost_usd: {model: float}}``.
``sidecar fit`` reads them directly (it needs only ``id`` and ``prompt``). This
tool splits a file into the prompts K-means is fitted on and a validation set
S_val (the method never fits Φ on S_val), and writes one results file per
model for ``sidecar register`` and a ``costs.tsv`` with each model's mean cost
per request.

    python -m bench.routerbench split --data ../shared/data/routerbench/train.jsonl --out DIR
    python -m bench.routerbench results --data DIR/sval.jsonl --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATA_ENV = "ROUTERBENCH_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "routerbench"


def data_dir(flag: Path | None = None) -> Path:
    """The RouterBench folder: the flag, else $ROUTERBENCH_DIR, else ../shared/data/routerbench."""
    if flag is not None:
        return flag
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def results_file_name(model: str) -> str:
    """Model names contain '/', so the file name escapes it."""
    return model.replace("/", "__") + ".jsonl"


def write_results(rows: Sequence[dict[str, Any]], out: Path) -> list[tuple[str, float, Path]]:
    """Writes <out>/results/<model>.jsonl and <out>/costs.tsv; returns (model, cost, file)."""
    models = sorted(rows[0]["correct"])
    (out / "results").mkdir(parents=True, exist_ok=True)
    written = []
    for model in models:
        path = out / "results" / results_file_name(model)
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"id": row["id"], "correct": int(row["correct"][model])}) + "\n")
        cost = sum(float(row["cost_usd"][model]) for row in rows) / len(rows)
        written.append((model, cost, path))
    with (out / "costs.tsv").open("w", encoding="utf-8") as f:
        for model, cost, path in written:
            f.write(f"{model}\t{cost:.10g}\t{path}\n")
    return written


def split(
    rows: Sequence[dict[str, Any]], val_size: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(fit rows, S_val rows): a seeded random S_val of ``val_size``, disjoint from the fit set."""
    if not 0 < val_size < len(rows):
        raise SystemExit(f"--val-size must be between 1 and {len(rows) - 1}, got {val_size}")
    chosen = set(random.Random(seed).sample(range(len(rows)), val_size))
    fit = [row for i, row in enumerate(rows) if i not in chosen]
    val = [row for i, row in enumerate(rows) if i in chosen]
    return fit, val


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routerbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="fit.jsonl (for K-means) and sval.jsonl (S_val)")
    p.add_argument("--data", type=Path, required=True, help="a RouterBench JSONL file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--val-size", type=int, default=300, help="S_val items (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("results", help="per-model results files and costs.tsv")
    p.add_argument("--data", type=Path, required=True, help="a RouterBench JSONL file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.command == "split":
        fit, val = split(read_rows(args.data), args.val_size, args.seed)
        write_jsonl(fit, args.out / "fit.jsonl")
        write_jsonl(val, args.out / "sval.jsonl")
        print(f"{args.out / 'fit.jsonl'}: {len(fit)} rows; {args.out / 'sval.jsonl'}: {len(val)}")
        return 0
    written = write_results(read_rows(args.data), args.out)
    for model, cost, path in written:
        print(f"{model}\t{cost:.6g}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
