"""One client connection through the fault proxy, as the proxy's event loop serves it.

A ``Session`` holds the client's socket and the server's, the protocol state between them
(``_wire``), and the two pumps that forward bytes each way, holding, delaying, trickling or
swallowing them as the armed ``Faults`` say. What clients sent goes into ``Counters``, which
the test's thread reads.

Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import threading
from typing import Literal

from ._wire import Conversation

logger = logging.getLogger("django_postgresql_reconnect.testing")

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


class Swallow:
    """An armed ``swallow_reply``: which statement, and what to do to the client after."""

    def __init__(self, pattern: re.Pattern[str], then: Then) -> None:
        self.pattern = pattern
        self.then = then
        self.fired = threading.Event()


def text_pattern(pattern: str | bytes | re.Pattern[str] | re.Pattern[bytes]) -> re.Pattern[str]:
    """The pattern that ``swallow_reply`` was given, compiled to search the SQL as text."""
    if isinstance(pattern, re.Pattern):
        source = pattern.pattern
        if isinstance(source, bytes):
            return re.compile(source.decode(), pattern.flags & ~re.ASCII)
        return pattern  # type: ignore[return-value]
    if isinstance(pattern, bytes):
        pattern = pattern.decode()
    return re.compile(pattern)


class Faults:
    """The faults armed now. Only the loop's thread writes them (``FaultProxy._control``)."""

    def __init__(self) -> None:
        self.flowing: asyncio.Event | None = None  # cleared while blackholed
        self.latency = 0.0
        self.trickle = 0.0
        self.refuse_until = 0.0
        self.swallow: Swallow | None = None


class Counters:
    """What clients sent through the proxy: written on the loop's thread, read on the test's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[ProxyConnection] = []
        self._statements: list[str] = []
        self._round_trips = 0
        self._accepted = 0

    @property
    def statements(self) -> list[str]:
        with self._lock:
            return list(self._statements)

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._round_trips

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def connections(self) -> list[ProxyConnection]:
        with self._lock:
            return list(self._connections)

    def reset(self) -> None:
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

    def accept(self, record: ProxyConnection) -> None:
        with self._lock:
            self._accepted += 1
            self._connections.append(record)

    def statement(self, record: ProxyConnection, sql: str) -> None:
        with self._lock:
            self._statements.append(sql)
            record.statements.append(sql)

    def round_trip(self, record: ProxyConnection) -> None:
        with self._lock:
            self._round_trips += 1
            record.round_trips += 1


class Session:
    """The proxy's side of one connection: both sockets and the protocol state between them."""

    def __init__(
        self,
        record: ProxyConnection,
        client: asyncio.StreamWriter,
        *,
        faults: Faults,
        counters: Counters,
        sessions: set[Session],
        proxy_port: int,
    ) -> None:
        self.record = record
        self.client = client
        self.faults = faults
        self.counters = counters
        #: The proxy's open sessions, which this one leaves when it ends.
        self.sessions = sessions
        self.proxy_port = proxy_port
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.conversation = Conversation(f"connection from port {record.client_port}")
        # ReadyForQuery bookkeeping, to find the reply that a swallow must drop.
        self.ready_expected = 0
        self.ready_seen = 0
        self.swallow: Swallow | None = None
        self.swallow_ready = 0
        self.silenced = False

    async def run(
        self, reader: asyncio.StreamReader, upstream_host: str, upstream_port: int
    ) -> None:
        """Connect to the server, then forward both ways until either side closes.

        It runs in the task that accepted the client, which then pumps the client's bytes;
        a second task pumps the server's.
        """
        try:
            upstream_reader, upstream = await asyncio.open_connection(
                upstream_host, upstream_port, limit=CHUNK_SIZE
            )
        except OSError as error:
            # As the client would see a server that is down: the connection refused.
            logger.warning(
                "proxy on port %d cannot reach %s:%d: %s",
                self.proxy_port,
                upstream_host,
                upstream_port,
                error,
            )
            self.end(reset=True)
            return
        if self.record.closed:  # reset_all() ran while we connected
            upstream.close()
            return
        self.upstream = upstream
        self.tasks = [
            asyncio.current_task(),  # type: ignore[list-item]
            asyncio.create_task(self._pump_backend(upstream_reader)),
        ]
        await self._pump_frontend(reader, upstream)

    # -- the frontend stream ---------------------------------------------------------------

    def read_frontend(self, data: bytes) -> None:
        """Count the client's statements and arm a swallow when one matches."""
        for request in self.conversation.client_sent(data):
            if request.sql is not None:
                self._statement(request.sql)
            if request.awaits_ready:
                self.ready_expected += 1
            if request.ends_round_trip:
                self.counters.round_trip(self.record)

    def _statement(self, sql: str) -> None:
        self.counters.statement(self.record, sql)
        swallow = self.faults.swallow
        if swallow is not None and self.swallow is None and swallow.pattern.search(sql):
            self.faults.swallow = None
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

    # -- the pumps -------------------------------------------------------------------------

    async def _pump_frontend(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        """Forward what the client sends to the server until either side closes."""
        try:
            while data := await reader.read(CHUNK_SIZE):
                await self._hold()
                if self.silenced:
                    continue
                self.read_frontend(data)
                upstream.write(data)
                await upstream.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        self.end(reset=False)

    async def _pump_backend(self, reader: asyncio.StreamReader) -> None:
        """Forward what the server sends to the client until either side closes."""
        client = self.client
        try:
            while data := await reader.read(CHUNK_SIZE):
                await self._hold()
                forward, swallowed = self.read_backend(data)
                if forward and self.faults.trickle:
                    for index in range(len(forward)):
                        await self._hold()  # a blackhole stops it mid-reply
                        client.write(forward[index : index + 1])
                        await client.drain()
                        await asyncio.sleep(self.faults.trickle)
                elif forward:
                    client.write(forward)
                    await client.drain()
                if swallowed:
                    self._finish_swallow()
                    return
        except OSError:
            pass
        except asyncio.CancelledError:
            return
        self.end(reset=False)

    async def _hold(self) -> None:
        """Wait out a blackhole and the latency before forwarding a chunk."""
        faults = self.faults
        assert faults.flowing is not None
        await faults.flowing.wait()
        if faults.latency:
            await asyncio.sleep(faults.latency)
            await faults.flowing.wait()

    def _finish_swallow(self) -> None:
        swallow = self.swallow
        assert swallow is not None
        if swallow.then == "reset":
            self.end(reset=True)
        else:
            # The client keeps an open, silent socket; the server's session ends.
            self.silenced = True
            if self.upstream is not None:
                self.upstream.close()
        logger.info(
            "proxy on port %d: swallowed a reply on the connection from port %d, then %s",
            self.proxy_port,
            self.record.client_port,
            swallow.then,
        )
        swallow.fired.set()

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
            abort_with_rst(self.client)
        else:
            self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.sessions.discard(self)


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close so that the peer gets an RST, as from a crashed host or a stateful firewall."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
