/*
 * h2relay: HTTP/2 on both sides of one intercepted connection, for when the
 * client and the origin both chose h2 by ALPN (the session offers the origin
 * what the client offered and gives the client what the origin chose, so
 * this common case needs no translation between versions).
 *
 * nghttp2 does the framing, HPACK and flow control on both sides; this
 * module is the glue: each client stream becomes one origin stream with
 * the same request (after the rules), the response comes back on the
 * client's stream, and each pair is one flow. It runs on the session's
 * thread: one poll loop over the two connections serves every stream, so a
 * slow stream holds only its own flow-control window, never the others
 * (bytes are acknowledged to the sender only once the other side took them).
 *
 * When the client speaks h2 and the origin only HTTP/1.1 (an h2-only client,
 * or a TLS --reverse listener), the origin side is h2bridge instead of a
 * second nghttp2 session: each stream's request, after the same rules and
 * capture, is translated to HTTP/1.1 there, and its response comes back
 * through h2bridge's callbacks into the same queues.
 */
#ifndef TAPWIRE_H2RELAY_H
#define TAPWIRE_H2RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "flow.h"
#include "origin.h"
#include "rules.h"
#include "stream.h"

struct flowstore;
struct intercept;

/* SETTINGS we send to the client: concurrent streams (RFC 9113 6.5.2; the
 * rapid-reset defence counts against it too) and the largest header list
 * we take per request, beyond which the stream is refused. */
#define H2RELAY_MAX_STREAMS 100
#define H2RELAY_MAX_HEADER_LIST_BYTES 65536
/* The flow-control window we open per stream and per connection: what one
 * stream's body may have in flight inside tapwire at once. */
#define H2RELAY_STREAM_WINDOW_BYTES (256 * 1024)
#define H2RELAY_CONNECTION_WINDOW_BYTES (4 * 1024 * 1024)
/* Bodies the intercept collects (h2intercept.h) on one connection at
 * once: past it a stream's head waits without its body, which flow
 * control bounds, so that many streams do not multiply the 1 MiB each. */
#define H2RELAY_MAX_COLLECTED_BYTES (8 * 1024 * 1024)
/* How long a body the intercept collects may take to end (a streaming
 * call's client may wait for the answer first): then its head waits
 * without it. */
#define H2RELAY_COLLECT_MS 3000
/* Origins of map-remote rules one connection's streams may be sent to
 * (each over HTTP/1.1 connections of its own); a stream mapped to one
 * more is refused with REFUSED_STREAM. */
#define H2RELAY_MAX_REMOTES 4
/* A stream a mock or block answers has its body read (recorded, and
 * acknowledged) before the answer goes, up to this much. */
#define H2RELAY_ANSWER_DRAIN_BYTES (8 * 1024 * 1024)

struct h2relay_env {
    struct stream *client; /* TLS, h2 selected */
    struct stream *origin; /* TLS, h2 selected; NULL: an HTTP/1.1-only origin (below) */
    /* The origin speaks only HTTP/1.1 (origin NULL): every stream's request
     * is translated by h2bridge and sent over HTTP/1.1 connections to
     * bridge_target, the first of them bridge_first when it is open.
     * bridge_settings also open the origins of map-remote rules, whatever
     * the connection's origin speaks (NULL: such a stream is refused). */
    const struct origin_settings *bridge_settings;
    struct origin_target bridge_target;
    struct origin *bridge_first;
    const char *scheme; /* the origin's, for the flows; NULL: "https" */
    const char *client_name;
    const char *listener; /* how the client came in, for the flows */
    const char *site;     /* the host the flows name (SNI, else the tunnel's host) */
    uint16_t port;
    struct flowstore *store; /* NULL: capture off */
    size_t capture_limit;
    /* Both sides' TLS facts and the origin's open times, for every flow
     * (borrowed for the relay's life). */
    const struct flow_tls *tls;
    int64_t connected_at_us, tls_done_at_us;
    struct rules_current *rules; /* NULL: none */
    size_t rewrite_limit, rewrite_memory;
    /* A reverse proxy's origin: the :authority every request gets, and the
     * path prefix put before each path (NULL: the client's, none). */
    const char *authority;
    const char *path_prefix;
    /* --reverse-forwarded: the client's address for X-Forwarded-For (NULL:
     * no X-Forwarded-* fields are added). */
    const char *forwarded_for;
    struct intercept *intercept; /* NULL: none (h2intercept.h) */
    int stop_fd;                 /* readable once the proxy stops: parked streams go on */
    int idle_ms;                 /* nothing moves on either connection: the relay ends */
    int io_ms;                   /* a write that makes no progress: the relay ends */
};

/*
 * Relays until either connection ends (with an HTTP/1.1-only origin: the
 * client's), the relay idles out or the process
 * shuts down (the streams' cancel fd). Every stream's exchange is logged and
 * recorded. Returns 0, or -1 when a connection failed (logged).
 */
int h2relay_run(const struct h2relay_env *env);

#endif
