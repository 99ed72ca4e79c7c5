"""Just enough of the PostgreSQL wire protocol to follow a session from the middle of it.

The fault proxy forwards bytes unchanged; this module tells it what those bytes mean: which
statement a client ran (a simple Query, or an Execute of what a Parse prepared), which
messages will be answered with a ReadyForQuery, and where each server message ends, so a
whole reply can be dropped. An encrypted session cannot be read and is passed through.

References: PostgreSQL documentation, "Frontend/Backend Protocol", "Message Flow" and
"Message Formats". Standard library only.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

logger = logging.getLogger("django_postgresql_reconnect.testing")

# The untyped first messages of a session, told apart by a request code: StartupMessage
# carries the protocol version instead.
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
#: The first byte of a TLS record: PostgreSQL 17 clients with sslnegotiation=direct start so.
TLS_HANDSHAKE = 0x16
#: The server's one-byte answer that declines an SSLRequest or GSSENCRequest.
DECLINED = ord("N")
#: The server message that ends every reply: the session is ready for the next command.
READY_FOR_QUERY = ord("Z")

#: CopyInResponse and CopyBothResponse: the server waits for data instead of a command.
_COPY_IN_RESPONSES = frozenset(b"GW")
#: Frontend messages that the server answers, eventually, with one ReadyForQuery.
_READY_FOR_QUERY_CAUSES = frozenset(b"QSF")
#: Of those, the ones a client sends to end a round trip (FunctionCall is one on its own).
_ROUND_TRIP_ENDS = frozenset(b"QS")


@dataclass(frozen=True)
class ClientRequest:
    """What one frontend message asks of the server, as far as the proxy cares."""

    #: The SQL run by a Query, or by an Execute (the statement its portal's Parse carried).
    sql: str | None
    #: Whether the server will answer it with a ReadyForQuery (StartupMessage, Query, Sync,
    #: FunctionCall).
    awaits_ready: bool
    #: Whether it ends a round trip that the client waits on (Query, Sync).
    ends_round_trip: bool


@dataclass(frozen=True)
class ServerChunk:
    """Bytes from the server to pass on: one whole message, an answer byte, or opaque data."""

    data: bytes
    is_ready_for_query: bool = False
    #: A CopyInResponse (or CopyBothResponse): the server now waits for the client's data,
    #: so this ends its reply to the COPY statement as a ReadyForQuery would.
    awaits_copy_data: bool = False


class Conversation:
    """Both directions of one session, parsed as they pass; ``label`` names it in the log."""

    def __init__(self, label: str) -> None:
        self.label = label
        # Frontend parsing: "startup" (untyped messages), "answer" (waiting for the server's
        # one-byte reply to SSLRequest/GSSENCRequest), "typed", or "opaque" (encrypted).
        self.phase = "startup"
        self._front = bytearray()
        self._back = bytearray()
        self._awaiting_answer = False
        # Extended protocol: statement name -> SQL, portal name -> SQL.
        self._prepared: dict[str, str] = {}
        self._portals: dict[str, str] = {}

    def client_sent(self, data: bytes) -> list[ClientRequest]:
        """Parse bytes from the client; return a request for each message they completed."""
        if self.phase == "opaque":
            return []
        self._front += data
        buffer = self._front
        requests: list[ClientRequest] = []
        while True:
            if self.phase == "startup":
                if buffer and buffer[0] == TLS_HANDSHAKE:
                    self._go_opaque("direct TLS")
                    return requests
                if len(buffer) < 8:
                    return requests
                length, code = struct.unpack_from("!ii", buffer)
                if len(buffer) < length:
                    return requests
                del buffer[:length]
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    self.phase = "answer"
                    self._awaiting_answer = True
                elif code == CANCEL_REQUEST:
                    self.phase = "opaque"
                    return requests
                else:
                    self.phase = "typed"
                    # Answered with a ReadyForQuery once authentication is done.
                    requests.append(ClientRequest(None, awaits_ready=True, ends_round_trip=False))
            elif self.phase == "typed":
                if len(buffer) < 5:
                    return requests
                kind = buffer[0]
                (length,) = struct.unpack_from("!i", buffer, 1)
                if len(buffer) < 1 + length:
                    return requests
                body = bytes(buffer[5 : 1 + length])
                del buffer[: 1 + length]
                request = self._frontend_message(kind, body)
                if request is not None:
                    requests.append(request)
            else:  # waiting for the server's answer; a well-behaved client sends nothing
                return requests

    def server_sent(self, data: bytes) -> list[ServerChunk]:
        """Parse bytes from the server; return what they completed, in order."""
        if self.phase == "opaque":
            return [ServerChunk(data)] if data else []
        self._back += data
        buffer = self._back
        chunks: list[ServerChunk] = []
        while True:
            if self._awaiting_answer:
                if not buffer:
                    return chunks
                answer = buffer[0]
                del buffer[:1]
                chunks.append(ServerChunk(bytes([answer])))
                self._awaiting_answer = False
                if answer == DECLINED:
                    self.phase = "startup"
                    continue
                self._go_opaque(f"server answered {chr(answer)!r} to an encryption request")
                if buffer:
                    chunks.append(ServerChunk(bytes(buffer)))
                    buffer.clear()
                return chunks
            if len(buffer) < 5:
                return chunks
            (length,) = struct.unpack_from("!i", buffer, 1)
            if len(buffer) < 1 + length:
                return chunks
            message = bytes(buffer[: 1 + length])
            del buffer[: 1 + length]
            chunks.append(
                ServerChunk(
                    message,
                    is_ready_for_query=message[0] == READY_FOR_QUERY,
                    awaits_copy_data=message[0] in _COPY_IN_RESPONSES,
                )
            )

    def discard_unparsed(self) -> None:
        """Forget server bytes not yet returned (the rest of a reply being dropped)."""
        self._back.clear()

    def _frontend_message(self, kind: int, body: bytes) -> ClientRequest | None:
        sql: str | None = None
        if kind == ord("Q"):
            sql = cstring(body, 0)[0]
        elif kind == ord("P"):
            name, offset = cstring(body, 0)
            self._prepared[name] = cstring(body, offset)[0]
        elif kind == ord("B"):
            portal, offset = cstring(body, 0)
            statement = cstring(body, offset)[0]
            self._portals[portal] = self._prepared.get(statement, "")
        elif kind == ord("E"):
            sql = self._portals.get(cstring(body, 0)[0], "")
        elif kind == ord("C") and body[:1] == b"S":
            self._prepared.pop(cstring(body, 1)[0], None)
        awaits_ready = kind in _READY_FOR_QUERY_CAUSES
        if sql is None and not awaits_ready:
            return None
        return ClientRequest(sql, awaits_ready, ends_round_trip=kind in _ROUND_TRIP_ENDS)

    def _go_opaque(self, reason: str) -> None:
        logger.info("%s is encrypted (%s): no more counting", self.label, reason)
        self.phase = "opaque"
        self._front.clear()


def cstring(data: bytes, offset: int) -> tuple[str, int]:
    """Read a NUL-terminated string; return it and the offset after its NUL."""
    end = data.find(b"\0", offset)
    if end < 0:
        end = len(data)
    return data[offset:end].decode("utf-8", "replace"), end + 1
