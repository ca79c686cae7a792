"""Dynamic micro-batching: concurrent Route calls share one onnxruntime run.

Each caller tokenises its own prompt (in parallel, in its own thread) and
queues it; worker threads take whatever is queued, up to ``max_batch``, and run
it as one padded batch. A lone request never waits: ``max_wait`` only applies
once a second request is already queued, so batching costs nothing at low load
and fills up on its own under load.

With the int8 (dynamically quantised) embedder a prompt's vector shifts
slightly with its batch-mates, so this is off by default; see the README.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._embedder import Embedder, Embedding, Encoded

_STOP = object()


@dataclass(eq=False)
class _Pending:
    encoded: Encoded
    done: threading.Event = field(default_factory=threading.Event)
    result: Embedding | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Coalesces concurrent ``embed`` calls; ``workers`` batches run at once."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch: int = 16,
        max_wait: float = 0.0,
        workers: int = 2,
    ) -> None:
        if max_batch < 1 or max_wait < 0 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1 and max_wait >= 0")
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches = 0
        self.items = 0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"microbatch-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def embed(self, text: str) -> Embedding:
        pending = _Pending(self.embedder.encode(text))
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Pending)
            batch = [first]
            stop = self._fill(batch)
            self._run(batch)
            if stop:
                return

    def _fill(self, batch: list[_Pending]) -> bool:
        """Takes what is queued; waits up to max_wait for more only once two are in hand."""
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if len(batch) < 2 or remaining <= 0:
                    return False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if item is _STOP:
                return True
            assert isinstance(item, _Pending)
            batch.append(item)
        return False

    def _run(self, batch: Sequence[_Pending]) -> None:
        try:
            vectors = self.embedder.run_padded([p.encoded for p in batch])
        except BaseException as exc:  # every waiter must wake, whatever happened
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        self.batches += 1
        self.items += len(batch)
        for row, pending in enumerate(batch):
            e = pending.encoded
            pending.result = Embedding(
                vector=vectors[row], n_tokens=e.n_tokens, truncated=e.truncated
            )
            pending.done.set()
