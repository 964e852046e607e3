"""A throwaway PostgreSQL server for the tests, like the vLLM servers: the session starts it and
stops it. Debian's packages (``apt-get install postgresql``) are installed if no server binaries are
found; the cluster lives in a temporary folder, listens on 127.0.0.1 only, on a free port, with
``trust`` authentication (nothing else can reach it). PostgreSQL refuses to run as root, so as root
the cluster runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def binaries() -> Path:
    """The folder of ``initdb``/``pg_ctl``; Debian's package is installed if none is found."""
    for pattern in ("/usr/lib/postgresql/*/bin",):
        found = sorted(glob.glob(pattern), key=lambda p: int(Path(p).parent.name))
        if found and (Path(found[-1]) / "initdb").exists():
            return Path(found[-1])
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is not installed and this is not root: apt-get install "
                           "postgresql (Debian's package) and run the tests again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
                   check=True, env=env, capture_output=True)
    return binaries()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """``with PostgresServer() as pg:`` a fresh cluster; ``pg.dsn`` connects to its database.
    ``durable=False`` (tests) turns fsync off; a benchmark keeps PostgreSQL's defaults."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bin = binaries()
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="specreason-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True)

    def __enter__(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  *([] if self.durable else ["--no-sync"]))
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
                  f"-c max_connections=200{'' if self.durable else ' -c fsync=off'}", "start")
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
