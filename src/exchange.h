/*
 * exchange: one request/response through the proxy, on protocol-neutral
 * messages (message.h). Sends the request's head and body to the origin,
 * relays interim responses and the final one back, streams the bodies both
 * ways without buffering them whole, and runs upgrades. The wire formats
 * are codecs (http1codec today): the exchange asks them to write a head,
 * read one, and gives it body sources and sinks. It knows nothing about how
 * the upstream stream was opened (the session and the origin do), about
 * flow records (a recorder gets struct exchange_capture's hooks) or about
 * the rule engine (struct exchange_rewrite's hooks).
 */
#ifndef TAPWIRE_EXCHANGE_H
#define TAPWIRE_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "message.h"
#include "stream.h"
#include "wsrelay.h"

#define EXCHANGE_ERROR_BYTES 512
/* Allocations from this size on are mmap'd and go back to the system when
 * freed (see fix_mmap_threshold() in exchange.c). */
#define EXCHANGE_MMAP_THRESHOLD_BYTES (256 * 1024)

struct exchange_timeouts {
    int idle_ms;   /* waiting for the first byte of the next request */
    int header_ms; /* a whole request head must arrive within this */
    int io_ms;     /* no progress on a body or a response head */
};

/* Which message of the exchange a body or a head belongs to. */
enum exchange_side { EXCHANGE_REQUEST = 0, EXCHANGE_RESPONSE = 1 };

/* Points in time a recorder may want (wall-clock microseconds). */
enum exchange_moment {
    EXCHANGE_REQUEST_SENT, /* the request and its body went out */
    EXCHANGE_FIRST_BYTE,   /* the first byte of the response arrived */
    EXCHANGE_DONE,         /* the response went out to the client, or the exchange ended */
};

/*
 * A response an intercept holds. The exchange read its body whole first
 * when it fit the hold's limit, so that it can be shown and replaced.
 */
struct exchange_held {
    const struct message *head; /* as it would go */
    bool has_body;              /* body is the whole body, decoded (identity) */
    const unsigned char *body;
    size_t body_len;
    /* Set by a hold that returns 1: the head to send (message_free() by the
     * exchange), and a new body (identity; freed by the exchange), sent
     * with a Content-Length and without Content-Encoding. */
    struct message edited;
    bool has_edited_body;
    unsigned char *edited_body;
    size_t edited_body_len;
};

/*
 * What an exchange reports as it goes, for whoever records it (capture.c
 * keeps a flow). Every hook may be NULL. The heads and bytes passed are
 * valid only during the call.
 */
struct exchange_capture_ops {
    /* The final response head as sent to the client, and as received from
     * the origin when header rules changed it (else NULL). */
    void (*response_head)(void *arg, const struct message *sent, const struct message *received);
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
    /* A WebSocket message went by (side EXCHANGE_REQUEST: from the
     * client), data held up to message_limit bytes (wsrelay.h). */
    void (*ws_message)(void *arg, enum exchange_side side, const struct wsrelay_message *m);
    /* The WebSocket connection was quiet for a moment (WSRELAY_QUIET_MS). */
    void (*ws_quiet)(void *arg);
    /* The final response head (after rules) before it goes to the client,
     * where an intercept may hold it: true when it does, with *body_limit
     * the most body bytes (decoded) it holds with the head (0: the head
     * alone). response_hold() then holds it (see struct exchange_held). */
    bool (*response_holds)(void *arg, const struct message *sent, size_t *body_limit);
    /* Returns 0 to send h as it is, 1 with h's edits, or -1 to send nothing
     * (the exchange breaks off and the client gets an error page). */
    int (*response_hold)(void *arg, struct exchange_held *h);
};

struct exchange_capture {
    const struct exchange_capture_ops *ops;
    void *arg;
    size_t message_limit; /* bytes of each WebSocket message to report */
};

