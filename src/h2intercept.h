/*
 * h2intercept: the intercept (intercept.h) for HTTP/2 streams.
 *
 * h2relay serves every stream of a connection from one event loop on the
 * connection's thread, so a held stream must not block it: a request or
 * response head that matches is parked in the room (intercept_park()), and
 * only its stream waits, its body bytes queued unacknowledged (flow control
 * bounds them), while the other streams go on. The connection has one
 * eventfd that every resume and drop of its streams writes; the loop polls
 * it beside its two sockets and, when it is readable or a stream's
 * --intercept-timeout is due, asks each parked stream how it ended
 * (h2intercept_check()). A client reset, the end of the connection or the
 * proxy stopping take the stream out of the room (h2intercept_end()).
 *
 * A matching head whose stream has a body, or any head when the filter
 * reads that body (~bq, ~bs, ~b), is not parked at once: h2relay first
 * collects the body (acknowledging it as it arrives, so flow control does
 * not stall at the window) up to INTERCEPT_MAX_BODY_BYTES, then hands it
 * over (h2intercept_body()): the filter is matched with it, and the head
 * parks with the body, shown (a response's decoded) and editable. A body
 * larger than that parks its head alone (a filter that reads it matches an
 * empty body), as do one that does not decode, and one h2relay stops
 * collecting (its per-connection budget, or a body that does not end in
 * time). Nothing here does network
 * I/O: h2relay submits what comes back.
 */
#ifndef TAPWIRE_H2INTERCEPT_H
#define TAPWIRE_H2INTERCEPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capture.h"
#include "intercept.h"
#include "message.h"

/* One HTTP/2 connection's link to the room. */
struct h2intercept {
    struct intercept *ic; /* NULL: intercept off */
    int wake_fd;          /* -1 until a stream parks */
    int stop_fd;          /* readable: the proxy is stopping */
    bool is_stopping;     /* it is: parked streams go on unchanged */
    size_t parked;        /* streams parked now */
};

/* One stream's. Zeroed: nothing held. */
struct h2intercept_stream {
    struct intercept_filter *filter; /* owned, while the response may still match */
    struct flow *flow;               /* owned: the request, for matching */
    struct intercept_ticket *ticket; /* parked now */
    bool is_response;                /* what is parked, or collected */
    bool is_collecting;              /* its body is collected before it parks */
    bool match_with_body;            /* the filter reads that body */
    /* The body parked with the head (a response's decoded), owned. */
    bool has_body;
    unsigned char *body;
    size_t body_len;
    /* A resume's new body (identity), owned; taken by h2relay. */
    bool has_edited_body;
    unsigned char *edited_body;
    size_t edited_body_len;
};

/* What h2intercept_request() and h2intercept_response() answer. */
#define H2INTERCEPT_ON 0      /* goes on */
#define H2INTERCEPT_PARKED 1  /* parked: waits for h2intercept_check() */
#define H2INTERCEPT_COLLECT 2 /* collect the body, then h2intercept_body() */

/* stop_fd: readable once the proxy stops (poll it while streams are
 * parked, then set is_stopping). */
void h2intercept_init(struct h2intercept *hi, struct intercept *ic, int stop_fd);
/* After every stream ended (h2intercept_end()). */
void h2intercept_close(struct h2intercept *hi);
/* The fd to poll for POLLIN, or -1; read it with h2intercept_drain(). */
int h2intercept_fd(const struct h2intercept *hi);
void h2intercept_drain(struct h2intercept *hi);

/*
 * A stream's request head as it goes on (after the rules), host and port
 * for the filter, url as the dashboard shows it, has_body when DATA
 * follows. Returns H2INTERCEPT_PARKED, H2INTERCEPT_ON, or
 * H2INTERCEPT_COLLECT. What happened goes to cap's notes.
 */
int h2intercept_request(struct h2intercept *hi, struct h2intercept_stream *s,
                        const struct message *req, const char *host, uint16_t port, const char *url,
                        struct capture *cap, bool has_body);
/* The same for the final response head (after the rules). */
int h2intercept_response(struct h2intercept *hi, struct h2intercept_stream *s,
                         const struct message *resp, const char *url, struct capture *cap,
                         bool has_body);
/*
 * The body collected for s (after H2INTERCEPT_COLLECT), as received:
 * whole (is_whole) or the bytes before it passed the limit. head is what
 * was collected for (its Content-Encoding decodes a response's body).
 * Returns H2INTERCEPT_PARKED or H2INTERCEPT_ON.
 */
int h2intercept_body(struct h2intercept *hi, struct h2intercept_stream *s,
                     const struct message *head, const unsigned char *body, size_t len,
                     bool is_whole, const char *url, struct capture *cap);

enum h2intercept_verdict {
    H2INTERCEPT_WAITS,  /* still parked */
    H2INTERCEPT_GO,     /* goes on as it was held */
    H2INTERCEPT_EDITED, /* goes on as *edited */
    H2INTERCEPT_DROP,   /* dropped from the dashboard: answer 502 */
};

/*
 * A parked stream whose head is held (released at once when is_stopping):
 * whether it still waits (*left_ms,
 * its time to --intercept-timeout, lowered to it when smaller), or goes on
 * as held, or as *edited (message_free(); names lowercased; a request's
 * edit recorded in cap; a new body in s->edited_body, for which h2relay
 * sets content-length and takes content-encoding off), or was dropped.
 */
enum h2intercept_verdict h2intercept_check(struct h2intercept *hi, struct h2intercept_stream *s,
                                           const struct message *held, struct message *edited,
                                           struct capture *cap, int *left_ms);
/* The stream ends: out of the room when parked (why goes to cap's notes),
 * its filter and flow freed. */
void h2intercept_end(struct h2intercept *hi, struct h2intercept_stream *s, struct capture *cap,
                     const char *why);

#endif
