/*
 * origin: one connection to an origin server. Connects (every resolved
 * address through the destination guard), runs the honest TLS client of
 * upstream.c, keeps the TLS facts that flows record, and is kept open for the
 * next exchange to the same host, port and scheme.
 *
 * It needs no client connection: a session opens one for the requests of its
 * client, and a replay of a stored flow can open one on its own. Owned by one
 * thread; nothing here is shared.
 */
#ifndef TAPWIRE_ORIGIN_H
#define TAPWIRE_ORIGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "destguard.h"
#include "stream.h"
#include "upstream.h"
#include "upstreamproxy.h"

/* What is known about the TLS of the origin connection, for the flows that
 * use it. Strings owned; NULL when unknown. */
struct origin_tls {
    char version[16]; /* "TLSv1.3" */
    char cipher[64];
    char *cert_subject;
    char *cert_issuer;
    char *cert_sans;        /* "DNS:a, DNS:b, IP:1.2.3.4" */
    int64_t cert_not_after; /* unix seconds, 0 if unknown */
    char *verification;     /* "ok", "--insecure: ...", or why verification failed */
};

/* Read-only settings every origin connection of the process shares. */
struct origin_settings {
    SSL_CTX *tls_ctx;                  /* TLS towards origins (upstream_ctx_new()) */
    const struct destguard *guard;     /* NULL: no destination is refused */
    const struct upstreamproxy *proxy; /* --upstream-proxy, NULL: connect directly */
    int timeout_ms;                    /* connect, and the TLS handshake */
    int cancel_fd;                     /* readable on shutdown: waits end */
    size_t in_max_bytes;               /* bound of the stream's input buffer */
};

/* Where to connect and what to ask for. */
struct origin_target {
    const char *host;
    uint16_t port;
    bool is_tls;
    const char *sni;         /* NULL: none sent */
    const char *verify_name; /* the name the certificate must carry */
    bool offers_http11;      /* ALPN http/1.1 (the client offered it, or no client) */
    bool offers_h2;          /* ALPN h2 (the client offered it and can be served it) */
    /* ALPN h2 after http/1.1 when offers_h2 is false: the client speaks
     * HTTP/1.1, and an origin that speaks only h2 is translated (h1toh2). */
    bool accepts_h2_only;
    /* Plain HTTP requests will be sent (not TLS, not a raw relay): through
     * an upstream proxy they go in absolute-form, without a CONNECT. */
    bool is_plain_http;
};

struct origin {
    struct stream stream; /* open while connected */
    char host[256];
    uint16_t port;
    bool is_tls;
    bool is_h2;            /* the origin chose h2 by ALPN */
    bool is_http11_chosen; /* ... or http/1.1 (neither: it chose nothing, or no TLS) */
    /* Connected to the upstream proxy, not the origin: every request head
     * goes in absolute-form (upstreamproxy_prepare()). */
    bool is_proxied_http;
    struct origin_tls tls;
    /* Wall-clock microseconds of the last origin_open(): begun, TCP
     * connected, TLS done (0 when a step did not happen). The next flow
     * takes them (origin_take_open_times()). */
    int64_t opened_at_us, connected_at_us, tls_done_at_us;
    /* --insecure: what verification found and was told to ignore; "" else */
    char insecure_note[UPSTREAM_ERROR_BYTES + 16];
};

/* A closed origin with no facts yet. */
void origin_init(struct origin *o, int cancel_fd);

/*
 * Connects o to target (closing what o had open before). The TLS facts are
 * recorded also when the handshake or the verification fails, so that the
 * flow can say what the origin presented. Returns 0, or -1 with *err (the
 * status says which page the client gets). peer (may be NULL) gets the
 * origin's certificate with its own reference (caller frees).
 */
int origin_open(struct origin *o, const struct origin_settings *settings,
                const struct origin_target *target, struct upstream_error *err, X509 **peer);

/* Whether o is open to host:port with that scheme, for reuse. */
bool origin_is_open_to(const struct origin *o, const char *host, uint16_t port, bool is_tls);

/* When the connection was just opened: its open times, once (then 0). */
bool origin_take_open_times(struct origin *o, int64_t *connected_at_us, int64_t *tls_done_at_us);

/* Closes the connection; the TLS facts stay for the flows that used it. */
void origin_close(struct origin *o);

/* Closes and frees everything o holds. */
void origin_free(struct origin *o);

#endif
