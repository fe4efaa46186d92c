#!/usr/bin/env python3
"""A minimal EC2 instance metadata service (IMDSv2) on loopback for tests.

Hands out instance-role credentials and a region, only to callers holding a session token,
as EC2 does. Prints the bound port on its first stdout line, then logs each served path.
Usage: imds.py REGION ROLE   (listens on 127.0.0.1, an ephemeral port)
"""
import datetime
import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGION, ROLE = sys.argv[1], sys.argv[2]
TOKENS = set()
CREDS_PATH = "/latest/meta-data/iam/security-credentials/"


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body, headers=()):
        data = body.encode()
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if self.path != "/latest/api/token" or not ttl:
            return self.reply(400, "bad token request")
        token = secrets.token_urlsafe(24)
        TOKENS.add(token)
        # The Rust SDK refuses a token reply without the TTL echoed back.
        self.reply(200, token, [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") not in TOKENS:
            return self.reply(401, "IMDSv2 token required")
        print("served", self.path, flush=True)
        if self.path == "/latest/meta-data/placement/region":
            return self.reply(200, REGION)
        if self.path == CREDS_PATH:
            return self.reply(200, ROLE)
        if self.path == CREDS_PATH + ROLE:
            now = datetime.datetime.now(datetime.timezone.utc)
            expires = now + datetime.timedelta(hours=6)
            fmt = "%Y-%m-%dT%H:%M:%SZ"
            return self.reply(200, json.dumps({
                "Code": "Success",
                "LastUpdated": now.strftime(fmt),
                "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAIMDSTESTROLE0001",
                "SecretAccessKey": "imds-test-secret",
                "Token": "imds-test-session-token",
                "Expiration": expires.strftime(fmt),
            }))
        self.reply(404, "not found")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
