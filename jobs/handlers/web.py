"""The scrape_website job type: a real HTTP GET that keeps off internal networks.

A job's URL comes from whoever submitted it. It is parsed once, by urllib3,
the HTTP client itself (jobs.handlers.validators.parse_web_url), and the
request is built from those parts alone: no second parser ever reads the
text and finds another host in it. Each hop's host is resolved once, here.
Unless JOBS_SCRAPE_ALLOW_PRIVATE is set, every address it resolves to must
be public, and the socket connects to those vetted addresses, never to a
fresh lookup that DNS could answer differently (DNS rebinding). The URL's
host stays the Host header and the TLS server name, and the certificate is
checked against it.

A hop whose host is refused, does not resolve or does not answer fails the
same way, from the same line, and is retried the same: the job's error and
traceback tell nothing about what listens behind the guard.
"""

import email.message
import ipaddress
import socket
import sys
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import certifi
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import Url

from jobs import conf
from jobs.errors import JobTimeout, PermanentError
from jobs.handlers.validators import parse_web_url, url_payload
from jobs.registry import JobContext, job_handler

MAX_REDIRECTS = 5
USER_AGENT = "Skipjack/0.1 (scrape_website job)"
CHUNK_SIZE = 64 * 1024
MAX_TITLE_LENGTH = 1000
HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}

# IPv6 addresses that stand for an IPv4 one, reached through a relay or a
# translator that may sit on the worker's own network: 6to4, Teredo, NAT64.
TUNNELLED_IPV4 = tuple(
    ipaddress.ip_network(prefix) for prefix in ("2002::/16", "2001::/32", "64:ff9b::/96", "64:ff9b:1::/48")
)


class UnreachableDestination(Exception):
    """A hop whose host is not public, does not resolve or does not answer; retried like any failure."""


