"""FaultProxies in a process of their own, driven over a pipe.

A benchmark that counts its own file descriptors, threads and memory (``leaks.py``), or times
microseconds (``overhead.py``), must not share its process with the proxy's sockets, thread
and event loop. ``ProxyProcess`` starts this file as a child that runs ``count`` FaultProxies
to one server; commands go on its stdin, one a line, each answered by ``ok``:

    reset I            reset every connection of proxy I (``FaultProxy.reset_all``)
    latency I SECONDS  delay every chunk forwarded by proxy I, each way (``FaultProxy.latency``)

A latency under a millisecond is spun out on the proxy's thread rather than slept: epoll
rounds every wait up to a whole millisecond, and even select()'s microsecond timeouts wake a
process late on a busy 2-core machine (0.15 ms asked, about 0.5 ms measured each way). The
spin holds the proxy's loop, which costs nothing here: a round trip is one request then one
reply, never both at once, and each alias has its own proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Latencies shorter than this are spun out, longer ones slept (FaultProxy's own way).
SPIN_BELOW = 0.001


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


def child(host: str, port: int, count: int) -> int:
    import logging

    logging.disable(logging.CRITICAL)
    from django_postgresql_reconnect.testing import FaultProxy

    class SpinningProxy(FaultProxy):
        async def _hold(self, session: Any) -> None:
            if self._latency >= SPIN_BELOW or self._flowing is None:
                await super()._hold(session)
                return
            await self._flowing.wait()
            until = time.perf_counter() + self._latency
            while time.perf_counter() < until:
                pass

    proxies = [SpinningProxy(host, port) for _ in range(count)]
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