/*
 * What rewrites an exchange (rewrite.c implements it over the rule engine).
 * The hooks act on the message of the current phase: the request until
 * response() starts the response phase. limit is --rewrite-limit, memory_limit
 * --rewrite-memory (what every exchange's body buffers may hold together).
 */
struct exchange_rewrite_ops {
    /* The final response head arrived: its rules apply from now on. */
    void (*response)(void *arg, const struct message *resp);
    /* Header rules on in: returns 1 with *out the new fields (valid until
     * the next call), 0 when nothing changed, -1 when out of memory. */
    int (*fields)(void *arg, const struct message *in, struct message_fields *out);
    /* True when body rules want the whole (decoded) body. */
    bool (*wants_body)(void *arg);
    /* Rewrites a decoded body: *out a new one (caller frees) or NULL when
     * unchanged; output past limit skips a rule. Returns 0 or -1. */
    int (*body)(void *arg, const unsigned char *in, size_t len, size_t limit, unsigned char **out,
                size_t *out_len);
    /* Why a rule did not apply, for the flow record. */
    void (*note)(void *arg, const char *why);
};

struct exchange_rewrite {
    const struct exchange_rewrite_ops *ops;
    void *arg;
    size_t limit;
    size_t memory_limit;
};

/*
 * Applies the header rules of rw's phase to in. Returns 1 with *out a copy
 * of in with the new fields (message_free()), 0 when nothing changed (*out
 * untouched), or -1 when out of memory.
 */
int exchange_rewrite_head(const struct exchange_rewrite *rw, const struct message *in,
                          struct message *out);

/* A whole body after the body rules (exchange_rewrite_body()). */
struct exchange_body_rewrite {
    const unsigned char *plain; /* the body decoded (or raw when identity); NULL: not rewritten */
    size_t plain_len;
    unsigned char *rewritten; /* the new body, identity; NULL: unchanged */
    size_t rewritten_len;
    unsigned char *decoded; /* private: what plain may point into */
    size_t reserved;        /* private: held against --rewrite-memory */
};

/*
 * Runs rw's body rules over a whole body raw[0..raw_len) (as buffered by the
 * caller, within rw->limit) whose Content-Encoding is content_encoding:
 * decodes it, checks --rewrite-memory, rewrites. out->rewritten is NULL when
 * nothing changed or the body could not be rewritten (the reason noted).
 * Returns 0, or -1 when out of memory. Free with exchange_body_rewrite_free()
 * (which also gives the memory back to the budget).
 */
int exchange_rewrite_body(const struct exchange_rewrite *rw, const char *content_encoding,
                          const unsigned char *raw, size_t raw_len,
                          struct exchange_body_rewrite *out);
void exchange_body_rewrite_free(struct exchange_body_rewrite *br);

/* For a caller that buffers a body for the rules itself (HTTP/2 streams):
 * holds bytes against --rewrite-memory, false (and noted in rw) when the
 * budget is spent; exchange_rewrite_release() gives them back. */
bool exchange_rewrite_reserve(const struct exchange_rewrite *rw, size_t bytes);
void exchange_rewrite_release(size_t bytes);

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
 * Forwards req (whose head the caller already consumed from client; its
 * version is the client's, its target origin-form) to upstream and the
 * response back to client, both HTTP/1.1 streams today. cap (may be NULL)
 * is told the response head, the bodies and the moments from the request
 * sent on. rw (may be NULL) applies the response rules and the request body
 * rules; the caller applied URL and request header rules to req. Never sends
 * a response to the client when it returns upstream_stale. Returns 0 when
 * the exchange completed (the status may still be an error relayed from the
 * origin), -1 when it broke off (also when req->is_to_proxy and the proxy
 * answered 407: that answer is for tapwire, not the client) (res->error says why; if res->status is
 * 0 nothing was sent to the client yet and the caller may answer with an error page).
 */
int exchange_forward(struct stream *client, struct stream *upstream, const struct message *req,
                     const struct exchange_timeouts *t, const struct exchange_rewrite *rw,
                     const struct exchange_capture *cap, struct exchange_result *res);

#endif
