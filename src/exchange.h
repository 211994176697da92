/*
 * exchange: one HTTP request/response through the proxy. Reads a request
 * head, builds the head the origin gets (origin-form target, hop-by-hop
 * fields removed, Via added, framing re-declared), streams the bodies both
 * ways without buffering them whole, relays interim responses and upgrades.
 * It knows nothing about how the upstream stream was opened (conn does).
 */
#ifndef TAPWIRE_EXCHANGE_H
#define TAPWIRE_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "http1.h"
#include "rules.h"
#include "stream.h"

struct flow;
struct flow_header_facts;

#define EXCHANGE_VIA "1.1 tapwire"
#define EXCHANGE_ERROR_BYTES 512
/* Allocations from this size on are mmap'd and go back to the system when
 * freed (see fix_mmap_threshold() in exchange.c). */
#define EXCHANGE_MMAP_THRESHOLD_BYTES (256 * 1024)

struct exchange_timeouts {
    int idle_ms;   /* waiting for the first byte of the next request */
    int header_ms; /* a whole request head must arrive within this */
    int io_ms;     /* no progress on a body or a response head */
};

/*
 * Reads the next request head from client into its buffer and parses it.
 * Returns the head length (> 0; head points into the client buffer, valid
 * until stream_consume()/stream_fill()), 0 when the client went away or
 * stayed idle (close silently), or -1 with *err set (answer err->status,
 * then close).
 */
int exchange_read_request(struct stream *client, const struct exchange_timeouts *t,
                          struct http1_head *head, struct http1_error *err);

/* False when a request's Transfer-Encoding has codings besides chunked
 * (gzip, chunked): the proxy re-chunks bodies and would lose them. */
bool exchange_has_only_chunked(const struct http1_head *head);

/* What the proxy forwards for one request, copied out of the client buffer
 * so the head bytes can be consumed before the body is read. */
struct exchange_request {
    char method[32];
    int version_minor;
    enum http1_framing framing;
    uint64_t content_length;
    bool keep_alive;
    bool expect_continue;
    bool is_upgrade;
    char content_encoding[64]; /* of the request body, "" for none */
    char *head; /* owned: the head sent upstream */
    size_t head_len;
};

/*
 * Builds out from the client's head. target is the origin-form (or "*")
 * target to send; host_value, if not NULL, replaces the client's Host field
 * (absolute-form requests: RFC 9112 3.2.2). Returns 0, or -1 on allocation
 * failure. Free with exchange_request_free().
 */
int exchange_request_build(struct exchange_request *out, const struct http1_head *req,
                           const char *target, size_t target_len, const char *host_value);
void exchange_request_free(struct exchange_request *req);

/* Rewrite rules for one exchange: the set acquired for it, the context that
 * collects what applied, --rewrite-limit, and --rewrite-memory (what every
 * exchange's body buffers may hold together). */
struct exchange_rules {
    const struct rule_set *set;
    struct rules_ctx *ctx;
    size_t limit;
    size_t memory_limit;
};

/* A head after header rules: fields point into the rules' storage. */
struct exchange_modified_head {
    struct http1_head head;
    struct rules_headers fields;
};

/* Applies the header rules of rw->ctx's phase to in. *out is NULL when
 * nothing changed, else a modified copy (exchange_modified_head_free()).
 * Returns 0, or -1 when out of memory. */
int exchange_apply_header_rules(struct exchange_rules *rw, const struct http1_head *in,
                                struct exchange_modified_head **out);
void exchange_modified_head_free(struct exchange_modified_head *mod);

struct exchange_result {
    int status;                /* final status sent to the client, 0 if none */
    uint64_t request_bytes;    /* body bytes client -> origin */
    uint64_t response_bytes;   /* body bytes origin -> client */
    bool client_keep_alive;    /* the client connection may carry another request */
    bool upstream_reusable;    /* the upstream connection may carry another request */
    bool upstream_stale;       /* upstream failed before any response byte and
                                  nothing of the body was sent: safe to retry
                                  once on a fresh connection */
    bool upgraded;             /* 101 relayed and the tunnel ran to its end */
    int error_status;          /* when status is 0: the error page to send (400, 502, 504) */
    char error[EXCHANGE_ERROR_BYTES]; /* what went wrong, for the log */
};

/*
 * Forwards req (whose head the caller already consumed from client) to
 * upstream and the response back. When flow is not NULL, the bodies (up to
 * its capture limits), the response head and the timings from request_sent
 * on are recorded into it. rw (may be NULL) applies the response rules and
 * the request body rules; the caller applied URL and request header rules
 * when it built req. Never sends a response to the client when
 * it returns upstream_stale. Returns 0 when the exchange completed (the
 * status may still be an error relayed from the origin), -1 when it broke
 * off (res->error says why; if res->status is 0 nothing was sent to the
 * client yet and the caller may answer with an error page).
 */
int exchange_forward(struct stream *client, struct stream *upstream,
                     const struct exchange_request *req, const struct exchange_timeouts *t,
                     struct exchange_rules *rw, struct flow *flow, struct exchange_result *res);

/* The header section of head as "Name: value\r\n" lines, in original order
 * and case. Caller frees. NULL when out of memory. When facts is not NULL it
 * is filled with where the text's Content-Type and Content-Encoding are (see
 * struct flow_header_facts). */
char *exchange_headers_text(const struct http1_head *head, struct flow_header_facts *facts);

/*
 * Sends a complete error response with a short text/plain body naming the
 * reason. close adds "Connection: close". Returns 0 or a negative
 * enum stream_status.
 */
int exchange_send_error(struct stream *client, int status, const char *reason, bool close,
                        int timeout_ms);

/* Reads and discards a request body of the given framing (to keep a
 * connection usable after answering it ourselves). Returns 0 or -1. */
int exchange_discard_body(struct stream *client, const struct exchange_request *req,
                          const struct exchange_timeouts *t);

#endif
