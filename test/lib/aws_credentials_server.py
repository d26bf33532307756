#!/usr/bin/python3
"""Stand-ins for the two AWS credential services a test cannot reach here, small on
purpose: the EC2 instance metadata service (IMDSv2) and STS AssumeRoleWithWebIdentity.

    aws_credentials_server.py imds|sts PORT DIR ACCESS_KEY SECRET LIFETIME

Both hand out ACCESS_KEY/SECRET (the test S3 server's own keys: Swift's s3api does
not check session tokens the way AWS does, so any token passes) with a fresh
SessionToken and an Expiration LIFETIME seconds ahead. Every credentials answer is
counted in DIR/<kind>.count (one line per answer); what is wrong in a request is
answered as AWS would (401 without an IMDS token, an STS ErrorResponse for a bad
token), and written to DIR/<kind>.log.

imds: PUT /latest/api/token needs X-aws-ec2-metadata-token-ttl-seconds; GETs under
/latest/meta-data/iam/security-credentials/ need X-aws-ec2-metadata-token.
sts: POST / with Action=AssumeRoleWithWebIdentity, RoleArn, RoleSessionName and
WebIdentityToken, which must equal the content of DIR/expected-token.
"""
import datetime
import http.server
import os
import secrets
import sys
import urllib.parse

KIND, PORT, DIR, ACCESS_KEY, SECRET, LIFETIME = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
ROLE = "tb-backup-role"
TOKENS = set()


def expiration():
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=LIFETIME)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def record(name, line):
    with open(os.path.join(DIR, "%s.%s" % (KIND, name)), "a") as f:
        f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        record("log", fmt % args)

    def answer(self, status, body, content_type="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if KIND != "imds" or self.path != "/latest/api/token":
            return self.answer(404, "not found")
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").isdigit():
            return self.answer(400, "missing X-aws-ec2-metadata-token-ttl-seconds")
        token = secrets.token_urlsafe(32)
        TOKENS.add(token)
        self.answer(200, token)

    def do_GET(self):
        base = "/latest/meta-data/iam/security-credentials/"
        if KIND != "imds" or not self.path.startswith(base):
            return self.answer(404, "not found")
        if self.headers.get("X-aws-ec2-metadata-token") not in TOKENS:
            record("log", "refused: no valid IMDSv2 token")
            return self.answer(401, "")
        if self.path == base:
            return self.answer(200, ROLE)
        if self.path != base + ROLE:
            return self.answer(404, "not found")
        record("count", "credentials")
        self.answer(200, '{"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "%s", "SecretAccessKey": "%s", '
                    '"Token": "imds-%s", "Expiration": "%s"}' % (ACCESS_KEY, SECRET, secrets.token_hex(8), expiration()),
                    "application/json")

    def do_POST(self):
        if KIND != "sts":
            return self.answer(404, "not found")
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        with open(os.path.join(DIR, "expected-token")) as f:
            expected = f.read().strip()
        ok = (form.get("Action") == ["AssumeRoleWithWebIdentity"] and form.get("RoleArn", [""])[0].startswith("arn:")
              and form.get("RoleSessionName") and form.get("WebIdentityToken") == [expected])
        if not ok:
            record("log", "refused: %s" % sorted(k for k in form if k != "WebIdentityToken"))
            return self.answer(400, '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                               '<Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad token</Message>'
                               '</Error></ErrorResponse>', "text/xml")
        record("count", "credentials %s" % form["RoleSessionName"][0])
        self.answer(200, '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                    '<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>%s</AccessKeyId>'
                    '<SecretAccessKey>%s</SecretAccessKey><SessionToken>sts-%s</SessionToken>'
                    '<Expiration>%s</Expiration></Credentials></AssumeRoleWithWebIdentityResult>'
                    '</AssumeRoleWithWebIdentityResponse>' % (ACCESS_KEY, SECRET, secrets.token_hex(8), expiration()),
                    "text/xml")


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(os.path.join(DIR, KIND + ".ready"), "w") as f:
    f.write("%d\n" % os.getpid())
server.serve_forever()
