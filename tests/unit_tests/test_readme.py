"""The README's claims that code can check: the drawing, the settings table, the two commands."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

from specreason_graph import Context

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    documented = set(re.findall(r"^\| `([a-z_]+)`", README, re.M))
    documented |= {"top_p"}  # shares a row with temperature
    fields = {f.name for f in dataclasses.fields(Context)}
    assert fields <= documented, f"settings missing from the README: {fields - documented}"


def test_first_screen_commands_exist_in_the_makefile_and_ci():
    first_screen = README[:1500]
    assert "make demo" in first_screen and "make test" in first_screen
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_langgraph_json_exports_importable_graphs():
    config = json.loads((ROOT / "langgraph.json").read_text())
    for name, target in config["graphs"].items():
        path, attr = target.split(":")
        assert (ROOT / path).exists(), f"{name}: {path} missing"
        module = importlib.import_module(path.removeprefix("./").removesuffix(".py").replace("/", "."))
        assert getattr(module, attr).checkpointer is None, "Studio supplies persistence itself"
