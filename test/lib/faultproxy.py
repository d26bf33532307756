#!/usr/bin/python3
"""Loopback HTTP proxy for fault tests: forwards requests to an upstream S3 server,
injecting faults from a schedule file that it re-reads whenever the file changes.

Usage: faultproxy.py LISTEN_PORT UPSTREAM_PORT SCHEDULE_FILE LOG_FILE

The schedule is whitespace-separated rules consumed in order by matching requests:
  [METHOD:]ACTION[*N]     N times (default 1); "*" alone: forever
ACTION is pass, 503 (503 SlowDown), 500, 429, drop (close without answering) or
stall (answer nothing for 30 s, then close). Requests that match no pending rule pass.
Each request is logged as "METHOD PATH?QUERY ACTION STATUS".
The Host header is forwarded unchanged, so SigV4 signatures stay valid.
"""
import http.client
import http.server
import os
import socketserver
import sys
import threading
import time

LISTEN, UPSTREAM, SCHEDULE, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()
state = {"mtime": None, "rules": []}

FAULT_BODIES = {
    503: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
         b'<Message>Please reduce your request rate.</Message></Error>',
    500: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
         b'<Message>We encountered an internal error.</Message></Error>',
    429: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>TooManyRequests</Code>'
         b'<Message>Too many requests.</Message></Error>',
}


def load_rules():
    """Parses the schedule into [method or None, action, remaining or None(forever)]."""
    try:
        mtime = os.stat(SCHEDULE).st_mtime_ns
    except FileNotFoundError:
        mtime = None
    if mtime == state["mtime"]:
        return
    state["mtime"] = mtime
    rules = []
    text = open(SCHEDULE).read() if mtime is not None else ""
    for token in text.split():
        method, _, action = token.rpartition(":")
        count = 1
        if "*" in action:
            action, _, n = action.partition("*")
            count = int(n) if n else None
        rules.append([method or None, action, count])
    state["rules"] = rules


def next_action(method):
    with lock:
        load_rules()
        for rule in state["rules"]:
            if rule[0] not in (None, method) or rule[2] == 0:
                continue
            if rule[2] is not None:
                rule[2] -= 1
            return rule[1]
    return "pass"


def log(line):
    with lock, open(LOG, "a") as f:
        f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        action = next_action(self.command)
        if action == "drop":
            log(f"{self.command} {self.path} drop -")
            self.close_connection = True
            return
        if action == "stall":
            log(f"{self.command} {self.path} stall -")
            time.sleep(30)
            self.close_connection = True
            return
        if action in ("503", "500", "429"):
            status = int(action)
            payload = FAULT_BODIES[status]
            log(f"{self.command} {self.path} {action} {status}")
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        resp = upstream.getresponse()
        payload = resp.read()
        log(f"{self.command} {self.path} pass {resp.status}")
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(k, v)
        length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", LISTEN), Handler).serve_forever()
