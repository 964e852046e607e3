"""The vLLM servers a test session shares: one configuration (servers/*.toml) up at a time.

:meth:`ServerPool.use` switches to a configuration by stopping the servers of the one up that the
new one does not have and starting those it lacks: going from ``cpu`` to ``cpu-plain`` restarts
only the base server (the small one is the same server), going to ``cpu-reasoning`` both. The
session orders its tests by configuration (tests/conftest.py), so each starts once.

Servers that already answered when the session began (``specreason serve start``, a developer's
own) are used as they are; at the end the pool stops what it started and starts again any of those
it had to stop, so a developer's servers are left as they were found.

A configuration with replicas behind a router (servers/cpu-replicas.toml) is its members: each
replica and the router are started, checked and stopped like a server (the router after its
replicas, and before them when stopping), and ``use`` hands out the set whose ``role()`` is the
router.
"""

from __future__ import annotations

from specreason_graph.serving import config, launcher


class ServerPool:
    """``with ServerPool() as pool: pool.use("cpu")`` → the running :class:`config.ServerSet`."""

    def __init__(self) -> None:
        self.current: config.ServerSet | None = None
        self.found: list[config.Member] = []
        """Servers of the tests' configurations that answered before the session started any."""
        self.started: list[config.Member] = []

    def __enter__(self) -> ServerPool:
        from tests.conftest import DEFAULT_SERVERS, PHASES

        seen: list[config.Member] = []
        for name in dict.fromkeys((DEFAULT_SERVERS, *PHASES)):
            seen += [s for s in config.load_config(name).servers if s not in seen]
        self.found = [spec for spec in seen if launcher.healthy(spec)]
        return self

    def use(self, name: str) -> config.ServerSet:
        """The servers of configuration ``name``, up (started here if they are not)."""
        wanted = config.load_config(name)
        if self.current is not None and self.current.name == wanted.name:
            launcher.check_all(wanted)  # a server that died mid-session is named, not waited on
            return wanted
        # Make room first: the servers up that the new configuration does not have (the found
        # ones of other configurations included: both pairs do not fit in memory together).
        up = [s for s in ([*self.current.servers] if self.current else []) + self.found
              if s not in wanted.servers]
        for spec in reversed(up):
            launcher.stop_one(spec)
            self.started = [s for s in self.started if s != spec]
        self.started += launcher.start(wanted)
        self.current = wanted
        return wanted

    def __exit__(self, *exc: object) -> None:
        launcher.stop(self.started)
        for spec in self.found:
            if not launcher.healthy(spec):
                launcher.start_one(spec)
