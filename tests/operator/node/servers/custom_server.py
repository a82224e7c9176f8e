"""A model server of someone else's: plain http.server, its own paths and port.

It "loads" the model folder for LOAD_SECONDS (readiness says 503 until then), then
answers GET /model with its version and the sha256 of the files it found. A version
named crash-* exits at start, as a server does whose model cannot load.
"""

import hashlib
import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path

MODEL_DIR = Path(os.environ["MODELPLANE_MODEL_DIR"])
PORT = int(os.environ["MODELPLANE_PORT"])
VERSION = os.environ.get("MODELPLANE_MODEL_VERSION", "")
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "4"))
loaded = threading.Event()
state = {"sha256": ""}

if VERSION.startswith("crash"):
    sys.exit(f"model version {VERSION} cannot be loaded")


def load() -> None:
    time.sleep(LOAD_SECONDS)
    digest = hashlib.sha256()
    for path in sorted(p for p in MODEL_DIR.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    state["sha256"] = digest.hexdigest()
    loaded.set()


class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz/live":
            self._send(200, {"live": True})
        elif self.path == "/healthz/ready":
            self._send(200 if loaded.is_set() else 503, {"ready": loaded.is_set()})
        elif self.path == "/model" and loaded.is_set():
            self._send(200, {"version": VERSION, "sha256": state["sha256"]})
        else:
            self._send(404 if loaded.is_set() else 503, {"error": self.path})

    def log_message(self, *args: object) -> None:
        pass


threading.Thread(target=load, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
