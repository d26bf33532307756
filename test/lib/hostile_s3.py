#!/usr/bin/python3
"""A deliberately broken S3 endpoint on 127.0.0.1, standing in for a faulty or
malicious server (not for S3: real S3 tests use Swift, test/lib/s3.sh). It checks no
signature. Usage: hostile_s3.py PORT MODE LOG, one line per request in LOG.

Modes:
  repeat-token    every listing page is truncated and gives the same continuation token
  cycle-token     listing tokens go round: t0, t1, t2, t0, ...
  empty-token     a truncated listing page with an empty continuation token
  foreign-key     a listing that names a key outside the prefix asked for
  trickle         every answer announces 100000 bytes and sends 1.1 KB/s
  put-error       PUT is answered 200 with an <Error> body (listings are empty)
  complete-error  uploads work but CompleteMultipartUpload is answered 200 with an <Error>
"""
import http.server
import sys
import time
import urllib.parse

PORT, MODE, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
         b'<Message>We encountered an internal error.\nFAKE: backup complete</Message></Error>')


def listing(contents, truncated, token):
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult {NS}><Name>bucket</Name>'
    for key in contents:
        body += f'<Contents><Key>{key}</Key><Size>10</Size><LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>'
    body += f'<IsTruncated>{"true" if truncated else "false"}</IsTruncated>'
    if token is not None:
        body += f'<NextContinuationToken>{token}</NextContinuationToken>'
    return (body + '</ListBucketResult>').encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def answer(self, status, body=b'', headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def trickle(self):
        self.send_response(200)
        self.send_header('Content-Length', '100000')
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b' ' * 110)
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        self.close_connection = True

    def list_bucket(self, query):
        prefix = query.get('prefix', [''])[0]
        token = query.get('continuation-token', [None])[0]
        if MODE == 'repeat-token':
            return listing([], True, 'again')
        if MODE == 'cycle-token':
            step = int(token[1:]) if token else -1
            return listing([], True, f't{(step + 1) % 3}')
        if MODE == 'empty-token':
            return listing([], True, '')
        if MODE == 'foreign-key':
            return listing([prefix + 'a.json', 'globex/postgres/2026-01-01T000000Z-0000000000000001.json'], False, None)
        return listing([], False, None)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        with open(LOG, 'a') as log:
            log.write(f'{self.command} {self.path}\n')
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        if MODE == 'trickle':
            return self.trickle()
        if self.command == 'GET' and 'list-type' in query:
            return self.answer(200, self.list_bucket(query))
        if self.command == 'PUT':
            if MODE == 'put-error':
                return self.answer(200, ERROR)
            return self.answer(200, headers=[('ETag', '"0123456789abcdef0123456789abcdef"')])
        if self.command == 'POST' and 'uploads' in query:
            return self.answer(200, f'<InitiateMultipartUploadResult {NS}><Bucket>bucket</Bucket><Key>k</Key>'
                               f'<UploadId>hostile-upload</UploadId></InitiateMultipartUploadResult>'.encode())
        if self.command == 'POST' and 'uploadId' in query:
            return self.answer(200, ERROR)
        if self.command == 'DELETE':
            return self.answer(204)
        return self.answer(404, b'<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>')

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = http.server.ThreadingHTTPServer(('127.0.0.1', PORT), Handler)
server.daemon_threads = True
server.serve_forever()
