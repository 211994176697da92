/*
 * exchange: one HTTP request/response through the proxy. Reads a request
 * head, builds the head the origin gets (origin-form target, hop-by-hop
 * fields removed, Via added, framing re-declared), streams the bodies both
 * ways without buffering them whole, relays interim responses and upgrades.
 * It knows nothing about how the upstream stream was opened (the session
 * and the origin do), nor about flow records: what a recorder keeps reaches
 * it through struct exchange_capture, hooks handed down by the caller.
 */
#ifndef TAPWIRE_EXCHANGE_H
#define TAPWIRE_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "http1.h"
#include "rules.h"
#include "stream.h"

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
    char *head;                /* owned: the head sent upstream */
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

/* Which message of the exchange a body or a head belongs to. */
enum exchange_side { EXCHANGE_REQUEST = 0, EXCHANGE_RESPONSE = 1 };

/* Points in time a recorder may want (wall-clock microseconds). */
enum exchange_moment {
    EXCHANGE_REQUEST_SENT, /* the request and its body went out */
    EXCHANGE_FIRST_BYTE,   /* the first byte of the response arrived */
    EXCHANGE_DONE,         /* the response went out to the client, or the exchange ended */
};

/*
 * What an exchange reports as it goes, for whoever records it (capture.c
 * keeps a flow). Every hook may be NULL. The heads and bytes passed are
 * valid only during the call.
 */
struct exchange_capture_ops {
    /* The final response head as sent to the client, and as received from
     * the origin when header rules changed it (else NULL). */
    void (*response_head)(void *arg, const struct http1_head *sent,
                          const struct http1_head *received);
    /* Body bytes as sent on. */
    void (*body)(void *arg, enum exchange_side side, const void *data, size_t len);
    /* A body that rules rewrote, as it arrived (decoded). */
    void (*body_original)(void *arg, enum exchange_side side, const void *data, size_t len);
    /* The body was buffered and its head sent with a new Content-Length, and
     * without Content-Encoding when rules rewrote it (is_rewritten). */
    void (*reframed)(void *arg, enum exchange_side side, uint64_t content_length,
                     bool is_rewritten);
    void (*moment)(void *arg, enum exchange_moment moment, int64_t wall_us);
    /* A 101 response: the upgraded connection relayed these raw bytes. */
    void (*upgraded)(void *arg, uint64_t bytes_up, uint64_t bytes_down);
};

struct exchange_capture {
    const struct exchange_capture_ops *ops;
    void *arg;
};

struct exchange_result {
    int status;                       /* final status sent to the client, 0 if none */
    uint64_t request_bytes;           /* body bytes client -> origin */
    uint64_t response_bytes;          /* body bytes origin -> client */
    bool client_keep_alive;           /* the client connection may carry another request */
    bool upstream_reusable;           /* the upstream connection may carry another request */
    bool upstream_stale;              /* upstream failed before any response byte and
                                         nothing of the body was sent: safe to retry
                                         once on a fresh connection */
    bool upgraded;                    /* 101 relayed and the tunnel ran to its end */
    int error_status;                 /* when status is 0: the error page to send (400, 502, 504) */
    char error[EXCHANGE_ERROR_BYTES]; /* what went wrong, for the log */
};

/*
 * Forwards req (whose head the caller already consumed from client) to
 * upstream and the response back. cap (may be NULL) is told the response
 * head, the bodies and the moments from the request sent on. rw (may be NULL) applies the response
 * rules and the request body rules; the caller applied URL and request header rules when it built
 * req. Never sends a response to the client when it returns upstream_stale. Returns 0 when the
 * exchange completed (the status may still be an error relayed from the origin), -1 when it broke
 * off (res->error says why; if res->status is 0 nothing was sent to the
 * client yet and the caller may answer with an error page).
 */
int exchange_forward(struct stream *client, struct stream *upstream,
                     const struct exchange_request *req, const struct exchange_timeouts *t,
                     struct exchange_rules *rw, const struct exchange_capture *cap,
                     struct exchange_result *res);

/*
 * Rewrites the framing lines of a head (is_head: with its start line and
 * blank line) or of a bare header section: drops Content-Length,
 * Transfer-Encoding and, when drop_encoding, Content-Encoding, and declares
 * content_length instead, where the old length stood. Returns a new text
 * (caller frees, *out_len its length) or NULL when out of memory.
 */
char *exchange_reframe(const char *head, size_t head_len, bool is_head, uint64_t content_length,
                       bool drop_encoding, size_t *out_len);

/* Reads and discards a request body of the given framing (to keep a
 * connection usable after answering it ourselves). Returns 0 or -1. */
int exchange_discard_body(struct stream *client, const struct exchange_request *req,
                          const struct exchange_timeouts *t);

#endif
