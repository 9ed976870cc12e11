#!/usr/bin/env python3
"""A small rest-hook receiver for trying Subscriptions locally (docs/subscriptions.md).

    python3 examples/subscriptions/receiver.py [port]        # default 9090, listens on 127.0.0.1

Prints one line per notification: its type (handshake, heartbeat, event-notification), the
Subscription, events-since-subscription-start and each event's number and focus, and answers 200.
Start the server with the receiver's prefix allowed, e.g.
    PHRFHIR_SUBSCRIPTION_ENDPOINTS=http://127.0.0.1:9090/ bash scripts/serve.sh
Set FAIL=1 in the environment to answer 503 instead (an outage: the server retries and catches up).
"""
import json
import os
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer


def value(parameter):
    for key, v in parameter.items():
        if key.startswith("value"):
            return v.get("reference") if isinstance(v, dict) else v
    return None


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if os.environ.get("FAIL") == "1":
            self.send_response(503)
            self.end_headers()
            print(f"{datetime.now(timezone.utc):%H:%M:%S} answered 503 (FAIL=1)", flush=True)
            return
        status = json.loads(body)["entry"][0]["resource"]
        p = {x["name"]: x for x in status["parameter"]}
        events = [
            {part["name"]: value(part) for part in x["part"]}
            for x in status["parameter"] if x["name"] == "notification-event"
        ]
        print(f"{datetime.now(timezone.utc):%H:%M:%S} {value(p['type']):<18} {value(p['subscription'])} "
              f"since-start={value(p.get('events-since-subscription-start', {})) or '-'} "
              + " ".join(f"#{e.get('event-number')}:{e.get('focus', '')}" for e in events), flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9090
    print(f"listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