def is_refused_address(address: str) -> bool:
    """Return whether IP `address` is loopback, private, link-local or otherwise not public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone such as %eth0
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 reaches 127.0.0.1.
            ip = ip.ipv4_mapped
        elif ip.is_site_local or any(ip in network for network in TUNNELLED_IPV4):
            # Site-local (fec0::/10) is deprecated, so not in is_private, but still internal where used.
            return True
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global  # e.g. 100.64.0.0/10, shared carrier-grade NAT space
    )


def _literal_address(host: str) -> str | None:
    """Return the IP address `host` is written as ("[::1]" gives "::1"), or None for a name."""
    address = host[1:-1] if host.startswith("[") else host
    try:
        ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    return address


def parse_hop(url: str) -> Url:
    """Return `url` parsed for fetching, or raise PermanentError for one that must not be fetched at all.

    A host written as a non-public IP address is refused here by name: the
    submitter (or the redirect) wrote that address, so saying so tells
    nothing. Whatever a name resolves to is left to resolve_destination.
    """
    try:
        target = parse_web_url(url)
    except ValueError as exc:
        raise PermanentError(f"Refusing to fetch {url!r}: {exc}") from None
    literal = _literal_address(target.host) if target.host is not None else None  # (parse_web_url() wants one)
    if literal is not None and not conf.get("JOBS_SCRAPE_ALLOW_PRIVATE") and is_refused_address(literal):
        raise PermanentError(f"Refusing to fetch {target.url!r}: {literal} is not a public address.")
    return target


def resolve_destination(host: str, port: int) -> list[tuple[int, tuple]] | None:
    """Resolve `host` once; return the (family, sockaddr) pairs to connect to, or None if there are none to use.

    None when the host does not resolve, or when (unless
    JOBS_SCRAPE_ALLOW_PRIVATE is set) any address it resolves to is not
    public: a name that is public for some lookups and private for others
    is refused whole.
    """
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    destinations: list[tuple[int, tuple[Any, ...]]] = list(
        dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in found)
    )
    if not conf.get("JOBS_SCRAPE_ALLOW_PRIVATE") and any(is_refused_address(addr[0]) for _, addr in destinations):
        return None
    return destinations or None


class _VettedAddressesMixin(HTTPConnection):
    """Connect to the addresses the host was vetted at, never to a new lookup of it."""

    def __init__(self, *args, destinations: list[tuple[int, tuple]], **kwargs):
        super().__init__(*args, **kwargs)
        self.destinations = destinations

    def _new_conn(self) -> socket.socket:
        failure = None
        for family, sockaddr in self.destinations:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {failure}")


class _VettedHTTPConnection(_VettedAddressesMixin, HTTPConnection):
    """An HTTP connection to vetted addresses only."""


class _VettedHTTPSConnection(_VettedAddressesMixin, HTTPSConnection):
    """An HTTPS connection to vetted addresses only; the server name and certificate are the URL's host's."""


class _VettedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _VettedHTTPConnection


class _VettedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _VettedHTTPSConnection


def _ca_certs() -> str:
    """Return the CA bundle that HTTPS certificates are checked against."""
    return certifi.where()


def _open(target: Url, timeout: float) -> tuple[HTTPConnectionPool, BaseHTTPResponse] | None:
    """GET `target`; return its pool and response, or None if its host is not to be used or did not answer.

    A proxy from the environment is never used: it would connect on our
    behalf, past every check here.
    """
    host, port = target.host, target.port or (443 if target.scheme == "https" else 80)
    destinations = resolve_destination(host, port) if host is not None else None
    if host is None or destinations is None:
        return None
    options: dict[str, Any] = {"timeout": Timeout(connect=timeout, read=timeout), "maxsize": 1, "retries": False,
                               "destinations": destinations}
    pool: HTTPConnectionPool
    if target.scheme == "https":
        pool = _VettedHTTPSConnectionPool(host, port, cert_reqs="CERT_REQUIRED", ca_certs=_ca_certs(), **options)
    else:
        pool = _VettedHTTPConnectionPool(host, port, **options)
    try:
        response = pool.urlopen("GET", target.request_uri, headers=HEADERS, redirect=False, retries=False,
                                preload_content=False, decode_content=True)
    except ConnectTimeoutError:  # NewConnectionError too: nothing was sent, nothing was learnt
        pool.close()
        return None
    except BaseException:
        pool.close()
        raise
    return pool, response


def _redirect_target(response: BaseHTTPResponse) -> str | None:
    """Return the Location of a redirect, or None for any other response."""
    location = response.get_redirect_location()
    if not location:
        return None
    # Sent as bytes, read as Latin-1 by http.client; servers mean UTF-8 (as requests reads it).
    try:
        return location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return location


def _read_body(job: JobContext, response: BaseHTTPResponse, target: Url) -> bytes:
    """Return the response body, refusing one larger than JOBS_SCRAPE_MAX_BYTES."""
    max_bytes = conf.get("JOBS_SCRAPE_MAX_BYTES")
    body = bytearray()
    # Counted after decompression, so a small gzip bomb is cut off too.
    for chunk in response.stream(CHUNK_SIZE, decode_content=True):
        # The timeouts bound each read, not the whole download; a slow trickle stops here.
        if job.stop_requested.is_set():
            raise JobTimeout("job stopped while downloading")
        body += chunk
        if len(body) > max_bytes:
            raise PermanentError(f"Refusing {target.url!r}: the response is larger than {max_bytes} bytes.")
    return bytes(body)


class _TitleParser(HTMLParser):
    """Collect the text of the first non-empty <title> element."""

    def __init__(self):
        super().__init__()
        self.title = None
        self._parts = None

    def handle_starttag(self, tag, attrs):
        if tag == "title" and self.title is None:
            self._parts = []

    def handle_data(self, data):
        if self._parts is not None:
            self._parts.append(data)

    def handle_endtag(self, tag):
        if tag == "title" and self._parts is not None:
            self.title = " ".join("".join(self._parts).split())[:MAX_TITLE_LENGTH] or None
            self._parts = None


def _page_title(content_type: str, body: bytes) -> str | None:
    """Return the HTML title of a page of `content_type`, or None."""
    if "html" not in content_type.lower():
        return None
    header = email.message.Message()
    header["Content-Type"] = content_type
    # Pages without a charset are most often UTF-8, whatever HTTP says text/* defaults to.
    encoding = header.get_content_charset() or "utf-8"
    try:
        text = body.decode(encoding, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _TitleParser()
    parser.feed(text)
    return parser.title


@job_handler("scrape_website", validate=url_payload)
def scrape_website(job: JobContext) -> dict:
    """Fetch a web page and return its status, size and title."""
    url = job.payload["url"]
    timeout = conf.get("JOBS_SCRAPE_TIMEOUT")
    # Redirects are followed here, not by urllib3, so that every hop is parsed and vetted.
    for _ in range(MAX_REDIRECTS + 1):
        target = parse_hop(url)
        opened = _open(target, timeout)
        if opened is None:
            # Raised here alone, outside any except block, so that the error,
            # its traceback and its retries are the same whatever the cause.
            raise UnreachableDestination(
                f"Could not fetch {target.url!r}: its host is not public, does not resolve or did not answer."
            )
        pool, response = opened
        try:
            location = _redirect_target(response)
            if location is None:
                body = _read_body(job, response, target)
                content_type = response.headers.get("Content-Type")
                return {
                    "url": target.url,
                    "status": response.status,
                    "bytes": len(body),
                    "content_type": content_type,
                    "title": _page_title(content_type or "", body),
                }
        finally:
            response.close()
            pool.close()
        url = urljoin(target.url, location)
    raise PermanentError(f"Refusing to follow more than {MAX_REDIRECTS} redirects.")
