"""Knowledge bases: cited passages an explanation can quote.

Two kinds, one record (`Passage`):

- the built-in one (`kb/builtin.jsonl`, package data): short passages the team wrote in its own words on what each
  manipulation family leaves behind and on what each detector in the registry looks at and was trained on, each with
  its paper. `explain` works with it offline, out of the box;
- a user's own papers: `dfstream kb build PAPERS_DIR --out KB_DIR` reads PDFs (pypdf), text and Markdown, chunks
  them by paragraph with overlap, and keeps title, authors, year and page per chunk.

A KB folder holds `kb.json` (what was ingested, and the embedding model the dense index was built with, if any),
`passages.jsonl` and, with a model, `dense.npy` (one normalised vector per passage, in file order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_FILE = Path(__file__).with_name("kb") / "builtin.jsonl"
KB_META = "kb.json"
KB_PASSAGES = "passages.jsonl"
KB_VECTORS = "dense.npy"
KB_FORMAT = 1
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
PDF_SUFFIX = ".pdf"
# Chunking policy. Paragraphs are merged up to CHUNK_WORDS so that a chunk is about one idea and long enough for
# BM25 to score; each chunk repeats the last OVERLAP_WORDS of the one before it, so a sentence cut at a boundary is
# still found whole in one of the two. Larger chunks give the LLM more context per citation but blur retrieval.
CHUNK_WORDS = 160
OVERLAP_WORDS = 40
MIN_CHUNK_WORDS = 8  # shorter fragments (page numbers, running heads) are dropped
YEAR = re.compile(r"\b(19[5-9]\d|20[0-4]\d)\b")


class KBError(ValueError):
    """A KB folder or a paper cannot be read; the message says which and why."""


class Citation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str
    authors: list[str] = Field(default_factory=list)
    venue: str | None = None
    year: int | None = None
    url: str | None = Field(default=None, description="a DOI or URL; for a user's paper, its file")

    def short(self) -> str:
        """'Rössler et al., ICCV 2019'."""
        first = self.authors[0].split()[-1] if self.authors else None
        who = (f"{first} et al." if len(self.authors) > 2 else " and ".join(a.split()[-1] for a in self.authors)
               ) if first else self.title
        where = " ".join(str(x) for x in (self.venue, self.year) if x)
        return f"{who}, {where}" if where else who

    def full(self) -> str:
        authors = ", ".join(self.authors) if self.authors else "unknown authors"
        where = ", ".join(str(x) for x in (self.venue, self.year) if x)
        tail = f" {self.url}" if self.url else ""
        return f"{authors}. \"{self.title}\". {where}.{tail}" if where else f"{authors}. \"{self.title}\".{tail}"


class Passage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    heading: str
    text: str
    citation: Citation
    page: int | None = Field(default=None, description="1-based page of a PDF chunk")
    topics: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list, description="registry models this passage describes")

    def indexed_text(self) -> str:
        """What retrieval matches against: the heading, the text, and the topic and model tags."""
        return " ".join([self.heading, self.text, *self.topics, *self.models])


class EmbeddingRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="the sentence-transformers model name or path it was built with")
    sha256: str = Field(description="hash of the model's files: a KB is queried only with the same model")
    dim: int


class KBMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = KB_FORMAT
    built_at: str
    documents: list[dict] = Field(default_factory=list, description="per ingested file: path, title, chunks")
    errors: list[dict] = Field(default_factory=list, description="per file that could not be read: path, error")
    embedding: EmbeddingRecord | None = None
    passages: int = 0


@dataclass
class KnowledgeBase:
    """Passages, plus their dense vectors and the model that made them when there are any."""

    name: str
    passages: list[Passage]
    embedding: EmbeddingRecord | None = None
    vectors: object | None = None  # numpy (N, dim) float32, normalised
    meta: dict = field(default_factory=dict)


def read_jsonl(path: Path) -> list[Passage]:
    passages = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                passages.append(Passage.model_validate_json(line))
            except ValueError as exc:
                raise KBError(f"{path}:{n}: not a passage: {exc}") from None
    return passages


def builtin() -> KnowledgeBase:
    """The team's own passages, shipped with the package."""
    return KnowledgeBase("builtin", read_jsonl(BUILTIN_FILE))


