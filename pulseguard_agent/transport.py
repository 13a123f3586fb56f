"""One persistent HTTP/1.1 connection, reopened when the server has closed it.

Keeping the connection makes a heartbeat one round trip instead of a TCP (and TLS)
handshake each time. Servers close idle kept-alive connections (uvicorn after ~5 s),
which between heartbeats is the normal case, so the socket is checked before reuse.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from email.message import Message

_STALE_CONNECTION_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Connection:
    """Sends requests over one kept-alive connection; thread-safe (requests are serialized)."""

    def __init__(self, scheme: str, host: str, port: int | None, timeout: float, ssl_context: ssl.SSLContext | None = None):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._used = False
        self._lock = threading.Lock()
        self._interrupted = False

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
             timeout: float | None = None) -> tuple[int, Message, bytes, float]:
        """One request; returns (status, headers, body, seconds the round trip took).

        `timeout` replaces the connection's own for this request (a long poll needs a
        read timeout longer than its wait). Raises OSError or http.client.HTTPException
        when no response came back.
        """
        with self._lock:
            self._interrupted = False
            timeout = self.timeout if timeout is None else timeout
            conn, reused = self._connection(timeout)
            try:
                return self._exchange(conn, method, path, body, headers)
            except _STALE_CONNECTION_ERRORS:
                if not reused or self._interrupted:
                    raise
            # The server closed a kept-alive connection just as we reused it: it never saw
            # the request, so sending it once more on a fresh connection is safe.
            conn, _ = self._connection(timeout)
            return self._exchange(conn, method, path, body, headers)

    def close(self) -> None:
        """Close the socket; the next request opens a new one."""
        with self._lock:
            self._drop()

    def interrupt(self) -> None:
        """Make a request waiting on this connection in another thread fail now (no lock:
        that thread holds it). Its answer is lost; used to end a long poll on shutdown."""
        self._interrupted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, Message, bytes, float]:
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except BaseException:
            # Half a request or response leaves the connection unusable.
            self._drop()
            raise
        elapsed = time.perf_counter() - started
        self._used = True
        if response.will_close:
            self._drop()
        return response.status, response.headers, raw, elapsed

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        if self._conn is not None and (self._conn.sock is None or _peer_closed(self._conn.sock)):
            self._drop()
        if self._conn is None:
            if self.scheme == "https":
                context = self.ssl_context or ssl.create_default_context()
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self._used = False
        elif self._conn.timeout != timeout:
            self._conn.timeout = timeout
            self._conn.sock.settimeout(timeout)
        return self._conn, self._used

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._used = False


def _peer_closed(sock: socket.socket) -> bool:
    """An idle kept-alive socket that is readable has been closed by the server (EOF)."""
    try:
        if hasattr(select, "poll"):  # poll has no FD_SETSIZE limit, unlike select
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
