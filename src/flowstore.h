/*
 * flowstore: captured exchanges ("flows") in SQLite.
 *
 * Proxy threads never wait on the disk: flowstore_submit() hands a finished
 * flow to a bounded queue and returns at once; one writer thread writes
 * queued flows in batched transactions, indexes them for search, and
 * drops the oldest segment of flows (flowseg.h) beyond max_flows and the
 * retention limits. It writes a batch in chunks, each when a thread at the
 * idle scheduling policy has run (FLOWSTORE_IDLE_CHUNK_FLOWS), so that it
 * takes the time the proxy's threads leave idle rather than theirs; while
 * the proxy is busy it leaves the flows queued, and writes them when it is
 * quiet again (FLOWSTORE_DEFER_*). When the queue's bytes are at their bound a flow is
 * queued without its bodies, and when the queue is full the flow is
 * dropped; both are counted. A batch the disk has no room for is tried
 * once more without its bodies.
 * Queries for the dashboard and the HAR export (har.h) use their own read
 * connection (WAL lets them run beside the writer).
 * Thread safety: every function may be called from any thread.
 */
#ifndef TAPWIRE_FLOWSTORE_H
#define TAPWIRE_FLOWSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flow.h"

#define FLOWSTORE_DEFAULT_CAPTURE_LIMIT_BYTES (1024 * 1024)
#define FLOWSTORE_DEFAULT_MAX_FLOWS 100000
/* Flows waiting for the writer. A load past the spool's reach waits here
 * (FLOWSTORE_DEFER_*), so the queue has room for the writer's slow moments
 * (a checkpoint, a segment started or dropped): at 16,384 flows with the
 * writer keeping pace, a queue of 4,096 dropped whole flows in those
 * moments. The byte bound below bounds its memory whatever the count. */
#define FLOWSTORE_QUEUE_FLOWS 65536
/* The writer leaves flows queued while the proxy is busy, that is takes
 * FLOWSTORE_QUIET_FLOWS_PER_S flows a second or more, and writes them once
 * it is quiet again: at full load every core the writer takes is one the
 * proxy's threads wait for (its SQLite work per flow is more than a
 * quarter of the proxy's own CPU per request), after a burst it costs them
 * nothing. Once FLOWSTORE_DEFER_FLOWS or FLOWSTORE_DEFER_BYTES are queued
 * it moves them to its spool (flowspool.h, a file beside the database, at
 * most FLOWSTORE_SPOOL_MAX_BYTES or --max-db-size), a few µs a flow, and
 * goes on deferring. The marks are low on purpose: queued flows are
 * packed into the ring (FLOWSTORE_RING_BYTES, flowring.h), and a ring the
 * writer keeps emptying into the spool stays in the caches the connection
 * threads pack into; a queue of a whole burst made them fault fresh heap
 * in for every flow, and one of thousands of malloc()ed flows made each
 * malloc() slower (bench/README.md, "The spool outlives a crash"). It
 * writes anyway once flows have waited FLOWSTORE_DEFER_MAX_MS or the
 * spool is full (or cannot be written): a load that goes on past that has
 * its flows written as they come, as without deferring, until the proxy
 * is quiet again. The spool keeps taking the queue at its marks while it
 * has flows, so that the flows still come in order, and frees the room of
 * those written as it goes (flowspool_done()), so that under a load that
 * goes on it never fills with flows already stored. Below the rate (a
 * person's browsing) every flow is written as it comes. */
#define FLOWSTORE_QUIET_FLOWS_PER_S 2000
#define FLOWSTORE_DEFER_FLOWS 1024
#define FLOWSTORE_DEFER_BYTES ((size_t)2 * 1024 * 1024)
#define FLOWSTORE_DEFER_MAX_MS 30000
#define FLOWSTORE_SPOOL_MAX_BYTES ((uint64_t)1024 * 1024 * 1024)
/* The writer writes a batch a chunk of FLOWSTORE_IDLE_CHUNK_FLOWS flows at
 * a time, each when a thread at the idle scheduling policy (tw-flowidle)
 * has run, that is when the proxy's threads left a core idle for a
 * moment: so it takes that time rather than theirs, and requests do not
 * wait behind it. It waits at most FLOWSTORE_IDLE_WAIT_MS for that, and
 * not at all from FLOWSTORE_BUSY_FLOWS flows waiting on (queued or
 * spooled: a spool that long means the load has gone on), where the CPU has
 * no idle time to spare and it writes at the proxy's priority as fast as
 * it can (the room above the mark rides out the writer's slow moments).
 * The writer itself keeps that priority throughout: it holds the
 * database, and a thread at a lower one would hold it for seconds when
 * other programs keep the CPU busy. */
