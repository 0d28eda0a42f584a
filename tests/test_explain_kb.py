"""Knowledge bases and retrieval: the built-in passages are cited and cover the registry, BM25 finds the passage a
question is about, `kb build` ingests PDFs (one written here), text and Markdown and names a corrupt PDF while
keeping the rest, and the dense index records its model and refuses another (a tiny sentence-transformers model
built here, since none can be downloaded)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from engines.registry import MODELS
from stream.cli import EXIT_INPUT_FAILED, EXIT_USAGE, main
from stream.jobs.explain import kb
from stream.jobs.explain.retrieve import EmbeddingMismatch, Retriever, load_embedder, stem, tokens

from support.parts import import_or_require


@pytest.fixture(scope="module")
def builtin_retriever() -> Retriever:
    return Retriever([kb.builtin()])


def test_builtin_passages_carry_full_citations_and_cover_every_registry_model() -> None:
    passages = kb.builtin().passages
    assert len({p.id for p in passages}) == len(passages) >= 25
    for p in passages:
        c = p.citation
        assert c.title and c.authors and c.venue and c.year and c.url.startswith("https://"), p.id
        assert 30 <= len(p.text.split()) <= 160, p.id  # short passages, in the team's words
    described = {m for p in passages for m in p.models}
    assert set(MODELS) <= described, set(MODELS) - described
    assert described <= set(MODELS)  # no tag names a model the registry does not have


def test_the_edges_of_a_swapped_face_rank_the_blending_boundary_passage_first(builtin_retriever) -> None:
    hits = builtin_retriever.search("What do the edges of a swapped face show?", 3)
    assert hits[0].passage.id == "blending-boundary"
    assert builtin_retriever.mode == "bm25"
    mouth = builtin_retriever.search("the mouth and lips were re-rendered to change the expression", 2)
    assert mouth[0].passage.id in {"reenactment", "neural-textures"}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_question_about_a_models_training_data_finds_its_passage(builtin_retriever, model) -> None:
    hits = builtin_retriever.search(f"What data was {model} trained on?", 3)
    assert any(model in h.passage.models for h in hits), [h.passage.id for h in hits]


def test_stemming_joins_the_forms_a_question_uses() -> None:
    assert stem("swapped") == stem("swap") and stem("edges") == stem("edge") and stem("boundaries") == "boundary"
    assert tokens("The edges of THE swapped faces") == ["edge", "swap", "face"]


def test_chunks_overlap_and_stay_within_size() -> None:
    paras = [" ".join(f"w{p}_{i}" for i in range(70)) for p in range(5)]
    chunks = kb.chunk(paras, size=100, overlap=20)
    assert all(len(c.split()) <= 100 for c in chunks) and len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:]):
        assert a.split()[-20:] == b.split()[:20]
    assert {w for c in chunks for w in c.split()} == {w for p in paras for w in p.split()}  # nothing lost
    with pytest.raises(ValueError, match="overlap"):
        kb.chunk(paras, size=20, overlap=20)


PAGE_TEXT = [
    ["Blending artefacts of face swaps.", "", "The swapped face meets the target frame along a seam where",
     "the noise and colour change abruptly; detectors learn this seam."],
    ["Compression of the videos.", "", "Strong H.264 compression hides the seam and lowers the accuracy",
     "of every detector we measured on the heavily compressed set."],
]


def write_pdf(path: Path) -> None:
    """A two-page PDF with a title, an author and a creation date, its text as real (TrueType) text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(path, metadata={
            "Title": "Seams and Compression in Face Forgeries", "Author": "Ada Lovelace; Alan Turing",
            "CreationDate": datetime(2021, 5, 4)}) as pdf:
        for lines in PAGE_TEXT:
            fig = plt.figure(figsize=(8.5, 11))
            fig.text(0.1, 0.9, "\n".join(lines), va="top", fontsize=11)
            pdf.savefig(fig)
            plt.close(fig)


