#!/usr/bin/python3
"""gRPC peers for the HTTP/2 test (Debian's python3-grpcio, no generated code).

  grpc_peer.py serve PORT_FILE CERT KEY     a TLS gRPC server on 127.0.0.1:0
  grpc_peer.py client TARGET CA [PROXY]     unary, failing, server-streaming
                                            and bidirectional calls; prints
                                            one line per call
  grpc_peer.py call TARGET CA PROXY METHOD ARG
                                            one call (Unary or Late, whose
                                            status comes in trailers after a
                                            message); prints its messages and
                                            its status

The client names the server good.test (the test PKI's name) and goes
through PROXY (an http:// URL) when given, as gRPC clients honour
grpc.http_proxy.
"""
import sys
from concurrent import futures

import grpc

def serve(port_file, cert, key):
    def unary(req, ctx):
        if req == b"fail":
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry for you")
        return b"echo:" + req
    def stream_out(req, ctx):
        for i in range(int(req)):
            yield b"item-%d" % i
    def bidi(it, ctx):
        for m in it:
            yield b"bidi:" + m
    def late(req, ctx):
        # A message first, so that the status travels in trailers after DATA.
        yield b"late:" + req
        ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "late failure")
    h = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream_out),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Late": grpc.unary_stream_rpc_method_handler(late),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((h,))
    creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    open(port_file, "w").write(str(port))
    server.wait_for_termination()

def client(target, ca, proxy):
    opts = [("grpc.ssl_target_name_override", "good.test"), ("grpc.http_proxy", proxy)] if proxy else [("grpc.ssl_target_name_override", "good.test")]
    ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()), options=opts)
    u = ch.unary_unary("/test.Echo/Unary")
    print("unary", u(b"hi", timeout=10).decode())
    try:
        u(b"fail", timeout=10)
    except grpc.RpcError as e:
        print("fail", e.code().name, e.details())
    s = ch.unary_stream("/test.Echo/Stream")
    print("stream", ",".join(x.decode() for x in s(b"3", timeout=10)))
    b = ch.stream_stream("/test.Echo/Bidi")
    print("bidi", ",".join(x.decode() for x in b(iter([b"a", b"b"]), timeout=10)))

def call(target, ca, proxy, method, arg):
    ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()),
                             options=[("grpc.http_proxy", proxy)])
    got = []
    try:
        if method == "Unary":
            got.append(ch.unary_unary("/test.Echo/Unary")(arg.encode(), timeout=10))
        else:
            for m in ch.unary_stream("/test.Echo/" + method)(arg.encode(), timeout=10):
                got.append(m)
        status = "OK"
    except grpc.RpcError as e:
        status = "%s %s" % (e.code().name, e.details())
    print(method, ",".join(m.decode() for m in got), status)

if sys.argv[1] == "serve":
    serve(*sys.argv[2:5])
elif sys.argv[1] == "call":
    call(*sys.argv[2:7])
else:
    client(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
