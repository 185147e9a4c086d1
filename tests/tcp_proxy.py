"""A TCP proxy for tests that need a network between two real processes to fail.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = f"postgres://postgres@127.0.0.1:{proxy.port}/skipjack"
        ...                       # connections through proxy.port reach the server
        proxy.cut()               # drop them all; new ones are accepted and closed at once
        proxy.cut("blackhole")    # drop them all; new ones are accepted and hang
        proxy.cut("blackhole", drop=False)  # open ones stall too, as in a partition
        proxy.heal()              # forward again

Two cut modes model two outages. "refuse" is a server that is down: a new
connection is accepted and reset straight away, so a client fails at once.
"blackhole" is a network partition: packets are lost, so a new connection is
accepted (the kernel completes the handshake) and never answered, and a
client waits until its own timeout. With drop=False the open connections are
not reset but stall: nothing more is forwarded either way until heal(), when
what was held back is delivered, as TCP would once the partition ends. A
connection still held by the blackhole at heal() is then connected through.

Every connection is forwarded by two threads, one per direction, so neither
direction can block the other. close() stops and joins every thread the
proxy started, and raises if one is left.
"""

import os
import selectors
import socket
import struct
import threading

REFUSE = "refuse"
BLACKHOLE = "blackhole"
MODES = (REFUSE, BLACKHOLE)

CHUNK = 64 * 1024
# Seconds to wait for the target while opening a connection to it.
CONNECT_TIMEOUT = 5.0
# Seconds close() waits for the proxy's threads before it calls them leaked.
JOIN_TIMEOUT = 5.0


def _reset(sock: socket.socket) -> None:
    """Make close() send an RST instead of a FIN, so the peer sees the connection break."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class _Link:
    """One client connection and its connection to the target, forwarded both ways."""

    def __init__(self, proxy: "TcpProxy", client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = False
        self._running = 2  # direction threads still in their loop; the last one out closes the sockets

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._forward, args=(self.client, self.upstream), daemon=True,
                             name=f"tcp-proxy-{self.proxy.port}-up"),
            threading.Thread(target=self._forward, args=(self.upstream, self.client), daemon=True,
                             name=f"tcp-proxy-{self.proxy.port}-down"),
        ]
        for thread in threads:
            thread.start()
        return threads

    def drop(self) -> None:
        """Break both connections. Called with the proxy's lock held.

        shutdown() wakes a direction thread blocked in recv() or sendall();
        the sockets are closed only by the last thread to leave, so no
        thread is ever inside a call on a descriptor that is already closed
        (and perhaps reused by a new socket).
        """
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.upstream):
            _reset(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.proxy._changed.notify_all()

    def _forward(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                # During a blackhole that keeps connections open, hold the
                # bytes until heal() (or until the link is dropped).
                if not self.proxy._wait_until_forwarding(self):
                    break
                destination.sendall(data)
        except OSError:
            pass
        finally:
            with self.proxy._lock:
                if not self.closed:
                    # One side hung up: pass the hang-up on as a FIN, not a reset.
                    self.closed = True
                    for sock in (self.client, self.upstream):
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    self.proxy._changed.notify_all()
                self._running -= 1
                if self._running == 0:
                    self.client.close()
                    self.upstream.close()
                    self.proxy._links.discard(self)


class TcpProxy:
    """Forward connections on 127.0.0.1:<port> to target_host:target_port, until cut().

    A target_host that is a directory is a PostgreSQL socket directory, as
    libpq reads one: the target is its Unix socket `.s.PGSQL.<target_port>`.
    mode is what cut() does by default to new connections: "refuse" or "blackhole".
    """

    def __init__(self, target_host: str, target_port: int, mode: str = REFUSE):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.target = (target_host, int(target_port))
        self.unix_socket = os.path.join(target_host, f".s.PGSQL.{int(target_port)}") if target_host.startswith("/") else None
        self.mode = mode
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._cut: str | None = None  # None while forwarding, else the mode of the cut
        self._stall_open = False  # a blackhole cut that left open links in place
        self._closing = False
        self._links: set[_Link] = set()
        self._held: list[socket.socket] = []  # accepted by a blackhole, waiting for heal()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name=f"tcp-proxy-{self.port}-accept")
        self._acceptor.start()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    @property
    def open_connections(self) -> int:
        """Return how many client connections are forwarded (or stalled) right now."""
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    def cut(self, mode: str | None = None, *, drop: bool = True) -> None:
        """Stop forwarding until heal().

        New connections are refused (accepted and reset) or blackholed
        (accepted and never answered), by `mode` or the proxy's default.
        With drop (the default) every open connection is reset; without it,
        a blackhole stalls them instead, and a refusal leaves them working.
        """
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self._cut = mode
            self._stall_open = mode == BLACKHOLE and not drop
            if drop:
                for link in list(self._links):
                    link.drop()
            if mode == REFUSE:
                self._refuse_held()
            self._changed.notify_all()

    def heal(self) -> None:
        """Forward again: stalled connections resume, held ones are connected through."""
        with self._lock:
            self._cut = None
            self._stall_open = False
            held, self._held = self._held, []
            self._changed.notify_all()
        for client in held:
            self._connect(client)

    def close(self) -> None:
        """Stop listening, break every connection and join every thread; raise if one is left."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            for link in list(self._links):
                link.drop()
            self._refuse_held()
            self._changed.notify_all()
        self._wake_writer.send(b"x")
        self._acceptor.join(JOIN_TIMEOUT)
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()
        leaked = [thread.name for thread in (self._acceptor, *self._threads) if thread.is_alive()]
        if leaked:
            raise RuntimeError(f"TcpProxy threads still running after close(): {leaked}")

    def _refuse_held(self) -> None:
        for client in self._held:
            _reset(client)
            client.close()
        self._held = []

    def _wait_until_forwarding(self, link: _Link) -> bool:
        """Block while open links are stalled; return False once the link is dropped."""
        with self._lock:
            while self._stall_open and not link.closed:
                self._changed.wait()
            return not link.closed

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_reader or self._closing:
                        return
                    try:
                        client, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    client.setblocking(True)
                    self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            if self._cut == REFUSE or self._closing:
                _reset(client)
                client.close()
                return
            if self._cut == BLACKHOLE:
                self._held.append(client)
                return
        self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        """Open the target for a client connection and start forwarding; reset the client if it cannot."""
        try:
            if self.unix_socket:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.settimeout(CONNECT_TIMEOUT)
                upstream.connect(self.unix_socket)
            else:
                upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.settimeout(None)
        except OSError:
            _reset(client)
            client.close()
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closing or self._cut is not None:
                # Cut or closed while the target was being reached: treat like any link open at the cut.
                if self._cut == BLACKHOLE and not self._closing:
                    upstream.close()
                    self._held.append(client)
                else:
                    for sock in (client, upstream):
                        _reset(sock)
                        sock.close()
                return
            link = _Link(self, client, upstream)
            self._links.add(link)
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            self._threads.extend(link.start())
