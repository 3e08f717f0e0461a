"""A local HTTP file server on 127.0.0.1 for download tests: Range requests, dropped connections, 404s.

with LocalHTTPServer(folder) as server:
    server.drop_after = 1000      # the next `drops` responses close after 1000 body bytes
    download_file([server.url("a.gz")], dest)
    server.requests               # [(path, Range header or None), ...]
"""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class LocalHTTPServer:
    """Serves the files of ``folder`` on a random port of 127.0.0.1 in a background thread.

    Knobs (change them between requests): ``drop_after`` (close the connection after that many body
    bytes, for the next ``drops`` responses; ``drops=-1`` for every response), ``ignore_range`` (answer
    200 with the whole file even to a Range request), ``missing`` (names answered 404 even if present),
    ``trickle`` (send the body one byte per that many seconds), ``endless`` (answer 200 with no
    Content-Length and zeros until the client hangs up), ``claim_length`` (send this Content-Length).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.drop_after: int | None = None
        self.drops = 1
        self.ignore_range = False
        self.missing: set[str] = set()
        self.trickle: float | None = None
        self.endless = False
        self.claim_length: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str = "") -> str:
        """``http://127.0.0.1:<port>/<name>``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _take_drop(self) -> int | None:
        with self._lock:
            if self.drop_after is None or self.drops == 0:
                return None
            if self.drops > 0:
                self.drops -= 1
            return self.drop_after

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                range_header = self.headers.get("Range")
                server.requests.append((name, range_header))
                path = server.folder / name
                if server.endless:
                    self._send_endless()
                    return
                if name in server.missing or not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = path.read_bytes()
                start, status = 0, 200
                m = _RANGE.match(range_header or "")
                if m and not server.ignore_range:
                    start = int(m[1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(server.claim_length or len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server._take_drop()
                if server.trickle is not None:
                    self._send_trickle(body, server.trickle)
                    return
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _send_endless(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                zeros = bytes(1 << 16)
                try:
                    while True:
                        self.wfile.write(zeros)
                except OSError:
                    self.close_connection = True

            def _send_trickle(self, body: bytes, seconds: float) -> None:
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(seconds)
                except OSError:
                    self.close_connection = True

        return Handler


def closed_port_url(name: str = "file.gz") -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