#define FLOWSTORE_IDLE_CHUNK_FLOWS 64
#define FLOWSTORE_IDLE_WAIT_MS 50
#define FLOWSTORE_BUSY_FLOWS (FLOWSTORE_QUEUE_FLOWS / 4 * 3)
/* Queued flows may each hold two bodies up to the capture limit; bounding
 * their bytes, not only their number, bounds memory while the disk is slow.
 * The bytes counted are the records (struct flow and its texts) and their
 * bodies and WebSocket messages. A flow that would pass the bound is queued
 * without its bodies (struct flow are_bodies_dropped); only one whose record
 * alone does not fit, or one past FLOWSTORE_QUEUE_FLOWS, is dropped whole.
 * The queue's memory stays within this (and one flow more: the first flow
 * queued always fits, however large, so that it can be written). */
#define FLOWSTORE_QUEUE_MAX_BYTES ((size_t)256 * 1024 * 1024)
/* Each commit rewrites the partly filled last pages of every b-tree it
 * touched into the WAL (16 KiB each) and checksums them: with 20 ms batches
 * at a few thousand flows a second that nearly doubled the bytes written
 * per flow. A tenth of a second is still immediate in the dashboard's live
 * list. */
#define FLOWSTORE_BATCH_FLOWS 1024 /* flows per write transaction */
#define FLOWSTORE_GATHER_MS 100    /* the writer waits this long to fill a batch */
/* The header word index (flows_hdr_N) is filled while the writer's queue
 * is empty, this many flows per transaction, and lags the stored flows by
 * at most FLOWSTORE_HDR_LAG_MAX_FLOWS (then it is filled in the batch). */
#define FLOWSTORE_HDR_CATCHUP_FLOWS 2048
#define FLOWSTORE_HDR_LAG_MAX_FLOWS 16384
/* After a backlog of at least this many queued flows, once the queue is
 * empty again, the writer hands the freed heap back (malloc_trim). */
#define FLOWSTORE_TRIM_BACKLOG_FLOWS 1024
/* The ring the queued flows are packed into (flowring.h): twice the
 * spool's byte mark, so that the queue reaches FLOWSTORE_DEFER_BYTES
 * within it while the writer still holds the flows it moves to the spool.
 * Flows past it are packed with malloc(). */
#define FLOWSTORE_RING_BYTES ((size_t)4 * 1024 * 1024)

struct flowstore;

/* Opens the store on db_path (see db_open()) and starts the writer thread.
 * Returns 0 and *out, or -1 with err. */
int flowstore_open(const char *db_path, int64_t max_flows, struct flowstore **out, char *err,
                   size_t err_len);
/* Writes what is queued, stops the writer, closes. NULL is fine. */
/* Writes every flow still queued, logs the totals (flowstore_log_totals()),
 * and frees store. NULL is allowed. */
void flowstore_close(struct flowstore *store);

/* Logs one line: flows written, dropped with the queue full, and lost to
 * database errors since the store was opened. */
void flowstore_log_totals(struct flowstore *store);

/* Takes ownership of flow. Never blocks on the disk. Returns 0 when queued
 * (without its bodies when they would pass FLOWSTORE_QUEUE_MAX_BYTES), -1
 * when the queue was full (the flow is freed and counted as dropped). */
int flowstore_submit(struct flowstore *store, struct flow *flow);

/* Writes flows[0..count) at once on the caller's thread, in that order,
 * for an import: unlike flowstore_submit() it waits for the disk and drops
 * nothing. Takes every flow (each is freed). The written-callback hears of
 * them as of captured ones. Returns 0, or -1 with err when a batch failed
 * (the batches before it stay written, none after it is). */
int flowstore_write(struct flowstore *store, struct flow **flows, size_t count, char *err,
                    size_t err_len);

/* Waits until every flow submitted before the call is written (or failed),
 * at most timeout_ms. For tests and shutdown. Returns 0 or -1 on timeout. */
int flowstore_sync(struct flowstore *store, int timeout_ms);

