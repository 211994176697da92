/*
 * intercept: the waiting room of intercepted flows, and the filter that
 * sends them there (--intercept, PUT /api/intercept).
 *
 * A request or response whose flow matches the filter is held on its
 * connection's thread (thread per connection: nothing else waits) until the
 * dashboard resumes it, with or without edits, or drops it; until
 * --intercept-timeout passes (resumed unchanged); until the client hangs up;
 * or until the proxy stops (released unchanged). The room is bounded
 * (INTERCEPT_MAX_WAITING): past it a matching flow goes on unheld, noted.
 *
 * Every request is matched before it goes on, with no response yet (so
 * "~q" and "~d example.com" hold requests, "~s" does not). A filter that
 * reads anything of the response (~s, ~c, ~hs, ~ts, ~q) is matched again
 * when the final response head arrives, and holds that response: the
 * exchange reads its body whole first when it is within
 * INTERCEPT_MAX_BODY_BYTES decoded, so that it is shown and editable. A
 * filter that reads the response body (~bs, ~b) is matched once that body
 * is read (decoded; a body not read whole counts as empty), so every
 * response of such a filter waits for its body before it goes on.
 *
 * Thread safety: every function may be called from any thread; the room is
 * one mutex, and each holder has an eventfd it sleeps on with its client
 * and the shutdown fd, so a resume, a hang-up and a shutdown all wake it
 * at once without polling in slices. Nothing here does network I/O or
 * knows SQL or JSON.
 */
#ifndef TAPWIRE_INTERCEPT_H
#define TAPWIRE_INTERCEPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capture.h"
#include "exchange.h"
#include "flow.h"
#include "message.h"

#define INTERCEPT_MAX_WAITING 64
#define INTERCEPT_DEFAULT_TIMEOUT_S 300
/* A request body up to this size (with a Content-Length on HTTP/1.1; any
 * on HTTP/2) is read and held with its head, shown and editable; a larger
 * or chunked one stays in the connection and goes on as it comes (its head
 * is still held). A response body is held up to this size decoded,
 * whatever its framing. */
#define INTERCEPT_MAX_BODY_BYTES (1024 * 1024)
#define INTERCEPT_MAX_EDIT_FIELDS 256
#define INTERCEPT_ERROR_BYTES 320

struct intercept;
struct intercept_filter;

/* A room with no filter (off). timeout_ms: how long a flow may wait.
 * Returns NULL when out of memory. Free with intercept_free() once no
 * thread holds anything. */
struct intercept *intercept_new(int timeout_ms);
void intercept_free(struct intercept *ic);

/*
 * Sets the filter from text[0..len) (tapwire-filters(7)); blank text turns
 * interception off. Returns 0, or -1 with err ("column N: ...") and the old
 * filter kept. Flows already waiting stay.
 */
int intercept_set_filter(struct intercept *ic, const char *text, size_t len, char *err,
                         size_t err_len);
/* The filter as set ("" when off). Caller frees; NULL when out of memory. */
char *intercept_filter_text(struct intercept *ic);

/* The current filter with a reference of its own, or NULL when off; for one
 * exchange (a change applies from the next one). */
struct intercept_filter *intercept_acquire(struct intercept *ic);
void intercept_filter_release(struct intercept_filter *f);
/* Matched again when the response head arrives. */
bool intercept_filter_is_response(const struct intercept_filter *f);
/* Matching the request reads its body (~bq, ~b). */
bool intercept_filter_reads_request_body(const struct intercept_filter *f);
/* Matching the response reads its body (~bs, ~b). */
bool intercept_filter_reads_response_body(const struct intercept_filter *f);
/* 1 when flow matches, else 0 (an evaluation that cannot tell is 0). */
int intercept_filter_match(const struct intercept_filter *f, const struct flow *flow);

/*
 * A flow made of a request for matching: scheme, method, host, port,
 * target, version, header fields of req, and body (may be NULL). Caller
 * frees with flow_free(); NULL when out of memory.
 */
struct flow *intercept_request_flow(const struct message *req, const char *scheme, const char *host,
                                    uint16_t port, const void *body, size_t body_len);

/* A message shown in the waiting room (what is held), and the same shape
 * copied out for the dashboard. Strings owned by whoever made it. */
struct intercept_message {
    bool is_response;
    char *method; /* of the request, also for a response */
    char *url;
    int status;    /* a response's */
    char *headers; /* "Name: value\r\n" lines */
    bool has_body; /* the body was held (within INTERCEPT_MAX_BODY_BYTES; decoded) */
    unsigned char *body;
    size_t body_len;
};

/* An owned field of an edit. */
struct intercept_field {
    char *name;
    char *value;
};

/* What the dashboard changed; every part optional (NULL / false: as held). */
struct intercept_edit {
    char *method;
    char *url; /* a request's: the same scheme, host and port, another path */
    int status;
    bool has_fields;
    struct intercept_field *fields;
    size_t field_count;
    bool has_body;
    unsigned char *body;
    size_t body_len;
};
void intercept_edit_free(struct intercept_edit *e);
/* Whether e changes anything. */
bool intercept_edit_is_empty(const struct intercept_edit *e);
/* e's fields as message fields pointing into e (caller frees the array;
 * NULL with count 0 when e has none or out of memory). */
struct message_field *intercept_edit_message_fields(const struct intercept_edit *e);

