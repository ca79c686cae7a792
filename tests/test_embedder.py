"""The runtime embedder against the real exported artifact (``make embedder``).

Uses the session-scoped ``embedder`` fixture from conftest, which fails (not skips)
when the artifact is missing.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar._embedder import (
    Embedder,
    load_tokenizer,
)
from sidecar._embedder_manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    compute_fingerprint,
    default_embedder_dir,
    sha256_file,
)
from sidecar._errors import ArtifactError, InvalidArgument
from sidecar._truncation import TokenWindow

SHORT = "How do I sort a list in Python?"
LONG = "The committee reviewed every proposal in detail before voting. " * 60
MIXED = [
    SHORT,
    "",
    "hi",
    LONG,
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "Explain the difference between TCP and UDP for a network engineering interview.",
    SHORT,  # duplicates must come back identical
    "What is a good recipe for a mushroom risotto?",
    "Prove that there are infinitely many primes. " * 10,
    "a " * 254,  # exactly 256 tokens with [CLS]/[SEP]: at the limit, not over it
    "a " * 255,
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.max_tokens == 256
    vec = embedder.embed(SHORT).vector
    assert vec.dtype == np.float32
    assert vec.shape == (384,)
    assert vec.flags.c_contiguous
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4

    batch = embedder.embed_batch(MIXED)
    assert batch.vectors.dtype == np.float32
    assert batch.vectors.shape == (len(MIXED), 384)
    assert batch.vectors.flags.c_contiguous
    assert batch.n_tokens.dtype == np.int64
    assert batch.truncated.dtype == np.bool_
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_batch_equals_single(embedder: Embedder, batch_size: int) -> None:
    calls: list[int] = []
    batch = embedder.embed_batch(MIXED, batch_size=batch_size, progress=calls.append)
    for i, text in enumerate(MIXED):
        single = embedder.embed(text)
        assert _cos(batch.vectors[i], single.vector) > 0.9999, (i, text[:40])
        assert batch.n_tokens[i] == single.n_tokens
        assert batch.truncated[i] == single.truncated
    # progress reports cumulative counts after each chunk, ending at N
    assert calls == sorted(calls)
    assert calls[-1] == len(MIXED)
    assert len(calls) == -(-len(MIXED) // batch_size)


def test_embed_batch_edge_cases(embedder: Embedder) -> None:
    empty = embedder.embed_batch([])
    assert empty.vectors.shape == (0, 384)
    assert len(empty) == 0
    with pytest.raises(TypeError):
        embedder.embed_batch("not a list")  # a str is a Sequence[str]: easy mistake
    with pytest.raises(ValueError):
        embedder.embed_batch(["x"], batch_size=0)


def test_short_query_is_not_padded(embedder: Embedder) -> None:
    hello = embedder.embed("hello world")
    assert hello.n_tokens == 4  # [CLS] hello world [SEP]; the packaged file would give 128
    assert not hello.truncated
    short = embedder.embed(SHORT)
    assert short.n_tokens < 20
    assert not short.truncated


def test_long_text_is_truncated_to_max_tokens(embedder: Embedder) -> None:
    assert embedder.truncation == "head_tail:64"  # the default
    long = embedder.embed(LONG)
    assert long.truncated
    assert long.n_tokens == embedder.max_tokens
    at_limit = embedder.embed("a " * 254)
    assert at_limit.n_tokens == 256 and not at_limit.truncated
    over = embedder.embed("a " * 255)
    assert over.n_tokens == 256 and over.truncated
    # head_tail keeps the end: a different ending changes the vector...
    tail_changed = embedder.embed(LONG + " Completely different ending about volcanoes.")
    assert _cos(long.vector, tail_changed.vector) < 0.999
    # ...while head truncation cannot see anything after the first 256 tokens.
    head = Embedder.from_dir(default_embedder_dir(), truncation="head")
    assert _cos(head.embed(LONG).vector, head.embed(LONG + " Volcanoes.").vector) > 0.99999


def test_stages_compose_to_embed(embedder: Embedder) -> None:
    enc = embedder.encode(SHORT)
    assert enc.ids.shape == enc.mask.shape == (1, enc.n_tokens)
    assert enc.ids.dtype == np.int64
    vectors = embedder.run(enc.ids, enc.mask)
    assert vectors.shape == (1, 384)
    np.testing.assert_allclose(vectors[0], embedder.embed(SHORT).vector, atol=1e-6)


def test_semantics(embedder: Embedder) -> None:
    a = embedder.embed("How do I reverse a linked list in Python?").vector
    b = embedder.embed("Write Python code that reverses a singly linked list.").vector
    c = embedder.embed("What temperature should I roast a chicken at?").vector
    d = embedder.embed("How long do I cook a whole chicken in the oven?").vector
    assert _cos(a, b) > _cos(a, c) + 0.3
    assert _cos(c, d) > _cos(b, d) + 0.3


def test_fingerprint_matches_manifest_and_is_stable(embedder: Embedder) -> None:
    manifest = embedder.manifest
    assert len(embedder.fingerprint) == 64
    assert embedder.fingerprint == manifest["fingerprint"]
    assert compute_fingerprint(manifest) == embedder.fingerprint
    assert Embedder.from_dir(embedder.path).fingerprint == embedder.fingerprint
    # only the embedding function is fingerprinted, not provenance or timestamps
    manifest["created_time"] = "1970-01-01T00:00:00Z"
    manifest["files"] = {}
    manifest["opset"] = 99
    assert compute_fingerprint(manifest) == embedder.fingerprint
    manifest["max_tokens"] = 128
    assert compute_fingerprint(manifest) != embedder.fingerprint


def test_manifest_property_is_a_copy(embedder: Embedder) -> None:
    embedder.manifest["dim"] = 1
    assert embedder.manifest["dim"] == 384


def test_default_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("UNIROUTE_EMBEDDER_DIR", raising=False)
    assert default_embedder_dir() == Path(__file__).resolve().parent.parent / "var" / "embedder"
    monkeypatch.setenv("UNIROUTE_EMBEDDER_DIR", str(tmp_path))
    assert default_embedder_dir() == tmp_path


def test_concurrent_matches_sequential(embedder: Embedder) -> None:
    texts = [f"{t} (variant {i})" for i in range(20) for t in MIXED[:6]]
    sequential = np.stack([embedder.embed(t).vector for t in texts])
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = np.stack([e.vector for e in pool.map(embedder.embed, texts)])
        batches = list(pool.map(lambda chunk: embedder.embed_batch(chunk), [texts] * 4))
    np.testing.assert_allclose(concurrent, sequential, atol=1e-6)
    for batch in batches:
        np.testing.assert_allclose(batch.vectors, sequential, atol=1e-5)


# ---------------------------------------------------------------- corrupt artifacts


def _flip_model_bytes(d: Path) -> None:
    data = bytearray((d / MODEL_FILE).read_bytes())
    for offset in (1000, len(data) // 2, len(data) - 10):
        data[offset] ^= 0xFF
    (d / MODEL_FILE).write_bytes(bytes(data))


def _rewrite_manifest(d: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    edit(manifest)
    (d / MANIFEST_FILE).write_text(json.dumps(manifest))


def _unloadable_model_with_matching_hash(d: Path) -> None:
    """Garbage that passes the sha256 check, so onnxruntime itself must reject it."""
    (d / MODEL_FILE).write_bytes(b"this is not an onnx protobuf" * 100)
    sha = sha256_file(d / MODEL_FILE)
    _rewrite_manifest(d, lambda m: m["files"].__setitem__(MODEL_FILE, sha))


CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "flipped-model-bytes": (_flip_model_bytes, MODEL_FILE),
    "missing-model": (lambda d: (d / MODEL_FILE).unlink(), MODEL_FILE),
    "missing-tokenizer": (lambda d: (d / TOKENIZER_FILE).unlink(), TOKENIZER_FILE),
    "truncated-tokenizer": (
        lambda d: (d / TOKENIZER_FILE).write_bytes((d / TOKENIZER_FILE).read_bytes()[:500]),
        TOKENIZER_FILE,
    ),
    "garbage-manifest": (lambda d: (d / MANIFEST_FILE).write_text("{not json"), MANIFEST_FILE),
    "missing-manifest": (lambda d: (d / MANIFEST_FILE).unlink(), MANIFEST_FILE),
    "manifest-not-object": (lambda d: (d / MANIFEST_FILE).write_text("[1, 2]"), MANIFEST_FILE),
    "edited-field-breaks-fingerprint": (
        lambda d: _rewrite_manifest(d, lambda m: m.__setitem__("max_tokens", 128)),
        MANIFEST_FILE,
    ),
    "edited-source-hash": (
        lambda d: _rewrite_manifest(
            d, lambda m: m["source"]["files"].__setitem__("config.json", "0" * 64)
        ),
        MANIFEST_FILE,
    ),
    "wrong-format": (
        lambda d: _rewrite_manifest(d, lambda m: m.__setitem__("format", "other/9")),
        MANIFEST_FILE,
    ),
    "unloadable-model": (_unloadable_model_with_matching_hash, MODEL_FILE),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_artifact_raises(embedder: Embedder, tmp_path: Path, name: str) -> None:
    corrupt, culprit = CORRUPTIONS[name]
    copy = tmp_path / "embedder"
    shutil.copytree(embedder.path, copy)
    Embedder.from_dir(copy)  # the pristine copy loads
    corrupt(copy)
    with pytest.raises(ArtifactError) as info:
        Embedder.from_dir(copy)
    message = str(info.value)
    assert culprit in message
    assert "sidecar export-embedder" in message


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="export-embedder"):
        Embedder.from_dir(tmp_path / "nope")


SHARED_PREFIX = "Answer like the examples. " + "Example: the sky is blue. Answer: A. " * 60


@pytest.mark.parametrize("truncation", ["tail", "head_tail", "head_tail:32"])
def test_truncation_strategies_keep_the_end_of_long_prompts(truncation: str) -> None:
    head = Embedder.from_dir(default_embedder_dir(), truncation="head")
    other = Embedder.from_dir(default_embedder_dir(), truncation=truncation)
    first = SHARED_PREFIX + "Question: which planet is the largest?"
    second = SHARED_PREFIX + "Question: how do I reverse a list in Python?"
    # Head truncation sees only the shared few-shot prefix: both prompts look the same.
    assert float(head.embed(first).vector @ head.embed(second).vector) > 0.999
    a, b = other.embed(first), other.embed(second)
    assert a.truncated and a.n_tokens == other.max_tokens
    assert float(a.vector @ b.vector) < 0.99
    assert other.fingerprint != head.fingerprint
    assert other.truncation == {"head_tail": "head_tail:64"}.get(truncation, truncation)
    batch = other.embed_batch([first, "short prompt", second])
    assert float(batch.vectors[0] @ a.vector) > 0.9999
    assert batch.truncated.tolist() == [True, False, True]


def test_head_tail_window_keeps_cls_sep_and_both_ends() -> None:
    window = TokenWindow.parse("head_tail:3", 10)
    ids = np.arange(100, 121, dtype=np.int64)  # [CLS]=100 ... [SEP]=120
    kept, truncated = window.apply(ids)
    assert truncated
    assert kept.tolist() == [100, 101, 102, 103, 115, 116, 117, 118, 119, 120]
    short = np.arange(5, dtype=np.int64)
    assert window.apply(short)[0] is short
    with pytest.raises(ValueError):
        TokenWindow.parse("head_tail:8", 10)


def test_unknown_truncation_override_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        Embedder.from_dir(default_embedder_dir(), truncation="middle")


# ------------------------------------------------------ cutting long texts before tokenising

CUT_STRATEGIES = ["head", "tail", "head_tail:64", "head_tail:10", "head_tail:200"]
_WORD_LIST = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "committee proposal detail voting results published network latency throughput router "
    "embedding cluster validation internationalisation antidisestablishmentarianism"
)
_WORDS = _WORD_LIST.split()


def _prose(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n_words)]
    for i in range(0, n_words, 13):
        words[i] = words[i].capitalize() + rng.choice([".", ",", ";", "!", "?", ""])
    return " ".join(words)


def _long_texts() -> dict[str, str]:
    rng = random.Random(0)
    prose = _prose(rng, 8000)
    cjk = "".join(chr(rng.randrange(0x4E00, 0xA000)) for _ in range(20_000))
    return {
        "prose": prose,
        "prose_250k": (prose + " ") * 6,
        "code": "def f(x):\n\treturn {'k': x**2, \"v\": [1, 2, 3]}  # note\r\n" * 600,
        "giant_word": "a" * 60_000,
        "giant_word_then_prose": "x" * 30_000 + " " + prose,
        "prose_then_giant_word": prose + " " + "y" * 30_000,
        "hundred_char_words": " ".join(["q" * 101] * 600),  # one [UNK] per 102 characters
        "long_words": " ".join(
            "".join(rng.choices("abcdefgh", k=rng.randint(20, 60))) for _ in range(900)
        ),
        "cjk_no_spaces": cjk,
        "cjk_mixed": "中文abc字符😀测试。" * 2000,
        "kana_no_spaces": "ひらがなカタカナ" * 3000,
        "hangul": "한국어 텍스트입니다 " * 2000,
        "emoji": "😀🎉 hello 👍🏽 wörld " * 2000,
        "emoji_no_spaces": "😀🎉👍🏽" * 5000,
        "combining": "cafe\u0301 nai\u0308ve \u0301\u0302x e\u0301\u0301\u0301 Å\u030a " * 2000,
        "special_tokens": "[CLS] hello [SEP][MASK]x [PAD] [UNK]world " * 1500,
        "controls": "a\x00b \ufffd c\u200bd \x1c e\u00a0f\u3000g\u2028h İß ﬁ " * 1500,
        "spaces": " " * 50_000 + "the end",
        "newlines": "line one\n\n\r\n\tline two\n" * 3000,
    }


LONG_TEXTS = _long_texts()
_PIECES = [
    *"abcXYZ \t\n\r.,!?'\"-_()[]{}#$%0123456789",
    *["é", "e\u0301", "\u0301", "\u0308", "中", "文", "字", "ひ", "カ", "한", "😀", "👍🏽"],
    *["\u200b", "\x00", "\x1c", "\u00a0", "\u3000", "\ufffd", "İ", "ß", "ﬁ", "Ω", "\u2028"],
    *["[MASK]", "[SEP]", "[CLS", "supercalifragilistic", "q" * 101, "the ", "router "],
]


def _fuzz_text(seed: int) -> str:
    rng = random.Random(seed)
    weights = [rng.random() ** 3 for _ in _PIECES]  # each seed favours different pieces
    return "".join(rng.choices(_PIECES, weights, k=rng.randint(3_000, 12_000)))


@pytest.fixture(scope="module")
def windowed() -> dict[str, Embedder]:
    return {s: Embedder.from_dir(default_embedder_dir(), truncation=s) for s in CUT_STRATEGIES}


@pytest.fixture(scope="module")
def reference() -> Callable[[str, str], tuple[list[int], bool]]:
    """Today's whole-text tokenising: the tokenizer on the whole text, then the window."""
    path = default_embedder_dir() / TOKENIZER_FILE
    truncating = load_tokenizer(path, 256)
    whole = load_tokenizer(path, 256)
    whole.no_truncation()

    def encode(spec: str, text: str) -> tuple[list[int], bool]:
        window = TokenWindow.parse(spec, 256)
        if window.mode == "head":
            enc = truncating.encode(text)
            return list(enc.ids), bool(enc.overflowing)
        ids, truncated = window.apply(np.asarray(whole.encode(text).ids, dtype=np.int64))
        return ids.tolist(), truncated

    return encode


