"""A webhook receiver for the sandbox: records every POST it gets (one JSON line each) so tests and the rehearsal
can assert on what the ops channel would have seen.

Paths choose its behaviour: ``/ok/NAME`` answers 200; ``/flaky/N/NAME`` answers 503 to its first N requests, then
200; ``/down/NAME`` always answers 503. Run as ``python -m cutover.sandbox._webhook --port P --log FILE``; started
and stopped by :class:`WebhookReceiver` on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cutover.sandbox._process import has_exited, port_open, spawn, stop_pid, wait_until


@dataclass
class WebhookReceiver:
    """The receiver process: ``start()``, ``url(kind)``, ``received()``, ``stop()``."""

    port: int
    log: Path
    _pid: int | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._pid = spawn([sys.executable, "-m", "cutover.sandbox._webhook", "--port", str(self.port), "--log",
                           str(self.log)], log_file=self.log.with_suffix(".out"), pid_file=self.log.with_suffix(".pid"))
        if not wait_until(lambda: port_open(self.port) or has_exited(self._pid), timeout=20) or has_exited(self._pid):
            raise RuntimeError(f"the webhook receiver did not start on 127.0.0.1:{self.port}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def received(self) -> list[dict]:
        """Every request so far: ``{"path", "status", "body"}`` in arrival order."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self._pid is not None:
            stop_pid(self._pid, "cutover.sandbox._webhook", self.log)
            self._pid = None


def _serve(port: int, log: Path) -> None:
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.strip("/").split("/")
            with lock:
                seen[self.path] += 1
                count = seen[self.path]
                if parts[0] == "down":
                    status = 503
                elif parts[0] == "flaky" and len(parts) > 1 and parts[1].isdigit():
                    status = 503 if count <= int(parts[1]) else 200
                else:
                    status = 200
                try:
                    parsed = json.loads(body or b"null")
                except ValueError:
                    parsed = body.decode(errors="replace")
                with open(log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"path": self.path, "status": status, "body": parsed}) + "\n")
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"unavailable")

        def log_message(self, *args) -> None:  # quiet
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    _serve(args.port, args.log)
