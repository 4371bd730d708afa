"""Webhook receiver for the webhook unit test: an HTTP server on 127.0.0.1
that answers 500 to the first --fail requests, then 200. For every request it
prints one JSON line on stdout: path, status, event id, whether the
signature verified. The first line is {"port": N}."""
import argparse
import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fail", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret-file", required=True)
    args = ap.parse_args()
    with open(args.secret_file, "rb") as f:
        secret = f.read().rstrip(b"\r\n")
    lock = threading.Lock()
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ts = self.headers.get("X-Sluice-Timestamp", "")
            sig = self.headers.get("X-Sluice-Signature", "")
            want = "sha256=" + hmac.new(secret, ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
            try:
                event = json.loads(body)
            except ValueError:
                event = {}
            with lock:
                state["seen"] += 1
                status = 500 if state["seen"] <= args.fail else 200
                print(json.dumps({
                    "path": self.path,
                    "status": status,
                    "id": event.get("id"),
                    "n": event.get("n"),
                    "header_id": self.headers.get("X-Sluice-Event-Id"),
                    "sig_ok": hmac.compare_digest(sig, want),
                    "json": self.headers.get("Content-Type") == "application/json",
                }), flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(json.dumps({"port": srv.server_address[1]}), flush=True)
    # Ends when the test closes our stdin (or dies).
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sys.stdin.read()
    srv.shutdown()


if __name__ == "__main__":
    main()
