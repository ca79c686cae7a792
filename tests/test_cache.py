"""The embedding LRU: bounded, thread-safe, and keyed so a hit is always exact."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sidecar._cache import EmbeddingCache, prompt_key


def test_lru_evicts_least_recently_used():
    cache: EmbeddingCache[int] = EmbeddingCache(2)
    cache.put(b"a", 1)
    cache.put(b"b", 2)
    assert cache.get(b"a") == 1  # a is now the most recent
    cache.put(b"c", 3)
    assert cache.get(b"b") is None
    assert (cache.get(b"a"), cache.get(b"c")) == (1, 3)
    assert len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 1)
    with pytest.raises(ValueError):
        EmbeddingCache(0)


def test_key_ignores_only_ascii_whitespace_layout():
    assert prompt_key("  route  this\n\tprompt ") == prompt_key("route this prompt")
    assert prompt_key("route this prompt") != prompt_key("route thisprompt")
    assert prompt_key("Route") != prompt_key("route")
    # BERT deletes \x1c rather than splitting on it, so it must not collapse to a space.
    assert prompt_key("a\x1cb") != prompt_key("a b")


def test_equal_keys_mean_equal_embeddings(embedder):
    variants = ["Summarise   the report\n", "Summarise the report", "\tSummarise the\r\nreport"]
    assert len({prompt_key(v) for v in variants}) == 1
    vectors = [embedder.embed(v).vector for v in variants]
    for v in vectors[1:]:
        np.testing.assert_array_equal(v, vectors[0])


def test_concurrent_use_keeps_the_bound():
    cache: EmbeddingCache[int] = EmbeddingCache(50)

    def hammer(offset: int) -> None:
        for i in range(2000):
            key = str((offset + i) % 120).encode()
            if cache.get(key) is None:
                cache.put(key, i)

    threads = [threading.Thread(target=hammer, args=(n * 7,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50
    assert cache.hits + cache.misses == 8000
