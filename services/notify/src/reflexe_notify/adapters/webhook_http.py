"""Webhooks go only where they may: checked URL, checked addresses, and the connection made to
the very address that was checked.

`WebhookGuard.check` resolves the URL's host once and refuses it when any address it resolves to
is not public (domain/addresses.py), or when the URL is plain http while only https is allowed.
It runs when a subscription is made and again before every delivery (a name may be re-pointed
after it was accepted: DNS rebinding).

`post` then sends over `PinnedTransport`, whose connections go to the address `check` returned,
not to a second DNS answer: the host name stays in the URL, so the Host header, the TLS SNI and
the certificate check all use the name while the socket goes to the checked address. Connection
pools are kept per host name, as usual. A connection is never opened for a host without a checked
address; a connection goes back to its host's pool only once its answer was read. Redirects are not followed (the client is built with follow_redirects=False and no
proxies from the environment), and the receiver's answer body is read (a little) and dropped,
never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import httpcore
import httpx

from reflexe_notify.domain.addresses import IPNetwork, refusal

# (host, port) → the addresses it resolves to. Injectable: tests simulate DNS rebinding with it.
Resolver = Callable[[str, int], Awaitable[list[str]]]
RESOLVE_TIMEOUT_SECONDS = 5.0
MAX_ANSWER_BYTES = 64 * 1024  # read to keep the connection reusable; more is not worth reading


async def system_resolver(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # an address already: no lookup (nor thread hop)
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class TargetRefused(Exception):
    """The URL may not receive webhooks. The message is safe to show and to log: it names a
    category of address, never the address, nor anything the target answered."""


class TargetUnresolved(Exception):
    """The host has no address right now (may be temporary)."""


@dataclass(frozen=True)
class Target:
    url: str
    host: str  # as the connection pool sees it: IDNA-encoded, lower case, IPv6 without brackets
    port: int
    addresses: tuple[str, ...]  # the checked addresses, in the resolver's order of preference

    @property
    def address(self) -> str:
        return self.addresses[0]


class WebhookGuard:
    def __init__(self, *, allow_insecure: bool = False, allowed_networks: Iterable[IPNetwork] = (),
                 resolver: Resolver = system_resolver, resolve_timeout: float = RESOLVE_TIMEOUT_SECONDS) -> None:
        self._allow_insecure = allow_insecure
        self._allowed = tuple(allowed_networks)
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout

    def check_scheme(self, url: str) -> httpx.URL:
        try:
            parsed = _parsed(url)
        except httpx.InvalidURL:
            raise TargetRefused("not a valid URL") from None
        if parsed.scheme == "https" or (parsed.scheme == "http" and self._allow_insecure):
            if not parsed.raw_host:
                raise TargetRefused("the URL has no host")
            return parsed
        raise TargetRefused("only https URLs are accepted")

    async def check(self, url: str) -> Target:
        """The address to send to; TargetRefused or TargetUnresolved otherwise."""
        parsed = self.check_scheme(url)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self._resolve_timeout):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError, UnicodeError):
            raise TargetUnresolved("the host does not resolve") from None
        if not addresses:
            raise TargetUnresolved("the host does not resolve")
        # Every address must pass, not just one: the connection must not pick an internal one.
        for address in addresses:
            try:
                reason = refusal(address, self._allowed)
            except ValueError:
                reason = "an unparsable address"
            if reason is not None:
                raise TargetRefused(f"the host resolves to {reason}")
        return Target(url=url, host=host, port=port, addresses=tuple(addresses))


# The target of the attempt under way in this task; the network backend connects only to it.
_pinned: ContextVar[Target | None] = ContextVar("webhook_target", default=None)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.AsyncNetworkStream:
        target = _pinned.get()
        if target is None or target.host != host or target.port != port:
            raise httpcore.ConnectError("refused: no checked address for this host")
        failure: Exception | None = None
        for address in target.addresses:  # the next checked one when one is unreachable (no IPv6 route...)
            try:
                return await self._network.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # a Target always has an address
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("refused: webhooks do not go to local sockets")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


# httpcore's exceptions as httpx's, most specific first (what httpx's own transport does).
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException), (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError), (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError), (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError), (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request | None = None) -> Iterator[None]:
    try:
        yield
    except tuple(core for core, _ in _EXCEPTIONS) as exc:
        mapped = next(ours for core, ours in _EXCEPTIONS if isinstance(exc, core))
        raise mapped(str(exc), request=request) from exc


class _Origin:
    """The kept-alive connections to one origin (scheme, host, port) and the bound on those open."""

    def __init__(self, limit: int) -> None:
        self.idle: list[httpcore.AsyncHTTPConnection] = []
        self.slots = asyncio.Semaphore(limit)


class _ResponseStream(httpx.AsyncByteStream):
    """The answer's body; closing it gives the connection back to its origin (or closes it)."""

    def __init__(self, stream: AsyncIterable[bytes], release: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                with _as_httpx_errors():
                    await self._stream.aclose()
        finally:
            await self._release()


class PinnedTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with kept-alive connections, made to the checked address only.

    Its own small pool rather than httpcore's: that one scans every connection (and asks each
    socket whether it was closed) for every request queued, a cost that grows with the square of
    the concurrency and capped deliveries at a few hundred per second. Here each origin keeps a
    stack of idle connections and at most `limits.max_connections` open at once (a slow receiver
    holds its own connections, not everyone's)."""

    def __init__(self, limits: httpx.Limits | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        limits = limits or httpx.Limits()
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._per_origin = limits.max_connections or 100
        self._keepalive = limits.max_keepalive_connections if limits.max_keepalive_connections is not None \
            else self._per_origin
        self._keepalive_expiry = limits.keepalive_expiry
        self._network = _PinnedBackend()
        self._origins: dict[tuple[bytes, bytes, int], _Origin] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions,
        )
        with _as_httpx_errors(request):
            response, release = await self._send(url.raw_scheme, url.raw_host, url.port, core_request)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(response.stream, release), extensions=response.extensions)

    async def post(self, url: str, content: bytes, headers: list[tuple[bytes, bytes]],
                   timeouts: Mapping[str, float]) -> int:
        """The webhooks' short path, without httpx's models: POST, read a little of the answer
        (dropped), the connection kept for the next one; the HTTP status. Errors are httpx's."""
        scheme, host, port, path, netloc = _parts(url)
        request = httpcore.Request(
            b"POST", httpcore.URL(scheme=scheme, host=host, port=port, target=path),
            headers=[(b"Host", netloc), (b"Content-Length", str(len(content)).encode()), *headers],
            content=content, extensions={"timeout": timeouts},
        )
        with _as_httpx_errors():
            response, release = await self._send(scheme, host, port, request)
            try:
                read = 0
                async for chunk in response.stream:  # dropped: an internal answer must not leak
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break  # the connection is closed rather than drained
                await response.aclose()
            finally:
                await release()
        return response.status

    async def _send(self, scheme: bytes, host: bytes, port: int | None,
                    request: httpcore.Request) -> tuple[httpcore.Response, Callable[[], Awaitable[None]]]:
        """The answer's head, and what gives its connection back once its body was read."""
        origin_key = (scheme, host, port or (443 if scheme == b"https" else 80))
        origin = self._origins.get(origin_key)
        if origin is None:
            origin = self._origins[origin_key] = _Origin(self._per_origin)
        await origin.slots.acquire()
        connection: httpcore.AsyncHTTPConnection | None = None
        try:
            connection = await self._idle_connection(origin)
            if connection is None:
                connection = httpcore.AsyncHTTPConnection(
                    origin=httpcore.Origin(*origin_key), ssl_context=self._ssl_context,
                    keepalive_expiry=self._keepalive_expiry, network_backend=self._network)
            response = await connection.handle_async_request(request)
        except BaseException:
            origin.slots.release()
            if connection is not None:
                await connection.aclose()
            raise
        used = connection

        async def release() -> None:
            origin.slots.release()
            if used.is_idle() and len(origin.idle) < self._keepalive:
                origin.idle.append(used)
            else:
                await used.aclose()

        return response, release

    @staticmethod
    async def _idle_connection(origin: _Origin) -> httpcore.AsyncHTTPConnection | None:
        """The most recently used connection still open (the receiver may have closed others)."""
        while origin.idle:
            connection = origin.idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def aclose(self) -> None:
        origins, self._origins = self._origins, {}
        for origin in origins.values():
            for connection in origin.idle:
                await connection.aclose()


