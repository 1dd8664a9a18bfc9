"""Which addresses a webhook may be sent to: public ones only.

A subscriber chooses the URL, so without this rule a webhook could be aimed at the platform's
own services, its database or the cloud's metadata endpoint (SSRF). The rule is applied to the
addresses a host name resolves to, not to the name: a name proves nothing about where it points.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Oracle):
# refused even when an allow-list admits their network, since they hand out credentials.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
))
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not global
# IPv6 ranges whose last 32 bits are an IPv4 address that a gateway may end up reaching.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """A comma-separated allow-list of networks ("127.0.0.1/32, ::1/128"); ValueError if malformed."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 one carries, and whether the IPv6 one merely translates it
    (IPv4-mapped, NAT64, IPv4-compatible) rather than tunnels to it (6to4, Teredo client)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, True
    if any(address in net for net in _NAT64) or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), True
    if address.sixtofour is not None:
        return address.sixtofour, False
    if address.teredo is not None:
        return address.teredo[1], False
    return None


def _category(address: IPAddress) -> str | None:
    """Why this address is not a public one; None when it is."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _SHARED_ADDRESS_SPACE:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a non-public address"
    return None


def refusal(text: str, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why a webhook must not be sent to the address `text`, or None when it may.

    `allowed` lets local development reach its own receivers (e.g. 127.0.0.1/32); it never
    admits a metadata address. An IPv6 address carrying an IPv4 one is judged as both."""
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and (embedded := embedded_ipv4(address)) is not None:
        inner, translated = embedded
        # A translation is judged by what it reaches; a tunnel by both of its ends.
        candidates = [inner] if translated else [inner, address]
    allowed = tuple(allowed)
    for candidate in candidates:
        if candidate in METADATA_ADDRESSES:
            return "a cloud metadata address"
    if any(candidate in network for candidate in candidates for network in allowed if candidate.version == network.version):
        return None
    for candidate in candidates:
        reason = _category(candidate)
        if reason is not None:
            return reason
    return None
