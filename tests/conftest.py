"""Shared by every test: the header of a test run says which versions of the libraries the graph
talks through it ran with (CI runs the unit tests with the pinned ones and with the newest openai)."""

from __future__ import annotations

from importlib import metadata

VERSIONED = ("openai", "langchain-openai", "langchain-core", "langgraph", "langgraph-api",
             "langgraph-checkpoint-postgres", "httpx")


def pytest_report_header() -> str:
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return "libraries: " + ", ".join(found)
