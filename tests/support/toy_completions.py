"""A loopback `/v1/completions` server whose answers a test supplies, for evaluation binaries."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from typing import Callable, Iterator

ChoicesFor = Callable[[dict, list], list]  # (request body, its prompts) -> OpenAI completion choices


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        payload = json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                              "choices": self.server.choices_for(body, prompts)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def toy_completions_server(choices_for: ChoicesFor) -> Iterator[http.server.ThreadingHTTPServer]:
    """A running server (`.url` is its base URL, `.requests` every body it got) answering with
    `choices_for(body, prompts)`; shut down on exit."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.choices_for = [], choices_for
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
