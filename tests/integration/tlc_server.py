"""A local stand-in for TLC's trip-data URL: serves real sample files on 127.0.0.1 (with an ETag
that changes when a file is replaced, as a republished month's does), plus the failures the
real one produces (404/403 for unpublished months) or a network can (a body cut short, an HTML
page instead of parquet)."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def etag(path: Path) -> str:
    """The file's ETag, as a CDN gives it on HEAD and GET: new bytes, a new tag."""
    stat = path.stat()
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'


class TLCServer:
    """Serves `folder`'s files under /trip-data/; `faults` maps a file name to a fault."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.faults: dict[str, str] = {}
        self.hits: Counter[str] = Counter()
        self.stopped = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                path = server.folder / name
                fault = server.faults.get(name)
                if fault in ("403", "404") or not path.is_file():
                    self.send_response(int(fault if fault in ("403", "404") else 404))
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("ETag", etag(path))
                self.end_headers()

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                server.hits[name] += 1
                fault = server.faults.get(name)
                path = server.folder / name
                if fault in ("403", "404") or (fault is None and not path.is_file()):
                    self.send_error(int(fault or 404))
                    return
                if fault == "html":
                    body = b"<html><body><h1>Service Unavailable</h1></body></html>"
                    self._send(body, "text/html", len(body))
                    return
                body = path.read_bytes()
                cut = fault == "cut" or (fault == "cut-once" and server.hits[name] == 1)
                if cut:  # promises the whole file, sends half, hangs up
                    self._send(body[: len(body) // 2], "application/octet-stream", len(body))
                    return
                if fault == "stall":  # sends half, then hangs until the test ends
                    self._send(body[: len(body) // 2], "application/octet-stream", len(body))
                    server.stopped.wait(60)
                    return
                if fault == "truncated":  # a half file, served honestly as such
                    body = body[: len(body) // 2]
                self._send(body, "application/octet-stream", len(body), etag(path))

            def _send(self, body: bytes, kind: str, length: int, tag: str | None = None) -> None:
                self.send_response(200)
                if tag is not None:
                    self.send_header("ETag", tag)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/trip-data"

    def __enter__(self) -> TLCServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()