struct flowstore_stats {
    uint64_t submitted;
    uint64_t written;
    uint64_t dropped;        /* queue full: whole flows */
    uint64_t bodies_dropped; /* flows (or batches of a WebSocket flow's messages) kept without
                                their bodies: the queue's bytes were at their bound, or the
                                disk had room for the records only */
    uint64_t write_errors;   /* flows lost to database errors (or a spool that could not be
                                read back) */
    uint64_t spooled;        /* flows in the spool now (FLOWSTORE_DEFER_MAX_MS) */
    uint64_t recovered;      /* flows an earlier run left in its spool, found at open (and
                                counted in submitted) */
    uint64_t stored;         /* flows in the database now */
    char last_error[256];    /* last database error, "" if none */
    bool is_write_failing;   /* the last batch failed: flows are being lost now (a full
                                disk, a lock); false again once a batch is committed */
};
void flowstore_stats(struct flowstore *store, struct flowstore_stats *out);

/*
 * Called by the writer thread after each committed batch with the ids just
 * written (ascending). Used by the dashboard for live updates; must not
 * block. Set once before traffic starts; NULL to clear.
 */
typedef void (*flowstore_written_fn)(void *arg, const int64_t *ids, size_t count);
/* After it returns, the previous callback is not running and is never called
 * again, so its arg may be freed. */
void flowstore_set_written_callback(struct flowstore *store, flowstore_written_fn fn, void *arg);

/* ---- queries (the dashboard) ---- */

#define FLOWSTORE_LIST_MAX_FLOWS 10000 /* one flowstore_list() call returns at most this */

/* Which body: the values are stored, as flow_bodies.body_key = flow id * 4 +
 * direction (sql/schema.sql, version 5), so they never change and stay below
 * 4. The originals are the bodies as received before a rule rewrote them,
 * stored decoded (see struct flow). */
enum flowstore_direction {
    FLOWSTORE_REQUEST = 0,
    FLOWSTORE_RESPONSE = 1,
    FLOWSTORE_REQUEST_ORIGINAL = 2,
    FLOWSTORE_RESPONSE_ORIGINAL = 3,
};

/* A stored flow as read back. flow.id is set; flow.request_body and
 * flow.response_body carry size and truncated but no data (len 0, see
 * flowstore_get_body()), and so do the original bodies when
 * has_*_body_original is set. flowstore_get() fills the original target,
 * header sections and rules_notes; flowstore_list() leaves them NULL.
 * Free with flowstore_record_free(). */
struct flowstore_record {
    struct flow flow;
    size_t request_captured; /* body bytes stored */
    size_t response_captured;
    size_t request_original_captured; /* original body bytes stored */
    size_t response_original_captured;
    char *request_content_type; /* owned, may be NULL: from the header fields */
    char *response_content_type;
    char *request_content_encoding;
    char *response_content_encoding;
};
void flowstore_record_free(struct flowstore_record *record);
/* Frees count records and the array. */
void flowstore_records_free(struct flowstore_record **records, size_t count);

/* Status classes for flowstore_filter.status_class. */
#define FLOWSTORE_STATUS_ANY 0
#define FLOWSTORE_STATUS_ERROR (-1) /* flows with an error (502s of the proxy, resets...) */
/* 1..5: status 1xx..5xx */

/* What flowstore_list() returns. Zero / NULL fields do not filter, so a
 * zeroed filter with a limit lists the newest flows. */
#define FLOWSTORE_FILTER_SCAN_ROWS 5000

struct filter;
struct filter_sql;

struct flowstore_filter {
    int64_t before_id;        /* cursor: only ids below this; 0 for none */
    int64_t after_id;         /* only ids above this; 0 for none */
    bool is_oldest_first;     /* ascending ids (live updates) instead of newest first */
    size_t limit;             /* at most this many, 1..FLOWSTORE_LIST_MAX_FLOWS */
    const char *host_glob;    /* '*' and '?' wildcards, case-insensitive; exact without them */
    const char *host_text;    /* substring of the host, case-insensitive */
    bool is_host_negated;     /* list the flows host_glob / host_text do NOT match */
    const char *method;       /* exact, case-insensitive */
    int status_class;         /* FLOWSTORE_STATUS_* or 1..5 */
    const char *content_type; /* substring of the response Content-Type, case-insensitive */
    const char *url_text;     /* substring of host + target, case-insensitive */
    const void *body_bytes;   /* bytes in the request or response body as sent on (not in
                                 the originals a rule rewrote), stored or, with a decoder
                                 (flowstore_set_body_decoder()), decoded */
    size_t body_len;          /* 0: no body search */
    bool is_body_nocase;      /* ASCII letters in body_bytes match either case */
    /* A filter expression (filter.h, tapwire-filters(7)) and its SQL form;
     * both NULL for none. When the SQL is not exact, the rows it selects are
     * checked with filter_match(), at most FLOWSTORE_FILTER_SCAN_ROWS of
     * them per segment and call (the newest first): a rare match further
     * back is found by paging on with before_id. */
    const struct filter *expr;
    const struct filter_sql *expr_sql;
    const char *expr_text; /* the expression as written (a HAR export compiles its own) */
};

