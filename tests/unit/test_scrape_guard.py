"""scrape_website's guard against reaching internal addresses (SSRF), on real servers where it matters.

A canary server on loopback counts every connection made to it: each way
around the guard must leave it at zero. Tests can reach only loopback, so
where a case needs a public address, name resolution is stubbed and
127.0.0.2 stands in for the internet (is_refused_address is made to accept
it, and only it); the queue, the database and the servers stay real.
"""

import socket
import ssl
import threading
import traceback
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from jobs.errors import PayloadError, PermanentError
from jobs.handlers import web
from jobs.handlers.web import is_refused_address, resolve_destination
from jobs.registry import JobContext, get_handler, validate_payload

PUBLIC_STAND_IN = "127.0.0.2"
PAGE = b"<html><head><title>Public page</title></head></html>"
private_refused = override_settings(JOBS_SCRAPE_ALLOW_PRIVATE=False)


class Canary:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts and closes them at once."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


class _PublicPage(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hosts.append(self.headers.get("Host"))
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


def serve(server):
    server.hosts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def canary():
    canary = Canary()
    yield canary
    canary.close()


@pytest.fixture
def twins():
    """A "public" page on 127.0.0.2 and a canary on 127.0.0.1, on the same port; yield (page, canary)."""
    for _ in range(20):
        page = ThreadingHTTPServer((PUBLIC_STAND_IN, 0), _PublicPage)
        try:
            canary = Canary(page.server_port)
        except OSError:  # that port is taken on 127.0.0.1; try another
            page.server_close()
            continue
        break
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    thread = serve(page)
    yield page, canary
    page.shutdown()
    page.server_close()
    thread.join()
    canary.close()


class StubResolver:
    """socket.getaddrinfo with fixed answers for some names: each lookup of a name takes its next answer."""

    def __init__(self, monkeypatch, answers: dict[str, list[list[str]]]):
        self.answers = {name: list(sequence) for name, sequence in answers.items()}
        self.lookups: list[str] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return self._real(host, port, family, type, proto, flags)
        self.lookups.append(name)
        sequence = self.answers[name]
        addresses = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port = int(port or 0)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)) if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in addresses
        ]


@pytest.fixture
def only_the_stand_in_is_public(monkeypatch):
    monkeypatch.setattr(web, "is_refused_address", lambda address: address != PUBLIC_STAND_IN)


def scrape(url: str):
    """Run scrape_website on `url` in this process, as a worker would; return the result."""
    payload = validate_payload("scrape_website", url)
    return get_handler("scrape_website").func(JobContext(job_id=1, type="scrape_website", payload=payload, attempt=1))


# The URL is parsed once, by the client's parser.


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://127.0.0.1:8899\\@93.184.216.34/", "Must not contain backslashes, whitespace or control characters."),
        ("http://93.184.216.34\\@127.0.0.1/", "Must not contain backslashes, whitespace or control characters."),
        ("http://127.0.0.1:8899\t@93.184.216.34/", "Must not contain backslashes, whitespace or control characters."),
        ("http://127.0.0.1:8899\n@93.184.216.34/", "Must not contain backslashes, whitespace or control characters."),
        ("http://exam ple.com/", "Must not contain backslashes, whitespace or control characters."),
        ("http://example.com/\x7f", "Must not contain backslashes, whitespace or control characters."),
        ("http://127.0.0.1\u200b@example.com/", "Must not contain backslashes, whitespace or control characters."),
        ("http://93.184.216.34@127.0.0.1/", "Must not contain a user name or password."),
        ("http://user:secret@example.com/", "Must not contain a user name or password."),
        ("http://@example.com/", "Must not contain a user name or password."),
    ],
)
def test_a_url_that_parsers_could_read_differently_is_refused_naming_the_field(url, message):
    """Refuse backslashes, whitespace, control characters and userinfo in a scrape URL, before it is stored."""
    with pytest.raises(PayloadError) as excinfo:
        validate_payload("scrape_website", {"url": url})
    assert excinfo.value.errors == {"url": [message]}


@pytest.mark.parametrize(
    "url, stored",
    [
        ("HTTP://Example.COM:8080/caf\u00e9?q=1#top", "http://example.com:8080/caf%C3%A9?q=1"),
        ("http://ex%41mple.com/", "http://example.com/"),
        ("http://b\u00fccher.de/", "http://xn--bcher-kva.de/"),
        ("  https://example.com/a  ", "https://example.com/a"),
    ],
)
def test_the_stored_url_is_rebuilt_from_the_parts_the_client_reads(url, stored):
    """Store the URL as urllib3 reads it (host decoded and lowered, fragment dropped), so what is vetted is what is fetched."""
    assert validate_payload("scrape_website", url) == {"url": stored}


