"""The blocking-call detector ``langgraph dev`` runs graphs under, for in-process tests.

``langgraph dev`` (langgraph-runtime-inmem) activates blockbuster's ``BlockBuster`` around its runs
and lets a few calls through that its users make all the time: ``os.stat``, ``os.listdir``,
``os.remove``, every ``os.path`` function, buffered file reads and writes, and
``threading.Lock.acquire``. This is the same policy through blockbuster's own public API (the
server's set-up function is private). The system tier runs the real ``langgraph dev`` with its
detector on and fails on anything it logs (tests/system_tests/conftest.py).
"""

from __future__ import annotations

from blockbuster import BlockBuster

LET_THROUGH = ("os.stat", "os.listdir", "os.remove", "io.BufferedReader.read",
               "io.BufferedWriter.write", "io.TextIOWrapper.read", "io.TextIOWrapper.write",
               "threading.Lock.acquire")


def langgraph_dev_detector() -> BlockBuster:
    """An active detector: a blocking call on the event loop raises ``BlockingError``."""
    detector = BlockBuster(excluded_modules=[])
    detector.functions["os.path.abspath"].can_block_in("inspect.py", "getmodule")
    for name in [*LET_THROUGH, *(f for f in detector.functions if f.startswith("os.path."))]:
        function = detector.functions.pop(name, None)
        if function is not None:
            function.deactivate()
    detector.activate()
    return detector
