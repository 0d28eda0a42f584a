"""The cited explanation of one verdict: facts -> query -> passages -> text (LLM or template) -> files.

The facts are the model and what it was trained on, the verdict, the (calibrated) score against the threshold,
the face quality, and the face regions where Grad-CAM peaks. The query is those facts in words, so BM25 and the
dense index both match the passages on that model, those regions and those manipulation traces. The model's own
passages (tagged with its registry name) are always cited first: what a detector was trained on is the first thing
a reviewer must know to weigh its score.

Output: `explanation.json` (facts, query, retrieval mode and notes, the text, every cited passage with its full
citation) and `explanation.md` (the heatmap image, the text with numbered inline citations, the references).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.jobs.explain import llm as llm_mod
from stream.jobs.explain import regions as regions_mod
from stream.jobs.explain.gradcam import Explanation
from stream.jobs.explain.kb import Passage
from stream.jobs.explain.retrieve import Retriever

EXPLANATION_JSON = "explanation.json"
EXPLANATION_MD = "explanation.md"
EXPLANATION_PNG = "explanation.png"
PASSAGES_CITED = 5  # passages handed to the writer: enough for model, regions, quality; few enough to read
OTHER_MODEL_SLACK = 10  # extra hits fetched, since passages about other models are skipped
# Region -> words the query adds: what the literature calls the trace a detector finds there.
REGION_WORDS = {
    "face boundary": "face boundary edges blending seam of a swapped face",
    "mouth": "mouth lips teeth expression reenactment",
    "eyes": "eyes blinking eye region",
    "nose": "nose inner face texture identity swap",
    "cheeks and forehead": "inner face skin texture identity swap",
    "background": "background outside the face warping resolution mismatch compression",
}
LOW_SHARPNESS = 50.0  # below this Laplacian variance a 128^2 face crop is soft: the query asks about compression


@dataclass
class Facts:
    """What is known about one verdict, before any passage is read."""

    source: str
    model: str
    description: str | None
    trained_on: str | None
    verdict: str  # fake | real | low-quality
    score: float  # p(fake), calibrated when `calibrated`
    calibrated: bool
    threshold: float
    face_px: float | None
    sharpness: float | None
    quality_note: str | None  # why the face is below the model's floor, if it is
    regions: list[str]  # hottest first
    peak_region: str | None
    landmarks: str  # mtcnn | template
    alert: str | None = None
    frames: list[dict] = field(default_factory=list)  # per explained face-frame: frame, p_fake, regions

    def for_prompt(self) -> dict:
        return {"model": self.model, "model description": self.description, "trained on": self.trained_on,
                "verdict": self.verdict,
                "p(fake)": f"{self.score:.3f} ({'calibrated' if self.calibrated else 'uncalibrated'}), "
                           f"threshold {self.threshold:g}",
                "face size (px)": None if self.face_px is None else round(self.face_px),
                "sharpness (Laplacian variance)": None if self.sharpness is None else round(self.sharpness, 1),
                "quality": self.quality_note or "above the model's floor",
                "Grad-CAM hottest regions": ", ".join(self.regions) or "none (saturated score, no gradient)",
                "Grad-CAM peak": self.peak_region}


def region_facts(items: Sequence[Explanation], landmarks: Sequence[tuple[np.ndarray, str]]
                 ) -> tuple[list[str], str | None, str, list[dict]]:
    """Regions over the explained face-frames: each region's mean heat averaged over frames, the hot ones (within
    `regions.HOT` of the hottest), the peak region of the top frame, the landmark source, per-frame detail."""
    means: dict[str, list[float]] = {}
    frames = []
    for item, (lm, how) in zip(items, landmarks):
        if item.saturated:
            frames.append({"frame": item.frame, "p_fake": round(item.p_fake, 6), "regions": [], "landmarks": how})
            continue
        ranked = regions_mod.shares(item.heatmap, lm)
        for r in ranked:
            means.setdefault(r.region, []).append(r.mean)
        frames.append({"frame": item.frame, "track": item.track, "p_fake": round(item.p_fake, 6),
                       "regions": regions_mod.hot_regions(item.heatmap, lm),
                       "peak": regions_mod.peak_region(item.heatmap, lm), "landmarks": how,
                       "shares": {r.region: round(r.share, 4) for r in ranked}})
    avg = {k: float(np.mean(v)) for k, v in means.items()}
    top = max(avg.values(), default=0.0)
    hot = [k for k in sorted(avg, key=lambda k: -avg[k]) if top > 0 and avg[k] >= regions_mod.HOT * top]
    first = next((f for f in frames if f.get("peak")), None)
    how = "mtcnn" if any(h == "mtcnn" for _, h in landmarks) else "template"
    return hot, first["peak"] if first else None, how, frames


def build_query(facts: Facts) -> str:
    """The facts in words, for BM25 and the dense index."""
    parts = [f"{facts.model} detector trained on {facts.trained_on or 'unknown data'}",
             facts.description or "",
             f"verdict {facts.verdict} face",
             f"{'calibrated' if facts.calibrated else 'uncalibrated'} score"]
    for r in facts.regions[:2]:
        parts.append(REGION_WORDS.get(r, r))
    if facts.quality_note or (facts.sharpness is not None and facts.sharpness < LOW_SHARPNESS):
        parts.append("low quality small blurry face compression")
    return ". ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Cited:
    n: int
    passage: Passage
    score: float | None  # retrieval score; None for the model's own passage added by tag

    def for_prompt(self) -> dict:
        return {"n": self.n, "heading": self.passage.heading, "text": self.passage.text,
                "cite": self.passage.citation.short()}

    def to_json(self) -> dict:
        return {"n": self.n, "id": self.passage.id, "heading": self.passage.heading, "text": self.passage.text,
                "page": self.passage.page, "models": self.passage.models,
                "citation": self.passage.citation.model_dump(),
                "reference": self.passage.citation.full(), "retrieval_score": self.score}


def select_passages(retriever: Retriever, facts: Facts, query: str, k: int = PASSAGES_CITED) -> list[Cited]:
    """The model's own passages first (by registry tag), then the best retrieved ones, numbered from 1. Passages
    about other models are left out: what another detector was trained on says nothing about this verdict."""
    own = [p for p in retriever.passages if facts.model in p.models][:2]
    chosen: list[tuple[Passage, float | None]] = [(p, None) for p in own]
    for hit in retriever.search(query, k + len(own) + OTHER_MODEL_SLACK):
        if len(chosen) >= k:
            break
        if hit.passage.models and facts.model not in hit.passage.models:
            continue
        if all(hit.passage.id != p.id for p, _ in chosen):
            chosen.append((hit.passage, hit.score))
    return [Cited(n, p, s) for n, (p, s) in enumerate(chosen, 1)]


def _first_sentence(text: str, limit: int = 300) -> str:
    m = re.match(r"(.+?(?<!\bal)(?<!\be\.g)(?<!\bi\.e)[.!?])(\s+(?=[A-Z0-9])|$)", text)
    s = m.group(1) if m else text
    return s if len(s) <= limit else s[:limit].rsplit(" ", 1)[0] + "…"


def template(facts: Facts, cited: list[Cited]) -> str:
    """The deterministic explanation: the facts in sentences, each claim about the literature cited by number."""
    own = [c.n for c in cited if facts.model in c.passage.models]
    own_ref = f" [{', '.join(map(str, own))}]" if own else ""
    side = "above" if facts.score >= facts.threshold else "below"
    kind = "calibrated" if facts.calibrated else "uncalibrated"
    if facts.verdict == "low-quality":
        verdict = ("but the face is below the model's quality floor: verdict **low-quality** (a live verdict does "
                   "not judge such a face)")
    else:
        verdict = f"verdict **{facts.verdict}**"
    out = [f"{facts.model} gives this face p(fake) = {facts.score:.3f} ({kind}), {side} its threshold "
           f"{facts.threshold:g}, {verdict}."]
    described = facts.description or facts.model
    if facts.trained_on and facts.trained_on.lower() not in described.lower():
        described += f", trained on {facts.trained_on}"
    out.append(f"The model is {described}{own_ref}.")
    if facts.regions:
        where = ", ".join(facts.regions)
        lm = "located from MTCNN's five landmarks" if facts.landmarks == "mtcnn" else \
            "located on a frontal template (MTCNN found no landmarks on the crop)"
        out.append(f"Its Grad-CAM evidence is strongest on the {where} (peak on the {facts.peak_region}; regions "
                   f"{lm}).")
    else:
        out.append("The score is saturated, so Grad-CAM has no gradient and names no region.")
    if facts.quality_note:
        out.append(f"Caution: {facts.quality_note}, so the score is weak evidence either way.")
    elif facts.face_px is not None or facts.sharpness is not None:
        size = f"{facts.face_px:.0f} px" if facts.face_px is not None else "of unknown size"
        sharp = f", sharpness {facts.sharpness:.0f}" if facts.sharpness is not None else ""
        out.append(f"The face is {size}{sharp}.")
    text = " ".join(out)
    rest = [c for c in cited if c.n not in own]
    if rest:
        text += "\n\nWhat the literature says about this evidence:\n" + "\n".join(
            f"- {c.passage.heading}: {_first_sentence(c.passage.text)} [{c.n}]" for c in rest)
    return text


def explain_with_citations(facts: Facts, retriever: Retriever, settings: llm_mod.LLMSettings | None = None
                           ) -> dict:
    """The explanation record (what `explanation.json` holds, less the image)."""
    query = build_query(facts)
    cited = select_passages(retriever, facts, query)
    answer, note = llm_mod.ask(settings or llm_mod.LLMSettings(), facts.for_prompt(),
                               [c.for_prompt() for c in cited])
    if answer is not None:
        text, writer, removed = answer.text, f"llm:{answer.model}", answer.removed
    else:
        text, writer, removed = template(facts, cited), "template", []
    return {"facts": {k: v for k, v in facts.__dict__.items() if k != "frames"}, "frames": facts.frames,
            "query": query, "retrieval": {"mode": retriever.mode, "notes": retriever.notes},
            "writer": writer, "llm_note": note, "removed_citations": removed, "text": text,
            "citations": [c.to_json() for c in cited]}


def markdown(record: dict) -> str:
    f = record["facts"]
    lines = [f"# Why {f['model']} called this face {f['verdict']}", ""]
    if record.get("image"):
        lines += [f"![Grad-CAM evidence]({record['image']})", ""]
    lines += [record["text"], ""]
    notes = [n for n in [record.get("llm_note"), *record["retrieval"]["notes"]] if n]
    if record["removed_citations"]:
        notes.append("the LLM cited passage(s) " + ", ".join(map(str, record["removed_citations"])) +
                     ", which were not retrieved: removed and marked")
    px = "unknown size" if f["face_px"] is None else f"{f['face_px']:.0f} px"
    sharp = "unknown" if f["sharpness"] is None else f"{f['sharpness']:.0f}"
    lines += ["| | |", "|---|---|", f"| source | {f['alert'] and 'alert ' + f['alert'] or f['source']} |",
              f"| model | {f['model']} (trained on {f['trained_on'] or 'unknown'}) |",
              f"| p(fake) | {f['score']:.3f} ({'calibrated' if f['calibrated'] else 'uncalibrated'}), "
              f"threshold {f['threshold']:g} |",
              f"| face quality | {px}, sharpness {sharp}{'; ' + f['quality_note'] if f['quality_note'] else ''} |",
              f"| Grad-CAM regions | {', '.join(f['regions']) or 'none'} (landmarks: {f['landmarks']}) |",
              f"| written by | {record['writer']}; retrieval {record['retrieval']['mode']} |", ""]
    if notes:
        lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    lines += ["## References", ""]
    for c in record["citations"]:
        page = f", p. {c['page']}" if c.get("page") else ""
        lines += [f"[{c['n']}] {c['reference']}{page}", f"> {c['heading']}: {c['text']}", ""]
    return "\n".join(lines)


def write(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPLANATION_MD).write_text(markdown(record), encoding="utf-8")
    # the JSON last: its presence is what marks an alert's explanation as cached
    (out / EXPLANATION_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")


def facts_of(source: str, engine, items: Sequence[Explanation], landmarks: Sequence[tuple[np.ndarray, str]],
             threshold: float, alert: str | None = None, score: float | None = None) -> Facts:
    """The facts of one explained input: its most fake-looking face-frame (`items[0]`) scored by `engine`, or
    the score an alert recorded when `score` is given."""
    from engines.calibration import calibration_of
    from engines.quality import floor_of
    from engines.registry import MODELS

    entry = MODELS.get(engine.name)
    cal = calibration_of(engine)
    top = items[0]
    if score is None:
        score = float(cal.apply(np.array([top.p_fake]))[0]) if cal is not None else float(top.p_fake)
    q = top.quality
    note = None
    if q is not None:
        note = floor_of(engine).reason(engine.name, q.face_px if q.face_px else float("inf"), q.sharpness)
    verdict = "low-quality" if note else ("fake" if score >= threshold else "real")
    hot, peak, how, frames = region_facts(items, landmarks)
    return Facts(source=source, model=engine.name, description=entry.description if entry else None,
                 trained_on=(entry.trained_on or _trained_on_from(entry.description)) if entry else None,
                 verdict=verdict, score=score, calibrated=cal is not None, threshold=threshold,
                 face_px=(q.face_px or None) if q else None, sharpness=q.sharpness if q else None, quality_note=note,
                 regions=hot, peak_region=peak, landmarks=how, alert=alert, frames=frames)


def _trained_on_from(description: str | None) -> str | None:
    """Registry descriptions say "... trained on X" where no `trained_on` field is set."""
    if description and " trained on " in description:
        return description.split(" trained on ", 1)[1].strip()
    if description and " on " in description:
        return description.rsplit(" on ", 1)[1].strip()
    return None
