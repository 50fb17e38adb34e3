"""An HTTP proxy of the tests' own in front of a server, that can lose answers.

    proxy = HttpProxy("http://127.0.0.1:5050").start()   # talk to proxy.url instead
    proxy.lose_answers(3, "/log-batch")   # the next 3 requests to such a path reach the
                                          # server, which applies them; their answers are
                                          # dropped: the connection closes with no response
    proxy.close()

A lost answer looks to the client like a server that went away after reading the request
("Remote end closed connection without response"), so the client cannot know whether it
was applied.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade"}


class HttpProxy:
    def __init__(self, upstream: str):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self._lock = threading.Lock()
        self._lose: list[tuple[int, str]] = []  # [answers left to lose, path substring]
        self.lost: list[str] = []  # the paths whose answers were dropped
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if proxy._take(self.path):  # the server applied it; its answer is lost
                    self.close_connection = True
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name=f"http-proxy-{self.port}").start()
        return self

    def lose_answers(self, count: int, path_part: str) -> None:
        with self._lock:
            self._lose.append((count, path_part))

    def _take(self, path: str) -> bool:
        with self._lock:
            for i, (left, part) in enumerate(self._lose):
                if part in path:
                    if left <= 1:
                        del self._lose[i]
                    else:
                        self._lose[i] = (left - 1, part)
                    self.lost.append(path)
                    return True
        return False

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