def load(folder: Path) -> KnowledgeBase:
    """A KB folder written by `build`; refused in words when it is not one."""
    folder = Path(folder)
    meta_path = folder / KB_META
    if not meta_path.is_file():
        raise KBError(f"{folder} is not a knowledge base: no {KB_META} (build one with `dfstream kb build`)")
    try:
        meta = KBMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise KBError(f"{meta_path}: not a knowledge base record: {exc}") from None
    if meta.format != KB_FORMAT:
        raise KBError(f"{folder}: KB format {meta.format}, this version reads {KB_FORMAT}: rebuild it")
    passages = read_jsonl(folder / KB_PASSAGES)
    vectors = None
    if meta.embedding is not None:
        import numpy as np

        vectors = np.load(folder / KB_VECTORS)
        if vectors.shape != (len(passages), meta.embedding.dim):
            raise KBError(f"{folder}: {KB_VECTORS} has shape {vectors.shape}, expected "
                          f"({len(passages)}, {meta.embedding.dim}): rebuild the KB")
    return KnowledgeBase(folder.name, passages, meta.embedding, vectors, meta.model_dump())


# -- ingesting papers -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Document:
    """One paper as read: its metadata and its text per page (one page for text and Markdown)."""

    path: Path
    title: str
    authors: list[str]
    year: int | None
    pages: list[str]  # page texts, in order

    def citation(self) -> Citation:
        return Citation(title=self.title, authors=self.authors, year=self.year, url=self.path.name)


def _authors(text: str | None) -> list[str]:
    if not text:
        return []
    return [a.strip() for a in re.split(r";|,| and ", text) if a.strip()]


def read_pdf(path: Path) -> Document:
    """Title, authors and year from the PDF's metadata (else its first line and the filename), text per page."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        raise KBError(f"{path.name}: reading PDFs needs pypdf (pip install -e .[explain])") from None

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
    except (PyPdfError, ValueError, KeyError, OSError) as exc:  # pypdf reports damage with these
        raise KBError(f"{path.name}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    if not any(p.strip() for p in pages):
        raise KBError(f"{path.name}: the PDF has no extractable text (a scan? run OCR first)")
    title = (info.title if info and info.title else None) or _first_line(pages[0]) or path.stem
    year = None
    if info:
        try:
            year = info.creation_date.year if info.creation_date else None
        except ValueError:
            year = None
    if year is None and (m := YEAR.search(pages[0])):
        year = int(m.group(1))
    return Document(path, title.strip(), _authors(info.author if info else None), year, pages)


def read_text(path: Path) -> Document:
    """A text or Markdown paper. Optional YAML front matter gives title, authors and year; else the first
    Markdown heading (or the filename) is the title."""
    import yaml

    text = path.read_text(encoding="utf-8", errors="replace")
    meta: dict = {}
    if text.startswith("---\n") and "\n---" in text[4:]:
        head, text = text[4:].split("\n---", 1)
        try:
            meta = yaml.safe_load(head) or {}
        except yaml.YAMLError as exc:
            raise KBError(f"{path.name}: front matter is not YAML: {exc}") from None
        if not isinstance(meta, dict):
            raise KBError(f"{path.name}: front matter must be a mapping of title, authors, year")
    heading = re.search(r"^#\s+(.+)$", text, re.M)
    title = str(meta.get("title") or (heading.group(1) if heading else None) or path.stem)
    authors = meta.get("authors") or []
    authors = _authors(authors) if isinstance(authors, str) else [str(a) for a in authors]
    year = meta.get("year")
    return Document(path, title, authors, int(year) if year else None, [text])


def _first_line(text: str) -> str | None:
    for line in text.splitlines():
        if len(line.split()) >= 2:
            return line.strip()
    return None


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each on one line. PDF text without blank lines is split where a line
    ends a sentence and the next starts a new one."""
    text = text.replace("\r\n", "\n")
    blocks = re.split(r"\n\s*\n", text)
    if len(blocks) == 1:
        blocks = re.split(r"(?<=[.!?:])\n(?=[A-Z0-9])", text)
    out = []
    for b in blocks:
        b = re.sub(r"-\n(?=[a-z])", "", b)  # hyphenated line breaks
        b = " ".join(b.split())
        if b:
            out.append(b)
    return out


