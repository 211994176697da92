/*
 * session: one client connection's life, on its own thread, from the first
 * byte to the close. It learns where the client wants to go, opens the
 * origin (origin.c), runs the exchanges (exchange.c) with capture and rules
 * handed down as hooks, and answers every refusal itself, through one path
 * that sends the page, writes the log line and records the flow.
 *
 * A session starts at the entry point for the way its client arrived; each
 * new way (a SOCKS5 or transparent listener, a reverse proxy) is one more
 * entry point that ends in the same state machine.
 */
#ifndef TAPWIRE_SESSION_H
#define TAPWIRE_SESSION_H

#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

#include "ca.h"
#include "certstore.h"
#include "config.h"
#include "destguard.h"
#include "flowstore.h"
#include "proxyauth.h"
#include "reverse.h"
#include "rules.h"
#include "upstreamproxy.h"

#define SESSION_PEEK_BYTES 16389 /* one full TLS record plus its header */

/* What every session shares, read-only after startup. */
struct proxy_env {
    const struct config *cfg;
    const struct ca *ca;
    struct certstore *certs;
    struct flowstore *flows;           /* NULL: capture off */
    struct rules_current *rules;       /* the live rewrite rules, NULL: none */
    struct intercept *intercept;       /* the intercept filter and waiting room, NULL: none */
    const struct destguard *guard;     /* destinations refused after resolution, NULL: none */
    const struct proxyauth *auth;      /* --proxy-auth: who may use the proxy, NULL: anyone */
    const struct upstreamproxy *proxy; /* --upstream-proxy, NULL: origins directly */
    SSL_CTX *server_ctx;               /* client-facing TLS */
    SSL_CTX *upstream_ctx;             /* TLS towards origins */
    int stop_fd;   /* readable once the proxy stops accepting: idle clients end */
    int cancel_fd; /* readable once the shutdown grace is over: everything ends */
};

/* The ways a client arrives; each has its entry point below. */
enum session_listener {
    SESSION_LISTENER_PROXY,       /* --listen: the explicit proxy */
    SESSION_LISTENER_SOCKS5,      /* --socks5 */
    SESSION_LISTENER_TRANSPARENT, /* --transparent */
    SESSION_LISTENER_REVERSE,     /* --reverse */
};

/* "proxy", "socks5", "transparent", "reverse": for flows and logs. */
const char *session_listener_name(enum session_listener listener);

/*
 * An explicit proxy client on fd (absolute-form requests and CONNECT):
 * serves it until it is done, then closes fd.
 */
void session_serve_explicit(const struct proxy_env *env, int fd,
                            const struct sockaddr_storage *peer);

/*
 * A client on fd whose destination host:port is already known, as after a
 * CONNECT: what it sends first decides between TLS interception, plain
 * HTTP and a raw relay. listener is the way it came in (SOCKS5,
 * transparent). Serves it until it is done, then closes fd.
 */
void session_serve_tunnel(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                          enum session_listener listener, const char *host, uint16_t port);

/*
 * A client turned away before its session began (a SOCKS5 handshake
 * refused): recorded as a flow like every refusal a session answers, a
 * "tcp" CONNECT to host:port (host "" when the client named none) with the
 * status that says why (400 malformed, 403 or 508 a refused destination,
 * 407 credentials, 501 an unsupported command) and reason. The caller has
 * answered the client and logged it.
 */
void session_record_refusal(const struct proxy_env *env, const struct sockaddr_storage *peer,
                            enum session_listener listener, const char *host, uint16_t port,
                            int status, const char *reason);

/*
 * A --reverse listener's client on fd: every request goes to rt's origin
 * with Host (the request's authority) rewritten to it and rt's path prefix
 * in front of the target; with rt->is_tls_listener the client's TLS
 * handshake is finished first with a minted leaf. Serves it until it is
 * done, then closes fd. rt outlives the session.
 */
void session_serve_reverse(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                           const struct reverse_target *rt);

#endif
