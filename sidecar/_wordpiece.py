"""BERT WordPiece ids for ASCII text in one Numba call, identical to ``tokenizers``.

With a static embedder the kernel costs a few microseconds, so tokenising is
the largest step left: ``tokenizers`` takes about 60 µs for 20 words and
500 µs for 200 (most of it in per-call overhead and Unicode normalisation).
For ASCII text, BERT's normaliser and pre-tokeniser are simple enough to run
over the bytes directly:

* normaliser (``BertNormalizer``: clean text, lowercase, accents stripped):
  control characters (0x00-0x08, 0x0B, 0x0C, 0x0E-0x1F, 0x7F) are removed,
  tab, newline and carriage return become spaces, letters are lowercased;
* pre-tokeniser (``BertPreTokenizer``): words end at spaces, and every ASCII
  punctuation character is a word of its own;
* model (``WordPiece``): greedy longest match from a trie over the vocabulary
  (word-initial pieces from one root, ``##`` pieces from another); a word with
  an unmatchable position, or longer than ``max_input_chars_per_word``, is one
  ``[UNK]``.

A chunk of text between ASCII whitespace that holds a non-ASCII character
goes to ``tokenizers`` itself (NFD, CJK and Unicode categories live in its
tables, not ours), one chunk at a time with a bounded cache of ids; the kernel
runs over the UTF-8 bytes, leaves a placeholder for each such chunk, and
everything around them still takes the Numba path. That is exact because a
chunk's ids never depend on its neighbours: ASCII space, tab, newline and
carriage return always separate words and never join with what is around
them (see ``_truncation``'s cut points). Text that holds a special token such
as ``[SEP]`` (matched before normalisation), and any tokenizer.json that is not
this exact BERT recipe, use ``tokenizers`` for the whole text.
tests/test_wordpiece.py checks the ids against ``tokenizers`` on fuzzed text,
and bench/static_speed.py on every RouterBench prompt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, types
from tokenizers import Tokenizer

I32Array = npt.NDArray[np.int32]

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"  # what a normalised ASCII word is made of
_ID_COLUMN = len(ALPHABET)  # trie[node, _ID_COLUMN]: the token ending at node, or -1
_WORD_ROOT, _PIECE_ROOT = 0, 1  # "##" pieces hang from their own root

# charmap[byte] = (class, value)
_LETTER, _PUNCT, _SPACE, _DROP = 0, 1, 2, 3

MAX_ESCAPES = 4096  # non-ASCII chunks per text; beyond, tokenizers takes the whole text
WORD_CACHE_SIZE = 65_536  # non-ASCII chunks remembered; cleared when full

# Whole words first: a word of at most WHOLE_MAX characters that is itself a
# vocabulary token (most English words) is one probe of an open-addressing table,
# keyed exactly by its characters (6 bits each) and length (4 bits), instead of a
# walk down the trie. Greedy longest match gives that token for such a word, so
# the ids are the same; the table (~800 KB) stays in cache where the trie would not.
WHOLE_MAX = 10
_GOLDEN = 0x9E3779B97F4A7C15

_SIG = types.UniTuple(types.int64, 2)(
    types.Array(types.uint8, 1, "C", readonly=True),  # text, UTF-8
    types.Array(types.int32, 2, "C", readonly=True),  # trie
    types.Array(types.uint64, 2, "C", readonly=True),  # whole words: (key, id) slots
    types.Array(types.int32, 2, "C", readonly=True),  # charmap
    types.int64,  # unk id
    types.int64,  # max chars per word
    types.Array(types.int32, 1, "C"),  # out ids (capacity >= len(text))
    types.Array(types.int64, 2, "C"),  # out escapes: (start, end) byte spans
)


@njit(nogil=True)
def _whole(word: I32Array, length: int, whole: npt.NDArray[np.uint64]) -> int:
    # The token id of the whole word, or -1 (not a token, or too long to key).
    if length > WHOLE_MAX:
        return -1
    key = np.uint64(length)
    shift = np.uint64(4)
    for i in range(length):
        key |= np.uint64(word[i]) << shift
        shift += np.uint64(6)
    mask = np.uint64(whole.shape[0] - 1)
    slot = ((key * np.uint64(_GOLDEN)) >> np.uint64(32)) & mask
    while whole[slot, 0] != np.uint64(0):
        if whole[slot, 0] == key:
            return int(whole[slot, 1])
        slot = (slot + np.uint64(1)) & mask
    return -1


@njit(nogil=True)
def _word(
    word: I32Array,
    length: int,
    trie: I32Array,
    whole: npt.NDArray[np.uint64],
    unk: int,
    max_chars: int,
    out: I32Array,
    n: int,
) -> int:
    # Greedy longest match, as tokenizers' WordPiece::tokenize; returns the new count.
    if length > max_chars:
        out[n] = unk
        return n + 1
    token = _whole(word, length, whole)
    if token >= 0:
        out[n] = token
        return n + 1
    first = n
    start = 0
    while start < length:
        node = _WORD_ROOT if start == 0 else _PIECE_ROOT
        best_end = -1
        best_id = -1
        i = start
        while i < length:
            node = trie[node, word[i]]
            if node < 0:
                break
            i += 1
            token = trie[node, _ID_COLUMN]
            if token >= 0:
                best_end = i
                best_id = token
        if best_id < 0:
            out[first] = unk
            return first + 1
        out[n] = best_id
        n += 1
        start = best_end
    return n


@njit(_SIG, cache=True, nogil=True)
def utf8_ids(
    text: npt.NDArray[np.uint8],
    trie: I32Array,
    whole: npt.NDArray[np.uint64],
    charmap: I32Array,
    unk: int,
    max_chars: int,
    out: I32Array,
    escapes: npt.NDArray[np.int64],
) -> tuple[int, int]:
    """WordPiece ids of UTF-8 ``text`` into ``out``: returns (ids written, escapes written).

    A chunk between ASCII whitespace that holds a non-ASCII byte is not
    tokenised here: it is written as the id ``-1 - j`` with its byte span in
    ``escapes[j]``, for the caller to fill in. Escapes beyond
    ``escapes.shape[0]`` give (-1, -1): tokenise the whole text elsewhere.
    """
    n = 0
    n_escapes = 0
    size = text.shape[0]
    word = np.empty(size, dtype=np.int32)
    pos = 0
    while pos < size:
        kind = charmap[text[pos], 0] if text[pos] < 128 else _LETTER
        if kind == _SPACE:
            pos += 1
            continue
        end = pos  # the chunk: up to the next ASCII whitespace
        ascii_only = True
        while end < size and (text[end] >= 128 or charmap[text[end], 0] != _SPACE):
            if text[end] >= 128:
                ascii_only = False
            end += 1
        if not ascii_only:
            if n_escapes >= escapes.shape[0]:
                return -1, -1
            escapes[n_escapes, 0] = pos
            escapes[n_escapes, 1] = end
            out[n] = -1 - n_escapes
            n += 1
            n_escapes += 1
            pos = end
            continue
        length = 0
        for i in range(pos, end):
            b = text[i]
            kind = charmap[b, 0]
            if kind == _LETTER:
                word[length] = charmap[b, 1]
                length += 1
            elif kind == _PUNCT:
                if length:
                    n = _word(word, length, trie, whole, unk, max_chars, out, n)
                    length = 0
                out[n] = charmap[b, 1]
                n += 1
        if length:
            n = _word(word, length, trie, whole, unk, max_chars, out, n)
        pos = end
    return n, n_escapes


@dataclass(frozen=True, eq=False)
class WordPiece:
    """Token ids of a text without special tokens, padding or truncation (the whole text).

    ``ids(text)`` equals ``tokenizer.encode(text, add_special_tokens=False).ids``;
    the Numba path is used when it can be (see the module docstring), else the
    tokenizer. Thread-safe: the tables are read-only and every call has its own
    output array.
    """

    tokenizer: Tokenizer
    trie: I32Array | None  # None: this tokenizer.json is not the recipe the fast path knows
    whole: npt.NDArray[np.uint64]  # whole-word slots (key, id); see WHOLE_MAX
    charmap: I32Array
    unk: int
    max_chars: int
    specials: tuple[str, ...]
    # Non-ASCII word -> its ids. Bounded (cleared when full); dict reads and
    # writes are atomic under the GIL, and a lost write only costs a re-encode.
    _words: dict[str, I32Array] = field(default_factory=dict, repr=False)

    @classmethod
    def from_file(cls, path: Path) -> WordPiece:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        specials = tuple(str(t["content"]) for t in spec.get("added_tokens", ()))
        model = spec.get("model", {})
        vocab: Mapping[str, int] = model.get("vocab", {})
        unk = int(vocab.get(str(model.get("unk_token")), -1))
        charmap = _charmap(vocab)
        trie = _trie(vocab) if _is_plain_bert(spec) and unk >= 0 and charmap is not None else None
        return cls(
            tokenizer=tokenizer,
            trie=trie,
            whole=_whole_words(vocab),
            charmap=charmap if charmap is not None else np.zeros((128, 2), np.int32),
            unk=unk,
            max_chars=int(model.get("max_input_chars_per_word", 100)),
            specials=specials,
        )

    @property
    def fast(self) -> bool:
        """Whether ASCII text takes the Numba path."""
        return self.trie is not None

    def ids(self, text: str) -> I32Array:
        if self.trie is None or self._has_special(text):
            return self._encoded(text)
        raw = text.encode("utf-8")
        out = np.empty(len(raw), dtype=np.int32)
        escapes = np.empty((min(len(raw) // 2 + 1, MAX_ESCAPES), 2), dtype=np.int64)
        text_bytes = np.frombuffer(raw, np.uint8)
        n, n_escapes = utf8_ids(text_bytes, self.trie, self.whole, self.charmap, self.unk,
                                self.max_chars, out, escapes)  # fmt: skip
        if n_escapes == 0:
            return out[:n]
        if n_escapes < 0:
            return self._encoded(text)
        ids = out[:n]
        pieces = []
        previous = 0
        for j, hole in enumerate(np.flatnonzero(ids < 0).tolist()):
            pieces.append(ids[previous:hole])
            pieces.append(self._word(raw[escapes[j, 0] : escapes[j, 1]].decode("utf-8")))
            previous = hole + 1
        pieces.append(ids[previous:])
        return np.concatenate(pieces)

    def _word(self, word: str) -> I32Array:
        ids = self._words.get(word)
        if ids is None:
            ids = self._encoded(word)
            ids.flags.writeable = False
            if len(self._words) >= WORD_CACHE_SIZE:
                self._words.clear()
            self._words[word] = ids
        return ids

    def _encoded(self, text: str) -> I32Array:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return np.asarray(encoding.ids, dtype=np.int32)

    def _has_special(self, text: str) -> bool:
        return "[" in text and any(s in text for s in self.specials)


def _is_plain_bert(spec: Mapping[str, Any]) -> bool:
    """The exact recipe the Numba path implements; anything else uses ``tokenizers`` only."""
    normalizer = spec.get("normalizer") or {}
    model = spec.get("model") or {}
    return (
        normalizer.get("type") == "BertNormalizer"
        and normalizer.get("clean_text") is True
        and normalizer.get("lowercase") is True
        and normalizer.get("strip_accents") in (None, True)
        and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
        and model.get("continuing_subword_prefix") == "##"
        and all(bool(t.get("special")) for t in spec.get("added_tokens", ()))
    )


def _charmap(vocab: Mapping[str, int]) -> I32Array | None:
    """(class, value) per ASCII byte: a letter's alphabet column, a punctuation's token id."""
    out = np.zeros((128, 2), dtype=np.int32)
    for b in range(128):
        c = chr(b)
        if c in "\t\n\r ":
            out[b] = (_SPACE, 0)
        elif b < 32 or b == 127:
            out[b] = (_DROP, 0)
        elif c.lower() in ALPHABET:
            out[b] = (_LETTER, ALPHABET.index(c.lower()))
        else:  # the rest of printable ASCII is BERT punctuation
            if c not in vocab:
                return None
            out[b] = (_PUNCT, vocab[c])
    return out


def _whole_words(vocab: Mapping[str, int]) -> npt.NDArray[np.uint64]:
    """Open addressing (linear probing, under half full) of the word-initial tokens of
    at most WHOLE_MAX alphabet characters: slot -> (key, id), key 0 = empty."""
    column = {c: i for i, c in enumerate(ALPHABET)}
    words = [
        (t, i) for t, i in vocab.items()
        if 0 < len(t) <= WHOLE_MAX and all(c in column for c in t)
    ]  # fmt: skip
    size = 1 << max(4, (2 * len(words)).bit_length())
    table = np.zeros((size, 2), dtype=np.uint64)
    for token, token_id in sorted(words, key=lambda kv: kv[1]):
        key = len(token)
        for i, c in enumerate(token):
            key |= column[c] << (4 + 6 * i)
        slot = (((key * _GOLDEN) & (2**64 - 1)) >> 32) & (size - 1)
        while table[slot, 0]:
            slot = (slot + 1) & (size - 1)
        table[slot] = (key, token_id)
    return table


def _trie(vocab: Mapping[str, int]) -> I32Array:
    """Dense trie over ALPHABET: one row per node, children then the token id.

    Nodes are numbered over a dict of prefixes first and the array is filled
    after, so building it holds little more than the final 9 MB array (rows as
    Python lists held four times that, which set the static server's peak RSS).
    """
    column = {c: i for i, c in enumerate(ALPHABET)}
    # (root, prefix) -> node; the roots are nodes 0 and 1
    nodes: dict[tuple[int, str], int] = {(_WORD_ROOT, ""): _WORD_ROOT}
    nodes[_PIECE_ROOT, ""] = _PIECE_ROOT
    ends: list[tuple[int, int]] = []  # (node, token id), in id order
    for token, token_id in sorted(vocab.items(), key=lambda kv: kv[1]):
        root, body = (_PIECE_ROOT, token[2:]) if token.startswith("##") else (_WORD_ROOT, token)
        if not body or any(c not in column for c in body):
            continue  # holds a character no normalised ASCII word has: can never match
        for end in range(1, len(body) + 1):
            nodes.setdefault((root, body[:end]), len(nodes))
        ends.append((nodes[root, body], int(token_id)))
    trie = np.full((len(nodes), len(ALPHABET) + 1), -1, dtype=np.int32)
    for (root, prefix), node in nodes.items():
        if prefix:
            trie[nodes[root, prefix[:-1]], column[prefix[-1]]] = node
    for node, token_id in ends:
        if trie[node, _ID_COLUMN] < 0:
            trie[node, _ID_COLUMN] = token_id
    return trie
