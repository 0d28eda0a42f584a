"""Retrieval over knowledge bases: BM25 always, a dense index when an embedding model is here, hybrid when both.

- BM25 (rank-bm25's Okapi) on lower-cased, lightly stemmed words: exact forensic terms ("blending", "Face2Face",
  "DFDC") matter more than paraphrase, and it needs nothing but the text.
- Dense: a sentence-transformers model embeds passages and query (normalised, inner product in a faiss flat index,
  exact at this size). It finds paraphrases BM25 misses ("edges of a pasted face" for "blending boundary"). The
  model's name and the sha256 of its files are recorded in a KB built with it; querying that KB with another model
  is refused (`EmbeddingMismatch`), because vectors from two models do not live in one space.
- Hybrid: reciprocal rank fusion (Cormack et al. 2009) of the two rankings, `1 / (RRF_K + rank)` summed. It needs
  no score normalisation between BM25's unbounded scores and cosine similarities, which is why it is used.

An offline machine without the model gets BM25, and `Retriever.mode` / `Retriever.notes` say so.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.jobs.explain.kb import EmbeddingRecord, KnowledgeBase, Passage

DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # small (90 MB), English, a common default
EMBED_ENV = "DFSTREAM_EMBED_MODEL"
RRF_K = 60  # the constant of Cormack et al.: larger flattens the fusion toward equal weight for all ranks
DENSE_CANDIDATES = 50  # dense hits fused per query; beyond this rank a hit adds under 1/110 to a score
WORD = re.compile(r"[a-z0-9]+(?:[+\-][a-z0-9]+)*")
STOPWORDS = frozenset("""a about above after again all also an and any are as at be because been being below between
both but by can could did do does doing down during each few for from further had has have having here how i if in
into is it its itself just more most no nor not of off on once only or other out over own same should so some such
than that the their them then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your""".split())


class EmbeddingMismatch(ValueError):
    """A KB's dense index was built with another embedding model than the one given to query it."""


def stem(word: str) -> str:
    """A light suffix stripper (plurals, -ing, -ed), enough for "edges"/"edge" and "swapped"/"swap"."""
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + repl
            if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # swapped -> swapp -> swap
            break
    return word


def tokens(text: str) -> list[str]:
    return [stem(w) for w in WORD.findall(text.lower()) if w not in STOPWORDS]


def model_sha256(folder: Path) -> str:
    """sha256 over the relative names and bytes of every file of a model folder, in name order."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and ".git" not in p.parts):
        h.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class Embedder:
    """A sentence-transformers model from a local folder or the Hugging Face cache (never downloaded unless
    `allow_download`). `record` is what a KB built with it stores."""

    def __init__(self, name: str, allow_download: bool = False) -> None:
        from sentence_transformers import SentenceTransformer

        folder = Path(name).expanduser()
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name, local_files_only=not allow_download))
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        # sentence-transformers 6 renamed the method; older releases have only the long name
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = dim()
        self.record = EmbeddingRecord(model=name, sha256=model_sha256(folder), dim=int(dim))

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.record.dim)


def load_embedder(name: str | None, allow_download: bool = False) -> tuple[Embedder | None, str | None]:
    """The embedding model, or None and why (not installed, not cached on an offline machine, unreadable)."""
    name = name or os.environ.get(EMBED_ENV) or DEFAULT_EMBED_MODEL
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return None, "sentence-transformers is not installed (pip install -e .[explain]): BM25 only"
    try:
        return Embedder(name, allow_download), None
    except Exception as exc:  # noqa: BLE001 - not cached, offline, or not a sentence-transformers model
        why = "not installed or cached, and downloads are off" if not allow_download else str(exc).splitlines()[0]
        return None, f"embedding model {name!r} unavailable ({why}): BM25 only"


@dataclass(frozen=True, slots=True)
class Hit:
    passage: Passage
    score: float
    bm25_rank: int | None  # 1-based; None when BM25 did not match it
    dense_rank: int | None


class Retriever:
    """BM25 over every passage of the given KBs, plus a faiss index when an embedder is given."""

    def __init__(self, kbs: list[KnowledgeBase], embedder: Embedder | None = None,
                 embedder_note: str | None = None) -> None:
        from rank_bm25 import BM25Okapi

        self.passages = [p for kb in kbs for p in kb.passages]
        if not self.passages:
            raise ValueError("no passages to search")
        self.notes: list[str] = [embedder_note] if embedder_note else []
        self._bm25 = BM25Okapi([tokens(p.indexed_text()) for p in self.passages])
        self.embedder = embedder
        self._index = None
        if embedder is not None:
            self._index = self._dense_index(kbs, embedder)
        else:
            for kb in kbs:
                if kb.embedding is not None:
                    self.notes.append(f"KB {kb.name!r} has a dense index built with {kb.embedding.model!r}, which "
                                      "is not available here: BM25 only")
        self.mode = "hybrid" if self._index is not None else "bm25"

    def _dense_index(self, kbs: list[KnowledgeBase], embedder: Embedder):
        import faiss

        parts = []
        for kb in kbs:
            if kb.embedding is not None:
                rec = embedder.record
                if (kb.embedding.model, kb.embedding.sha256) != (rec.model, rec.sha256):
                    raise EmbeddingMismatch(
                        f"KB {kb.name!r} was built with embedding model {kb.embedding.model!r} "
                        f"(sha256 {kb.embedding.sha256[:12]}), but the model given is {rec.model!r} "
                        f"(sha256 {rec.sha256[:12]}): query it with the same model, or rebuild it with "
                        "`dfstream kb build --embed-model`")
                parts.append(np.asarray(kb.vectors, dtype=np.float32))
            else:
                parts.append(embedder.encode([p.indexed_text() for p in kb.passages]))
        vectors = np.concatenate(parts)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return index

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` best passages, best first. BM25 alone keeps only passages sharing a word with the query."""
        bm25 = np.asarray(self._bm25.get_scores(tokens(query)), dtype=np.float64)
        order = [int(i) for i in np.argsort(-bm25, kind="stable") if bm25[i] > 0]
        bm25_rank = {i: r for r, i in enumerate(order, 1)}
        dense_rank: dict[int, int] = {}
        if self._index is not None:
            q = self.embedder.encode([query])  # type: ignore[union-attr]
            _, ids = self._index.search(q, min(DENSE_CANDIDATES, len(self.passages)))
            dense_rank = {int(i): r for r, i in enumerate(ids[0], 1) if i >= 0}
            fused = {i: sum(1.0 / (RRF_K + ranks[i]) for ranks in (bm25_rank, dense_rank) if i in ranks)
                     for i in set(bm25_rank) | set(dense_rank)}
            ranked = sorted(fused, key=lambda i: (-fused[i], i))
            scores = fused
        else:
            ranked = order
            scores = {i: float(bm25[i]) for i in order}
        return [Hit(self.passages[i], round(float(scores[i]), 6), bm25_rank.get(i), dense_rank.get(i))
                for i in ranked[:k]]
