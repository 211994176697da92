/*
 * reverse: what a --reverse listener stands in for. Clients connect to
 * tapwire as if it were the origin at a URL; this module owns the parsed
 * option (where to listen, whether clients speak TLS to tapwire, the
 * origin's scheme, host, port and path prefix), how a client's target maps
 * onto the origin, and the optional X-Forwarded-* fields. It never touches
 * a socket: the session (session_serve_reverse()) runs the connection.
 */
#ifndef TAPWIRE_REVERSE_H
#define TAPWIRE_REVERSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"
#include "message.h"

#define REVERSE_MAX_PREFIX_BYTES 256 /* the URL's path prefix, with its NUL */

struct reverse_target {
    char listen_host[256];           /* without brackets */
    uint16_t listen_port;            /* 0: ephemeral */
    bool is_tls_listener;            /* "https://ADDR:PORT=...": clients speak TLS to tapwire */
    bool is_tls;                     /* the origin's scheme is https */
    char host[HTTP1_MAX_HOST_BYTES]; /* the origin; IPv6 without brackets */
    uint16_t port;
    char authority[HTTP1_MAX_HOST_BYTES + 8]; /* the Host the origin gets: host[:port] */
    char prefix[REVERSE_MAX_PREFIX_BYTES];    /* "" or "/api": no trailing slash */
};

/*
 * Parses the origin URL of a --reverse option into out's origin fields
 * (the listening fields are config.c's): http:// or https://, a host and
 * an optional port, and an optional path prefix without query or fragment
 * ("https://api.example:8443/v1"). Returns 0, or -1 with err saying what
 * is wrong.
 */
int reverse_parse_url(const char *url, struct reverse_target *out, char *err, size_t err_len);

/*
 * The origin-form target for a client's target of len bytes: the prefix
 * followed by the client's path ("/x" under "/api" is "/api/x"; "*" stays
 * "*" without a prefix and becomes the prefix with one). Caller frees;
 * NULL when out of memory.
 */
char *reverse_map_target(const struct reverse_target *rt, const char *target, size_t len);

/* The fields a request goes on with under --reverse-forwarded; owns what
 * the list points to beyond the request's own fields. */
struct reverse_forwarded {
    struct message_field *items;
    char *forwarded_for; /* the X-Forwarded-For value */
};

/*
 * Makes *out the request's fields (in) without any X-Forwarded-Proto or
 * X-Forwarded-Host the client sent (it could claim anything), then
 * X-Forwarded-For: the client's earlier values and client_ip (RFC 7239's
 * predecessor convention: each proxy appends the address it saw),
 * X-Forwarded-Proto: "https" or "http" as the client spoke to tapwire, and
 * X-Forwarded-Host: the client's Host field, when it sent one. The
 * returned list points into in's strings and into fw, so it lives as long
 * as both. Returns 0, or -1 when out of memory. Free fw with
 * reverse_forwarded_free().
 */
int reverse_forwarded_fields(const struct message_fields *in, const char *client_ip,
                             bool is_tls_client, struct reverse_forwarded *fw,
                             struct message_fields *out);
void reverse_forwarded_free(struct reverse_forwarded *fw);

#endif
