#!/usr/bin/python3
"""WebSocket peers for test_websocket.sh (Debian's python3-websockets).

  ws_peer.py serve PORT_FILE [CERT KEY]
      an echo server on 127.0.0.1:0 (TLS when CERT and KEY are given) that
      sends every message back as it came; it offers permessage-deflate.
  ws_peer.py client PROXY_PORT ORIGIN_PORT CA|- deflate|plain
      through tapwire's CONNECT tunnel to good.test (wss when CA is given):
      text, binary, a fragmented text, a ping, a large text, then a close
      with 4001 "bye"; prints one line per step, "ok" or what differed.
  ws_peer.py live PROXY_PORT ORIGIN_PORT GO_FILE [FIRST SECOND]
      plain ws: sends FIRST ("live-1"), prints its echo, then waits (at
      most 30 s) for GO_FILE to exist before it sends SECOND ("live-2") and
      closes with 1000.
  ws_peer.py hostile PROXY_PORT ORIGIN_PORT KIND
      a raw client (plain ws) that completes the handshake, then sends one
      bad frame of KIND (unmasked, badutf8, huge); prints the close code
      tapwire answered with and whether the connection then ended.

The websockets client takes a socket already connected, so the tunnel is
opened here: the library does not speak to HTTP proxies.
"""
import asyncio
import base64
import os
import socket
import ssl
import struct
import sys

import websockets


def serve(port_file, cert=None, key=None):
    async def echo(ws, path=None):
        try:
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass

    async def main():
        ctx = None
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
        async with websockets.serve(echo, "127.0.0.1", 0, ssl=ctx, compression="deflate",
                                    max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            with open(port_file + ".tmp", "w") as f:
                f.write(str(port))
            os.rename(port_file + ".tmp", port_file)
            await asyncio.Future()

    asyncio.run(main())


def tunnel(proxy_port, origin_port):
    """A socket through tapwire's CONNECT to the origin, by address: the
    name good.test resolves nowhere and comes in the SNI or Host."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
              % (origin_port, origin_port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise SystemExit("tunnel: proxy closed")
        head += chunk
    if b" 200" not in head.split(b"\r\n")[0]:
        raise SystemExit("tunnel: %r" % head)
    s.settimeout(None)
    return s


def client(proxy_port, origin_port, ca, mode):
    async def main():
        sock = tunnel(proxy_port, origin_port)
        ctx = None
        scheme = "ws"
        if ca != "-":
            ctx = ssl.create_default_context(cafile=ca)
            scheme = "wss"
        kw = {"ssl": ctx, "server_hostname": "good.test"} if ctx else {}
        uri = "%s://good.test:%d/chat" % (scheme, origin_port)
        async with websockets.connect(uri, sock=sock,
                                      compression="deflate" if mode == "deflate" else None,
                                      max_size=None, **kw) as ws:
            ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
            print("extensions", "deflate" if "permessage-deflate" in ext else "none")
            await ws.send("hello tapwire")
            print("text", "ok" if await ws.recv() == "hello tapwire" else "differs")
            blob = bytes(range(256)) * 4
            await ws.send(blob)
            print("binary", "ok" if await ws.recv() == blob else "differs")
            await ws.send(["frag-", "ment", "ed \u00e9"])
            print("fragmented", "ok" if await ws.recv() == "frag-mented \u00e9" else "differs")
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 10)
            print("ping", "ok")
            big = "tapwire " * 20000
            await ws.send(big)
            print("large", "ok" if await ws.recv() == big else "differs")
            await ws.close(4001, "bye")
            print("close", ws.close_code)

    asyncio.run(asyncio.wait_for(main(), 30))


def live(proxy_port, origin_port, go_file, first="live-1", second="live-2"):
    async def main():
        sock = tunnel(proxy_port, origin_port)
        async with websockets.connect("ws://good.test:%d/live" % origin_port, sock=sock,
                                      compression=None) as ws:
            await ws.send(first)
            print("echo", await ws.recv(), flush=True)
            for _ in range(600):
                if os.path.exists(go_file):
                    break
                await asyncio.sleep(0.05)
            await ws.send(second)
            print("echo", await ws.recv(), flush=True)
            await ws.close(1000)

    asyncio.run(asyncio.wait_for(main(), 60))


def hostile(proxy_port, origin_port, kind):
    s = tunnel(proxy_port, origin_port)
    s.settimeout(10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: good.test:%d\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n" % (origin_port, key))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise SystemExit("hostile: no 101")
        head += chunk
    if b" 101" not in head.split(b"\r\n")[0]:
        raise SystemExit("hostile: %r" % head)
    mask = b"\x11\x22\x33\x44"

    def masked(payload):
        return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    # A good message first: it must still reach the server and come back.
    s.sendall(b"\x81\x84" + mask + masked(b"good"))
    if kind == "unmasked":
        s.sendall(b"\x81\x03bad")
    elif kind == "badutf8":
        s.sendall(b"\x81\x82" + mask + masked(b"\xc3\x28"))
    elif kind == "huge":
        s.sendall(b"\x82\xff" + struct.pack(">Q", 1 << 62) + mask + b"xxxx")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        print("timeout")
        return
    # The echo of "good", then tapwire's Close.
    code = None
    echoed = False
    i = 0
    while i + 2 <= len(data):
        op, n = data[i] & 0x0f, data[i + 1] & 0x7f
        body = data[i + 2:i + 2 + n]
        if op == 1 and body == b"good":
            echoed = True
        if op == 8 and len(body) >= 2:
            code = body[0] << 8 | body[1]
        i += 2 + n
    print("echoed", "yes" if echoed else "no")
    print("close", code)
    print("ended", "yes")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(*sys.argv[2:])
    elif cmd == "client":
        client(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif cmd == "live":
        live(int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
    elif cmd == "hostile":
        hostile(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(__doc__)
