"""benchmarks/prompt_sets.py against the vLLM stand-in: it judges the same drafts with each prompt
set, warming each set's prefix first, and writes its table."""

from __future__ import annotations

import json

from benchmarks import prompt_sets
from specreason_graph import prompts
from tests.vllm_stub import VLLMStub


def test_each_draft_is_judged_with_each_set_on_its_own_prefix(tmp_path, monkeypatch):
    with VLLMStub() as stub:
        monkeypatch.setenv("SPECREASON_BASE_URL", stub.url)
        monkeypatch.setenv("SPECREASON_BASE_MODEL", stub.model)
        table = prompt_sets.main(["--limit", "3", "--out", str(tmp_path)])
        chats = [body for path, body in stub.requests if path.endswith("/chat/completions")]
    assert [row["set"] for row in table] == ["ours", "paper"]
    assert all(row["judge calls"] == 3 for row in table)
    assert len(chats) == 3 * 2 * 2  # per draft and set: the prefix, then the judge call
    judges = [body for body in chats if body.get("logprobs")]
    ours, paper = (prompts.load("judge", s) for s in ("", "paper"))
    asked = [body["messages"][2]["content"] for body in judges]
    assert asked == [ours, paper, paper, ours, ours, paper]  # the order alternates per draft
    for warm, judge in zip(chats[0::2], chats[1::2], strict=True):
        assert judge["messages"][:2] == warm["messages"]  # the judge extends the cached prefix
    saved = json.loads((tmp_path / "prompt_sets.json").read_text())
    assert saved["drafts"] == 3 and len(saved["calls"]) == 6
    assert "| ours |" in (tmp_path / "prompt_sets.md").read_text()
