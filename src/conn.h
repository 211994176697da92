/*
 * conn: one client connection's life. Reads what the client asks for
 * (absolute-form requests or CONNECT), opens the upstream side, decides
 * between interception (TLS), plain HTTP inside a tunnel and a raw relay,
 * and runs the keep-alive loop of exchanges. Runs on its own thread and owns
 * everything about its connection.
 */
#ifndef TAPWIRE_CONN_H
#define TAPWIRE_CONN_H

#include <sys/socket.h>
#include <openssl/ssl.h>

#include "ca.h"
#include "certstore.h"
#include "config.h"
#include "destguard.h"
#include "flowstore.h"
#include "rules.h"

#define CONN_PEEK_BYTES 16389 /* one full TLS record plus its header */

/* What every connection shares, read-only after startup. */
struct proxy_env {
    const struct config *cfg;
    const struct ca *ca;
    struct certstore *certs;
    struct flowstore *flows; /* NULL: capture off */
    struct rules_current *rules; /* the live rewrite rules, NULL: none */
    const struct destguard *guard; /* destinations refused after resolution, NULL: none */
    SSL_CTX *server_ctx;   /* client-facing TLS */
    SSL_CTX *upstream_ctx; /* TLS towards origins */
    int stop_fd;   /* readable once the proxy stops accepting: idle clients end */
    int cancel_fd; /* readable once the shutdown grace is over: everything ends */
};

/* Serves the client on fd until it is done, then closes fd. */
void conn_serve(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer);

#endif
