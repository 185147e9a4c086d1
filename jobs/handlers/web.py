"""The scrape_website job type: a real HTTP GET that keeps off internal networks.

A job's URL comes from whoever submitted it, so unless JOBS_SCRAPE_ALLOW_PRIVATE
is set, every hop is checked before connecting: its host must resolve only to
public addresses. The connection itself is checked too, because DNS may answer
differently the second time (DNS rebinding).
"""

import ipaddress
import socket
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from jobs import conf
from jobs.errors import JobTimeout, PermanentError
from jobs.handlers.validators import url_payload
from jobs.registry import JobContext, job_handler

MAX_REDIRECTS = 5
USER_AGENT = "Skipjack/0.1 (scrape_website job; python-requests)"
CHUNK_SIZE = 64 * 1024
MAX_TITLE_LENGTH = 1000


def is_refused_address(address: str) -> bool:
    """Return whether IP `address` is loopback, private, link-local or otherwise not public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone such as %eth0
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 reaches 127.0.0.1.
            ip = ip.ipv4_mapped
        elif ip.is_site_local:
            # Deprecated (fec0::/10), so not in is_private, but still internal where used.
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


def check_destination(url: str) -> None:
    """Raise PermanentError unless `url` is http(s) and its host resolves only to public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"Refusing to fetch {url!r}: only http and https URLs with a host are allowed.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise PermanentError(f"Refusing to fetch {url!r}: the port is not valid.") from None
    if conf.get("JOBS_SCRAPE_ALLOW_PRIVATE"):
        return
    # A DNS failure may be temporary, so socket.gaierror propagates and the job is retried.
    for *_, sockaddr in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM):
        address = sockaddr[0]
        if is_refused_address(address):
            raise PermanentError(
                f"Refusing to fetch {url!r}: {parts.hostname} resolves to {address}, which is not a public address."
            )


class _PublicPeerMixin:
    """Close a new connection before sending anything if its peer is not a public address."""

    def _new_conn(self):
        sock = super()._new_conn()
        peer = sock.getpeername()[0]
        if is_refused_address(peer):
            sock.close()
            raise PermanentError(f"Refusing to connect to {self.host}: it reached {peer}, which is not public.")
        return sock


class _PublicHTTPConnection(_PublicPeerMixin, HTTPConnection):
    """An HTTP connection that refuses non-public peers."""


class _PublicHTTPSConnection(_PublicPeerMixin, HTTPSConnection):
    """An HTTPS connection that refuses non-public peers."""


class _PublicHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    """Connect only to public addresses."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPConnectionPool,
            "https": _PublicHTTPSConnectionPool,
        }


def _session() -> requests.Session:
    session = requests.Session()
    # A proxy from the environment would connect on our behalf, past every check here.
    session.trust_env = False
    session.headers["User-Agent"] = USER_AGENT
    if not conf.get("JOBS_SCRAPE_ALLOW_PRIVATE"):
        adapter = _PublicOnlyAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def _read_body(job: JobContext, response: requests.Response) -> bytes:
    """Return the response body, refusing one larger than JOBS_SCRAPE_MAX_BYTES."""
    max_bytes = conf.get("JOBS_SCRAPE_MAX_BYTES")
    body = bytearray()
    # Counted after decompression, so a small gzip bomb is cut off too.
    for chunk in response.iter_content(CHUNK_SIZE):
        # The timeouts bound each read, not the whole download; a slow trickle stops here.
        if job.stop_requested.is_set():
            raise JobTimeout("job stopped while downloading")
        body += chunk
        if len(body) > max_bytes:
            raise PermanentError(f"Refusing {response.url!r}: the response is larger than {max_bytes} bytes.")
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


def _page_title(response: requests.Response, body: bytes) -> str | None:
    """Return the HTML title of the page, or None."""
    content_type = response.headers.get("Content-Type", "").lower()
    if "html" not in content_type:
        return None
    # requests assumes ISO-8859-1 for text/* without a charset, but most pages are UTF-8.
    encoding = response.encoding if "charset" in content_type else "utf-8"
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
    with _session() as session:
        # Redirects are followed here, not by requests, so every hop's destination is checked.
        for _ in range(MAX_REDIRECTS + 1):
            check_destination(url)
            with session.get(url, timeout=timeout, stream=True, allow_redirects=False) as response:
                location = session.get_redirect_target(response)
                if location is None:
                    body = _read_body(job, response)
                    return {
                        "url": response.url,
                        "status": response.status_code,
                        "bytes": len(body),
                        "content_type": response.headers.get("Content-Type"),
                        "title": _page_title(response, body),
                    }
                url = urljoin(response.url, location)
    raise PermanentError(f"Refusing to follow more than {MAX_REDIRECTS} redirects.")
