/*
 * capture: the flow record of one exchange, built from what the session and
 * the exchange report, and handed to the flow store when it is done.
 *
 * The exchange sees only struct exchange_capture (hooks); the session calls
 * the functions below for what only it knows (the request as it arrived,
 * TLS facts, the answers tapwire makes itself). Everything here runs on the
 * connection's thread; the flow crosses to the writer thread once, in
 * capture_finish(). A struct capture whose flow is NULL records nothing
 * (capture is off, or memory ran out), and every function accepts it.
 */
#ifndef TAPWIRE_CAPTURE_H
#define TAPWIRE_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exchange.h"
#include "flow.h"
#include "message.h"

struct flowstore;

/* A WebSocket flow is written while it lives (struct flow_live): its row at
 * the first message or quiet moment, then its messages in batches, at
 * least this often or this many at a time, so the dashboard shows the
 * conversation as it goes. */
#define CAPTURE_WS_FLUSH_MS 250
#define CAPTURE_WS_FLUSH_MESSAGES 256

struct capture {
    struct flowstore *store;
    struct flow *flow; /* owned until capture_finish(); NULL: nothing recorded */
    struct exchange_capture hooks;
    struct flow_live *live; /* a reference, once the flow's live row was submitted */
    int64_t ws_flushed_ms;  /* monotonic: the last batch of messages went */
    uint64_t ws_kept;       /* messages kept in all, within FLOW_WS_MAX_MESSAGES */
    size_t ws_kept_bytes;   /* and their bytes, within FLOW_WS_MAX_BYTES */
};

/* What an exchange is, known when its head was read. */
struct capture_start {
    const char *client; /* "127.0.0.1:50312" */
    const char *scheme; /* "http", "https", "tcp" */
    const char *method;
    const char *host;
    uint16_t port;
    const char *target; /* origin-form, may be NULL */
    bool is_tls;        /* the client spoke TLS to tapwire */
    size_t body_limit;  /* --capture-limit */
    /* The way the client came in: "proxy", "socks5", "transparent",
     * "reverse", "replay" (flows.listener); NULL: unknown. */
    const char *listener;
};

/* Starts recording into c (store NULL: capture off, c records nothing). */
void capture_begin(struct capture *c, struct flowstore *store, const struct capture_start *start);

/* Whether c records anything. */
static inline bool capture_is_on(const struct capture *c)
{
    return c->flow != NULL;
}

/* The hooks to hand the exchange; NULL when nothing is recorded. */
const struct exchange_capture *capture_hooks(struct capture *c);

/*
 * The request head as sent on, and as received when rules changed it (else
 * NULL); target_original (owned, may be NULL) is the target before URL rules.
 */
void capture_request(struct capture *c, const struct message *sent, const struct message *received,
                     char *target_original);

/* A response tapwire made itself (an error page, the CA page), exactly as
 * sent: HTTP/1.1, status and reason, the header lines ("Name: value\r\n"),
 * and the body. */
void capture_answer(struct capture *c, int status, const char *reason, const char *headers,
                    const void *body, size_t body_len);

/* A tunnel relayed raw, or an upgraded connection: bytes each way. */
void capture_tunnel(struct capture *c, uint64_t bytes_up, uint64_t bytes_down);

/* What rules changed (their labels) and why matching rules did not apply. */
void capture_rules(struct capture *c, const char *applied, const char *notes);

/* A label for what changed the flow (its "modified" mark, as a rule's;
 * may be NULL) and a note on what happened to it (may be NULL), each added
 * after those already there. */
void capture_note(struct capture *c, const char *label, const char *note);

/*
 * The request as an intercept edit left it: sent replaces the recorded
 * head (method, target, fields); what was recorded before becomes the
 * original unless rules already set one (the original is always what
 * arrived from the client). body_original (may be NULL) is the body as
 * held, when the edit replaced it.
 */
void capture_request_edited(struct capture *c, const struct message *sent,
                            const void *body_original, size_t body_original_len);

/* TLS facts of both sides and the origin's connect times (0: the connection
 * was reused), as the session knows them. */
struct capture_connection {
    const struct flow_tls *tls; /* copied; may be NULL */
    int64_t connected_at_us;
    int64_t tls_done_at_us;
};

/* Completes the flow (status and error when the exchange set none) and
 * hands it to the store, which owns it from then on. c records nothing
 * afterwards. */
void capture_finish(struct capture *c, const struct capture_connection *conn, int status,
                    const char *error);

/* Drops what was recorded without storing it. */
void capture_abandon(struct capture *c);

/* The header section of head as "Name: value\r\n" lines, in original order
 * and case. Caller frees; NULL when out of memory. facts (may be NULL) is
 * told where the text's Content-Type and Content-Encoding are. */
char *capture_headers_text(const struct message_fields *fields, struct flow_header_facts *facts);

#endif
