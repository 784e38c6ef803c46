"""A TCP proxy in front of an emulator that counts the gRPC calls passing through it.

The track function is benchmarked exactly as deployed, with nothing of the
bench inside its process, so its Firestore reads are counted on the wire: each
gRPC call opens an HTTP/2 stream with one HEADERS frame from the client (a
client never sends trailers), and the proxy counts those frames. On the track
function's Firestore connection every call is one campaign lookup, one
document read. Bytes are copied as they are; only frame headers are looked at.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

PREFACE_BYTES = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_BYTES = 9
HEADERS_FRAME = 0x1


class CallCounter:
    """Counts the HEADERS frames in one client-to-server HTTP/2 byte stream, fed in pieces."""

    def __init__(self) -> None:
        self.calls = 0
        self._skip = PREFACE_BYTES  # bytes still to pass before the next frame header
        self._header = b""

    def feed(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            if self._skip:
                step = min(self._skip, len(data) - position)
                self._skip -= step
                position += step
                continue
            need = FRAME_HEADER_BYTES - len(self._header)
            self._header += data[position:position + need]
            position += need
            if len(self._header) == FRAME_HEADER_BYTES:
                length = int.from_bytes(self._header[:3], "big")
                if self._header[3] == HEADERS_FRAME:
                    self.calls += 1
                self._skip, self._header = length, b""


class CountingProxy:
    """Listens on a free local port and forwards every connection to ``upstream`` (host:port)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._counters: list[CallCounter] = []
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="rpc-count-accept", daemon=True).start()

    @property
    def calls(self) -> int:
        with self._lock:
            return sum(counter.calls for counter in self._counters)

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream)
            except OSError:
                return  # closed
            for sock in (client, server):
                # Passed on as soon as they come: with Nagle's algorithm, a small write waiting for the ACK of
                # the one before it (delayed by up to 40 ms) stalled calls the client itself sends at once.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            counter = CallCounter()
            with self._lock:
                self._counters.append(counter)
                self._sockets += [client, server]
            for source, sink, count in ((client, server, counter), (server, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, count), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counter: CallCounter | None) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                if counter is not None:
                    with self._lock:
                        counter.feed(data)
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
