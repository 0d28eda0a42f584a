"""The cited explanation: regions named from landmarks, the template, and the LLM contract against a local server
implementing OpenAI's POST /v1/chat/completions (no LLM runs here): the prompt carries the passages and the score,
an invented citation is removed and marked, a timeout or a missing key falls back to the template, and the key
appears nowhere in what is written."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from stream.jobs.explain import kb, regions
from stream.jobs.explain.llm import INVENTED_MARK, KEY_ENV, LLMSettings, check_citations
from stream.jobs.explain.report import Facts, build_query, explain_with_citations, markdown, write
from stream.jobs.explain.retrieve import Retriever

from support.live_server import free_port

KEY = "sk-test-7f3a9c-never-print-me"
SIZE = 256
LANDMARKS = np.array([[92, 108], [164, 108], [128, 140], [100, 172], [156, 172]], np.float32)


class ChatServer:
    """A chat-completions endpoint on loopback: records each request; `reply(body) -> str` writes the answer and
    `delay_s` holds it back (for timeouts)."""

    def __init__(self, reply, delay_s: float = 0.0) -> None:
        self.reply, self.delay_s = reply, delay_s
        self.requests: list[dict] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": self.reply(body)}}]})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def facts(**kw) -> Facts:
    base = dict(source="clip.mp4", model="meso4-df", description="MesoNet meso4 (Afchar et al. 2018) trained on "
                "Deepfakes", trained_on="Deepfakes", verdict="fake", score=0.912, calibrated=True, threshold=0.5,
                face_px=180.0, sharpness=140.0, quality_note=None, regions=["face boundary", "eyes"],
                peak_region="face boundary", landmarks="mtcnn")
    base.update(kw)
    return Facts(**base)


@pytest.fixture(scope="module")
def retriever() -> Retriever:
    return Retriever([kb.builtin()])


def heat_at(mask: np.ndarray) -> np.ndarray:
    heat = np.full((SIZE, SIZE), 0.02, np.float32)
    heat[mask] = 1.0
    return heat


def test_regions_are_named_from_the_landmarks() -> None:
    masks = regions.region_masks(LANDMARKS, SIZE)
    assert sum(m.astype(int) for m in masks.values()).max() == 1  # disjoint
    assert np.logical_or.reduce(list(masks.values())).all()  # and covering
    for name in ("mouth", "eyes", "nose", "face boundary", "background"):
        heat = heat_at(masks[name])
        assert regions.hot_regions(heat, LANDMARKS) == [name]
        assert regions.peak_region(heat, LANDMARKS) == name
    # the same heat, a face elsewhere in the crop: the names follow the landmarks, not fixed places
    moved = LANDMARKS - np.array([40, 30], np.float32)
    heat = heat_at(masks["mouth"])
    assert regions.hot_regions(heat, moved) != ["mouth"]
    assert regions.hot_regions(np.zeros((SIZE, SIZE), np.float32), LANDMARKS) == []  # saturated: nothing named


def test_the_query_carries_model_training_data_regions_and_quality() -> None:
    q = build_query(facts(quality_note="face 60 px < 96 px for meso4-df", regions=["mouth"]))
    assert "meso4-df" in q and "Deepfakes" in q and "mouth" in q and "compression" in q and "calibrated" in q


def test_template_cites_the_models_passage_and_the_retrieved_ones_by_number(retriever, tmp_path) -> None:
    record = explain_with_citations(facts(), retriever, LLMSettings())
    assert record["writer"] == "template" and record["llm_note"] is None
    cites = record["citations"]
    assert cites[0]["id"] == "model-mesonet" and [c["n"] for c in cites] == list(range(1, len(cites) + 1))
    assert "blending-boundary" in {c["id"] for c in cites}  # heat on the face boundary: the seam passage
    assert all("meso4-df" in c["models"] for c in cites if c["models"])  # no other detector's passage
    used = {int(n) for n in re.findall(r"\[(\d+)\]", record["text"])}
    assert used == {c["n"] for c in cites}  # every passage cited inline, nothing else
    assert "0.912" in record["text"] and "face boundary" in record["text"]
    write(tmp_path, record)
    md = (tmp_path / "explanation.md").read_text()
    assert "## References" in md and "[1] Darius Afchar" in md and "https://arxiv.org/abs/1809.00888" in md
    assert json.loads((tmp_path / "explanation.json").read_text())["citations"] == cites


def test_the_prompt_carries_passages_and_score_and_the_answer_is_used(retriever, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)

    def reply(body):
        return "The seam around the face is the main evidence [2], and the model knows Deepfakes [1]."

    with ChatServer(reply) as server:
        settings = LLMSettings.from_env(url=server.url, model="llama-3.3-70b-versatile")
        record = explain_with_citations(facts(), retriever, settings)
    (req,) = server.requests
    assert req["auth"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "llama-3.3-70b-versatile" and [m["role"] for m in body["messages"]] == ["system", "user"]
    prompt = body["messages"][1]["content"]
    assert "0.912 (calibrated), threshold 0.5" in prompt and "face boundary" in prompt and "Deepfakes" in prompt
    for c in record["citations"]:
        assert f"[{c['n']}] {c['heading']}" in prompt and c["text"] in prompt
    assert "square brackets" in body["messages"][0]["content"]
    assert record["writer"] == "llm:llama-3.3-70b-versatile" and record["removed_citations"] == []
    assert record["text"] == reply(None)
    write(tmp_path, record)
    for f in tmp_path.iterdir():
        assert KEY not in f.read_text()
    assert KEY not in repr(settings)


def test_an_invented_citation_is_removed_and_marked(retriever, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with ChatServer(lambda body: "Blending leaves a seam [2]. A famous study proves it [17]. Both agree [1, 42].") \
            as server:
        record = explain_with_citations(facts(), retriever, LLMSettings.from_env(url=server.url))
    assert record["removed_citations"] == [17, 42]
    text = record["text"]
    assert "[17]" not in text and "42" not in text
    assert text.count(INVENTED_MARK) == 2 and "seam [2]" in text and "[1] " + INVENTED_MARK in text
    assert "which were not retrieved" in markdown(record)


def test_citation_ranges_and_lists_are_checked() -> None:
    text, cited, removed = check_citations("a [1-3] b [2; 9] c [x] d [5]", {1, 2, 3})
    assert cited == [1, 2, 3] and removed == [9, 5]
    assert text.startswith("a [1, 2, 3] b [2] " + INVENTED_MARK + " c [x] d " + INVENTED_MARK)


def test_a_timeout_falls_back_to_the_template_with_the_reason(retriever, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with ChatServer(lambda body: "too late [1]", delay_s=3.0) as server:
        record = explain_with_citations(facts(), retriever, LLMSettings.from_env(url=server.url, timeout_s=0.5))
    assert len(server.requests) == 1
    assert record["writer"] == "template" and "did not answer within 0.5 s" in record["llm_note"]
    assert record["text"] == explain_with_citations(facts(), retriever, LLMSettings())["text"]  # deterministic
    assert "did not answer" in markdown(record)


def test_a_missing_key_or_an_http_error_falls_back_without_showing_the_key(retriever, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    record = explain_with_citations(facts(), retriever, LLMSettings.from_env(url="http://127.0.0.1:9/v1"))
    assert record["writer"] == "template" and KEY_ENV in record["llm_note"]
    monkeypatch.setenv(KEY_ENV, KEY)
    port = free_port()  # nothing listens here
    record = explain_with_citations(facts(), retriever, LLMSettings.from_env(url=f"http://127.0.0.1:{port}/v1"))
    assert record["writer"] == "template" and "could not be reached" in record["llm_note"]
    assert KEY not in json.dumps(record)


def test_llm_settings_come_from_flags_then_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DFSTREAM_LLM_URL", "https://api.groq.com/openai/v1")
    monkeypatch.setenv(KEY_ENV, KEY)
    s = LLMSettings.from_env()
    assert s.endpoint() == "https://api.groq.com/openai/v1/chat/completions" and s.model == "llama-3.3-70b-versatile"
    assert LLMSettings.from_env(url="http://h/v1/chat/completions").endpoint() == "http://h/v1/chat/completions"
    assert KEY not in repr(s) and KEY not in str(s)
