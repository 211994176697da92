#!/usr/bin/python3
"""A hostile HTTP/2 client for the HTTP/2 defence tests (stdlib only).

Usage: h2_hostile.py PROXY_PORT TARGET_HOSTPORT SNI CA_FILE MODE

Opens a CONNECT tunnel through tapwire, speaks TLS with ALPN h2 to it,
sends the attack MODE names and prints what tapwire did, one word per line:
"goaway CODE" (it sent GOAWAY), "rst N" (RST_STREAM frames it sent),
"response" (a response HEADERS frame arrived), "closed" (the connection
ended), "timeout" (still open at the time bound). Every loop is bounded.
"""
import socket
import ssl
import struct
import sys
import time

HEADERS, DATA, RST, SETTINGS, PING, GOAWAY, CONT = 1, 0, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK literal field without indexing, new name (RFC 7541 6.2.2)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_block(authority):
    # :method GET, :scheme https, :path / (static table 2, 7, 4); :authority by name index 1.
    return b"\x82\x87\x84" + b"\x01" + bytes([len(authority)]) + authority


def long_literal(name, size):
    """A literal whose value is size bytes (HPACK integer with a 7-bit prefix)."""
    out = b"\x00" + bytes([len(name)]) + name
    n = size
    if n < 127:
        out += bytes([n])
    else:
        out += b"\x7f"
        n -= 127
        while n >= 128:
            out += bytes([(n & 0x7F) | 0x80])
            n >>= 7
        out += bytes([n])
    return out + b"x" * size


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


def send_quietly(sock, data):
    try:
        sock.sendall(data)
        return True
    except (OSError, ssl.SSLError):
        return False


def attack(sock, mode, authority):
    if mode == "rapid-reset":
        for i in range(5000):
            sid = 2 * i + 1
            burst = frame(HEADERS, END_HEADERS | END_STREAM, sid, request_block(authority))
            burst += frame(RST, 0, sid, struct.pack(">I", 8))
            if not send_quietly(sock, burst):
                return
    elif mode == "continuation":
        send_quietly(sock, frame(HEADERS, 0, 1, request_block(authority)))
        for i in range(20000):
            if not send_quietly(sock, frame(CONT, 0, 1, literal(b"x-c%d" % (i % 10), b"v"))):
                return
    elif mode == "big-headers":
        # 100 KiB of fields (five of 20 KiB), over CONTINUATIONs of 16 KiB:
        # past the header list bound the stream is refused; then a normal
        # request on stream 3 must still be answered.
        block = request_block(authority)
        for k in range(5):
            block += long_literal(b"x-big%d" % k, 20 * 1024)
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = frame(HEADERS, END_STREAM if len(chunks) > 1 else END_STREAM | END_HEADERS, 1, chunks[0])
        for j, c in enumerate(chunks[1:]):
            out += frame(CONT, END_HEADERS if j == len(chunks) - 2 else 0, 1, c)
        send_quietly(sock, out)
        time.sleep(0.3)
        send_quietly(sock, frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block(authority)))
    elif mode == "settings-flood":
        for _ in range(100):
            if not send_quietly(sock, frame(SETTINGS, 0, 0) * 1000):
                return
    elif mode == "ping-flood":
        for _ in range(100):
            if not send_quietly(sock, frame(PING, 0, 0, b"12345678") * 1000):
                return
    elif mode == "too-many-streams":
        for i in range(300):
            if not send_quietly(sock, frame(HEADERS, END_HEADERS, 2 * i + 1, request_block(authority))):
                return
    elif mode == "normal":
        send_quietly(sock, frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(authority)))
    else:
        raise SystemExit("unknown mode " + mode)


def observe(sock, seconds):
    """Reads frames until the connection ends or seconds pass."""
    seen = {"rst": 0}
    buf = b""
    deadline = time.time() + seconds
    sock.settimeout(0.5)
    while time.time() < deadline:
        try:
            got = sock.recv(65536)
        except socket.timeout:
            continue
        except (OSError, ssl.SSLError):
            got = b""
        if not got:
            seen["closed"] = True
            break
        buf += got
        while len(buf) >= 9:
            length = struct.unpack(">I", b"\x00" + buf[:3])[0]
            if len(buf) < 9 + length:
                break
            ftype, payload = buf[3], buf[9:9 + length]
            buf = buf[9 + length:]
            if ftype == GOAWAY and len(payload) >= 8:
                seen["goaway"] = struct.unpack(">I", payload[4:8])[0]
            elif ftype == RST:
                seen["rst"] += 1
            elif ftype == HEADERS:
                seen["response"] = True
        if "goaway" in seen and "closed" in seen:
            break
    return seen


def main():
    proxy_port, target, sni, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    sock = connect(proxy_port, target, sni, ca)
    attack(sock, mode, sni.encode())
    seen = observe(sock, 8)
    if "goaway" in seen:
        print("goaway %d" % seen["goaway"])
    print("rst %d" % seen["rst"])
    if seen.get("response"):
        print("response")
    print("closed" if seen.get("closed") else "timeout")


main()
