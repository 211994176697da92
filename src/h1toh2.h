/*
 * h1toh2: an HTTP/1.1 client's requests to an origin that speaks only
 * HTTP/2 (it selected h2 by ALPN: a gRPC server, an h2-only nghttpd),
 * translated by RFC 9113 section 8 and RFC 9110 7.6. The reverse of
 * h2bridge.
 *
 * Why this shape: when the client side is HTTP/1.1 and tapwire chose the
 * origin (a --reverse listener's, a map-remote's, and a replay's, which
 * has no client; an intercepted tunnel's origin is offered only what its
 * client offered), the session (or replay.c) offers the origin
 * "http/1.1, h2" in that order, so that an origin that honours the
 * client's order stays on HTTP/1.1 and one that speaks nothing else can
 * pick h2. It is the smallest change that is correct: one handshake, as
 * before. The alternative, offering http/1.1 alone and retrying with h2,
 * costs a second handshake and cannot tell when to retry (an h2-only
 * nghttpd completes the handshake without ALPN rather than refusing it,
 * and the failure shows only once a request went out). The price: an
 * origin that ranks h2 first whatever the client's order (nginx) is
 * translated too (which is why tunnels are left out). That is correct, as
 * long as nothing is lost on the way: the rules (body rules included,
 * buffered and reframed as exchange.c does), capture and the intercept run
 * here as in the exchange, and an upgrade (WebSocket), which HTTP/2 cannot
 * carry, goes on a new connection offered http/1.1 alone (session.c).
 *
 * The session thread already blocks on one request at a time of an
 * HTTP/1.1 client connection, so each request runs as one stream of an
 * nghttp2 client session over the origin connection, to its end, before
 * the next request is read: no poll loop, no queue. The session is kept
 * with the origin connection, so kept-alive client requests share it.
 *
 * Framing stays the client side's: the HTTP/1.1 parser already refused
 * ambiguous requests; the body is read in the framing it declared
 * (content-length counted, or chunked) and sent as DATA frames, the
 * response goes to the client with a content-length when the origin gave
 * one that matched (nghttp2 checks the DATA against it), else chunked with
 * the trailers as chunked trailers. Connection-specific fields never cross
 * (RFC 9113 8.2.2). A body that body rules want is buffered whole (within
 * --rewrite-limit and --rewrite-memory), rewritten and sent with a
 * content-length, without content-encoding when it changed. Never sees a
 * flow or a rule: capture and rules are the exchange's hooks.
 */
#ifndef TAPWIRE_H1TOH2_H
#define TAPWIRE_H1TOH2_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

#include "exchange.h"
#include "message.h"
#include "stream.h"

/* Fields one translated request head may carry (beyond the pseudo ones). */
#define H1TOH2_MAX_FIELDS 256
/* Response fields (and trailers) kept from the origin, and their bytes. */
#define H1TOH2_MAX_RESPONSE_FIELDS 256
#define H1TOH2_MAX_RESPONSE_FIELD_BYTES (64 * 1024)

/* Bytes of the lower-cased field names of one request head. */
#define H1TOH2_MAX_NAME_BYTES 16384

/* The request head as HTTP/2 name/value pairs: values point into the
 * request, names into names (lower-cased, RFC 9113 8.2.1). */
struct h1toh2_head {
    nghttp2_nv nv[H1TOH2_MAX_FIELDS + 4];
    size_t count;
    char names[H1TOH2_MAX_NAME_BYTES];
};

/*
 * Translates req (an HTTP/1.1 request as it is to go out, after the rules;
 * scheme set, authority or a Host field) into out: :method, :scheme,
 * :authority (the authority, else Host, RFC 9113 8.3.1), :path, then the
 * fields lower-cased, without Host, the connection-specific ones
 * (Connection and what it names, Keep-Alive, Proxy-Connection,
 * Transfer-Encoding, Upgrade, TE other than "trailers", RFC 9113 8.2.2),
 * and Expect (the proxy answers 100-continue itself). Returns 0, or -1
 * with *why (a static sentence) when it cannot be sent: no authority, an
 * upgrade, a CONNECT, too many fields.
 */
int h1toh2_request_head(const struct message *req, struct h1toh2_head *out, const char **why);

struct h1toh2;

/*
 * An HTTP/2 client session over origin (connected, h2 chosen by ALPN;
 * borrowed, it must outlive the session). Queues the connection preface.
 * Returns NULL when out of memory. Free with h1toh2_free().
 */
struct h1toh2 *h1toh2_new(struct stream *origin);
void h1toh2_free(struct h1toh2 *c);

/* Whether c runs over origin and can take another request (no GOAWAY, no
 * failure). */
bool h1toh2_is_usable(const struct h1toh2 *c, const struct stream *origin);

/*
 * Like exchange_forward(): sends req (its head already read off client,
 * its body still there) as one stream, relays the response to client as
 * HTTP/1.1, reports to cap and applies rw's response header rules. Returns
 * 0 when the exchange completed, -1 when it broke off (res->error says why;
 * res->status 0: nothing sent to the client yet, res->error_status is the
 * page to answer with).
 */
int h1toh2_forward(struct h1toh2 *c, struct stream *client, const struct message *req,
                   const struct exchange_timeouts *t, const struct exchange_rewrite *rw,
                   const struct exchange_capture *cap, struct exchange_result *res);

#endif