/*
 * Lists flows matching filter with everything but their header sections,
 * TLS details, what rules changed (but for flow.rules) and bodies (those
 * fields are NULL / empty; flowstore_get() has them). Returns 0 with
 * *records (an array of *count, caller frees with flowstore_records_free();
 * NULL when none), or -1 with err.
 */
int flowstore_list(struct flowstore *store, const struct flowstore_filter *filter,
                   struct flowstore_record ***records, size_t *count, char *err, size_t err_len);

/* One flow in full but for its bodies. Returns 0 and *out (caller frees with
 * flowstore_record_free()), 0 with *out NULL when there is no such flow, or
 * -1 with err. */
int flowstore_get(struct flowstore *store, int64_t id, struct flowstore_record **out, char *err,
                  size_t err_len);

/* The captured bytes of one body; for an original, the body as received
 * before a rule rewrote it (decoded). Returns 0 with *data (caller frees
 * with free(); NULL with *len 0 when nothing was captured, nothing was
 * rewritten or there is no such flow), or -1 with err. */
int flowstore_get_body(struct flowstore *store, int64_t id, enum flowstore_direction direction,
                       unsigned char **data, size_t *len, char *err, size_t err_len);

/* The WebSocket messages of flow id from seq from_seq on (0: all), in
 * order, at most FLOW_WS_MAX_MESSAGES. Returns 0 with *out (caller frees
 * with flow_ws_clear(); empty when none), or -1 with err. */
int flowstore_get_ws_messages(struct flowstore *store, int64_t id, int64_t from_seq,
                              struct flow_ws *out, char *err, size_t err_len);

/* Deletes one flow and its bodies. Returns 0 with *found, or -1 with err. */
int flowstore_delete(struct flowstore *store, int64_t id, bool *found, char *err, size_t err_len);
/* Deletes every flow. Ids are never reused afterwards. Returns 0 or -1 with err. */
int flowstore_clear(struct flowstore *store, char *err, size_t err_len);
/* The id of the newest stored flow whose client is client (a replay's
 * "replay of #N"), 0 when none. Returns 0 or -1 with err. */
int flowstore_newest_of_client(struct flowstore *store, const char *client, int64_t *id, char *err,
                               size_t err_len);
/* The id of the newest stored flow, 0 when none. Returns 0 or -1 with err. */
int flowstore_newest_id(struct flowstore *store, int64_t *id, char *err, size_t err_len);

/*
 * Decodes a Content-Encoding chain; codec_decode_content() of codec.h has
 * this signature. Returns 0 and *out (malloc'd) or -1 with err.
 */
typedef int (*flowstore_decode_fn)(const char *content_encoding, const unsigned char *in,
                                   size_t in_len, size_t max_out, unsigned char **out,
                                   size_t *out_len, char *err, size_t err_len);
/* A body search decodes at most this much of one body (a capture holds at
 * most --capture-limit compressed bytes; this bounds what they expand to). */
#define FLOWSTORE_SEARCH_DECODED_MAX_BYTES (8 * 1024 * 1024)

/* Lets the body search, and the search index the writer keeps, look into
 * compressed bodies (gzip, br, zstd, deflate) through decode; NULL searches
 * and indexes the stored bytes only. Set it before traffic starts: flows
 * written before are indexed without it. */
void flowstore_set_body_decoder(struct flowstore *store, flowstore_decode_fn decode);

/* Retention beyond max_flows (0: no limit of that kind): the oldest
 * segment is dropped while the database's pages in use exceed
 * max_db_bytes, and once its newest flow is older than retain_us. Applies
 * from the next batch written. */
void flowstore_set_retention(struct flowstore *store, int64_t max_db_bytes, int64_t retain_us);

#endif
