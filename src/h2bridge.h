/*
 * h2bridge: the HTTP/1.1 side of an HTTP/2 client connection whose origin
 * speaks only HTTP/1.1 (RFC 9113 section 8, RFC 9110 7.6). h2relay hands it
 * each stream's request as a message (after the rules) and gets the
 * response back through callbacks; this module owns the translation and
 * the upstream connections, and never sees nghttp2, a flow or a rule.
 *
 * Requests go over a small pool of keep-alive HTTP/1.1 connections, one
 * request in flight on each; a request waits its turn when all are busy.
 * The sockets are non-blocking and join the relay's poll loop
 * (h2bridge_pollfds(), h2bridge_step()), so a slow origin answer holds only
 * its own stream. A new connection (connect, TLS, verification) is opened
 * by a thread of its own while the loop goes on; the requests waiting take
 * the first connection that is free, new or kept alive.
 *
 * What HTTP/1.1 would read differently is refused before a byte goes out
 * (h2bridge_check_request()): a request whose method, target, authority or
 * field carries a character HTTP/1.1 frames on, or a content-length that is
 * not one number. The head the origin gets declares framing computed here
 * (content-length when the client declared one, else chunked), and the
 * body is counted against it: a stream that sends more or less than it
 * declared fails and its connection is closed, never reused.
 */
#ifndef TAPWIRE_H2BRIDGE_H
#define TAPWIRE_H2BRIDGE_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "origin.h"

/* HTTP/1.1 connections one client connection may have open to its origin
 * (as browsers do per host): the requests beyond wait their turn. */
#define H2BRIDGE_MAX_CONNECTIONS 6
/* Request body bytes taken from a stream at once, and the most response
 * body bytes a stream may have waiting for its client before the bridge
 * stops reading that connection. */
#define H2BRIDGE_CHUNK_BYTES 16384
/* Requests waiting for a connection, beyond which a stream is refused
 * (the client's own stream limit normally keeps it far below). */
#define H2BRIDGE_MAX_WAITING 256

/*
 * What the bridge asks of the stream it serves (h2relay implements them;
 * stream is the pointer given to h2bridge_submit()). After response_end()
 * or failed() the bridge forgets the stream.
 */
struct h2bridge_ops {
    /* Up to len request body bytes into buf (0: none yet); *is_end once the
     * body and its trailers are all there. */
    size_t (*take_body)(void *stream, char *buf, size_t len, bool *is_end);
    /* The request's trailers, once take_body() said is_end. */
    struct message_fields (*request_trailers)(void *stream);
    /* False while the client has not taken enough of the response body:
     * the connection is not read meanwhile. */
    bool (*can_take_body)(void *stream);
    /* The final response head (fields already without connection-specific
     * ones). Returns 0, or -1 to give the stream up (its connection is
     * closed). */
    int (*response_head)(void *stream, const struct message *head);
    int (*response_body)(void *stream, const char *data, size_t len);
    /* The response is whole, with its trailers (possibly none). */
    void (*response_end)(void *stream, const struct message_fields *trailers);
    /* The exchange failed: status is the answer the client should get when
     * no response head went out yet (502, 504), or 0 for a request the
     * client framed wrongly (reset the stream with PROTOCOL_ERROR). */
    void (*failed)(void *stream, int status, const char *why);
};

struct h2bridge_env {
    const struct h2bridge_ops *ops;
    const struct origin_settings *settings;
    struct origin_target target; /* its strings borrowed for the bridge's life */
    /* A connection already open to the target (the one ALPN was asked on),
     * used first and closed, never freed, by the bridge; NULL: none. */
    struct origin *first;
    const char *client_name; /* for the log */
    int io_ms;               /* an origin that answers nothing for this long: 504 */
};

struct h2bridge;

/* A bridge with no connection open yet (beyond env->first). Returns NULL
 * when out of memory. Free with h2bridge_free(). */
struct h2bridge *h2bridge_new(const struct h2bridge_env *env);
/* Closes every connection; streams still served are forgotten, not told. */
void h2bridge_free(struct h2bridge *b);

/*
 * Whether req (an HTTP/2 request as it is to go out, after the rules) can
 * be written as HTTP/1.1 without being read differently: method a token,
 * target origin-form (or "*" for OPTIONS) without spaces or controls, the
 * authority a valid host[:port] (or a host field to stand for it), field
 * names tokens, values without CR, LF, NUL or other controls and without
 * leading or trailing whitespace, content-length one number, TE (if any)
 * "trailers". Returns 0, or
 * -1 with why (a static sentence).
 */
int h2bridge_check_request(const struct message *req, const char **why);

/*
 * Queues req for stream (copied; it goes out on the next free
 * connection). Returns 0, or -1 with *why when the request is refused
 * (h2bridge_check_request()) or cannot be queued (why names it; nothing is
 * kept of stream).
 */
int h2bridge_submit(struct h2bridge *b, void *stream, const struct message *req, const char **why);

/* The stream is gone (the client reset it): its request leaves the queue,
 * or its connection is closed (a half-sent request is never finished).
 * Nothing is called back. */
void h2bridge_cancel(struct h2bridge *b, void *stream);

/* The pollfd entries the bridge's connections wait on, from p[0] (at most
 * max); returns their count. *timeout_ms is lowered to the next deadline
 * (a response waited for) when there is one. */
size_t h2bridge_pollfds(struct h2bridge *b, struct pollfd *p, size_t max, int *timeout_ms);

/* Moves every connection on as far as it goes without waiting (connecting
 * a new one excepted): writes requests, reads responses, calls back, and
 * times out what waited too long. p and n: what poll() said of the entries
 * h2bridge_pollfds() gave (n 0: nothing known). */
void h2bridge_step(struct h2bridge *b, const struct pollfd *p, size_t n);

/* True when no request is in flight or waiting. */
bool h2bridge_is_idle(const struct h2bridge *b);

#endif
