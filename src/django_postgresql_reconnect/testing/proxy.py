"""A TCP proxy between a client and PostgreSQL that injects the faults a network can cause.

The proxy runs an asyncio loop in a daemon thread; every control method hands its work to
that loop and waits a bounded time, so a test never hangs on the proxy itself. It follows
the wire protocol in both directions (``_wire``), which lets it count what clients sent and
lose exactly one reply (``swallow_reply``): the case where the server committed and the
client never heard.

Standard library only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ._lifecycle import LabTool
from ._wire import Conversation
from .errors import ProxyError

__all__ = ["FaultProxy", "ProxyConnection", "ProxyError"]

logger = logging.getLogger("django_postgresql_reconnect.testing")

#: Seconds a control method waits for the proxy's loop before it gives up.
CONTROL_TIMEOUT = 5.0
#: Bytes read from a socket at a time.
CHUNK_SIZE = 65536

Then = Literal["reset", "blackhole"]


class ProxyConnection:
    """One client connection through the proxy and what its client sent."""

    def __init__(self, client_port: int) -> None:
        self.client_port = client_port
        self.statements: list[str] = []
        self.round_trips = 0
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<ProxyConnection client_port={self.client_port} {state} "
            f"statements={len(self.statements)} round_trips={self.round_trips}>"
        )


class _Swallow:
    """An armed ``swallow_reply``: which statement, and what to do to the client after."""

    def __init__(self, pattern: re.Pattern[str], then: Then) -> None:
        self.pattern = pattern
        self.then = then
        self.fired = threading.Event()


class _Session:
    """The proxy's side of one connection: both sockets and the protocol state between them."""

    def __init__(
        self,
        proxy: FaultProxy,
        record: ProxyConnection,
        client: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.record = record
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.conversation = Conversation(f"connection from port {record.client_port}")
        # ReadyForQuery bookkeeping, to find the reply that a swallow must drop.
        self.ready_expected = 0
        self.ready_seen = 0
        self.swallow: _Swallow | None = None
        self.swallow_ready = 0
        self.silenced = False

    # -- the frontend stream ---------------------------------------------------------------

    def read_frontend(self, data: bytes) -> None:
        """Count the client's statements and arm a swallow when one matches."""
        for request in self.conversation.client_sent(data):
            if request.sql is not None:
                self._statement(request.sql)
            if request.awaits_ready:
                self.ready_expected += 1
            if request.ends_round_trip:
                self.proxy._record_round_trip(self.record)

    def _statement(self, sql: str) -> None:
        self.proxy._record_statement(self.record, sql)
        swallow = self.proxy._swallow
        if swallow is not None and self.swallow is None and swallow.pattern.search(sql):
            self.proxy._swallow = None
            self.swallow = swallow
            # The reply ends with the next ReadyForQuery the client causes: the Query's
            # own, or the one of the Sync that follows an Execute.
            self.swallow_ready = self.ready_expected + 1
            logger.info(
                "swallowing the reply to %r on the connection from port %d",
                sql[:80],
                self.record.client_port,
            )

    # -- the backend stream ----------------------------------------------------------------

    def read_backend(self, data: bytes) -> tuple[bytes, bool]:
        """Return the bytes to pass on to the client, and whether a swallow just finished."""
        forward = bytearray()
        for chunk in self.conversation.server_sent(data):
            if chunk.is_ready_for_query:
                self.ready_seen += 1
            if self.swallow is not None and self.ready_seen >= self.swallow_ready - (
                0 if chunk.is_ready_for_query else 1
            ):
                # Inside the reply to drop: from after the previous ReadyForQuery through its own
                # (or through a CopyInResponse: the server then waits for the client's data).
                if (
                    chunk.is_ready_for_query and self.ready_seen == self.swallow_ready
                ) or chunk.awaits_copy_data:
                    self.conversation.discard_unparsed()
                    return bytes(forward), True
                continue
            forward += chunk.data
        return bytes(forward), False

    # -- ending ----------------------------------------------------------------------------

    def end(self, *, reset: bool) -> None:
        """Close both sides now; ``reset`` sends the client an RST instead of a FIN."""
        if not self.record.closed:
            self.record.closed = True
            logger.debug(
                "%s connection from port %d",
                "resetting" if reset else "closing",
                self.record.client_port,
            )
        if reset:
            _abort_with_rst(self.client)
        else:
            self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.proxy._sessions.discard(self)


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
        self._sessions: set[_Session] = set()
        # Faults. Only the loop's thread writes these, inside _control().
        self._flowing: asyncio.Event | None = None  # cleared while blackholed
        self._latency = 0.0
        self._trickle = 0.0
        self._refuse_until = 0.0
        self._swallow: _Swallow | None = None
        # Counters, read from the test's thread.
        self._lock = threading.Lock()
        self._connections: list[ProxyConnection] = []
        self._statements: list[str] = []
        self._round_trips = 0
        self._accepted = 0

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
            assert self._flowing is not None
            self._flowing.clear()

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
        swallow = _Swallow(_text_pattern(pattern), then)

        def arm() -> None:
            self._swallow = swallow

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
            self._latency = seconds

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
            self._trickle = seconds

        self._control(arm)
        logger.info("proxy on port %d: trickle %.3f s per byte", self._port, seconds)

    def refuse(self, seconds: float | None = None) -> None:
        """Reset new connections at once, for ``seconds`` or until ``heal()``."""
        until = math.inf if seconds is None else time.monotonic() + seconds

        def arm() -> None:
            self._refuse_until = until

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
            assert self._flowing is not None
            self._flowing.set()
            self._latency = 0.0
            self._trickle = 0.0
            self._refuse_until = 0.0
            self._swallow = None

        self._control(disarm)
        logger.info("proxy on port %d: healed", self._port)

    # -- counters --------------------------------------------------------------------------

    @property
    def statements(self) -> list[str]:
        """The SQL of every statement clients sent: one per Query, one per Execute."""
        with self._lock:
            return list(self._statements)

    @property
    def round_trips(self) -> int:
        """How many client messages asked for a ReadyForQuery (Query and Sync)."""
        with self._lock:
            return self._round_trips

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def connections(self) -> list[ProxyConnection]:
        """Every connection since the last ``reset_counters()``, oldest first."""
        with self._lock:
            return list(self._connections)

    def reset_counters(self) -> None:
        """Start counting afresh; connections already open count from now on."""
        with self._lock:
            self._statements.clear()
            self._round_trips = 0
            self._accepted = 0
            open_ones = [record for record in self._connections if not record.closed]
            self._connections = open_ones
            for record in open_ones:
                record.statements = []
                record.round_trips = 0

    def _record_statement(self, record: ProxyConnection, sql: str) -> None:
        with self._lock:
            self._statements.append(sql)
            record.statements.append(sql)

    def _record_round_trip(self, record: ProxyConnection) -> None:
        with self._lock:
            self._round_trips += 1
            record.round_trips += 1

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
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._accept, self.listen_host, self._port, limit=CHUNK_SIZE
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_port = peer[1] if peer else 0
        if time.monotonic() < self._refuse_until:
            logger.debug("refusing a connection from port %d", client_port)
            _abort_with_rst(writer)
            return
        record = ProxyConnection(client_port)
        with self._lock:
            self._accepted += 1
            self._connections.append(record)
        session = _Session(self, record, writer)
        self._sessions.add(session)
        try:
            upstream_reader, upstream = await asyncio.open_connection(
                self.upstream_host, self.upstream_port, limit=CHUNK_SIZE
            )
        except OSError as error:
            # As the client would see a server that is down: the connection refused.
            logger.warning(
                "proxy on port %d cannot reach %s:%d: %s",
                self._port,
                self.upstream_host,
                self.upstream_port,
                error,
            )
            session.end(reset=True)
            return
        if record.closed:  # reset_all() ran while we connected
            upstream.close()
            return
        session.upstream = upstream
        session.tasks = [
            asyncio.current_task(),  # type: ignore[list-item]
            asyncio.create_task(self._pump_backend(session, upstream_reader)),
        ]
        await self._pump_frontend(session, reader, upstream)

    async def _pump_frontend(
        self, session: _Session, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(CHUNK_SIZE):
                await self._hold(session)
                if session.silenced:
                    continue
                session.read_frontend(data)
                upstream.write(data)
                await upstream.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        session.end(reset=False)

    async def _pump_backend(self, session: _Session, reader: asyncio.StreamReader) -> None:
        client = session.client
        try:
            while data := await reader.read(CHUNK_SIZE):
                await self._hold(session)
                forward, swallowed = session.read_backend(data)
                if forward and self._trickle:
                    for index in range(len(forward)):
                        await self._hold(session)  # a blackhole stops it mid-reply
                        client.write(forward[index : index + 1])
                        await client.drain()
                        await asyncio.sleep(self._trickle)
                elif forward:
                    client.write(forward)
                    await client.drain()
                if swallowed:
                    self._finish_swallow(session)
                    return
        except OSError:
            pass
        except asyncio.CancelledError:
            return
        session.end(reset=False)

    async def _hold(self, session: _Session) -> None:
        """Wait out a blackhole and the latency before forwarding a chunk."""
        assert self._flowing is not None
        await self._flowing.wait()
        if self._latency:
            await asyncio.sleep(self._latency)
            await self._flowing.wait()

    def _finish_swallow(self, session: _Session) -> None:
        swallow = session.swallow
        assert swallow is not None
        if swallow.then == "reset":
            session.end(reset=True)
        else:
            # The client keeps an open, silent socket; the server's session ends.
            session.silenced = True
            if session.upstream is not None:
                session.upstream.close()
        logger.info(
            "proxy on port %d: swallowed a reply on the connection from port %d, then %s",
            self._port,
            session.record.client_port,
            swallow.then,
        )
        swallow.fired.set()


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close so that the peer gets an RST, as from a crashed host or a stateful firewall."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _text_pattern(pattern: str | bytes | re.Pattern[str] | re.Pattern[bytes]) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        source = pattern.pattern
        if isinstance(source, bytes):
            return re.compile(source.decode(), pattern.flags & ~re.ASCII)
        return pattern  # type: ignore[return-value]
    if isinstance(pattern, bytes):
        pattern = pattern.decode()
    return re.compile(pattern)
