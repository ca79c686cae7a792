"""Runtime sentence embedder: an exported ONNX MiniLM plus its tokenizer.

Serving imports only numpy, onnxruntime and tokenizers, so the sidecar starts fast
and never needs torch; onnxruntime (about 18 MB resident) is imported when a
session is made, so a static server, which shares this module's records, never
loads it. The artifact directory (built by ``sidecar export-embedder``)
holds ``model.onnx``, ``tokenizer.json`` and ``manifest.json``; the manifest's
fingerprint ties clusterings to the exact embedding function that produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from ._embedder_manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    REBUILD_HINT,
    TOKENIZER_FILE,
    VerifiedArtifact,
    compute_fingerprint,
    read_manifest,
    verify_file,
    verify_fingerprint,
)
from ._errors import ArtifactError, InvalidArgument
from ._truncation import CUT_CHARS_PER_TOKEN, TokenWindow

if TYPE_CHECKING:
    import onnxruntime as ort


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """Load tokenizer.json configured the way the embedder needs it.

    The packaged file pads every input to a fixed 128 and truncates at 128; we want
    no padding (a single query costs only its own tokens) and head truncation at
    max_tokens. Configured once here: mutating a shared Tokenizer per call would
    race between gRPC threads.
    """
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens, stride=0, direction="right")
    return tokenizer


def make_session(model_path: Path, threads: int = 1) -> ort.InferenceSession:
    """CPU session with a fixed thread budget: the server parallelises across requests."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class Encoded(NamedTuple):
    """One tokenised input, ready for ``Embedder.run`` (shapes (1, n_tokens))."""

    ids: npt.NDArray[np.int64]
    mask: npt.NDArray[np.int64]
    n_tokens: int
    truncated: bool


@dataclass(frozen=True, slots=True, eq=False)
class Embedding:
    """One embedded text. ``n_tokens`` counts [CLS]/[SEP] and is post-truncation."""

    vector: npt.NDArray[np.float32]
    n_tokens: int
    truncated: bool


@dataclass(frozen=True, slots=True, eq=False)
class BatchEmbedding:
    """Embeddings for N texts, row i belonging to input i."""

    vectors: npt.NDArray[np.float32]
    n_tokens: npt.NDArray[np.int64]
    truncated: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


