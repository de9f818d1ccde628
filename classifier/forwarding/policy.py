"""Which addresses forwarding may connect to: the server-side request forgery (SSRF) policy.

A ``server=custom`` request names the URL this server connects to, so without a policy the
server would be a proxy into its own network: cloud metadata services, link-local hosts.
The URL is checked up front for a clear 400 (``check_url``), and every connection again at
the moment it is made (``GuardedConnection``), so DNS that answers differently a moment
later (rebinding) still cannot reach a forbidden address. The CLI's ``--remote`` is the
user's own choice and is not held to this policy.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from urllib3.exceptions import NameResolutionError

from classifier.errors import RemoteNotAllowed

# Never connected to, however the address is written. Loopback and private ranges stay
# allowed: a remote instance on the same host or network is the normal case.
_FORBIDDEN_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8",            # "this host": 0.0.0.0 reaches loopback
    "::/128",               # the same for IPv6 ([::])
    "169.254.0.0/16",       # link-local: AWS, GCP, Azure, Oracle, OpenStack... metadata at 169.254.169.254
    "fe80::/10",            # IPv6 link-local
    "fd00:ec2::254/128",    # AWS metadata over IPv6
    "fd20:ce::254/128",     # Google Cloud metadata over IPv6
    "100.100.100.200/32",   # Alibaba Cloud metadata
    "168.63.129.16/32",     # Azure WireServer
    "192.0.0.192/32",       # Oracle Cloud metadata
))
# IPv6 prefixes whose last 32 bits are an IPv4 address the packet is really meant for.
_IPV4_IN_LAST_32_BITS = tuple(ipaddress.ip_network(net) for net in (
    "::/96",                # IPv4-compatible (::a.b.c.d, deprecated but still parsed)
    "::ffff:0:0/96",        # IPv4-mapped
    "::ffff:0:0:0/96",      # IPv4-translated (SIIT)
    "64:ff9b::/96",         # NAT64, well-known prefix
))
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # NAT64 local use: prefix /48 to /96


def check_url(url: str) -> None:
    """Refuse URLs that could make this server a proxy into its own network.

    This gives the requester a clear 400 up front; the connection itself is checked again
    (``GuardedConnection``), so a name that resolves differently a moment later
    (DNS rebinding) still cannot reach a forbidden address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RemoteNotAllowed("Remote URLs must use http or https.")
    if parts.username is not None or parts.password is not None:
        raise RemoteNotAllowed("Remote URLs must not carry credentials.")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        if not host:
            raise RemoteNotAllowed("The remote URL has no host.")
        allowed_address(host, port)
    except (socket.gaierror, UnicodeError, ValueError):
        raise RemoteNotAllowed(f"The remote URL {url!r} has no host that can be resolved.") from None


def allowed_address(host: str, port: int) -> str:
    """Resolve ``host`` and return the address to connect to, refusing forbidden ones.

    If any address the name resolves to is forbidden, the name is refused as a whole:
    picking a "good" one would let an attacker's DNS decide where we connect.
    """
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    for address in addresses:
        if _is_forbidden(ipaddress.ip_address(address.split("%", 1)[0])):
            raise RemoteNotAllowed(
                f"The remote host {host!r} resolves to {address}, an address this server never "
                "forwards to (unspecified, link-local or a cloud metadata service)."
            )
    return addresses[0]


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address``, or an IPv4 address it carries inside (IPv6 transition forms), is forbidden."""
    return any(candidate in net for candidate in _meant_addresses(address) for net in _FORBIDDEN_NETWORKS)


def _meant_addresses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """``address`` and every IPv4 address a tunnel or translator would deliver it to."""
    if address.version == 4 or address.is_loopback:  # ::1 is not "IPv4-compatible 0.0.0.1"
        return [address]
    embedded = []
    if any(address in net for net in _IPV4_IN_LAST_32_BITS):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:
        embedded += [_rfc6052_ipv4(int(address), prefix) for prefix in (48, 56, 64, 96)]
    if address.sixtofour:
        embedded.append(address.sixtofour)
    if address.teredo:
        embedded.extend(address.teredo)  # (server, client): the client is where packets go
    return [address, *embedded]


def _rfc6052_ipv4(value: int, prefix: int) -> ipaddress.IPv4Address:
    """The IPv4 address after a NAT64 ``prefix`` (RFC 6052 §2.2: bits 64-71 are skipped)."""
    bits = f"{value:0128b}"
    if prefix == 96:
        return ipaddress.IPv4Address(int(bits[96:], 2))
    without_u_octet = bits[:64] + bits[72:]
    return ipaddress.IPv4Address(int(without_u_octet[prefix:prefix + 32], 2))


class GuardedConnection:
    """Mixed into a urllib3 connection: connects only to the address it has just resolved and
    checked (no second lookup)."""

    def _new_conn(self) -> socket.socket:
        try:
            self._dns_host = allowed_address(self._dns_host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        return super()._new_conn()