# Resolution, stubbed: the "public" cases cannot be reached from a test.


def test_a_name_is_used_only_if_every_address_it_resolves_to_is_public(monkeypatch, settings):
    """Return every public address of a name to connect to; nothing for a name with one non-public address, or none."""
    settings.JOBS_SCRAPE_ALLOW_PRIVATE = False
    StubResolver(monkeypatch, {
        "public.test": [["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]],
        "mixed.test": [["93.184.216.34", "10.0.0.1"]],
        "sixtofour.test": [["2002:7f00:1::1"]],
        "nowhere.test": [[]],
    })
    assert resolve_destination("public.test", 443) == [
        (socket.AF_INET, ("93.184.216.34", 443)),
        (socket.AF_INET6, ("2606:2800:220:1:248:1893:25c8:1946", 443, 0, 0)),
    ]
    for name in ("mixed.test", "sixtofour.test", "nowhere.test"):
        assert resolve_destination(name, 80) is None, name


@pytest.mark.parametrize(
    "address",
    ["2002:7f00:1::", "2002:5db8:d822::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b::7f00:1",
     "64:ff9b::5db8:d822", "64:ff9b:1::a00:1"],
)
def test_6to4_teredo_and_nat64_addresses_are_refused(address):
    """Refuse IPv6 addresses that tunnel or translate to an IPv4 one (6to4 2002::/16, Teredo, NAT64), public or not."""
    assert is_refused_address(address)


@private_refused
def test_dns_rebinding_gets_no_connection_to_the_address_it_rebinds_to(monkeypatch, twins, only_the_stand_in_is_public):
    """Resolve the host once and connect to the vetted address, with the URL's host as Host: a second answer is never asked for."""
    page, canary = twins
    resolver = StubResolver(monkeypatch, {"rebind.test": [[PUBLIC_STAND_IN], ["127.0.0.1"]]})
    url = f"http://rebind.test:{page.server_port}/page"
    result = scrape(url)
    assert (result["url"], result["status"], result["title"]) == (url, 200, "Public page")
    assert page.hosts == [f"rebind.test:{page.server_port}"]
    assert resolver.lookups == ["rebind.test"]
    assert canary.connections == 0


def _certificate_for(host: str, directory) -> tuple[str, str]:
    """Write a self-signed certificate for `host` and its key into `directory`; return their paths."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@private_refused
def test_https_to_the_vetted_address_keeps_the_host_for_sni_and_the_certificate(monkeypatch, tmp_path,
                                                                                only_the_stand_in_is_public):
    """Send the URL's host as TLS server name and check the certificate against it, while connecting to the vetted address."""
    cert, key = _certificate_for("public.test", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server_names = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = ThreadingHTTPServer((PUBLIC_STAND_IN, 0), _PublicPage)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = serve(server)
    monkeypatch.setattr(web, "_ca_certs", lambda: cert)
    StubResolver(monkeypatch, {"public.test": [[PUBLIC_STAND_IN]]})
    try:
        result = scrape(f"https://public.test:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (result["status"], result["title"]) == (200, "Public page")
    assert server_names == ["public.test"]
    assert server.hosts == [f"public.test:{server.server_port}"]


def _failure(url: str) -> tuple[type, str, str]:
    """Run a scrape of `url` that must fail; return its exception's type, message and traceback, host names blanked."""
    with pytest.raises(Exception) as excinfo:
        scrape(url)
    exc = excinfo.value
    host = url.split("//", 1)[1].split(":", 1)[0]
    text = "".join(traceback.format_exception(exc)).replace(host, "HOST")
    return type(exc), str(exc).replace(host, "HOST"), text


@private_refused
def test_refused_and_unreachable_destinations_fail_alike(monkeypatch, canary, only_the_stand_in_is_public):
    """Fail a host that is not public, one where nothing listens and one that does not resolve with the same error, traceback and retry."""
    StubResolver(monkeypatch, {
        # Resolves to loopback, where the canary listens: refused before any connection.
        "internal.test": [["127.0.0.1"]],
        # "Public", but nothing listens on the canary's port there.
        "closed.test": [[PUBLIC_STAND_IN]],
        "nowhere.test": [[]],
    })
    failures = [_failure(f"http://{name}:{canary.port}/") for name in ("internal.test", "closed.test", "nowhere.test")]
    assert failures[0] == failures[1] == failures[2]
    exc_type, message, text = failures[0]
    assert not issubclass(exc_type, PermanentError)  # retried alike, too
    assert message == f"Could not fetch 'http://HOST:{canary.port}/': its host is not public, does not resolve or did not answer."
    assert "During handling" not in text and "direct cause" not in text
    assert canary.connections == 0
