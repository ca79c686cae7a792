"""Truncation: which tokens of a long prompt the embedder sees, and how to skip the rest.

MiniLM reads at most 256 tokens. ``TokenWindow`` says which ones (the head,
the tail, or both ends), and cuts a long text down to the pieces that hold
those tokens before it is tokenised, so a 250 KB prompt costs about a
millisecond instead of a few hundred, with ids identical to tokenising it
whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TRUNCATION_MODES = ("head", "tail", "head_tail")
DEFAULT_HEAD_TAIL_HEAD = 64
# Prompts that open with a shared system prompt or few-shot template all embed
# the same under head truncation; the RouterBench quality bench measured the
# three strategies as tied there and head_tail best on held-out train (see
# bench/RESULTS.md), so the default keeps both ends.
DEFAULT_TRUNCATION = "head_tail:64"

# Cutting a long text before tokenising it (see TokenWindow.cut). Each level
# assumes a token spans at most this many characters of text; a cut whose
# pieces turn out to hold too few tokens is retried at the next level, then
# the whole text is tokenised. 8 covers prose and code with room to spare; 64
# covers text full of long words and URLs; only text that is mostly
# 100+-character "words" (one [UNK] each) or has no cut point falls through.
CUT_CHARS_PER_TOKEN = (8, 64)
# Where a cut never changes the tokens on either side: the BERT normaliser and
# pre-tokeniser split words at these whitespace characters, and put every CJK
# Unified Ideograph (U+4E00-U+9FFF) in a word of its own. Any other character
# (letters, punctuation, emoji, combining marks, zero-width or control
# characters, other scripts' spaces) may join with its neighbours in the
# normaliser (NFD, accent stripping, control removal), so it is never a cut.
_CUT_POINT = re.compile("[ \t\n\r\u4e00-\u9fff]")


@dataclass(frozen=True)
class TokenWindow:
    """Which ``max_tokens`` of a long prompt the model sees.

    ``head`` keeps the start, ``tail`` the end, and ``head_tail:N`` the first N
    tokens plus the end. Prompts that open with a long shared system prompt or
    few-shot template embed identically under ``head``; the tail is where the
    actual question is.
    """

    max_tokens: int
    mode: str = "head"
    head: int = 0

    @classmethod
    def parse(cls, spec: str, max_tokens: int) -> TokenWindow:
        mode, _, count = spec.partition(":")
        if mode not in TRUNCATION_MODES or (count and mode != "head_tail"):
            raise ValueError(
                f"truncation {spec!r} is not one of head, tail, head_tail or head_tail:N"
            )
        head = 0
        if mode == "head_tail":
            head = int(count) if count else DEFAULT_HEAD_TAIL_HEAD
            if not 0 < head < max_tokens - 2:
                raise ValueError(f"head_tail needs 0 < N < {max_tokens - 2}, got {head}")
        return cls(max_tokens, mode, head)

    @property
    def spec(self) -> str:
        return f"head_tail:{self.head}" if self.mode == "head_tail" else self.mode

    def cut(self, text: str, chars_per_token: int) -> list[str] | None:
        """Pieces of a long text that hold every token this window keeps, or None.

        ``head`` gives a prefix, ``tail`` a suffix and ``head_tail`` both; each
        ends or starts at a cut point (see ``_CUT_POINT``), so its tokens are
        exactly the first or last tokens of the whole text. A piece is sized for
        the tokens it must supply at ``chars_per_token`` characters each (plus
        one token, so an overflow can be seen): the nearest cut point beyond
        that size, if there is one within twice that size. None when
        the pieces would not be less than half the text, or when no cut point
        lies in the search range; the caller then tokenises the whole text (or
        tries a larger ``chars_per_token``). Whether the pieces really hold
        enough tokens is checked after tokenising, by ``join``.
        """
        keep = self.max_tokens - 2
        if self.mode == "head":
            head_tokens, tail_tokens = keep + 1, 0
        elif self.mode == "tail":
            head_tokens, tail_tokens = 0, keep + 1
        else:
            head_tokens, tail_tokens = self.head + 1, keep - self.head + 1
        n = len(text)
        head_chars, tail_chars = head_tokens * chars_per_token, tail_tokens * chars_per_token
        if 4 * (head_chars + tail_chars) > n:
            return None
        pieces = []
        if head_chars:
            # The first cut point after head_chars: the prefix holds at least that much text.
            found = _CUT_POINT.search(text, head_chars, 2 * head_chars)
            if found is None:
                return None
            pieces.append(text[: found.start()])
        if tail_chars:
            # The last cut point before n - tail_chars (searched in the reversed range).
            found = _CUT_POINT.search(text[n - 2 * tail_chars : n - tail_chars][::-1])
            if found is None:
                return None
            pieces.append(text[n - tail_chars - 1 - found.start() :])
        return pieces

    def join(self, pieces: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64] | None:
        """Untruncated ids of ``cut``'s pieces, or None if they may miss a kept token.

        Takes each piece's [CLS] ... [SEP] ids (``tail`` and ``head_tail`` only:
        ``head`` is checked by the tokenizer's own overflow). Returns [CLS],
        the pieces' tokens, [SEP]: a sequence that ``apply`` cuts to exactly
        what it cuts the whole text's ids to, because the pieces' tokens are
        the whole text's first and last tokens, the head piece supplies at
        least ``head`` of them, the tail piece the rest, and together they
        overflow max_tokens (so the whole text, which holds them all, does too).
        """
        keep = self.max_tokens - 2
        if self.mode == "tail":
            (tail,) = pieces
            return tail if tail.shape[0] - 2 > keep else None
        if self.mode != "head_tail":
            raise ValueError(f"join is for tail and head_tail windows, not {self.mode}")
        head, tail = pieces
        n_head, n_tail = head.shape[0] - 2, tail.shape[0] - 2
        if n_head < self.head or n_tail < keep - self.head or n_head + n_tail <= keep:
            return None
        return np.concatenate((head[:-1], tail[1:]))

    def apply(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], bool]:
        """Cuts an untruncated [CLS] ... [SEP] sequence down to max_tokens."""
        if ids.shape[0] <= self.max_tokens:
            return ids, False
        keep = self.max_tokens - 2
        body = ids[1:-1]
        if self.mode == "tail":
            kept = body[-keep:]
        elif self.mode == "head_tail":
            kept = np.concatenate((body[: self.head], body[-(keep - self.head) :]))
        else:
            kept = body[:keep]
        return np.concatenate((ids[:1], kept, ids[-1:])), True
