"""Where webhooks may go: the address rule, and the URL check that resolves and applies it."""

from __future__ import annotations

import httpx
import pytest

from reflexe_notify.adapters.webhook_http import TargetRefused, TargetUnresolved, WebhookGuard, describe_failure
from reflexe_notify.domain.addresses import parse_networks, refusal

REFUSED = [
    ("169.254.169.254", "a cloud metadata address"),  # AWS, GCP, Azure, OpenStack
    ("169.254.170.2", "a cloud metadata address"),  # AWS ECS task credentials
    ("fd00:ec2::254", "a cloud metadata address"),  # AWS over IPv6
    ("100.100.100.200", "a cloud metadata address"),  # Alibaba
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("127.0.0.1", "a loopback address"),
    ("127.255.255.254", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped IPv6
    ("::127.0.0.1", "a loopback address"),  # IPv4-compatible IPv6
    ("64:ff9b::7f00:1", "a loopback address"),  # NAT64 of 127.0.0.1
    ("2002:7f00:1::1", "a loopback address"),  # 6to4 of 127.0.0.1
    ("10.0.0.1", "a private address"),
    ("10.255.255.255", "a private address"),
    ("172.16.0.1", "a private address"),
    ("172.31.255.254", "a private address"),
    ("192.168.0.1", "a private address"),
    ("::ffff:10.1.2.3", "a private address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("ff0e::1", "a multicast address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("100.127.255.254", "a shared (carrier-grade NAT) address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("192.0.2.10", "a private address"),  # documentation range: not routable
    ("2001:db8::1", "a private address"),
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
          "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_public_addresses_are_refused_with_their_category(address: str, reason: str) -> None:
    assert refusal(address) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def test_the_allow_list_admits_its_networks_only_and_never_a_metadata_address() -> None:
    local = parse_networks("127.0.0.1/32, ::1")
    assert refusal("127.0.0.1", local) is None
    assert refusal("::ffff:127.0.0.1", local) is None  # the same address, mapped
    assert refusal("::1", local) is None
    assert refusal("127.0.0.2", local) == "a loopback address"
    assert refusal("10.0.0.1", local) == "a private address"
    assert refusal("169.254.169.254", parse_networks("169.254.0.0/16")) == "a cloud metadata address"
    assert refusal("169.254.1.1", parse_networks("169.254.0.0/16")) is None
    with pytest.raises(ValueError):
        parse_networks("127.0.0.1/33")


class ScriptedResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


async def test_only_https_unless_plain_http_is_allowed() -> None:
    resolver = ScriptedResolver({"hooks.example.org": ["93.184.216.34"]})
    strict = WebhookGuard(resolver=resolver)
    target = await strict.check("https://hooks.example.org/in")
    assert (target.host, target.port, target.address) == ("hooks.example.org", 443, "93.184.216.34")
    for url in ("http://hooks.example.org/in", "ftp://hooks.example.org/", "file:///etc/passwd", "gopher://x/"):
        with pytest.raises(TargetRefused, match="only https URLs are accepted"):
            await strict.check(url)
    relaxed = WebhookGuard(allow_insecure=True, resolver=resolver)
    assert (await relaxed.check("http://hooks.example.org:8080/in")).port == 8080
    with pytest.raises(TargetRefused, match="only https"):
        await relaxed.check("ftp://hooks.example.org/")


async def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    resolver = ScriptedResolver({"mixed.example.org": ["93.184.216.34", "10.0.0.7"],
                                 "internal.example.org": ["fd00::5"],
                                 "metadata.example.org": ["169.254.169.254"]})
    guard = WebhookGuard(resolver=resolver)
    with pytest.raises(TargetRefused, match="^the host resolves to a private address$"):
        await guard.check("https://mixed.example.org/")
    with pytest.raises(TargetRefused, match="private address"):
        await guard.check("https://internal.example.org/")
    with pytest.raises(TargetRefused, match="metadata"):
        await guard.check("https://metadata.example.org/")
    with pytest.raises(TargetUnresolved):
        await guard.check("https://nowhere.example.org/")
    assert ("mixed.example.org", 443) in resolver.asked


@pytest.mark.parametrize("url", [
    "https://localhost/",  # a name that resolves to 127.0.0.1
    "https://127.0.0.1:8001/v1",
    "https://[::1]/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1]/",
    "https://2130706433/",  # 127.0.0.1 in decimal
    "https://0177.0.0.1/",  # in octal
    "https://0x7f.1/",  # in hexadecimal, shortened
    "https://0/",  # 0.0.0.0
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/", "https://10.0.0.1/", "https://192.168.1.1/", "https://172.16.0.1/",
])
async def test_internal_targets_are_refused_through_the_system_resolver(url: str) -> None:
    # httpx refuses some numeric spellings outright (the API has normalised them to dotted quads
    # before: pydantic's URL parser follows the WHATWG rules); either way nothing is sent there.
    with pytest.raises(TargetRefused, match="^(the host resolves to |not a valid URL$)"):
        await WebhookGuard().check(url)


async def test_a_refusal_never_names_the_address() -> None:
    resolver = ScriptedResolver({"rebind.example.org": ["10.11.12.13"]})
    with pytest.raises(TargetRefused) as refused:
        await WebhookGuard(resolver=resolver).check("https://rebind.example.org/")
    assert "10.11.12.13" not in str(refused.value)


def test_failures_are_described_without_repeating_the_receiver() -> None:
    request = httpx.Request("POST", "https://hooks.example.org/")
    leaky = "HTTP/1.1 200 OK\r\nX-Secret: internal-token"
    assert describe_failure(httpx.RemoteProtocolError(leaky, request=request)) == "the receiver broke the HTTP protocol"
    assert describe_failure(httpx.ConnectError(leaky, request=request)) == "could not connect"
    assert describe_failure(httpx.ReadTimeout(leaky, request=request)) == "no answer in time"
    assert leaky not in describe_failure(httpx.DecodingError(leaky, request=request))
