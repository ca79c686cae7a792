"""A bounded LRU of prompt embeddings, for repeated prompts such as templated traffic.

The key is a hash of the prompt with runs of ASCII whitespace (space, tab,
newline, carriage return) collapsed to one space and stripped at both ends.
That normalisation is exact for this embedder: its BERT tokenizer treats
those characters only as token separators, so two prompts with the same key
always produce the same tokens and the same vector. (Python's wider notion of
whitespace is not used: BERT deletes some of those characters instead.)
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

Value = TypeVar("Value")


_ASCII_WHITESPACE = re.compile(r"[ \t\n\r]+")


def prompt_key(prompt: str) -> bytes:
    """16-byte digest of the prompt with ASCII whitespace runs collapsed and ends stripped."""
    normalised = _ASCII_WHITESPACE.sub(" ", prompt).strip(" ")
    return hashlib.blake2b(normalised.encode(), digest_size=16).digest()


class EmbeddingCache(Generic[Value]):
    """Thread-safe LRU; the lock guards a dict operation, never an embedding."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[bytes, Value] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> Value | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: Value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
