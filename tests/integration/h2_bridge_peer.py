#!/usr/bin/python3
"""An HTTP/2 client that offers only h2, for the translation tests (stdlib only).

Usage: h2_bridge_peer.py PROXY_PORT|- HOST:PORT SNI CA_FILE MODE PATH [AUTHORITY]

With a PROXY_PORT it opens a CONNECT tunnel through tapwire to HOST:PORT,
else it connects to HOST:PORT (a --reverse listener). It speaks TLS with
ALPN "h2" alone, sends the request MODE names on stream 1 (:authority is
SNI unless AUTHORITY names another, as a client coalescing would) and prints what
came back, one item per line: "alpn PROTO", "status N" (a response HEADERS
frame: :status read from HPACK's static table), "body N SHA256" (the DATA
bytes of stream 1 when it ended), "rst CODE" (RST_STREAM on stream 1),
"goaway CODE", "closed", "timeout". Every wait is bounded.

Modes:
  get PATH            a GET
  show PATH           a GET, the body printed after its "body" line
  cookies PATH        show, with two cookie fields (RFC 9113 8.2.3 crumbs)
  cl-mismatch PATH    a POST declaring content-length 5 whose DATA carries a
                      whole second HTTP/1.1 request after those 5 bytes
  crlf-value PATH     a GET with a field value carrying CR LF and a second
                      request (HPACK carries any byte)
  space-value PATH    a GET with a field value that starts with a space
  te-gzip PATH        a GET with te: gzip (only "trailers" is allowed)
  post-trailers PATH  a POST without content-length: DATA "abc", then a
                      trailer x-req-trailer: yes
"""
import hashlib
import socket
import ssl
import struct
import sys
import time

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS = 0x1, 0x4
# HPACK static table entries 8-14: the :status values a test meets.
STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK literal field without indexing, new name (RFC 7541 6.2.2)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_block(method, path, authority, extra=b""):
    # :scheme https (static 7), :method and :path and :authority as literals.
    return (b"\x87" + literal(b":method", method) + literal(b":path", path)
            + literal(b":authority", authority) + extra)


def connect(proxy_port, target, sni, ca):
    host, port = target.rsplit(":", 1)
    if proxy_port != "-":
        s = socket.create_connection(("127.0.0.1", int(proxy_port)), timeout=10)
        s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("proxy closed during CONNECT")
            reply += chunk
        if b" 200 " not in reply.split(b"\r\n")[0]:
            raise SystemExit("CONNECT refused: %r" % reply[:100])
    else:
        s = socket.create_connection((host, int(port)), timeout=10)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    return ctx.wrap_socket(s, server_hostname=sni)


def main():
    proxy_port, target, sni, ca, mode, path = sys.argv[1:7]
    tls = connect(proxy_port, target, sni, ca)
    print("alpn", tls.selected_alpn_protocol())
    if tls.selected_alpn_protocol() != "h2":
        return
    authority = (sys.argv[7] if len(sys.argv) > 7 else sni).encode()
    path = path.encode()
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0)
    if mode in ("get", "show"):
        out += frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(b"GET", path, authority))
    elif mode == "cookies":
        crumbs = literal(b"cookie", b"a=1") + literal(b"x-between", b"1") + literal(b"cookie", b"b=2")
        out += frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(b"GET", path, authority, crumbs))
    elif mode == "cl-mismatch":
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"
        out += frame(HEADERS, END_HEADERS, 1,
                     request_block(b"POST", path, authority, literal(b"content-length", b"5")))
        out += frame(DATA, END_STREAM, 1, b"hello" + smuggled)
    elif mode == "crlf-value":
        value = b"a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x"
        out += frame(HEADERS, END_STREAM | END_HEADERS, 1,
                     request_block(b"GET", path, authority, literal(b"x-note", value)))
    elif mode == "space-value":
        out += frame(HEADERS, END_STREAM | END_HEADERS, 1,
                     request_block(b"GET", path, authority, literal(b"x-note", b" padded")))
    elif mode == "te-gzip":
        out += frame(HEADERS, END_STREAM | END_HEADERS, 1,
                     request_block(b"GET", path, authority, literal(b"te", b"gzip")))
    elif mode == "post-trailers":
        out += frame(HEADERS, END_HEADERS, 1, request_block(b"POST", path, authority))
        out += frame(DATA, 0, 1, b"abc")
        out += frame(HEADERS, END_STREAM | END_HEADERS, 1, literal(b"x-req-trailer", b"yes"))
    else:
        raise SystemExit("unknown mode " + mode)
    tls.sendall(out)

    buf = b""
    body = b""
    deadline = time.time() + 10
    tls.settimeout(1)
    while time.time() < deadline:
        while len(buf) >= 9:
            length = struct.unpack(">I", b"\x00" + buf[:3])[0]
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
            payload = buf[9:9 + length]
            buf = buf[9 + length:]
            if ftype == SETTINGS and not flags & 1:
                tls.sendall(frame(SETTINGS, 1, 0))
            elif ftype == PING and not flags & 1:
                tls.sendall(frame(PING, 1, 0, payload))
            elif ftype == HEADERS and stream == 1:
                if payload[:1] and payload[0] & 0x80 and (payload[0] & 0x7F) in STATUS:
                    print("status", STATUS[payload[0] & 0x7F])
                elif body == b"" and not flags & END_STREAM:
                    print("status other")
                if flags & END_STREAM:
                    print("body", len(body), hashlib.sha256(body).hexdigest())
                    if mode in ("show", "cookies"):
                        sys.stdout.write(body.decode("latin-1"))
                    return
            elif ftype == DATA and stream == 1:
                body += payload
                if payload:
                    tls.sendall(frame(WINDOW, 0, 0, struct.pack(">I", len(payload)))
                                + frame(WINDOW, 0, 1, struct.pack(">I", len(payload))))
                if flags & END_STREAM:
                    print("body", len(body), hashlib.sha256(body).hexdigest())
                    if mode in ("show", "cookies"):
                        sys.stdout.write(body.decode("latin-1"))
                    return
            elif ftype == RST and stream == 1:
                print("rst", struct.unpack(">I", payload[:4])[0])
                return
            elif ftype == GOAWAY:
                print("goaway", struct.unpack(">I", payload[4:8])[0])
                return
        try:
            chunk = tls.recv(65536)
        except socket.timeout:
            continue
        except (ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            print("closed")
            return
        buf += chunk
    print("timeout")


if __name__ == "__main__":
    main()
