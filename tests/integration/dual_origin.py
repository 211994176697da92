#!/usr/bin/python3
"""A TLS origin that speaks HTTP/1.1 and offers h2 first (stdlib only).

Usage: dual_origin.py PORT_FILE CERT KEY ANSWER [LOG]

It selects h2 whenever a client offers it (its own order first, as nginx
does), and closes such a connection (it speaks no HTTP/2 frames): only a
client that offered http/1.1 alone gets an answer. ANSWER is "ok" (200 with
the body "ok") or "upgrade" (101 Switching Protocols to websocket). With
LOG, each connection's selected protocol is appended to it ("alpn h2").
The port bound on 127.0.0.1 goes to PORT_FILE.
"""
import socket
import ssl
import sys
import threading

ANSWERS = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    "upgrade": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n"
               b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
}


def main():
    port_file, cert, key, answer = sys.argv[1:5]
    log = open(sys.argv[5], "a", buffering=1) if len(sys.argv) > 5 else None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    with open(port_file, "w") as f:
        f.write(str(srv.getsockname()[1]))

    def serve(conn):
        try:
            c = ctx.wrap_socket(conn, server_side=True)
            if log is not None:
                log.write("alpn %s\n" % c.selected_alpn_protocol())
            if c.selected_alpn_protocol() != "http/1.1":
                c.close()
                return
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            c.sendall(ANSWERS[answer])
            c.close()
        except (OSError, ssl.SSLError):
            pass

    srv.settimeout(60)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