class Embedder(VerifiedArtifact):
    """Thread-safe text -> unit vector function backed by onnxruntime.

    Safe to share between threads: the tokenizer is configured once and only read,
    and ``InferenceSession.run`` is re-entrant.
    """

    def __init__(
        self,
        *,
        path: Path,
        manifest: Mapping[str, Any],
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
    ) -> None:
        """Wire up already-validated parts; use ``from_dir`` unless you are the exporter."""
        super().__init__(path, manifest, int(manifest["dim"]))
        self._session = session
        self._tokenizer = tokenizer
        self._max_tokens = int(manifest["max_tokens"])
        self._window = TokenWindow.parse(str(manifest["truncation"]), self._max_tokens)
        if self._window.mode != "head":
            # The tokenizer's own truncation can only keep the head; cut in encode().
            tokenizer.no_truncation()
        # Dynamic int8 quantisation picks ONE activation scale per tensor, i.e. per
        # whole padded batch, so a text's vector would depend on its batch-mates
        # (cosine down to ~0.95 for short texts). Only an unquantised model may be
        # run on padded batches; otherwise each text runs alone, which on CPU costs
        # little (batching gains <25% even for tiny inputs, and loses for long ones).
        self._batch_invariant = manifest.get("quantization") == "none"
        pad_id = tokenizer.token_to_id("[PAD]")
        self._pad_id = 0 if pad_id is None else int(pad_id)

    @classmethod
    def from_dir(cls, path: Path, *, threads: int = 1, truncation: str | None = None) -> Embedder:
        """Load and verify an artifact directory; any defect is an ArtifactError.

        Verifies file hashes and the manifest fingerprint so a stale or tampered
        artifact fails at start-up rather than silently shifting every route.
        ``truncation`` overrides the manifest's strategy; the fingerprint then
        covers the override, so clusterings stay tied to what was embedded.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        path = Path(path)
        manifest = read_manifest(path)
        for name in (MODEL_FILE, TOKENIZER_FILE):
            verify_file(path, name, manifest["files"][name])
        verify_fingerprint(manifest, compute_fingerprint, path / MANIFEST_FILE)
        if truncation is not None and truncation != manifest["truncation"]:
            try:
                TokenWindow.parse(truncation, int(manifest["max_tokens"]))
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            manifest = {**manifest, "truncation": truncation}
            manifest["fingerprint"] = compute_fingerprint(manifest)
        try:
            tokenizer = load_tokenizer(path / TOKENIZER_FILE, int(manifest["max_tokens"]))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ArtifactError(
                f"{path / TOKENIZER_FILE}: cannot load tokenizer ({exc}); {REBUILD_HINT}"
            ) from exc
        try:
            session = make_session(path / MODEL_FILE, threads)
        except Exception as exc:  # onnxruntime's pybind errors share no useful base
            raise ArtifactError(
                f"{path / MODEL_FILE}: onnxruntime cannot load the model ({exc}); {REBUILD_HINT}"
            ) from exc
        embedder = cls(path=path, manifest=manifest, session=session, tokenizer=tokenizer)
        embedder._self_check()
        return embedder

    def _self_check(self) -> None:
        """Run one tiny input: warms the session and proves the graph matches the manifest."""
        try:
            out = self.embed("warm-up").vector
        except Exception as exc:
            raise ArtifactError(
                f"{self._path / MODEL_FILE}: model failed on a test input ({exc}); {REBUILD_HINT}"
            ) from exc
        if out.shape != (self._dim,) or not np.isfinite(out).all():
            raise ArtifactError(
                f"{self._path / MODEL_FILE}: model output shape {out.shape} (finite="
                f"{bool(np.isfinite(out).all())}) disagrees with manifest dim {self._dim}; "
                f"{REBUILD_HINT}"
            )

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def truncation(self) -> str:
        return self._window.spec

    def __repr__(self) -> str:
        return (
            f"Embedder(path={str(self._path)!r}, dim={self._dim}, "
            f"max_tokens={self._max_tokens}, fingerprint={self._fingerprint[:12]!r})"
        )

    # -- stages (split so benchmarks can time tokenising and inference apart) --

    def encode(self, text: str) -> Encoded:
        """Tokenise one text without padding, cut to max_tokens by the truncation strategy.

        A long text is first cut to the pieces the strategy keeps tokens from
        (``TokenWindow.cut``), so a 250 KB prompt costs about what a few KB do;
        the ids are always identical to tokenising the whole text (pieces that
        cannot be shown to hold every kept token are retried larger, then the
        whole text is tokenised).
        """
        return self._encode_cut(text, CUT_CHARS_PER_TOKEN)

    def encode_batch(self, texts: Sequence[str]) -> list[Encoded]:
        """``encode`` for many texts, tokenised together (in parallel, in Rust)."""
        first = CUT_CHARS_PER_TOKEN[0]
        plans = [self._window.cut(text, first) for text in texts]
        flat = [piece for text, plan in zip(texts, plans, strict=True) for piece in plan or [text]]
        encodings = iter(self._tokenizer.encode_batch(flat))
        out = []
        for text, plan in zip(texts, plans, strict=True):
            if plan is None:
                out.append(self._encoded(next(encodings)))
                continue
            got = self._from_pieces([next(encodings) for _ in plan])
            out.append(got if got is not None else self._encode_cut(text, CUT_CHARS_PER_TOKEN[1:]))
        return out

    def _encode_cut(self, text: str, levels: Sequence[int]) -> Encoded:
        for chars_per_token in levels:
            pieces = self._window.cut(text, chars_per_token)
            if pieces is not None:
                got = self._from_pieces([self._tokenizer.encode(piece) for piece in pieces])
                if got is not None:
                    return got
        return self._encoded(self._tokenizer.encode(text))

    def _from_pieces(self, encodings: Sequence[Encoding]) -> Encoded | None:
        """The Encoded of ``TokenWindow.cut``'s pieces, or None if they may miss kept tokens."""
        if self._window.mode == "head":
            # The tokenizer truncates (head) itself: the prefix's first tokens are the
            # whole text's, and an overflow of the prefix means one of the whole text.
            (enc,) = encodings
            return self._encoded(enc) if enc.overflowing else None
        joined = self._window.join([np.asarray(e.ids, dtype=np.int64) for e in encodings])
        return None if joined is None else self._windowed(joined)

    def _encoded(self, enc: Encoding) -> Encoded:
        ids = np.asarray(enc.ids, dtype=np.int64)
        if self._window.mode == "head":
            return self._packed(ids, bool(enc.overflowing))
        return self._windowed(ids)

    def _windowed(self, ids: npt.NDArray[np.int64]) -> Encoded:
        return self._packed(*self._window.apply(ids))

    @staticmethod
    def _packed(ids: npt.NDArray[np.int64], truncated: bool) -> Encoded:
        ids = ids.reshape(1, -1)
        return Encoded(ids, np.ones_like(ids), int(ids.shape[1]), truncated)

    def run(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Model forward: (batch, seq) int64 ids/mask -> (batch, dim) unit vectors."""
        (out,) = self._session.run(
            ["sentence_embedding"], {"input_ids": ids, "attention_mask": mask}
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    # -- public embedding API --

    def embed(self, text: str) -> Embedding:
        """Embed one text (the serving path: no padding, one session run)."""
        enc = self.encode(text)
        vector = self.run(enc.ids, enc.mask)[0]
        return Embedding(vector=vector, n_tokens=enc.n_tokens, truncated=enc.truncated)

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> BatchEmbedding:
        """Embed many texts; row i equals ``embed(texts[i])`` (cosine > 0.9999).

        Tokenises ``batch_size`` texts at a time (in parallel, in Rust) and calls
        ``progress(n_done)`` after each chunk. For an unquantised model, each chunk
        is a length-sorted padded batch; for a dynamically quantised one, texts run
        one by one (see ``__init__`` for why).
        """
        if isinstance(texts, str):
            raise TypeError("embed_batch expects a sequence of strings, not a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(texts)
        vectors = np.empty((n, self._dim), dtype=np.float32)
        n_tokens = np.empty(n, dtype=np.int64)
        truncated = np.empty(n, dtype=np.bool_)
        if n == 0:
            return BatchEmbedding(vectors, n_tokens, truncated)

        # Tokenise everything first (in parallel, in Rust), then sort by length so
        # padded neighbours waste little (unquantised models only; see __init__).
        encoded = self.encode_batch(list(texts))
        order = np.argsort([e.n_tokens for e in encoded], kind="stable")
        done = 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            chunk = [encoded[i] for i in idx]
            if self._batch_invariant:
                vectors[idx] = self.run_padded(chunk)
            else:
                for i, e in zip(idx, chunk, strict=True):
                    vectors[i] = self.run(e.ids, e.mask)[0]
            for i, e in zip(idx, chunk, strict=True):
                n_tokens[i] = e.n_tokens
                truncated[i] = e.truncated
            done += len(idx)
            if progress is not None:
                progress(done)
        return BatchEmbedding(vectors, n_tokens, truncated)

    def run_padded(self, encoded: Sequence[Encoded]) -> npt.NDArray[np.float32]:
        """One session run over inputs right-padded to the longest (never a fixed length).

        With a dynamically quantised model the result for one input depends
        slightly on the others (one activation scale per batch); callers that
        accept that trade (micro-batching) use this directly.
        """
        width = max(e.n_tokens for e in encoded)
        ids = np.full((len(encoded), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, : e.n_tokens] = e.ids[0]
            mask[row, : e.n_tokens] = 1
        return self.run(ids, mask)
