#!/usr/bin/python3
"""An HTTP/2 client that resets one stream while it waits (stdlib only).

Usage: h2_reset_peer.py PROXY_PORT TARGET_HOSTPORT SNI CA_FILE PATH GO_FILE

Opens a CONNECT tunnel through tapwire, speaks TLS with ALPN h2 to it and
sends GET PATH on stream 1; when GO_FILE appears (15 s at most) it resets
stream 1 (RST_STREAM CANCEL) and sends GET / on stream 3 on the same
connection. Prints, one per line: "response 1" if stream 1 was answered
before the reset, then "response 3" when stream 3 was answered (8 s at
most) or "no response 3". Every loop is bounded.
"""
import os
import socket
import ssl
import struct
import sys
import time

HEADERS, RST, SETTINGS = 1, 3, 4
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def request_block(authority, path):
    # :method GET, :scheme https (static 2, 7); :path and :authority as
    # literals with an indexed name (4, 1), not indexed (RFC 7541 6.2.2).
    assert len(path) < 127 and len(authority) < 127
    return (b"\x82\x87" + b"\x04" + bytes([len(path)]) + path +
            b"\x01" + bytes([len(authority)]) + authority)


def connect(proxy_port, target, sni, ca):
    raw = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    raw.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        got = raw.recv(4096)
        if not got:
            raise SystemExit("proxy closed the CONNECT")
        head += got
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise SystemExit("CONNECT refused: %r" % head[:80])
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    if tls.selected_alpn_protocol() != "h2":
        raise SystemExit("no h2: %r" % tls.selected_alpn_protocol())
    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0))
    return tls


class Reader:
    """Frames as they come; remembers which streams got a HEADERS frame."""

    def __init__(self, sock):
        self.sock, self.buf, self.answered = sock, b"", set()
        sock.settimeout(0.2)

    def pump(self):
        try:
            got = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (OSError, ssl.SSLError):
            return False
        if not got:
            return False
        self.buf += got
        while len(self.buf) >= 9:
            length = struct.unpack(">I", b"\x00" + self.buf[:3])[0]
            if len(self.buf) < 9 + length:
                break
            ftype = self.buf[3]
            stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
            self.buf = self.buf[9 + length:]
            if ftype == HEADERS:
                self.answered.add(stream)
        return True


def main():
    proxy_port, target, sni, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    path, go_file = sys.argv[5].encode(), sys.argv[6]
    sock = connect(proxy_port, target, sni, ca)
    reader = Reader(sock)
    sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(sni.encode(), path)))
    deadline = time.time() + 15
    while not os.path.exists(go_file) and time.time() < deadline and reader.pump():
        pass
    if 1 in reader.answered:
        print("response 1")
    sock.sendall(frame(RST, 0, 1, struct.pack(">I", 8)) +
                 frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block(sni.encode(), b"/")))
    deadline = time.time() + 8
    while 3 not in reader.answered and time.time() < deadline and reader.pump():
        pass
    print("response 3" if 3 in reader.answered else "no response 3")


main()
