"""FaultProxies in a process of their own, driven over a pipe.

A benchmark that counts its own file descriptors, threads and memory (``leaks.py``), or times
microseconds (``overhead.py``), must not share its process with the proxy's sockets, thread
and event loop. ``ProxyProcess`` starts this file as a child that runs ``count`` FaultProxies
to one server; commands go on its stdin, one a line, each answered by ``ok``:

    reset I            reset every connection of proxy I (``FaultProxy.reset_all``)
    latency I SECONDS  delay every chunk forwarded by proxy I, each way (``FaultProxy.latency``)

The child's event loops wait with select(), whose timeout has microsecond resolution, instead
of epoll, which rounds every wait up to a whole millisecond: with epoll a latency of 0.15 ms
would add at least 1 ms each way.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ProxyProcess:
    """The parent's side: ``ports`` to connect to, and the commands."""

    def __init__(self, host: str, port: int, count: int = 1) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.process = subprocess.Popen(
            [sys.executable, __file__, host, str(port), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        started = json.loads(self.process.stdout.readline())
        self.host: str = started["host"]
        self.ports: list[int] = started["ports"]
        self.pid: int = self.process.pid

    def reset(self, index: int = 0) -> None:
        self._command(f"reset {index}")

    def latency(self, index: int, seconds: float) -> None:
        self._command(f"latency {index} {seconds!r}")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _command(self, line: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"proxy process: {line!r} answered {answer!r}")


class _FineTimerPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(selectors.SelectSelector())


def child(host: str, port: int, count: int) -> int:
    import logging

    logging.disable(logging.CRITICAL)
    asyncio.set_event_loop_policy(_FineTimerPolicy())
    from django_postgresql_reconnect.testing import FaultProxy

    proxies = [FaultProxy(host, port) for _ in range(count)]
    for proxy in proxies:
        proxy.start()
    print(json.dumps({"host": proxies[0].host, "ports": [p.port for p in proxies]}), flush=True)
    for line in sys.stdin:
        verb, index, *rest = line.split()
        proxy = proxies[int(index)]
        if verb == "reset":
            proxy.reset_all()
        elif verb == "latency":
            proxy.latency(float(rest[0]))
        print("ok", flush=True)
    for proxy in proxies:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
