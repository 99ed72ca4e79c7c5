"""A TCP proxy between a client and PostgreSQL that injects the faults a network can cause.

The proxy runs an asyncio loop in a daemon thread; every control method hands its work to
that loop and waits a bounded time, so a test never hangs on the proxy itself. Each
connection (``_proxy_session``) follows the wire protocol in both directions (``_wire``),
which lets it count what clients sent and lose exactly one reply (``swallow_reply``): the
case where the server committed and the client never heard.

Standard library only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._lifecycle import LabTool
from ._proxy_session import CHUNK_SIZE as CHUNK_SIZE
from ._proxy_session import Counters, Faults, Session, Swallow, abort_with_rst, text_pattern
from ._proxy_session import ProxyConnection as ProxyConnection
from ._proxy_session import Then as Then
from .errors import ProxyError

__all__ = ["FaultProxy", "ProxyConnection", "ProxyError"]

logger = logging.getLogger("django_postgresql_reconnect.testing")

#: Seconds a control method waits for the proxy's loop before it gives up.
CONTROL_TIMEOUT = 5.0


class FaultProxy(LabTool):
    """A TCP proxy in front of PostgreSQL whose faults a test switches on and off.

    >>> with FaultProxy(server.host, server.port) as proxy:
    ...     settings = proxy.database_settings(server.database_settings())
    ...     proxy.reset_all()
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self._port = listen_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[Session] = set()
        self._faults = Faults()
        self._counters = Counters()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.listen_host

    @property
    def port(self) -> int:
        """The port clients connect to; known once ``start()`` returned."""
        return self._port

    def start(self) -> None:
        """Listen and forward in a background thread; return once clients can connect."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as error:
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not ready.wait(CONTROL_TIMEOUT) or failure:
            self._thread = None
            cause = failure[0] if failure else None
            where = f"{self.listen_host}:{self._port}"
            raise ProxyError(f"proxy could not listen on {where}") from cause
        logger.info(
            "proxy listening on %s:%d for %s:%d",
            self.listen_host,
            self._port,
            self.upstream_host,
            self.upstream_port,
        )

    def stop(self) -> None:
        """Close every connection (FIN) and the listener, and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for session in list(self._sessions):
                session.end(reset=False)
            # Let the pumps finish and the transports close before the loop stops.
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            if pending:
                await asyncio.wait(pending, timeout=1.0)

        with contextlib.suppress(TimeoutError, RuntimeError):
            self._control(shut)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CONTROL_TIMEOUT)
        self._thread = None
        self._loop = None
        logger.info("proxy on port %d stopped", self._port)

    def close(self) -> None:
        """The same as ``stop()``: the proxy holds nothing else (a later ``start()`` listens
        again on the same port)."""
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self.listen_host}:{self._port} -> "
            f"{self.upstream_host}:{self.upstream_port}>"
        )

    def database_settings(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of a Django ``DATABASES`` entry that connects through the proxy."""
        settings = dict(base)
        if isinstance(settings.get("OPTIONS"), Mapping):
            settings["OPTIONS"] = dict(settings["OPTIONS"])
        settings["HOST"] = self.host
        settings["PORT"] = str(self.port)
        return settings

    # -- faults ----------------------------------------------------------------------------

    def reset_all(self) -> None:
        """Reset every open connection: RST to the client, the upstream side closed."""
        self._end_all(reset=True)

    def close_all(self) -> None:
        """Close every open connection with a FIN, as a server or balancer shutting down."""
        self._end_all(reset=False)

    def blackhole(self) -> None:
        """Forward nothing either way, and hold what arrives, until ``heal()``.

        Sockets stay open, so a client learns of it only from its own timeouts. New
        connections are accepted and stall the same way.
        """

        def arm() -> None:
            assert self._faults.flowing is not None
            self._faults.flowing.clear()

        self._control(arm)
        logger.info("proxy on port %d: blackhole", self._port)

    def swallow_reply(
        self, pattern: str | bytes | re.Pattern[str] | re.Pattern[bytes], *, then: Then = "reset"
    ) -> threading.Event:
        """Let the next statement that matches run, then lose its whole reply.

        The pattern is searched in the SQL of each Query and Execute (the statement its
        Parse carried). The server runs the statement, and in autocommit commits it; the
        proxy drops everything it answers through ReadyForQuery (through CopyInResponse for
        a COPY ... FROM STDIN, whose server then waits for data), then resets the client
        (``then="reset"``) or leaves it open and silent (``then="blackhole"``). The event
        is set once the reply was dropped.
        """
        if then not in ("reset", "blackhole"):
            raise ValueError(f"then must be 'reset' or 'blackhole', not {then!r}")
        swallow = Swallow(text_pattern(pattern), then)

        def arm() -> None:
            self._faults.swallow = swallow

        self._control(arm)
        logger.info(
            "proxy on port %d: will swallow the reply to %r", self._port, swallow.pattern.pattern
        )
        return swallow.fired

    def latency(self, seconds: float) -> None:
        """Delay every chunk forwarded, in either direction, by ``seconds`` (0 disables)."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")

        def arm() -> None:
            self._faults.latency = seconds

        self._control(arm)
        logger.info("proxy on port %d: latency %.3f s", self._port, seconds)

    def trickle(self, seconds: float) -> None:
        """Deliver the server's replies one byte at a time, ``seconds`` apart, until healed.

        A reply then arrives in pieces, as over a congested link: a client must not assume
        that one message being there means the next one is.
        """
        if seconds < 0:
            raise ValueError("trickle delay cannot be negative")

        def arm() -> None:
            self._faults.trickle = seconds

        self._control(arm)
        logger.info("proxy on port %d: trickle %.3f s per byte", self._port, seconds)

    def refuse(self, seconds: float | None = None) -> None:
        """Reset new connections at once, for ``seconds`` or until ``heal()``."""
        until = math.inf if seconds is None else time.monotonic() + seconds

        def arm() -> None:
            self._faults.refuse_until = until

        self._control(arm)
        logger.info(
            "proxy on port %d: refusing connections %s",
            self._port,
            "until healed" if seconds is None else f"for {seconds:.3f} s",
        )

    def heal(self) -> None:
        """Disarm every fault: deliver what a blackhole held, accept, no delay, no swallow.

        A swallow already under way (its statement sent) still finishes.
        """

        def disarm() -> None:
            faults = self._faults
            assert faults.flowing is not None
            faults.flowing.set()
            faults.latency = 0.0
            faults.trickle = 0.0
            faults.refuse_until = 0.0
            faults.swallow = None

        self._control(disarm)
        logger.info("proxy on port %d: healed", self._port)

    # -- counters --------------------------------------------------------------------------

    @property
    def statements(self) -> list[str]:
        """The SQL of every statement clients sent: one per Query, one per Execute."""
        return self._counters.statements

    @property
    def round_trips(self) -> int:
        """How many client messages asked for a ReadyForQuery (Query and Sync)."""
        return self._counters.round_trips

    @property
    def connections_accepted(self) -> int:
        return self._counters.accepted

    @property
    def connections(self) -> list[ProxyConnection]:
        """Every connection since the last ``reset_counters()``, oldest first."""
        return self._counters.connections

    def reset_counters(self) -> None:
        """Start counting afresh; connections already open count from now on."""
        self._counters.reset()

    # -- the loop's side -------------------------------------------------------------------

    def _control(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` (a function or coroutine function) on the loop; wait a bounded time."""
        loop = self._loop
        if loop is None:
            raise ProxyError("the proxy is not running: call start() first")

        async def run() -> Any:
            result = action()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(CONTROL_TIMEOUT)
        except concurrent.futures.TimeoutError:  # not the builtin one before Python 3.11
            future.cancel()
            raise TimeoutError(
                f"proxy on port {self._port} did not answer within {CONTROL_TIMEOUT} s"
            ) from None

    def _end_all(self, *, reset: bool) -> None:
        def end() -> int:
            sessions = list(self._sessions)
            for session in sessions:
                session.end(reset=reset)
            return len(sessions)

        count = self._control(end)
        logger.info(
            "proxy on port %d: %s %d connection(s)",
            self._port,
            "reset" if reset else "closed",
            count,
        )

    async def _listen(self) -> None:
        self._faults.flowing = asyncio.Event()
        self._faults.flowing.set()
        self._server = await asyncio.start_server(
            self._accept, self.listen_host, self._port, limit=CHUNK_SIZE
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_port = peer[1] if peer else 0
        if time.monotonic() < self._faults.refuse_until:
            logger.debug("refusing a connection from port %d", client_port)
            abort_with_rst(writer)
            return
        record = ProxyConnection(client_port)
        self._counters.accept(record)
        session = Session(
            record,
            writer,
            faults=self._faults,
            counters=self._counters,
            sessions=self._sessions,
            proxy_port=self._port,
        )
        self._sessions.add(session)
        await session.run(reader, self.upstream_host, self.upstream_port)