def chunk(paras: list[str], size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[str]:
    """Merge paragraphs into chunks of at most `size` words (a longer paragraph is cut), each starting with the
    last `overlap` words of the previous chunk."""
    if overlap >= size:
        raise ValueError(f"overlap {overlap} must be smaller than the chunk size {size}")
    words_of = [p.split() for p in paras]
    pieces: list[list[str]] = []
    for words in words_of:
        for i in range(0, len(words), size):
            pieces.append(words[i:i + size])
    chunks: list[list[str]] = []
    current: list[str] = []
    for piece in pieces:
        if current and len(current) + len(piece) > size:
            chunks.append(current)
            current = current[-overlap:] if overlap else []
        current = current + piece
    if current and (not chunks or len(current) > overlap):
        chunks.append(current)
    return [" ".join(c) for c in chunks if len(c) >= MIN_CHUNK_WORDS]


def passages_of(doc: Document) -> list[Passage]:
    """A document's chunks, page by page (a chunk never spans two pages, so its page is exact)."""
    cite = doc.citation()
    out = []
    paged = len(doc.pages) > 1 or doc.path.suffix.lower() == PDF_SUFFIX
    for page_no, page in enumerate(doc.pages, 1):
        for i, text in enumerate(chunk(paragraphs(page))):
            pid = f"{doc.path.stem}:p{page_no}:{i}" if paged else f"{doc.path.stem}:{i}"
            out.append(Passage(id=pid, heading=doc.title, text=text, citation=cite,
                               page=page_no if paged else None))
    return out


def paper_files(folder: Path) -> list[Path]:
    suffixes = (*TEXT_SUFFIXES, PDF_SUFFIX)
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def read_document(path: Path) -> Document:
    return read_pdf(path) if path.suffix.lower() == PDF_SUFFIX else read_text(path)


def build(papers: Path, out: Path, embedder: object | None = None,
          on_file: Callable[[Path], None] | None = None) -> KBMeta:
    """Ingest every paper under `papers` into the KB folder `out`. A file that cannot be read is recorded in
    `errors` and the others are still ingested. With an `embedder` (retrieve.Embedder) the dense vectors are
    written too. Refuses (and writes nothing) when no file could be ingested."""
    papers, out = Path(papers), Path(out)
    if not papers.is_dir():
        raise KBError(f"{papers} is not a folder of papers")
    files = paper_files(papers)
    if not files:
        raise KBError(f"{papers}: no PDF, text or Markdown files ({', '.join((PDF_SUFFIX, *TEXT_SUFFIXES))})")
    passages: list[Passage] = []
    documents, errors = [], []
    for path in files:
        try:
            doc = read_document(path)
            got = passages_of(doc)
            if not got:
                raise KBError(f"{path.name}: no paragraph of at least {MIN_CHUNK_WORDS} words")
        except KBError as exc:
            errors.append({"path": str(path.relative_to(papers)), "error": str(exc)})
        else:
            passages += got
            documents.append({"path": str(path.relative_to(papers)), "title": doc.title, "authors": doc.authors,
                              "year": doc.year, "pages": len(doc.pages), "chunks": len(got)})
        if on_file:
            on_file(path)
    if not passages:
        raise KBError(f"{papers}: nothing could be ingested: " + "; ".join(e["error"] for e in errors))
    meta = KBMeta(built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), documents=documents,
                  errors=errors, passages=len(passages))
    vectors = None
    if embedder is not None:
        vectors = embedder.encode([p.indexed_text() for p in passages])  # type: ignore[attr-defined]
        meta.embedding = embedder.record  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    write_passages(out / KB_PASSAGES, passages)
    if vectors is not None:
        import numpy as np

        np.save(out / KB_VECTORS, vectors)
    else:
        (out / KB_VECTORS).unlink(missing_ok=True)
    (out / KB_META).write_text(meta.model_dump_json(indent=2), encoding="utf-8")
    return meta


def write_passages(path: Path, passages: Iterable[Passage]) -> None:
    path.write_text("".join(p.model_dump_json() + "\n" for p in passages), encoding="utf-8")