class _Recorder:
    """Stands in for the tokenizer and records the length of every text it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lengths: list[int] = []

    def encode(self, text: str) -> Any:
        self.lengths.append(len(text))
        return self.inner.encode(text)

    def encode_batch(self, texts: list[str]) -> Any:
        self.lengths.extend(len(t) for t in texts)
        return self.inner.encode_batch(texts)


def _check_same(got: Any, expected: tuple[list[int], bool], label: str) -> None:
    ids, truncated = expected
    assert got.ids[0].tolist() == ids, label
    assert got.mask.shape == got.ids.shape and int(got.mask.sum()) == len(ids), label
    assert got.n_tokens == len(ids) and got.truncated == truncated, label


@pytest.mark.parametrize("spec", CUT_STRATEGIES)
@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_cut_long_texts_tokenise_exactly_like_the_whole_text(
    windowed: dict[str, Embedder],
    reference: Callable[[str, str], tuple[list[int], bool]],
    spec: str,
    name: str,
) -> None:
    text = LONG_TEXTS[name]
    _check_same(windowed[spec].encode(text), reference(spec, text), f"{spec} {name}")


@pytest.mark.parametrize("spec", CUT_STRATEGIES)
def test_cut_is_identical_on_fuzzed_texts_and_in_batches(
    windowed: dict[str, Embedder],
    reference: Callable[[str, str], tuple[list[int], bool]],
    spec: str,
) -> None:
    texts = [_fuzz_text(seed) for seed in range(24)]
    texts += [t[:n] for t in LONG_TEXTS.values() for n in (300, 5_000, 9_000)]  # around the limits
    texts += MIXED
    expected = [reference(spec, t) for t in texts]
    for i, (text, want) in enumerate(zip(texts, expected, strict=True)):
        _check_same(windowed[spec].encode(text), want, f"{spec} text {i}")
    batch = windowed[spec].encode_batch(texts)
    for i, (got, want) in enumerate(zip(batch, expected, strict=True)):
        _check_same(got, want, f"{spec} batch text {i}")


@pytest.mark.parametrize("spec", CUT_STRATEGIES)
def test_a_250kb_prompt_is_tokenised_from_a_few_kb(
    windowed: dict[str, Embedder],
    reference: Callable[[str, str], tuple[list[int], bool]],
    spec: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedder = windowed[spec]
    text = LONG_TEXTS["prose_250k"]
    assert len(text) > 250_000
    recorder = _Recorder(embedder._tokenizer)
    monkeypatch.setattr(embedder, "_tokenizer", recorder)
    got = embedder.encode(text)
    batch = embedder.embed_batch([text, "short"])
    # First level of the cut: at most two pieces of at most 2 x 8 characters per kept token.
    bound = 2 * 8 * 256
    assert 0 < len(recorder.lengths) <= 2 + 3 and max(recorder.lengths) <= bound, recorder.lengths
    assert sum(recorder.lengths) <= 2 * bound
    _check_same(got, reference(spec, text), spec)
    assert batch.n_tokens[0] == 256 and batch.truncated[0]
    assert _cos(batch.vectors[0], embedder.run(got.ids, got.mask)[0]) > 0.9999


@pytest.mark.parametrize("name", ["giant_word", "hundred_char_words", "kana_no_spaces"])
def test_texts_without_safe_cut_points_fall_back_to_the_whole_text(
    windowed: dict[str, Embedder], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = windowed["head_tail:64"]
    recorder = _Recorder(embedder._tokenizer)
    monkeypatch.setattr(embedder, "_tokenizer", recorder)
    embedder.encode(LONG_TEXTS[name])
    assert recorder.lengths[-1] == len(LONG_TEXTS[name])


def test_token_window_cut_pieces() -> None:
    text = " ".join(["word"] * 5000)  # 24,999 characters
    head = TokenWindow.parse("head", 256)
    assert head.cut("short text", 8) is None
    assert head.cut(text[:8000], 8) is None  # not worth it: the piece would be over a quarter
    (prefix,) = head.cut(text, 8) or []
    assert text.startswith(prefix) and text[len(prefix)] == " "
    assert 255 * 8 <= len(prefix) < 255 * 8 + 5  # enough for 254 kept tokens + 1 to overflow
    (suffix,) = TokenWindow.parse("tail", 256).cut(text, 8) or []
    assert text.endswith(suffix) and suffix[0] == " " and 255 * 8 < len(suffix) <= 255 * 8 + 5
    first, last = TokenWindow.parse("head_tail:64", 256).cut(text, 8) or []
    assert text.startswith(first) and text.endswith(last)
    assert len(first) + len(last) < len(text)
    assert 65 * 8 <= len(first) < 65 * 8 + 5 and 191 * 8 < len(last) <= 191 * 8 + 5
    assert TokenWindow.parse("head", 256).cut("x" * 30_000, 8) is None  # no cut point
    assert TokenWindow.parse("tail", 256).cut("中" * 30_000, 8) is not None  # ideographs are


def test_token_window_join_refuses_pieces_that_may_miss_kept_tokens() -> None:
    window = TokenWindow.parse("head_tail:3", 10)  # keeps 3 + 5 body tokens

    def seq(n: int) -> np.ndarray:
        return np.arange(n + 2, dtype=np.int64)  # [CLS], n tokens, [SEP]

    assert window.join([seq(3), seq(6)]) is not None
    assert window.join([seq(2), seq(9)]) is None  # the head piece is short of 3
    assert window.join([seq(9), seq(4)]) is None  # the tail piece is short of 5
    assert window.join([seq(3), seq(5)]) is None  # 8 tokens do not overflow 10 - 2
    tail = TokenWindow.parse("tail", 10)
    assert tail.join([seq(9)]) is not None and tail.join([seq(8)]) is None
    with pytest.raises(ValueError):
        TokenWindow.parse("head", 10).join([seq(20)])