enum intercept_outcome {
    INTERCEPT_RESUMED,     /* resumed, *edit says what changed (may be nothing) */
    INTERCEPT_DROPPED,     /* the dashboard dropped it: answer with an error page */
    INTERCEPT_TIMED_OUT,   /* --intercept-timeout: resumed unchanged */
    INTERCEPT_CLIENT_GONE, /* the client hung up: end the exchange */
    INTERCEPT_RELEASED,    /* the proxy is stopping: resumed unchanged */
    INTERCEPT_FULL,        /* the room was full: not held, goes on unchanged */
    INTERCEPT_FAILED,      /* out of memory or no eventfd: not held, goes on unchanged */
};

/* A sentence for the flow's notes, e.g. "intercept: resumed after 2.3 s". */
void intercept_outcome_note(enum intercept_outcome outcome, bool is_edited, int64_t waited_ms,
                            char *out, size_t out_len);

/*
 * Holds msg in the room until it is resumed or dropped, the timeout
 * passes, client_fd reports a hang-up, or cancel_fd becomes readable (both
 * may be -1). msg must stay unchanged meanwhile. *edit (zeroed by the call)
 * gets the edits of a resume (free with intercept_edit_free()); *waited_ms
 * how long it waited. Runs on the connection's thread.
 */
enum intercept_outcome intercept_hold(struct intercept *ic, const struct intercept_message *msg,
                                      int client_fd, int cancel_fd, struct intercept_edit *edit,
                                      int64_t *waited_ms);

/*
 * The same hold for a caller that must not block (an HTTP/2 connection's
 * event loop serves its other streams meanwhile): msg (copied) is parked
 * in the room, and a resume or a drop writes to wake_fd (an eventfd the
 * caller owns, polls and reads; one for many tickets). Returns the ticket,
 * or NULL with *outcome INTERCEPT_FULL or INTERCEPT_FAILED (not held).
 */
struct intercept_ticket;
struct intercept_ticket *intercept_park(struct intercept *ic, const struct intercept_message *msg,
                                        int wake_fd, enum intercept_outcome *outcome);
/*
 * Whether t still waits: true with *left_ms until --intercept-timeout,
 * else false with *outcome (INTERCEPT_RESUMED with *edit, which the caller
 * frees with intercept_edit_free(); INTERCEPT_DROPPED; INTERCEPT_TIMED_OUT)
 * and *waited_ms, and t freed.
 */
bool intercept_ticket_waits(struct intercept *ic, struct intercept_ticket *t,
                            enum intercept_outcome *outcome, struct intercept_edit *edit,
                            int64_t *waited_ms, int *left_ms);
/* Takes t out of the room (its client went, or the connection ended), and
 * frees it. Returns how long it waited (ms). t may be NULL. */
int64_t intercept_ticket_cancel(struct intercept *ic, struct intercept_ticket *t);

/*
 * A held head with e's edits applied, as *out (message_free()): the method
 * and the path of the URL (origin-form) of a request, the status of a
 * response, the fields (names lowercased when is_lowercase: HTTP/2).
 * Returns 0, or -1 when out of memory or the URL does not parse.
 */
int intercept_edited_head(const struct message *in, const struct intercept_edit *e,
                          bool is_lowercase, struct message *out);

/* ---- the dashboard's side ---- */

struct intercept_waiting {
    uint64_t id;
    int64_t since_us; /* wall clock, when it began to wait */
    int64_t deadline_us;
    struct intercept_message msg; /* copies */
};

/* Copies of every waiting flow, oldest first. Returns 0 (free with
 * intercept_waiting_free()) or -1 when out of memory. */
int intercept_list(struct intercept *ic, struct intercept_waiting **out, size_t *count);
void intercept_waiting_free(struct intercept_waiting *list, size_t count);

/* Results of resume and drop. */
#define INTERCEPT_NOT_FOUND (-1) /* no flow waits with that id (any more) */
#define INTERCEPT_INVALID (-2)   /* the edit does not fit the flow: err says why */
#define INTERCEPT_CONFLICT (-3)  /* a body edit, and the body was not held */

/*
 * Resumes flow id with edit (taken in every case; NULL: unchanged).
 * Returns 0, or INTERCEPT_NOT_FOUND / INTERCEPT_INVALID / INTERCEPT_CONFLICT
 * with err.
 */
int intercept_resume(struct intercept *ic, uint64_t id, struct intercept_edit *edit, char *err,
                     size_t err_len);
/* Drops flow id. Returns 0 or INTERCEPT_NOT_FOUND. */
int intercept_drop(struct intercept *ic, uint64_t id);
/* Resumes every waiting flow unchanged; returns how many. */
size_t intercept_resume_all(struct intercept *ic);
/* How many wait now. */
size_t intercept_count(struct intercept *ic);

/* ---- responses ---- */

/*
 * The exchange's capture hooks with a hold on the final response in
 * front: the response_holds hook matches the response head (with the
 * request flow given), response_hold holds it in the room with its body
 * when the exchange read it whole, and hands back the edits; every other
 * hook goes to the capture's. Lives on the connection's stack for one
 * exchange.
 */
struct intercept_response {
    struct exchange_capture hooks;
    struct intercept *ic;
    struct intercept_filter *filter; /* owned reference */
    struct flow *flow;               /* owned: the request, for matching */
    struct capture *cap;             /* notes go here; may record nothing */
    const char *url;
    int client_fd;
    int cancel_fd;
    enum intercept_outcome outcome; /* of a hold */
    bool was_held;
    bool match_with_body; /* the filter reads the body: matched at the hold */
};

/* Sets r up (taking filter and flow); the hooks to hand the exchange are
 * &r->hooks. */
void intercept_response_begin(struct intercept_response *r, struct intercept *ic,
                              struct intercept_filter *filter, struct flow *flow,
                              struct capture *cap, const char *url, int client_fd, int cancel_fd);
void intercept_response_end(struct intercept_response *r);

#endif