def papers_folder(root: Path) -> Path:
    papers = root / "papers"
    papers.mkdir()
    write_pdf(papers / "seams.pdf")
    (papers / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>>\nthis is not a PDF")
    (papers / "notes.md").write_text("---\ntitle: Lab notes on eye blinking\nauthors: [Grace Hopper]\nyear: 2020\n---\n"
                                     "# Eye blinking\n\nEarly deepfakes rarely blinked, because the photographs they "
                                     "were trained on seldom showed closed eyes.\n\nA second paragraph about the "
                                     "iris and reflections in the eye region of generated faces.\n")
    (papers / "plain.txt").write_text("Temporal flicker appears between consecutive frames of reenacted videos, "
                                      "most of all around the mouth and the chin.\n")
    (papers / "ignored.docx").write_bytes(b"not read")
    return papers


def test_kb_build_ingests_pdf_text_and_markdown_and_names_the_corrupt_pdf(tmp_path, capsys) -> None:
    import_or_require("pypdf")
    papers = papers_folder(tmp_path)
    out = tmp_path / "kb"
    code = main(["kb", "build", str(papers), "--out", str(out), "--no-dense"])
    captured = capsys.readouterr()
    assert code == EXIT_INPUT_FAILED  # one file skipped; the rest ingested
    assert "broken.pdf: not a readable PDF" in captured.err
    meta = json.loads((out / kb.KB_META).read_text())
    assert [e["path"] for e in meta["errors"]] == ["broken.pdf"]
    assert sorted(d["path"] for d in meta["documents"]) == ["notes.md", "plain.txt", "seams.pdf"]
    base = kb.load(out)
    pdf = [p for p in base.passages if p.citation.url == "seams.pdf"]
    assert sorted(p.page for p in pdf) == [1, 2]
    assert "seam where the noise and colour change abruptly" in pdf[0].text
    assert "H.264 compression hides the seam" in pdf[1].text
    cite = pdf[0].citation
    assert (cite.title, cite.authors, cite.year) == ("Seams and Compression in Face Forgeries",
                                                    ["Ada Lovelace", "Alan Turing"], 2021)
    md = [p for p in base.passages if p.citation.url == "notes.md"]
    assert md[0].citation.title == "Lab notes on eye blinking" and md[0].citation.authors == ["Grace Hopper"]
    assert md[0].citation.year == 2020 and md[0].page is None
    assert base.embedding is None and not (out / kb.KB_VECTORS).exists()
    hits = Retriever([kb.builtin(), base]).search("compression hides the seam in the heavily compressed set", 2)
    assert hits[0].passage.citation.url == "seams.pdf" and hits[0].passage.page == 2


def test_kb_build_refuses_a_folder_with_nothing_to_ingest_and_writes_nothing(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.pdf").write_bytes(b"garbage")
    out = tmp_path / "kb"
    assert main(["kb", "build", str(empty), "--out", str(out), "--no-dense"]) == EXIT_USAGE
    assert "nothing could be ingested" in capsys.readouterr().err
    assert not out.exists()
    assert main(["kb", "build", str(tmp_path / "missing"), "--out", str(out), "--no-dense"]) == EXIT_USAGE
    assert "not a folder of papers" in capsys.readouterr().err
    with pytest.raises(kb.KBError, match="not a knowledge base"):
        kb.load(tmp_path)


def tiny_sentence_model(folder: Path, seed: int) -> Path:
    """A one-layer BERT with a vocabulary of the built-in KB's words, as a sentence-transformers folder. Its
    vectors mean little (random weights); what is tested is the plumbing: index, record, refusal."""
    st = import_or_require("sentence_transformers")
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for p in kb.builtin().passages for w in p.text.lower().split() if w.isalpha()})
    bert_dir = folder / "bert"
    bert_dir.mkdir(parents=True)
    (bert_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(str(bert_dir / "vocab.txt")).save_pretrained(bert_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(bert_dir)
    try:  # sentence-transformers >= 6 moved the modules; older releases have them under .models
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    word = Transformer(str(bert_dir), max_seq_length=128)
    model = st.SentenceTransformer(modules=[word, Pooling((getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)())])
    out = folder / "model"
    model.save(str(out))
    return out


def test_dense_index_records_its_model_and_refuses_another(tmp_path, capsys) -> None:
    model_a = tiny_sentence_model(tmp_path / "a", seed=0)
    model_b = tiny_sentence_model(tmp_path / "b", seed=1)
    papers = papers_folder(tmp_path)
    (papers / "broken.pdf").unlink()
    out = tmp_path / "kb"
    assert main(["kb", "build", str(papers), "--out", str(out), "--embed-model", str(model_a), "--offline"]) == 0
    assert "dense index" in capsys.readouterr().out
    base = kb.load(out)
    assert base.embedding is not None and base.embedding.model == str(model_a) and len(base.embedding.sha256) == 64
    assert base.vectors.shape == (len(base.passages), base.embedding.dim)
    embed_a, note = load_embedder(str(model_a))
    assert note is None and embed_a.record == base.embedding  # same files, same hash
    retriever = Retriever([kb.builtin(), base], embed_a)
    assert retriever.mode == "hybrid"
    hits = retriever.search("the edges of a swapped face", 5)
    assert any(h.dense_rank for h in hits) and any(h.bm25_rank for h in hits)
    embed_b, _ = load_embedder(str(model_b))
    assert embed_b.record.sha256 != embed_a.record.sha256
    with pytest.raises(EmbeddingMismatch, match="built with embedding model"):
        Retriever([base], embed_b)
    # without the model (offline, not cached): BM25, and the retriever says why
    missing, why = load_embedder(str(tmp_path / "not-a-model-here"))
    assert missing is None and "BM25 only" in why
    offline = Retriever([base], None, why)
    assert offline.mode == "bm25" and any("not available here" in n for n in offline.notes)
    assert offline.search("eye blinking", 1)[0].passage.citation.url == "notes.md"
