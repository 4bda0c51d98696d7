"""One launcher for a real `earshot serve` subprocess, shared by the load tests and the test suite.

Plain Python (no pytest): `python loadtest/bench.py` imports it as `launch`, tests as `loadtest.launch`.
It starts the server on 127.0.0.1 and a free port, waits for /readyz (or fails with the log's tail),
and stops it: SIGTERM, then kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The server exited, or was not ready in time; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(bundles: Sequence[Path | str] = (), flags: Mapping[str, object] | None = None) -> list[str]:
    """`python -m earshot.cli serve --bundle B ... --flag value ...` (flag names in snake_case or kebab-case)."""
    command = [sys.executable, "-m", "earshot.cli", "serve"]
    for bundle in bundles:
        command += ["--bundle", str(bundle)]
    for name, value in (flags or {}).items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.output()[-chars:]

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        try:
            return httpx.get(self.url + "/healthz", timeout=10).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, grace_s: float = 30.0) -> int:
        """SIGTERM, then kill after grace_s; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def start(
    bundles: Sequence[Path | str] = (),
    log: Path | str = "server.log",
    *,
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    port: int | None = None,
    clean_env: bool = False,
    ready_timeout_s: float = 60.0,
    poll_s: float = 0.05,
    cwd: Path | str | None = None,
) -> Server:
    """Start the server and return it once /readyz answers 200.

    command defaults to serve_command(bundles, flags) plus --host 127.0.0.1 --port P; a given command
    (an image's entrypoint, say) must read its address from EARSHOT_HOST / EARSHOT_PORT, which are set
    either way. clean_env drops this process's EARSHOT_* variables before env is laid over it.
    """
    port = port or free_port()
    base = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("EARSHOT_"))}
    full_env = {**base, "EARSHOT_HOST": "127.0.0.1", "EARSHOT_PORT": str(port), **(env or {})}
    if command is None:
        argv = serve_command(bundles, flags) + ["--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = list(command)
    log = Path(log)
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, env=full_env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    server = Server(process, f"http://127.0.0.1:{port}", log, port, full_env)
    deadline = time.monotonic() + ready_timeout_s
    try:
        with httpx.Client(timeout=2, trust_env=False) as client:
            while True:
                if process.poll() is not None:
                    raise ServerStartError(
                        f"earshot serve exited with {process.returncode} before it was ready; log tail:\n{server.tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(server.url + "/readyz").status_code == 200:
                        return server
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"earshot serve not ready within {ready_timeout_s} s; log tail:\n{server.tail()}"
                    )
                time.sleep(poll_s)
    except BaseException:
        server.kill()
        raise


@contextlib.contextmanager
def running(*args, stop_grace_s: float = 30.0, **kwargs) -> Iterator[Server]:
    """start(...) as a context: the ready server on entry, stopped (SIGTERM, then kill) on exit."""
    server = start(*args, **kwargs)
    try:
        yield server
    finally:
        server.stop(stop_grace_s)
