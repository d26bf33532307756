#!/usr/bin/python3
"""Another address for a server: forwards every TCP connection to LISTEN_PORT on to
UPSTREAM_PORT (both on 127.0.0.1), byte for byte, as a DNS alias or a NAT would.

Usage: tcp_alias.py LISTEN_PORT UPSTREAM_PORT
UPSTREAM_PORT may be FIRST,LATER: the first connection goes to FIRST, every later one to
LATER (a forwarder that switches servers behind one address).
With UPSTREAM_PORT 0 it is a server that answers every command with an error and
records every byte it received in the file named by the third argument (a stand-in for
a host that collects what clients send it).
"""
import socket
import sys
import threading

LISTEN = int(sys.argv[1])
UPSTREAMS = [int(p) for p in sys.argv[2].split(',')]
RECORD = sys.argv[3] if len(sys.argv) > 3 else None


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def record(client):
    with client, open(RECORD, 'ab') as out:
        while True:
            data = client.recv(65536)
            if not data:
                break
            out.write(data)
            out.flush()
            client.sendall(b'-ERR this host answers nothing\r\n')


def serve(client, port):
    if port == 0:
        record(client)
        return
    upstream = socket.create_connection(('127.0.0.1', port))
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    pump(upstream, client)


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('127.0.0.1', LISTEN))
listener.listen(16)
print('listening', flush=True)
accepted = 0
while True:
    conn, _ = listener.accept()
    port = UPSTREAMS[min(accepted, len(UPSTREAMS) - 1)]
    accepted += 1
    threading.Thread(target=serve, args=(conn, port), daemon=True).start()
