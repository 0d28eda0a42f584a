"""An optional language model that writes the explanation, through any OpenAI-compatible chat-completions endpoint
(Groq, OpenAI, vLLM, llama.cpp's server, Ollama's /v1 ...).

The prompt carries the prediction, the calibrated confidence, the face quality, the Grad-CAM regions and the
retrieved passages, numbered, and asks for citations by number. The answer is checked: a citation that is not one
of the numbered passages is removed and the text is marked where it was (`INVENTED_MARK`), so nothing in the
output points at a paper that was not retrieved. Any failure (no endpoint, no key, timeout, HTTP error, an answer
that is not chat-completions JSON) returns None with the reason, and the caller writes the deterministic template.

The key travels only in the Authorization header. It is never logged, never written, and is scrubbed from every
error message this module returns.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

URL_ENV = "DFSTREAM_LLM_URL"
KEY_ENV = "DFSTREAM_LLM_KEY"
MODEL_ENV = "DFSTREAM_LLM_MODEL"
DEFAULT_MODEL = "llama-3.3-70b-versatile"  # Groq's name for Llama 3.3 70B, the model card 003 used
DEFAULT_TIMEOUT_S = 30.0  # a 70B model through a hosted API answers in a few seconds; past this, the template
TEMPERATURE = 0.2  # low: an explanation should be reproducible, not creative
MAX_TOKENS = 700
INVENTED_MARK = "[citation removed: not a retrieved passage]"
CITATION = re.compile(r"\[(\s*\d+(?:\s*[,;–-]\s*\d+)*\s*)\]")
SYSTEM_PROMPT = (
    "You are a media-forensics analyst. Explain to a non-expert reviewer, in at most two short paragraphs, why a "
    "deepfake detector reached its verdict on one face. Use only the facts given and the numbered passages. Cite "
    "passages by their number in square brackets, like [1] or [2, 3], right after the claim they support. Do not "
    "cite anything that is not a numbered passage. Say plainly when the evidence is weak (low face quality, a "
    "score near the threshold, a model trained on other manipulations)."
)


@dataclass(frozen=True)
class LLMSettings:
    url: str | None = None
    key: str | None = field(default=None, repr=False)  # never shown, even in a repr
    model: str = DEFAULT_MODEL
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, url: str | None = None, model: str | None = None, timeout_s: float | None = None
                 ) -> "LLMSettings":
        """Flags first, then DFSTREAM_LLM_URL / DFSTREAM_LLM_MODEL; the key only from DFSTREAM_LLM_KEY (a
        command-line flag would show it in `ps` and shell history)."""
        return cls(url=url or os.environ.get(URL_ENV) or None, key=os.environ.get(KEY_ENV) or None,
                   model=model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL,
                   timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)

    def endpoint(self) -> str:
        url = (self.url or "").rstrip("/")
        return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


@dataclass(frozen=True, slots=True)
class LLMAnswer:
    text: str  # checked: only citations of retrieved passages remain
    cited: list[int]  # passage numbers cited, in order of first use
    removed: list[int]  # invented citation numbers that were removed
    model: str


def build_prompt(facts: dict, passages: list[dict]) -> list[dict]:
    """The chat messages: the facts of the verdict and the numbered passages."""
    lines = ["Facts about the verdict:"]
    lines += [f"- {k}: {v}" for k, v in facts.items() if v not in (None, "", [])]
    lines.append("")
    lines.append("Numbered passages from the literature:")
    for p in passages:
        lines.append(f"[{p['n']}] {p['heading']} ({p['cite']}): {p['text']}")
    lines.append("")
    lines.append("Write the explanation now, citing the passages by number.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def _numbers(group: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", group.strip()):
        bounds = re.split(r"\s*[–-]\s*", part)
        if len(bounds) == 2 and all(b.isdigit() for b in bounds) and int(bounds[0]) <= int(bounds[1]) < 1000:
            out += list(range(int(bounds[0]), int(bounds[1]) + 1))
        elif part.isdigit():
            out.append(int(part))
    return out


def check_citations(text: str, valid: set[int]) -> tuple[str, list[int], list[int]]:
    """Keep citations of `valid` passage numbers; remove the others and mark the text where a whole citation went.
    Returns (text, cited, removed)."""
    cited: list[int] = []
    removed: list[int] = []

    def fix(m: re.Match) -> str:
        nums = _numbers(m.group(1))
        good = [n for n in nums if n in valid]
        removed.extend(n for n in nums if n not in valid)
        cited.extend(n for n in good if n not in cited)
        if good:
            return "[" + ", ".join(str(n) for n in good) + "]" + ("" if len(good) == len(nums) else
                                                                  " " + INVENTED_MARK)
        return INVENTED_MARK

    return CITATION.sub(fix, text), cited, removed


def _scrub(message: str, key: str | None) -> str:
    return message.replace(key, "***") if key else message


def ask(settings: LLMSettings, facts: dict, passages: list[dict]) -> tuple[LLMAnswer | None, str | None]:
    """The checked answer, or None and why the template is used instead."""
    if not settings.url:
        return None, None  # no LLM asked for: the template, with nothing to apologise for
    if not settings.key:
        return None, f"no LLM key: set {KEY_ENV} (any value for a keyless local server); template used"
    import requests

    body = {"model": settings.model, "messages": build_prompt(facts, passages), "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS}
    try:
        resp = requests.post(settings.endpoint(), json=body, timeout=settings.timeout_s,
                             headers={"Authorization": f"Bearer {settings.key}"})
    except requests.Timeout:
        return None, f"the LLM did not answer within {settings.timeout_s:g} s; template used"
    except requests.RequestException as exc:
        return None, _scrub(f"the LLM could not be reached ({type(exc).__name__}); template used", settings.key)
    if resp.status_code != 200:
        return None, _scrub(f"the LLM answered HTTP {resp.status_code}: {resp.text[:200]}; template used",
                            settings.key)
    try:
        text = resp.json()["choices"][0]["message"]["content"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty content")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return None, _scrub(f"the LLM's answer is not a chat completion ({exc}); template used", settings.key)
    checked, cited, removed = check_citations(_scrub(text.strip(), settings.key), {p["n"] for p in passages})
    return LLMAnswer(checked, cited, removed, settings.model), None