class WebhookClient(httpx.AsyncClient):
    """httpx's client over the pinned transport, whose short path `post` takes."""

    def __init__(self, transport: PinnedTransport, timeout: float, headers: Mapping[str, str]) -> None:
        # trust_env=False: a proxy from the environment would make its own DNS lookup (no pinning).
        super().__init__(transport=transport, follow_redirects=False, trust_env=False, headers=dict(headers),
                         timeout=timeout)
        self.pinned = transport
        self.default_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


def webhook_client(limits: httpx.Limits, timeout: float, headers: Mapping[str, str],
                   ssl_context: ssl.SSLContext | None = None) -> WebhookClient:
    return WebhookClient(PinnedTransport(limits, ssl_context), timeout, headers)


async def post(client: WebhookClient, target: Target, content: bytes, headers: Mapping[str, str]) -> int:
    """POST to the checked target; its HTTP status. Redirects are answers, not followed."""
    token = _pinned.set(target)
    try:
        return await client.pinned.post(target.url, content, [
            *client.default_headers, *((k.encode(), v.encode()) for k, v in headers.items())], client.timeouts)
    finally:
        _pinned.reset(token)


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> httpx.URL:
    """A URL parsed once: a few receivers take every webhook, and parsing each attempt's URL
    (checked, then sent to) was a good part of its cost. Immutable, so safe to share."""
    return httpx.URL(url)


def _parts(url: str) -> tuple[bytes, bytes, int | None, bytes, bytes]:
    """Scheme, host, port, path and Host header of a URL."""
    parsed = _parsed(url)
    return parsed.raw_scheme, parsed.raw_host, parsed.port, parsed.raw_path, parsed.netloc


def describe_failure(exc: BaseException) -> str:
    """A short reason for the delivery log that repeats nothing the receiver sent."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, ssl.SSLCertVerificationError) for c in chain):
        return "TLS certificate not valid for the host"
    if any(isinstance(c, ssl.SSLError) for c in chain):
        return "TLS handshake failed"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the receiver broke the HTTP protocol"
    return type(exc).__name__
