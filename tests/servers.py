"""A real ``lineagegraph serve`` process on a free loopback port, for tests that need the
whole command, not just the app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

# The embedded store, whatever NEO4J_URI says in the environment the tests run in.
EMBEDDED_ENV = {k: v for k, v in os.environ.items() if k != "NEO4J_URI"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lineagegraph.api.cli", *args]


@dataclass
class Served:
    base: str
    process: subprocess.Popen[str]
    output: str = ""  # what the server printed, once it has stopped


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None,
            timeout_s: float = 60) -> Iterator[Served]:
    """Start ``lineagegraph serve ARGS --port <free>``, wait for /healthz, stop it after."""
    port = free_port()
    process = subprocess.Popen(cli("serve", *args, "--port", str(port)),
                               env=env if env is not None else EMBEDDED_ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Served(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(f"{served.base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, f"server did not come up in {timeout_s}s"
                time.sleep(0.2)
        yield served
    finally:
        process.terminate()
        served.output, _ = process.communicate(timeout=30)


def error_code(response: Any) -> str:
    """The code of an error the service answered itself: REST's ``code``, or on /graphql a
    GraphQL transport error's ``extensions.code``."""
    body = response.json()
    if response.request.url.path.rstrip("/") == "/graphql":
        return str(body["errors"][0]["extensions"]["code"])
    assert set(body) >= {"error", "code", "problems"}, body  # REST's one shape
    return str(body["code"])
