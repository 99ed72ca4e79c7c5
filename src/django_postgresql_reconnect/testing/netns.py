"""A network path to PostgreSQL that can lose packets without a word, as a dead NAT does.

A proxy can only close or stall a socket it owns; it cannot make a kernel's TCP connection
go silent. ``SilentLink`` puts the server in its own network namespace behind a veth pair and
drops packets with nftables at the ingress of each end, before any stack sees them: no RST,
no FIN, no ICMP. The client then learns of the loss only from its own timeouts (TCP
retransmission, ``tcp_user_timeout``, keepalives), which is the case this package must handle.

Root only. Standard library only, plus the ``ip`` and ``nft`` commands. Addresses come from
198.18.0.0/15, the range set aside for benchmarks (RFC 2544), so no real traffic is caught.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import logging
import os
import shutil
import subprocess
from typing import Any

from . import _privileges
from ._binaries import find_program
from ._lifecycle import LabTool, close_once
from .errors import SilentLinkError
from .server import PostgresServer

__all__ = ["SilentLink", "SilentLinkError"]

logger = logging.getLogger("django_postgresql_reconnect.testing")

#: The benchmark range (RFC 2544), cut into /30 links: one address per end.
NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
LINK_PREFIX = 30
SLOTS = NETWORK.num_addresses // 4
#: The server's port inside the namespace, where nothing else listens.
SERVER_PORT = 5432
#: Seconds any one ip or nft command may take.
COMMAND_TIMEOUT = 30
#: The nftables chain that every rule goes in, one per table.
CHAIN = "ingress"

_counter = itertools.count(1)


class SilentLink(LabTool):
    """A veth link into a network namespace whose packets a test can make vanish.

    >>> with SilentLink() as link:
    ...     server = link.start_server()
    ...     link.drop_all()  # clients now wait on their own timeouts
    """

    def __init__(self) -> None:
        if not _privileges.is_root():
            raise PermissionError(
                "SilentLink needs root: network namespaces, veth links and nftables are "
                "privileged; run as root, or deselect these tests with -m 'not root'"
            )
        self.namespace = f"dpr-link-{os.getpid()}-{next(_counter)}"
        self._slot: int | None = None
        self._server: PostgresServer | None = None
        self._ip = ""
        self._nft = ""
        self._made_namespace = False
        self._closed = False

    # -- names and addresses ---------------------------------------------------------------

    @property
    def host(self) -> str:
        """The server's address, inside the namespace."""
        return str(self._address(2))

    @property
    def port(self) -> int:
        return SERVER_PORT

    @property
    def client_address(self) -> str:
        """The address of the host's end of the link, from which clients connect."""
        return str(self._address(1))

    @property
    def host_interface(self) -> str:
        return f"dpr{self._require_slot()}h"

    @property
    def namespace_interface(self) -> str:
        return f"dpr{self._require_slot()}n"

    @property
    def table(self) -> str:
        """The nftables table's name, the same on the host and in the namespace."""
        return f"dpr_link_{self._require_slot()}"

    @property
    def server(self) -> PostgresServer | None:
        return self._server

    def _require_slot(self) -> int:
        if self._slot is None:
            raise SilentLinkError("the link is not set up: call start() first")
        return self._slot

    def _address(self, offset: int) -> ipaddress.IPv4Address:
        return NETWORK.network_address + 4 * self._require_slot() + offset

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Make the namespace, the veth pair, their addresses and an accepting nft chain."""
        if self._closed:
            raise SilentLinkError("this SilentLink was closed; make a new one")
        if self._slot is not None:
            return
        self._ip = _find_command("ip", package="iproute2")
        self._nft = _find_nft()
        atexit.register(self.close)
        try:
            self._run(self._ip, "netns", "add", self.namespace)
            self._made_namespace = True
            self._slot = self._claim_slot()
            host_if, ns_if = self.host_interface, self.namespace_interface
            self._run(
                self._ip, "addr", "add", f"{self.client_address}/{LINK_PREFIX}", "dev", host_if
            )
            self._run(self._ip, "link", "set", host_if, "up")
            self._run_inside(self._ip, "addr", "add", f"{self.host}/{LINK_PREFIX}", "dev", ns_if)
            self._run_inside(self._ip, "link", "set", ns_if, "up")
            self._run_inside(self._ip, "link", "set", "lo", "up")
            # Ingress at each end: the host's end sees what the server sends, the
            # namespace's end what clients send. Dropping there beats any stack to it.
            self._nft_script(self._table_script(host_if), inside=False)
            self._nft_script(self._table_script(ns_if), inside=True)
        except BaseException:
            self.close()
            raise
        logger.info(
            "silent link %s up: %s <-> %s (%s/%s)",
            self.namespace,
            self.client_address,
            self.host,
            self.host_interface,
            self.namespace_interface,
        )

    def setup(self) -> None:
        """The same as ``start()`` (its name before the tools shared their verbs)."""
        self.start()

    def start_server(self, **kwargs: Any) -> PostgresServer:
        """Start a PostgresServer inside the namespace, listening on ``host:port``."""
        self.start()
        if self._server is not None:
            raise SilentLinkError("this link already has a server; close() it first")
        server = PostgresServer(netns=self.namespace, host=self.host, port=SERVER_PORT, **kwargs)
        self._server = server
        server.start()
        return server

    @close_once
    def close(self) -> None:
        """Stop the server and delete every table, link and namespace made; safe twice."""
        if self._server is not None:
            try:
                self._server.close()
            except Exception:
                logger.exception("silent link %s: could not close its server", self.namespace)
        if self._slot is not None:
            # The namespace's own table goes with the namespace; the host's does not.
            self._run(self._nft, "delete", "table", "netdev", self.table, check=False)
        if self._made_namespace:
            self._run(self._ip, "netns", "delete", self.namespace, check=False)
        if self._slot is not None and self._link_exists(self.host_interface):
            # Deleting the namespace takes the veth pair along unless a process still
            # holds the namespace; delete the host's end for sure.
            self._run(self._ip, "link", "delete", self.host_interface, check=False)
        logger.info("silent link %s removed", self.namespace)

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._slot is not None else "not set up"
        return f"<SilentLink {self.namespace} {where}>"

    # -- faults ----------------------------------------------------------------------------

    def drop_all(self) -> None:
        """Drop every IP packet in both directions, silently, until ``heal()``.

        ARP still passes: a failed neighbour lookup would report "no route to host" to
        the client's socket, which a vanished path does not.
        """
        self._set_rules("meta protocol { ip, ip6 } drop")
        logger.info("silent link %s: dropping everything", self.namespace)

    def drop_flow(self, client_port: int) -> None:
        """Drop the packets of one TCP connection, both ways; other connections still work.

        This is a NAT or firewall that forgot one flow. Calls add up.
        """
        if not 0 < client_port < 65536:
            raise ValueError(f"not a TCP port: {client_port}")
        self._add_rules(f"tcp sport {client_port} drop", f"tcp dport {client_port} drop")
        logger.info("silent link %s: dropping the flow from port %d", self.namespace, client_port)

    def heal(self) -> None:
        """Let every packet through again. Connections that timed out stay dead."""
        self._set_rules()
        logger.info("silent link %s: healed", self.namespace)

    # -- internals -------------------------------------------------------------------------

    def _claim_slot(self) -> int:
        """Create the veth pair in a free /30 slot; another process may race us for it."""
        start = (os.getpid() * 131 + next(_counter)) % SLOTS
        for attempt in range(64):
            slot = (start + attempt * 7919) % SLOTS
            names = (f"dpr{slot}h", f"dpr{slot}n")
            if any(self._link_exists(name) for name in names) or self._address_taken(slot):
                continue
            result = self._run(
                self._ip,
                "link",
                "add",
                names[0],
                "type",
                "veth",
                "peer",
                "name",
                names[1],
                "netns",
                self.namespace,
                check=False,
            )
            if result.returncode == 0:
                return slot
            if "exists" not in result.stderr:
                raise SilentLinkError(f"could not create veth {names[0]}: {result.stderr.strip()}")
        raise SilentLinkError("no free 198.18.0.0/15 link slot after 64 tries")

    def _address_taken(self, slot: int) -> bool:
        network = ipaddress.IPv4Network((int(NETWORK.network_address) + 4 * slot, LINK_PREFIX))
        output = self._run(self._ip, "-o", "-4", "addr", "show", check=False).stdout
        for line in output.splitlines():
            fields = line.split()
            if "inet" in fields:
                address = fields[fields.index("inet") + 1].split("/")[0]
                if ipaddress.IPv4Address(address) in network:
                    return True
        return False

    def _link_exists(self, name: str) -> bool:
        return self._run(self._ip, "link", "show", "dev", name, check=False).returncode == 0

    def _table_script(self, interface: str) -> str:
        return (
            f"table netdev {self.table} {{\n"
            f"  chain {CHAIN} {{\n"
            f'    type filter hook ingress device "{interface}" priority 0; policy accept;\n'
            "  }\n"
            "}\n"
        )

    def _set_rules(self, *rules: str) -> None:
        """Replace the rules at both ends, atomically at each end."""
        self._require_slot()
        script = f"flush chain netdev {self.table} {CHAIN}\n" + "".join(
            f"add rule netdev {self.table} {CHAIN} {rule}\n" for rule in rules
        )
        for inside in (False, True):
            self._nft_script(script, inside=inside)

    def _add_rules(self, *rules: str) -> None:
        self._require_slot()
        script = "".join(f"add rule netdev {self.table} {CHAIN} {rule}\n" for rule in rules)
        for inside in (False, True):
            self._nft_script(script, inside=inside)

    def _nft_script(self, script: str, *, inside: bool) -> None:
        command = (self._ip, "netns", "exec", self.namespace) if inside else ()
        self._run(*command, self._nft, "-f", "-", stdin=script)

    def _run_inside(self, *command: str) -> None:
        self._run(self._ip, "netns", "exec", self.namespace, *command)

    def _run(
        self, *command: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            if check:
                raise SilentLinkError(f"{' '.join(command)} failed: {error}") from error
            return subprocess.CompletedProcess(command, 1, "", str(error))
        if check and result.returncode != 0:
            detail = result.stderr.strip() or result.stdout.strip()
            raise SilentLinkError(
                f"{' '.join(command)} exited {result.returncode}: {detail}"
                + (f"\n--- input ---\n{stdin}" if stdin else "")
            )
        return result


def _find_command(name: str, *, package: str) -> str:
    found = find_program(name)
    if found is None:
        raise SilentLinkError(f"SilentLink needs `{name}`: install it (apt-get install {package})")
    return str(found)


def _find_nft() -> str:
    """Find nft, installing Debian's nftables package if it is missing (we are root)."""
    with contextlib.suppress(SilentLinkError):
        return _find_command("nft", package="nftables")
    apt = shutil.which("apt-get")
    if apt is None:
        raise SilentLinkError("SilentLink needs `nft`: install nftables with your package manager")
    logger.warning("nft not found: installing nftables with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "nftables"]
    for step in ([install], [[apt, "update"], install]):
        for command in step:
            result = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=600, check=False
            )
        if result.returncode == 0:
            break
    with contextlib.suppress(SilentLinkError):
        return _find_command("nft", package="nftables")
    raise SilentLinkError(
        "SilentLink needs `nft`, and `apt-get install nftables` failed: "
        + (result.stderr.strip().splitlines() or ["no output"])[-1]
    )
