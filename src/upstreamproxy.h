/*
 * upstreamproxy: reaching origins through another HTTP proxy
 * (--upstream-proxy http://[user:pass@]host:port), for networks that only
 * reach the internet through their own proxy. TLS origins and raw tunnels
 * go through a CONNECT (RFC 9110 9.3.6); plain HTTP requests are sent to
 * the proxy in absolute-form (RFC 9112 3.2.2). The proxy's credentials go
 * in a Basic Proxy-Authorization field and never into a log line or a flow.
 * Hosts matching --upstream-proxy-ignore are reached directly.
 *
 * What comes through the tunnel is still verified as before: the TLS client
 * of upstream.c checks the origin's chain and name end to end, so the
 * upstream proxy can refuse a connection but never vouch for an origin.
 * Read-only after parsing; any thread may use it.
 */
#ifndef TAPWIRE_UPSTREAMPROXY_H
#define TAPWIRE_UPSTREAMPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "upstream.h"

#define UPSTREAMPROXY_MAX_HEAD_BYTES 16384 /* the proxy's answer to a CONNECT */

struct upstreamproxy;

/*
 * Parses url ("http://[user:pass@]host:port", user and pass may be
 * percent-encoded) and keeps the ignore globs (argv strings, borrowed).
 * Returns 0 with *out (caller frees with upstreamproxy_free()) or -1 with err.
 */
int upstreamproxy_new(const char *url, const char *const *ignore, size_t ignore_count,
                      struct upstreamproxy **out, char *err, size_t err_len);
void upstreamproxy_free(struct upstreamproxy *p);

/* "host:port" of the proxy, for people (never with the credentials). */
const char *upstreamproxy_name(const struct upstreamproxy *p);

/* Whether connections to host go through the proxy (p may be NULL: no). */
bool upstreamproxy_applies(const struct upstreamproxy *p, const char *host);

/*
 * A socket to the proxy, tunnelled to host:port by a CONNECT when
 * is_tunnel (else connected to the proxy only, for absolute-form requests).
 * Bounded by timeout_ms overall; cancel_fd (may be -1) readable ends the
 * wait. The proxy's answer is read exactly, so nothing the origin sends
 * after it is lost. Returns the blocking socket or -1 with *err: the
 * proxy's refusal (its status line) as UPSTREAM_PROXY_FAILED, naming it.
 */
int upstreamproxy_connect(const struct upstreamproxy *p, const char *host, uint16_t port,
                          bool is_tunnel, int timeout_ms, int cancel_fd,
                          struct upstream_error *err);

/* What one plain request needs to go through the proxy (see
 * upstreamproxy_prepare()). */
struct upstreamproxy_request {
    char *target;                     /* owned: "http://host:port/path" */
    struct message_field credentials; /* Proxy-Authorization, for this hop only */
};

/*
 * out: req as the proxy must get it (RFC 9112 3.2.2): its target made
 * absolute ("http://host:port" + req's origin-form target) and the proxy's
 * Proxy-Authorization as a next-hop field when it has credentials. out
 * points into req and into state (free with upstreamproxy_request_free()
 * after out is used). Returns 0, or -1 when out of memory.
 */
int upstreamproxy_prepare(const struct upstreamproxy *p, const struct message *req,
                          const char *host, uint16_t port, struct message *out,
                          struct upstreamproxy_request *state);
void upstreamproxy_request_free(struct upstreamproxy_request *state);

#endif
