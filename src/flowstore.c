/*
 * flowstore: captured exchanges in SQLite, written by one thread.
 *
 * Proxy threads only ever take `lock` for the time of a queue push (and of
 * packing the flow into a slot of the ring, flowring.h): flowstore_submit()
 * never touches SQLite, allocates only when the ring is full, and never
 * waits for the writer, so a slow, locked, full or corrupt database costs them
 * nothing; the flows are then dropped (queue full) or lost (write error) and
 * counted. While the proxy takes flows fast the writer leaves them queued
 * and writes them once it is quiet (defer_while_busy(); past the marks of
 * FLOWSTORE_DEFER_* they wait in its spool, flowspool.h). The writer
 * paces itself by a thread at SCHED_IDLE (idle_run()), which the kernel
 * runs only when a core has nothing else to do: a chunk of a batch waits
 * for it (wait_for_idle()), briefly, and not at all once the queue shows
 * that the CPU has no idle time left. The writer frees every flow once its
 * batch is committed or has failed: nothing is kept in memory after
 * writing, so memory use does not grow with the number of stored flows.
 *
 * Each flow goes into the newest segment (flowseg.h) together with its
 * entry in that segment's trigram index, in one transaction per batch; its
 * header values go into the word index when the writer is idle, at most
 * FLOWSTORE_HDR_LAG_MAX_FLOWS flows later (index_headers_upto()).
 * Pruning is whole-segment: when a limit is passed the writer drops the
 * oldest segment's tables (DROP TABLE), never deletes flows row by row. A
 * batched DELETE of an age range at a bounded cadence would still unlink
 * every row, index entry and overflow page (the cost the old per-batch
 * prune had, about 1.4 times the capture's CPU per flow with a full store),
 * and the contentless search index cannot delete rows at all; a dropped
 * table's pages go to the free list without being read, and the next
 * segment reuses them. The price is granularity: a full store holds
 * between seven eighths of --max-flows and all of it.
 *
 * Locks, always taken in this order and never the other way round:
 * write_lock (the writer connection: the writer thread, delete, clear and
 * imports through flowstore_write()),
 * then lock (queue and counters). read_lock guards the read connection and
 * its statements and is never held with another lock. callback_lock is held
 * while the written-callback runs, so clearing the callback waits for a call
 * in progress.
 *
 * The read connection is its own SQLite connection with query_only set: in
 * WAL mode dashboard reads see the last committed batch and never wait for
 * the writer, and a bug in a query cannot write.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "flowstore.h"
#include "clock.h"
#include "errmsg.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "filter.h"
#include "flowring.h"
#include "flowseg.h"
#include "flowspool.h"
#include "log.h"
#include "searchtext.h"
#include "wsstore.h"

#define FLOWSTORE_ERROR_BYTES 256

/* A body's row in flow_bodies is body_key = flow id * 4 + direction (schema
 * version 5: one b-tree entry per body, a flow's bodies adjacent). The
 * statements below spell out the 4; every direction must fit below it. */
_Static_assert(FLOWSTORE_RESPONSE_ORIGINAL < 4, "a direction must fit in a flow's 4 body keys");

struct flowstore {
    char *db_path;
    /* Captured bodies up to this many bytes go into the flow's own row
     * (schema version 8), larger ones into flow_bodies: an eighth of the
     * database's page, so that a row with both bodies inline stays on its
     * page. Set at open from the file's page size. */
    size_t inline_body_max;

    /* Queue and counters, guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t work_cond; /* the writer waits here for flows or stop */
    pthread_cond_t done_cond; /* flowstore_sync() waits here for progress */
    bool has_lock, has_work_cond, has_done_cond;
    struct flow **queue; /* ring of FLOWSTORE_QUEUE_FLOWS */
    size_t *queue_sizes; /* flow_bytes() of each, as counted when it was queued */
    size_t queue_head;
    size_t queue_count;
    size_t queue_bytes;
    bool is_stopping;
    uint64_t accepted;            /* flows queued since open */
    uint64_t finished;            /* of those, written or lost */
    uint64_t drops_reported;      /* dropped count when the last drop warning was logged */
    uint64_t body_drops_reported; /* bodies_dropped count when last logged */
    struct flowstore_stats stats;

    pthread_t writer;
    bool has_writer;
    /* The writer's pacing (wait_for_idle(), idle_run()); wants_idle and
     * idle_tokens under lock. */
    pthread_t idle;
    bool has_idle;
    pthread_cond_t idle_cond;  /* the idle thread waits here for a request, or stop */
    pthread_cond_t token_cond; /* the writer waits here for the idle thread */
    bool has_idle_cond, has_token_cond;
    bool wants_idle;      /* the writer waits for the idle thread to run */
    uint64_t idle_tokens; /* times the idle thread ran for the writer */
    /* Deferring while the proxy is busy (defer_while_busy()), under lock:
     * the window over which the rate of flows is judged starts at
     * window_start_ms with window_accepted flows accepted; defer_since_ms
     * is when the writer began to leave queued flows waiting, 0 once the
     * queue was empty again. sync_waiters: flowstore_sync() calls waiting,
     * for which the writer does not defer. */
    int64_t window_start_ms;
    uint64_t window_accepted;
    int64_t defer_since_ms;
    unsigned sync_waiters;
    /* A deferral ran out (a mark of FLOWSTORE_DEFER_* reached) under a
     * load that went on: the writer writes as flows come, without
     * deferring, until the proxy is quiet again. */
    bool is_defer_spent;
    /* The flows put off past FLOWSTORE_DEFER_* (flowspool.h), older than
     * every queued one: the writer thread's alone, opened when first
     * needed; is_spool_failed once it could not be. Under lock, for the
     * others: spooled, the flows in it, and spool_held_bytes, the bytes of
     * those it keeps in memory (within FLOWSTORE_QUEUE_MAX_BYTES with the
     * queue's). */
    struct flowspool *spool;
    /* Where flowstore_submit() packs the flows it queues (flowring.h):
     * lent under lock, given back by whoever frees a flow; NULL when it
     * could not be mapped (flows are then packed with malloc()). */
    struct flowring *ring;
    bool is_spool_failed;
    uint64_t spool_max_bytes; /* the spool's bound (--max-db-size) */
    size_t spooled;
    size_t spool_held_bytes;
    /* The last spooled flow stored (its sequence number, flowspool.h): kept
     * in flow_ids with each batch. Under write_lock. */
    uint64_t spooled_to;

    /* The writer connection, guarded by write_lock. */
    pthread_mutex_t write_lock;
    bool has_write_lock;
    sqlite3 *wdb;
    sqlite3_stmt *begin_stmt;
    sqlite3_stmt *commit_stmt;
    sqlite3_stmt *rollback_stmt;
    sqlite3_stmt *insert_ws_stmt; /* prepared by wsstore on first use */
    sqlite3_stmt *save_next_id_stmt;
    /* The id the next stored flow gets (flow_ids, schema version 7): the
     * writer assigns ids itself rather than through AUTOINCREMENT. */
    int64_t next_id;
    /* The flows from this id on have no entries in the header word index
     * yet (flows_hdr_N): the writer adds them while its queue is empty, or
     * in the batch once more than FLOWSTORE_HDR_LAG_MAX_FLOWS wait. */
    int64_t hdr_indexed_to;
    /* The segments, oldest first (flowseg.h); the last one is written. */
    struct flowseg segs[FLOWSEG_MAX_SEGMENTS + 1];
    size_t seg_count;
    int64_t seg_total_flows; /* sum of segs[].flows */
    struct flowseg_limits limits;
    bool are_views_stale; /* segments changed in this transaction */
    /* The statements on the newest segment's tables, prepared when it
     * starts. */
    sqlite3_stmt *insert_flow_stmt;
    sqlite3_stmt *insert_body_stmt;
    sqlite3_stmt *insert_fts_stmt;
    sqlite3_stmt *insert_hdr_stmt;
    sqlite3_stmt *insert_unindexed_stmt;
    bool has_pairs_column; /* insert_unindexed_stmt binds a byte-pair filter (?2) */
    sqlite3_stmt *insert_seg_stmt;
    sqlite3_stmt *update_seg_stmt;
    sqlite3_stmt *delete_seg_stmt;
    sqlite3_stmt *used_pages_stmt;
    /* The text of a flow's rows in the search indexes, built here rather
     * than by SQL concatenation (which allocated and copied it again):
     * grown as needed, at most a URL, two header sections and twice
     * SEARCHTEXT_BODY_MAX_BYTES. */
    char *index_text;
    size_t index_text_cap;
    /* The decoder for indexing compressed bodies; a copy of body_decode
     * under write_lock. */
    flowstore_decode_fn index_decode;
    char logged_error[FLOWSTORE_ERROR_BYTES]; /* last error logged; "" while writes work */
    uint64_t lost_since_logged;

    /* The read connection, guarded by read_lock. */
    pthread_mutex_t read_lock;
    bool has_read_lock;
    sqlite3 *rdb;
    sqlite3_stmt *get_stmt;
    sqlite3_stmt *get_body_stmt;
    sqlite3_stmt *newest_stmt;
    sqlite3_stmt *segs_stmt;
    sqlite3_stmt *has_pairs_stmt; /* whether a flows_unindexed_N has its pairs column */
    sqlite3_stmt *read_begin_stmt;
    sqlite3_stmt *read_commit_stmt;
    /* Decodes Content-Encoding for the body search; NULL searches the
     * stored bytes only. Read by the search under read_lock. */
    flowstore_decode_fn body_decode;

    pthread_mutex_t callback_lock;
    bool has_callback_lock;
    flowstore_written_fn written_fn;
    void *written_arg;
};

static bool name_is(const char *name, size_t name_len, const char *want)
{
    return strlen(want) == name_len && strncasecmp(name, want, name_len) == 0;
}

/* The fields of a header section that the flows row also keeps in columns
 * of their own. */
struct header_facts {
    const char *content_type; /* the first Content-Type, into the section; NULL when none */
    size_t content_type_len;
    const char *content_encoding; /* every Content-Encoding joined by ", " (RFC 9110 5.3: the
                                     same as one field with a list); NULL when there is none
                                     or out of memory */
    size_t content_encoding_len;
    char *joined; /* owned: content_encoding when several fields were joined */
};

/* Fills facts from text in one walk over its fields: the writer does this
 * for a section no proxy thread noted (see section_facts). The caller frees
 * facts->joined. */
static void header_facts(const char *text, struct header_facts *facts)
{
    const char *name, *value;
    size_t name_len, value_len;
    size_t pos = 0;
    size_t len = 0;
    bool has_failed = false;

    memset(facts, 0, sizeof(*facts));
    while (flow_headers_next(text, &pos, &name, &name_len, &value, &value_len)) {
        char *grown;

        if (facts->content_type == NULL && name_is(name, name_len, "Content-Type")) {
            facts->content_type = value;
            facts->content_type_len = value_len;
            continue;
        }
        if (has_failed || value_len == 0 || !name_is(name, name_len, "Content-Encoding"))
            continue;
        grown = realloc(facts->joined, len + value_len + 3);
        if (grown == NULL) {
            /* No encoding rather than part of the list; keep looking for
             * the Content-Type. */
            free(facts->joined);
            facts->joined = NULL;
            has_failed = true;
            continue;
        }
        facts->joined = grown;
        if (len > 0) {
            memcpy(grown + len, ", ", 2);
            len += 2;
        }
        memcpy(grown + len, value, value_len);
        len += value_len;
        grown[len] = '\0';
    }
    facts->content_encoding = facts->joined;
    facts->content_encoding_len = facts->joined != NULL ? len : 0;
}

/* The facts of text: as the proxy thread noted them when they are about
 * this very text and need no joining, else from a walk over it. The caller
 * frees facts->joined. */
static void section_facts(const char *text, const struct flow_header_facts *noted,
                          struct header_facts *facts)
{
    if (text == NULL || noted->text != text || noted->has_more_encodings) {
        header_facts(text, facts);
        return;
    }
    memset(facts, 0, sizeof(*facts));
    if (noted->has_content_type) {
        facts->content_type = text + noted->content_type_at;
        facts->content_type_len = noted->content_type_len;
    }
    if (noted->has_content_encoding) {
        facts->content_encoding = text + noted->content_encoding_at;
        facts->content_encoding_len = noted->content_encoding_len;
    }
}

/* ---- opening and closing ---- */

static int prepare(sqlite3 *db, const char *path, const char *sql, sqlite3_stmt **stmt, char *err,
                   size_t err_len)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL);

    if (rc != SQLITE_OK) {
        errmsg_set(err, err_len, "database %s: cannot prepare the flow queries: %s", path,
                   sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* The columns of a flow row in the order of struct binder calls in
 * insert_flow() and of struct reader calls in read_record(). */
#define FLOW_INSERT_COLUMNS                                                                        \
    "kind, time_start_us, client, scheme, method, host, port, target, req_version, "               \
    "resp_version, req_headers, resp_headers, status, reason, req_body_size, resp_body_size, "     \
    "req_body_captured, resp_body_captured, req_truncated, resp_truncated, req_content_type, "     \
    "resp_content_type, req_content_encoding, resp_content_encoding, connected_us, tls_done_us, "  \
    "request_sent_us, first_byte_us, done_us, is_tls, tls_client_sni, tls_client_alpn, "           \
    "tls_client_version, tls_client_cipher, tls_upstream_version, tls_upstream_cipher, "           \
    "tls_cert_subject, tls_cert_issuer, tls_cert_sans, tls_cert_not_after, tls_verification, "     \
    "error, rules, bytes_up, bytes_down, " ORIGINAL_COLUMNS
/* What rules changed (schema version 4), after the columns of version 2. */
#define ORIGINAL_COLUMNS                                                                           \
    "target_original, req_headers_original, resp_headers_original, req_body_original_size, "       \
    "resp_body_original_size, req_body_original_captured, resp_body_original_captured, "           \
    "req_original_truncated, resp_original_truncated, rules_notes, replay_of"
#define FLOW_INSERT_VALUES                                                                         \
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "   \
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
/* After the inline bodies: imported (schema version 12), listener and
 * bodies_dropped (version 13). */
#define FLOW_TAIL_COLUMNS "imported, listener, bodies_dropped"
#define RECORD_COLUMNS "id, " FLOW_INSERT_COLUMNS ", " FLOW_TAIL_COLUMNS
/* A listing leaves out what only the detail view shows: the same columns
 * with the header sections, TLS details, what rules changed and the replay
 * link as NULL (flows.rules stays: the list marks modified flows; a
 * replay's client names its source). replay_of comes after the inline
 * bodies, which a listing must not walk over. */
#define SUMMARY_COLUMNS                                                                            \
    "id, kind, time_start_us, client, scheme, method, host, port, target, req_version, "           \
    "resp_version, NULL, NULL, status, reason, req_body_size, resp_body_size, "                    \
    "req_body_captured, resp_body_captured, req_truncated, resp_truncated, req_content_type, "     \
    "resp_content_type, req_content_encoding, resp_content_encoding, connected_us, tls_done_us, "  \
    "request_sent_us, first_byte_us, done_us, is_tls, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "  \
    "NULL, NULL, NULL, NULL, error, rules, bytes_up, bytes_down, "                                 \
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, " FLOW_TAIL_COLUMNS

static int prepare_writer(struct flowstore *store, char *err, size_t err_len)
{
    sqlite3 *db = store->wdb;
    const char *path = store->db_path;

    /* IMMEDIATE: take the write lock at BEGIN, so a busy database fails
     * (after the busy timeout) before any work is done, not at COMMIT. */
    if (prepare(db, path, "BEGIN IMMEDIATE", &store->begin_stmt, err, err_len) != 0 ||
        prepare(db, path, "COMMIT", &store->commit_stmt, err, err_len) != 0 ||
        prepare(db, path, "ROLLBACK", &store->rollback_stmt, err, err_len) != 0 ||
        prepare(db, path, "UPDATE flow_ids SET next_id = ?1, spooled_to = ?2",
                &store->save_next_id_stmt, err, err_len) != 0 ||
        prepare(db, path,
                "INSERT INTO flow_segments (seg, first_id, created_us, last_us, flows, written) "
                "VALUES (?1, ?2, ?3, ?4, 0, 0)",
                &store->insert_seg_stmt, err, err_len) != 0 ||
        prepare(db, path,
                "UPDATE flow_segments SET last_us = ?2, flows = ?3, written = ?4, first_id = ?5 "
                "WHERE seg = ?1",
                &store->update_seg_stmt, err, err_len) != 0 ||
        prepare(db, path, "DELETE FROM flow_segments WHERE seg = ?1", &store->delete_seg_stmt, err,
                err_len) != 0 ||
        /* Pages in use: what --max-db-size bounds. Both are read from the
         * file's header, so this costs nothing per batch. */
        prepare(db, path,
                "SELECT (SELECT page_count FROM pragma_page_count) - "
                "(SELECT freelist_count FROM pragma_freelist_count)",
                &store->used_pages_stmt, err, err_len) != 0)
        return -1;
    return 0;
}

static void finalize_segment_stmts(struct flowstore *store)
{
    sqlite3_finalize(store->insert_flow_stmt);
    sqlite3_finalize(store->insert_body_stmt);
    sqlite3_finalize(store->insert_fts_stmt);
    sqlite3_finalize(store->insert_hdr_stmt);
    sqlite3_finalize(store->insert_unindexed_stmt);
    store->insert_hdr_stmt = NULL;
    store->insert_flow_stmt = NULL;
    store->insert_body_stmt = NULL;
    store->insert_fts_stmt = NULL;
    store->insert_unindexed_stmt = NULL;
}

/* Prepares the writer's statements on the newest segment's tables. */
static int prepare_segment(struct flowstore *store, char *err, size_t err_len)
{
    sqlite3 *db = store->wdb;
    const char *path = store->db_path;
    int64_t seg = store->segs[store->seg_count - 1].seg;
    char sql[2048];

    finalize_segment_stmts(store);
    snprintf(sql, sizeof(sql),
             "INSERT INTO flows_%" PRId64 " (id, " FLOW_INSERT_COLUMNS
             ", req_body, resp_body, " FLOW_TAIL_COLUMNS ") VALUES (?, " FLOW_INSERT_VALUES
             ", ?, ?, ?, ?, ?)",
             seg);
    if (prepare(db, path, sql, &store->insert_flow_stmt, err, err_len) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "INSERT INTO flow_bodies_%" PRId64 " (body_key, data) VALUES (?1, ?2)", seg);
    if (prepare(db, path, sql, &store->insert_body_stmt, err, err_len) != 0)
        return -1;
    /* The URL first, as the URL filter sees it (host || target), then the
     * bodies' text, each after a newline (index_flow()). */
    snprintf(sql, sizeof(sql), "INSERT INTO flows_fts_%" PRId64 " (rowid, text) VALUES (?1, ?2)",
             seg);
    if (prepare(db, path, sql, &store->insert_fts_stmt, err, err_len) != 0)
        return -1;
    /* The request's header values, a newline, the response's. */
    snprintf(sql, sizeof(sql), "INSERT INTO flows_hdr_%" PRId64 " (rowid, text) VALUES (?1, ?2)",
             seg);
    if (prepare(db, path, sql, &store->insert_hdr_stmt, err, err_len) != 0)
        return -1;
    /* Without the pairs column (it could not be added, see
     * add_pairs_columns()) the body search reads every body listed. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO flows_unindexed_%" PRId64 " (id, pairs) VALUES (?1, ?2)", seg);
    store->has_pairs_column =
        sqlite3_prepare_v2(db, sql, -1, &store->insert_unindexed_stmt, NULL) == SQLITE_OK;
    if (!store->has_pairs_column) {
        snprintf(sql, sizeof(sql), "INSERT INTO flows_unindexed_%" PRId64 " (id) VALUES (?1)", seg);
        if (prepare(db, path, sql, &store->insert_unindexed_stmt, err, err_len) != 0)
            return -1;
    }
    return 0;
}

/* Runs a setting on the read connection; what names it for the error. */
static int reader_pragma(struct flowstore *store, const char *sql, const char *what, char *err,
                         size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;
    int ret = -1;

    if (prepare(store->rdb, store->db_path, sql, &stmt, err, err_len) != 0)
        goto out;
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        errmsg_set(err, err_len, "database %s: cannot %s: %s", store->db_path, what,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    ret = 0;
out:
    sqlite3_finalize(stmt);
    return ret;
}

static unsigned char fold_ascii(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* A needle longer than this is searched for byte by byte when folded. */
#define FOLD_NEEDLE_MAX_BYTES 256
#define FOLD_CHUNK_BYTES 4096

/* memmem() with ASCII letters folded when is_nocase: bodies are bytes in
 * any charset, and folding ASCII alone never changes another byte. The
 * body search runs this over every body the index does not hold, so the
 * folded search copies the haystack folded into a buffer a chunk at a time
 * (chunks overlap by needle_len - 1 bytes) and lets memmem() do the
 * search, several times faster than comparing byte by byte. */
static bool contains_bytes(const unsigned char *hay, size_t hay_len, const unsigned char *needle,
                           size_t needle_len, bool is_nocase)
{
    unsigned char folded_needle[FOLD_NEEDLE_MAX_BYTES];
    unsigned char chunk[FOLD_CHUNK_BYTES + FOLD_NEEDLE_MAX_BYTES];
    bool has_letter = false;
    size_t i, j, at;

    if (needle_len > hay_len)
        return false;
    if (needle_len == 0)
        return true;
    if (is_nocase && needle_len <= FOLD_NEEDLE_MAX_BYTES) {
        for (i = 0; i < needle_len; i++) {
            folded_needle[i] = fold_ascii(needle[i]);
            has_letter |= folded_needle[i] >= 'a' && folded_needle[i] <= 'z';
        }
        needle = folded_needle;
    }
    if (!is_nocase || !has_letter) {
        if (!is_nocase || needle_len <= FOLD_NEEDLE_MAX_BYTES)
            return memmem(hay, hay_len, needle, needle_len) != NULL;
    }
    if (needle_len > FOLD_NEEDLE_MAX_BYTES) {
        for (i = 0; i + needle_len <= hay_len; i++) {
            for (j = 0; j < needle_len && fold_ascii(hay[i + j]) == fold_ascii(needle[j]); j++)
                ;
            if (j == needle_len)
                return true;
        }
        return false;
    }
    /* Each chunk starts needle_len - 1 bytes before the end of the last, so
     * a match across the boundary is whole in one of them. */
    for (at = 0; at + needle_len <= hay_len; at += FOLD_CHUNK_BYTES) {
        size_t n = hay_len - at;

        if (n > FOLD_CHUNK_BYTES + needle_len - 1)
            n = FOLD_CHUNK_BYTES + needle_len - 1;
        for (i = 0; i < n; i++)
            chunk[i] = fold_ascii(hay[at + i]);
        if (memmem(chunk, n, needle, needle_len) != NULL)
            return true;
    }
    return false;
}

/*
 * SQL function body_has(data, content_encoding, needle, is_nocase): 1 when
 * needle is in the stored bytes, or, for a body with a Content-Encoding, in
 * the decoded ones (what the detail view shows), bounded by
 * FLOWSTORE_SEARCH_DECODED_MAX_BYTES. Registered on the read connection
 * only; the store is its user data, and it runs under read_lock.
 */
static void sql_body_has(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct flowstore *store = sqlite3_user_data(ctx);
    const unsigned char *data = sqlite3_value_blob(argv[0]);
    size_t len = (size_t)sqlite3_value_bytes(argv[0]);
    const char *encoding = (const char *)sqlite3_value_text(argv[1]);
    const unsigned char *needle = sqlite3_value_blob(argv[2]);
    size_t needle_len = (size_t)sqlite3_value_bytes(argv[2]);
    bool is_nocase = sqlite3_value_int(argv[3]) != 0;
    unsigned char *decoded = NULL;
    size_t decoded_len = 0;
    char why[128];
    bool found;

    (void)argc;
    if (data == NULL || needle == NULL) {
        sqlite3_result_int(ctx, 0);
        return;
    }
    found = contains_bytes(data, len, needle, needle_len, is_nocase);
    if (!found && encoding != NULL && encoding[0] != '\0' &&
        strcasecmp(encoding, "identity") != 0 && store->body_decode != NULL &&
        store->body_decode(encoding, data, len, FLOWSTORE_SEARCH_DECODED_MAX_BYTES, &decoded,
                           &decoded_len, why, sizeof(why)) == 0) {
        found = contains_bytes(decoded, decoded_len, needle, needle_len, is_nocase);
        free(decoded);
    }
    sqlite3_result_int(ctx, found);
}

/* SQL function pairs_may_hold(pairs, needle): 0 when the byte-pair filter
 * of a body the index does not hold rules needle out
 * (searchtext_pairs_may_hold()), else 1; NULL pairs (no filter) is 1. */
static void sql_pairs_may_hold(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const unsigned char *pairs = sqlite3_value_blob(argv[0]);
    size_t pairs_len = (size_t)sqlite3_value_bytes(argv[0]);
    const unsigned char *needle = sqlite3_value_blob(argv[1]);
    size_t needle_len = (size_t)sqlite3_value_bytes(argv[1]);

    (void)argc;
    sqlite3_result_int(ctx, needle == NULL ||
                                searchtext_pairs_may_hold(pairs, pairs_len, needle, needle_len));
}

static int prepare_reader(struct flowstore *store, char *err, size_t err_len)
{
    sqlite3 *db = store->rdb;
    const char *path = store->db_path;

    /* cache_size: a page of the list reads a few dozen pages; a search that
     * matches nothing reads them all, and with SQLite's default 2 MiB cache
     * the proxy's memory would then grow with the flows stored, up to that
     * bound. 512 KiB keeps pages under the list's cursor warm; the rest
     * comes from the OS's cache. */
    if (reader_pragma(store, "PRAGMA query_only = 1", "make the read connection read-only", err,
                      err_len) != 0 ||
        reader_pragma(store, "PRAGMA cache_size = -512", "size the read connection's cache", err,
                      err_len) != 0)
        return -1;
    if (sqlite3_create_function_v2(db, "body_has", 4, SQLITE_UTF8 | SQLITE_DETERMINISTIC, store,
                                   sql_body_has, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_create_function_v2(db, "pairs_may_hold", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                   NULL, sql_pairs_may_hold, NULL, NULL, NULL) != SQLITE_OK) {
        errmsg_set(err, err_len, "database %s: cannot add the body search function: %s", path,
                   sqlite3_errmsg(db));
        return -1;
    }
    if (prepare(db, path, "SELECT " RECORD_COLUMNS " FROM flows WHERE id = ?1", &store->get_stmt,
                err, err_len) != 0 ||
        /* A body as sent is in its flow's row when it was small (schema
         * version 8), else in flow_bodies; originals are always there. */
        prepare(db, path,
                "SELECT coalesce((SELECT CASE ?2 WHEN 0 THEN req_body WHEN 1 THEN resp_body END "
                "FROM flows WHERE id = ?1), (SELECT data FROM flow_bodies WHERE body_key = ?1 * 4 "
                "+ ?2))",
                &store->get_body_stmt, err, err_len) != 0 ||
        /* max() over the view would read every row; ORDER BY ... LIMIT
         * merges the segments' rowid b-trees. */
        prepare(db, path, "SELECT id FROM flows ORDER BY id DESC LIMIT 1", &store->newest_stmt, err,
                err_len) != 0 ||
        prepare(db, path, "SELECT seg, first_id FROM flow_segments ORDER BY seg", &store->segs_stmt,
                err, err_len) != 0 ||
        prepare(db, path, "SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'pairs'",
                &store->has_pairs_stmt, err, err_len) != 0 ||
        prepare(db, path, "BEGIN", &store->read_begin_stmt, err, err_len) != 0 ||
        prepare(db, path, "COMMIT", &store->read_commit_stmt, err, err_len) != 0)
        return -1;
    return 0;
}

/* The one integer sql returns, from db; what names it for the error. */
static int query_int64(sqlite3 *db, const char *path, const char *sql, const char *what,
                       int64_t *value, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int ret = -1;

    if (prepare(db, path, sql, &stmt, err, err_len) != 0)
        goto out;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        errmsg_set(err, err_len, "database %s: cannot read %s: %s", path, what, sqlite3_errmsg(db));
        goto out;
    }
    *value = sqlite3_column_int64(stmt, 0);
    ret = 0;
out:
    sqlite3_finalize(stmt);
    return ret;
}

/* Reads flow_segments into segs (oldest first) and the stored count. */
static int load_segments(struct flowstore *store, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;
    int ret = -1;

    store->seg_count = 0;
    store->seg_total_flows = 0;
    if (prepare(store->wdb, store->db_path,
                "SELECT seg, first_id, created_us, last_us, flows, written FROM flow_segments "
                "ORDER BY seg",
                &stmt, err, err_len) != 0)
        goto out;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct flowseg *seg;

        if (store->seg_count == FLOWSEG_MAX_SEGMENTS + 1) {
            errmsg_set(err, err_len, "database %s has more than %d flow segments", store->db_path,
                       FLOWSEG_MAX_SEGMENTS + 1);
            goto out;
        }
        seg = &store->segs[store->seg_count++];
        memset(seg, 0, sizeof(*seg));
        seg->seg = sqlite3_column_int64(stmt, 0);
        seg->first_id = sqlite3_column_int64(stmt, 1);
        seg->created_us = sqlite3_column_int64(stmt, 2);
        seg->last_us = sqlite3_column_int64(stmt, 3);
        seg->flows = sqlite3_column_int64(stmt, 4);
        seg->written = sqlite3_column_int64(stmt, 5);
        store->seg_total_flows += seg->flows;
    }
    if (rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: cannot read the flow segments: %s", store->db_path,
                   sqlite3_errmsg(store->wdb));
        goto out;
    }
    if (store->seg_count == 0) {
        errmsg_set(err, err_len, "database %s has no flow segment", store->db_path);
        goto out;
    }
    store->stats.stored = (uint64_t)store->seg_total_flows;
    ret = 0;
out:
    sqlite3_finalize(stmt);
    return ret;
}

/* Sets inline_body_max from the file's page size: an existing file keeps
 * the page size it was made with (see db_open). */
static int load_inline_body_max(struct flowstore *store, char *err, size_t err_len)
{
    int64_t page_size;

    if (query_int64(store->wdb, store->db_path, "PRAGMA page_size", "the page size", &page_size,
                    err, err_len) != 0)
        return -1;
    if (page_size <= 0) {
        errmsg_set(err, err_len, "database %s reports a page size of %" PRId64, store->db_path,
                   page_size);
        return -1;
    }
    store->inline_body_max = (size_t)page_size / 8;
    return 0;
}

/* The id the next flow gets: past every id ever given out (flow_ids keeps
 * that across deletions and restarts) and past every stored flow. */
static int load_next_id(struct flowstore *store, char *err, size_t err_len)
{
    int64_t spooled_to = 0;

    if (query_int64(store->wdb, store->db_path,
                    "SELECT max(coalesce((SELECT max(next_id) FROM flow_ids), 1), "
                    "coalesce((SELECT max(id) FROM flows), 0) + 1)",
                    "the next flow id", &store->next_id, err, err_len) != 0 ||
        query_int64(store->wdb, store->db_path,
                    "SELECT coalesce((SELECT max(spooled_to) FROM flow_ids), 0)",
                    "the last spooled flow stored", &spooled_to, err, err_len) != 0)
        return -1;
    store->spooled_to = (uint64_t)spooled_to;
    return 0;
}

static void *writer_run(void *arg);
static void *idle_run(void *arg);
static void open_spool(struct flowstore *store, bool is_left_only);
static void catch_up_headers(struct flowstore *store);

/* Adds the pairs column (flowseg.c) to the segments' flows_unindexed_N
 * that lack it. The migration of schema version 14 gave it to every
 * segment; this mends a database whose column was dropped by hand, rather
 * than refuse to start. ADD COLUMN rewrites no row;
 * the rows already there keep no filter (NULL) and are read by every body
 * search, as before. A failure (a locked or read-only database) costs only
 * the filter of what is written next. */
static void add_pairs_columns(struct flowstore *store)
{
    char sql[256];
    size_t i;

    for (i = 0; i < store->seg_count; i++) {
        int64_t has = 0;
        char err[FLOWSTORE_ERROR_BYTES];

        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM pragma_table_info('flows_unindexed_%" PRId64
                 "') WHERE name = 'pairs'",
                 store->segs[i].seg);
        if (query_int64(store->wdb, store->db_path, sql, "a flow segment's columns", &has, err,
                        sizeof(err)) != 0 ||
            has > 0)
            continue;
        snprintf(sql, sizeof(sql), "ALTER TABLE flows_unindexed_%" PRId64 " ADD COLUMN pairs BLOB",
                 store->segs[i].seg);
        if (sqlite3_exec(store->wdb, sql, NULL, NULL, NULL) != SQLITE_OK) {
            log_warn("flowstore: database %s: cannot add the byte-pair filter to segment %" PRId64
                     ": %s",
                     store->db_path, store->segs[i].seg, sqlite3_errmsg(store->wdb));
            return;
        }
    }
}

/* The newest segment's index merge policy (flowseg_tune_sql()): segments
 * from a migration, or from before the policy, get it here. Only when
 * missing, so that an open writes nothing otherwise; a failure (a locked or
 * full database) costs only the tuning, never the start. */
static void tune_newest(struct flowstore *store)
{
    char sql[FLOWSEG_SQL_MAX_BYTES];
    int64_t seg = store->segs[store->seg_count - 1].seg;
    int64_t tuned = 0;
    char err[FLOWSTORE_ERROR_BYTES];

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM flows_hdr_%" PRId64 "_config WHERE k = 'automerge'", seg);
    if (query_int64(store->wdb, store->db_path, sql, "the search index's settings", &tuned, err,
                    sizeof(err)) == 0 &&
        tuned > 0)
        return;
    if (flowseg_tune_sql(seg, sql, sizeof(sql)) != 0 ||
        sqlite3_exec(store->wdb, sql, NULL, NULL, NULL) != SQLITE_OK)
        log_warn("flowstore: database %s: cannot tune the search index of segment %" PRId64 ": %s",
                 store->db_path, seg, sqlite3_errmsg(store->wdb));
}

static int init_monotonic_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc;

    if (pthread_condattr_init(&attr) != 0)
        return -1;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

int flowstore_open(const char *db_path, int64_t max_flows, struct flowstore **out, char *err,
                   size_t err_len)
{
    struct flowstore *store = NULL;
    int ret = -1;

    *out = NULL;
    /* Each connection to ":memory:" is a database of its own: the reader
     * would never see what the writer stored. */
    if (db_path[0] == '\0' || strcmp(db_path, ":memory:") == 0) {
        errmsg_set(err, err_len, "the flow store needs a database file, not an in-memory database");
        goto out;
    }
    store = calloc(1, sizeof(*store));
    if (store == NULL) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        goto out;
    }
    store->limits.max_flows = max_flows;
    store->spool_max_bytes = FLOWSTORE_SPOOL_MAX_BYTES;
    store->db_path = strdup(db_path);
    store->queue = calloc(FLOWSTORE_QUEUE_FLOWS, sizeof(store->queue[0]));
    store->queue_sizes = calloc(FLOWSTORE_QUEUE_FLOWS, sizeof(store->queue_sizes[0]));
    if (store->db_path == NULL || store->queue == NULL || store->queue_sizes == NULL) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        goto out;
    }
    store->ring = flowring_new(FLOWSTORE_RING_BYTES);
    store->has_lock = pthread_mutex_init(&store->lock, NULL) == 0;
    store->has_work_cond = store->has_lock && init_monotonic_cond(&store->work_cond) == 0;
    store->has_done_cond = store->has_work_cond && init_monotonic_cond(&store->done_cond) == 0;
    store->has_write_lock =
        store->has_done_cond && pthread_mutex_init(&store->write_lock, NULL) == 0;
    store->has_read_lock =
        store->has_write_lock && pthread_mutex_init(&store->read_lock, NULL) == 0;
    store->has_callback_lock =
        store->has_read_lock && pthread_mutex_init(&store->callback_lock, NULL) == 0;
    store->has_idle_cond = store->has_callback_lock && init_monotonic_cond(&store->idle_cond) == 0;
    store->has_token_cond = store->has_idle_cond && init_monotonic_cond(&store->token_cond) == 0;
    if (!store->has_token_cond) {
        errmsg_set(err, err_len, "flowstore: cannot create a mutex");
        goto out;
    }

    /* The first db_open() creates and migrates the file; the second finds
     * it at the current version. */
    if (db_open(db_path, &store->wdb, err, err_len) != 0 ||
        prepare_writer(store, err, err_len) != 0 ||
        db_open(db_path, &store->rdb, err, err_len) != 0 ||
        prepare_reader(store, err, err_len) != 0 || load_segments(store, err, err_len) != 0)
        goto out;
    add_pairs_columns(store);
    if (prepare_segment(store, err, err_len) != 0 || load_next_id(store, err, err_len) != 0 ||
        load_inline_body_max(store, err, err_len) != 0)
        goto out;
    tune_newest(store);
    open_spool(store, true);
    /* Whether an earlier run stopped with header words still to add is not
     * recorded; it never left more than FLOWSTORE_HDR_LAG_MAX_FLOWS, so
     * those flows are indexed again when the writer starts. */
    store->hdr_indexed_to = store->next_id - FLOWSTORE_HDR_LAG_MAX_FLOWS;
    if (store->hdr_indexed_to < store->segs[0].first_id)
        store->hdr_indexed_to = store->segs[0].first_id;

    /* Before the writer, which reads has_idle: without the idle thread it
     * writes without waiting for idle time, as fast as it can. */
    store->has_idle = pthread_create(&store->idle, NULL, idle_run, store) == 0;
    if (!store->has_idle)
        log_warn("flowstore: cannot start the idle thread; the flow writer takes its turns "
                 "at the proxy's priority");
    if (pthread_create(&store->writer, NULL, writer_run, store) != 0) {
        errmsg_set(err, err_len, "flowstore: cannot start the writer thread");
        goto out;
    }
    store->has_writer = true;
    *out = store;
    store = NULL;
    ret = 0;
out:
    flowstore_close(store);
    return ret;
}

static void close_db(sqlite3 *db, const char *path)
{
    int rc = sqlite3_close(db);

    if (rc != SQLITE_OK)
        log_warn("flowstore: closing database %s: %s", path, sqlite3_errstr(rc));
}

void flowstore_close(struct flowstore *store)
{
    size_t i;

    if (store == NULL)
        return;
    if (store->has_writer || store->has_idle) {
        pthread_mutex_lock(&store->lock);
        store->is_stopping = true;
        pthread_cond_signal(&store->work_cond);
        pthread_cond_signal(&store->idle_cond);
        pthread_cond_broadcast(&store->token_cond);
        pthread_mutex_unlock(&store->lock);
    }
    if (store->has_writer) {
        pthread_join(store->writer, NULL);
        flowstore_log_totals(store);
    }
    if (store->has_idle)
        pthread_join(store->idle, NULL);
    if (store->queue != NULL)
        for (i = 0; i < store->queue_count; i++)
            flow_free(store->queue[(store->queue_head + i) % FLOWSTORE_QUEUE_FLOWS]);
    flowspool_close(store->spool);
    flowring_free(store->ring); /* after every flow lent a slot is freed */

    sqlite3_finalize(store->begin_stmt);
    sqlite3_finalize(store->commit_stmt);
    sqlite3_finalize(store->rollback_stmt);
    finalize_segment_stmts(store);
    sqlite3_finalize(store->insert_ws_stmt);
    sqlite3_finalize(store->save_next_id_stmt);
    sqlite3_finalize(store->insert_seg_stmt);
    sqlite3_finalize(store->update_seg_stmt);
    sqlite3_finalize(store->delete_seg_stmt);
    sqlite3_finalize(store->used_pages_stmt);
    sqlite3_finalize(store->get_stmt);
    sqlite3_finalize(store->get_body_stmt);
    sqlite3_finalize(store->newest_stmt);
    sqlite3_finalize(store->segs_stmt);
    sqlite3_finalize(store->has_pairs_stmt);
    sqlite3_finalize(store->read_begin_stmt);
    sqlite3_finalize(store->read_commit_stmt);
    close_db(store->rdb, store->db_path);
    close_db(store->wdb, store->db_path);
    if (store->has_token_cond)
        pthread_cond_destroy(&store->token_cond);
    if (store->has_idle_cond)
        pthread_cond_destroy(&store->idle_cond);
    if (store->has_callback_lock)
        pthread_mutex_destroy(&store->callback_lock);
    if (store->has_read_lock)
        pthread_mutex_destroy(&store->read_lock);
    if (store->has_write_lock)
        pthread_mutex_destroy(&store->write_lock);
    if (store->has_done_cond)
        pthread_cond_destroy(&store->done_cond);
    if (store->has_work_cond)
        pthread_cond_destroy(&store->work_cond);
    if (store->has_lock)
        pthread_mutex_destroy(&store->lock);
    free(store->index_text);
    free(store->queue);
    free(store->queue_sizes);
    free(store->db_path);
    free(store);
}

/* ---- submitting ---- */

/* What the record holds besides its bodies: the fixed part and its texts
 * (bounded by the head limits of the codecs). */
static size_t record_bytes(const struct flow *flow)
{
    return sizeof(*flow) + flow_strings_bytes(flow) +
           flow->ws.capacity * sizeof(struct flow_ws_message);
}

static size_t body_bytes(const struct flow *flow)
{
    return flow->request_body.capacity + flow->response_body.capacity +
           flow->request_body_original.capacity + flow->response_body_original.capacity +
           flow->ws.bytes;
}

/* The bytes flow counts for in the queue (and roughly in its segment). */
static size_t flow_bytes(const struct flow *flow)
{
    return record_bytes(flow) + body_bytes(flow);
}

/* Whether a flow of bytes fits the queue now; called with lock held. The
 * first flow always does, so that one larger than the bound is written. */
static bool queue_fits(const struct flowstore *store, size_t bytes)
{
    return store->queue_count == 0 ||
           store->queue_bytes + store->spool_held_bytes + bytes <= FLOWSTORE_QUEUE_MAX_BYTES;
}

/* Whether the writer has flows to write, queued or spooled. Called with
 * lock held. */
static bool has_work(const struct flowstore *store)
{
    return store->queue_count > 0 || store->spooled > 0;
}

/* The flows waiting for the writer, queued and spooled: what says whether
 * the CPU has idle time left for it (wait_for_idle()). Called with lock
 * held. */
static size_t backlog(const struct flowstore *store)
{
    return store->queue_count + store->spooled;
}

/* Warns at the 1st, 2nd, 4th, 8th... time a count went up: visible, never
 * a flood. Returns the count to log, 0 for none; called with lock held. */
static uint64_t report_due(uint64_t count, uint64_t *reported)
{
    if (*reported != 0 && count < *reported * 2)
        return 0;
    *reported = count;
    return count;
}

/* Puts flow (of bytes) at the queue's tail; called with lock held, once
 * it was judged to fit. */
static void enqueue(struct flowstore *store, struct flow *flow, size_t bytes)
{
    size_t at = (store->queue_head + store->queue_count) % FLOWSTORE_QUEUE_FLOWS;

    store->queue[at] = flow;
    store->queue_sizes[at] = bytes;
    store->queue_count++;
    store->queue_bytes += bytes;
    store->accepted++;
    /* Wake the writer when work appears, when a batch is full and when it
     * may defer no longer; in between it is gathering a batch or deferring
     * (see writer_run). */
    if (store->queue_count == 1 || store->queue_count == FLOWSTORE_BATCH_FLOWS ||
        store->queue_count == FLOWSTORE_DEFER_FLOWS)
        pthread_cond_signal(&store->work_cond);
    /* A writer waiting for idle time stops waiting (wait_for_idle()). */
    if (backlog(store) == FLOWSTORE_BUSY_FLOWS)
        pthread_cond_signal(&store->token_cond);
}

/*
 * The common case, without an allocation: flow packed into a slot of the
 * ring (flowring.h) and queued, in one hold of the lock. Returns true when
 * it was; false leaves flow as it was for the other way (it does not pack,
 * the ring or the queue has no room for it now).
 */
static bool submit_in_ring(struct flowstore *store, struct flow *flow)
{
    size_t bytes = flow_pack_bytes(flow);
    struct flow *packed = NULL;
    int *given_back;
    void *slot;

    if (bytes == 0 || store->ring == NULL)
        return false;
    pthread_mutex_lock(&store->lock);
    if (!store->is_stopping && store->queue_count < FLOWSTORE_QUEUE_FLOWS &&
        queue_fits(store, bytes) &&
        (slot = flowring_lend(store->ring, bytes, &given_back)) != NULL) {
        packed = flow_pack_into(flow, slot, bytes, given_back);
        if (packed->live_part == FLOW_LIVE_NONE || packed->live_part == FLOW_LIVE_FINAL)
            store->stats.submitted++;
        enqueue(store, packed, flow_bytes(packed));
    }
    pthread_mutex_unlock(&store->lock);
    if (packed == NULL)
        return false;
    flow_free(flow); /* its pieces, copied into the slot */
    return true;
}

int flowstore_submit(struct flowstore *store, struct flow *flow)
{
    uint64_t dropped = 0, stripped = 0;
    size_t bytes, bodies;
    bool is_counted;
    bool must_strip = false;
    int ret = -1;

    if (flow == NULL)
        return -1;
    if (store == NULL) {
        flow_free(flow);
        return -1;
    }
    if (submit_in_ring(store, flow))
        return 0;
    flow = flow_pack(flow); /* see flow_pack(): here, on the thread that built it */
    is_counted = flow->live_part == FLOW_LIVE_NONE || flow->live_part == FLOW_LIVE_FINAL;
    bodies = body_bytes(flow);
    bytes = flow_bytes(flow);
    pthread_mutex_lock(&store->lock);
    if (bodies > 0 && !queue_fits(store, bytes)) {
        /* The bodies give way first (the disk cannot keep up with them):
         * freed outside the lock, then the record tries again. */
        pthread_mutex_unlock(&store->lock);
        flow = flow_drop_bodies(flow);
        bytes -= bodies;
        must_strip = true;
        pthread_mutex_lock(&store->lock);
    }
    if (is_counted)
        store->stats.submitted++;
    if (!store->is_stopping && store->queue_count < FLOWSTORE_QUEUE_FLOWS &&
        queue_fits(store, bytes)) {
        enqueue(store, flow, bytes);
        flow = NULL;
        if (must_strip) {
            store->stats.bodies_dropped++;
            stripped = report_due(store->stats.bodies_dropped, &store->body_drops_reported);
        }
        ret = 0;
    } else {
        store->stats.dropped++;
        dropped = report_due(store->stats.dropped, &store->drops_reported);
    }
    pthread_mutex_unlock(&store->lock);
    if (dropped > 0)
        log_warn("flowstore: the flow queue is full (the database cannot keep up); %" PRIu64
                 " flow(s) dropped so far",
                 dropped);
    if (stripped > 0)
        log_warn("flowstore: the flow queue holds %zu MiB of bodies (the database cannot keep "
                 "up); %" PRIu64 " flow(s) kept without their bodies so far",
                 FLOWSTORE_QUEUE_MAX_BYTES / (1024 * 1024), stripped);
    flow_free(flow);
    return ret;
}

int flowstore_sync(struct flowstore *store, int timeout_ms)
{
    struct timespec deadline = clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);
    uint64_t target;
    int ret = 0;

    pthread_mutex_lock(&store->lock);
    target = store->accepted;
    store->sync_waiters++; /* the writer does not defer them (defer_while_busy()) */
    pthread_cond_signal(&store->work_cond);
    while (store->finished < target) {
        if (pthread_cond_timedwait(&store->done_cond, &store->lock, &deadline) == ETIMEDOUT &&
            store->finished < target) {
            ret = -1;
            break;
        }
    }
    store->sync_waiters--;
    pthread_mutex_unlock(&store->lock);
    return ret;
}

void flowstore_log_totals(struct flowstore *store)
{
    struct flowstore_stats stats;

    flowstore_stats(store, &stats);
    log_info("flows: %llu written, %llu dropped (queue full), %llu kept without their bodies "
             "(queue at its byte bound, or a full disk), %llu lost to database errors",
             (unsigned long long)stats.written, (unsigned long long)stats.dropped,
             (unsigned long long)stats.bodies_dropped, (unsigned long long)stats.write_errors);
}

void flowstore_stats(struct flowstore *store, struct flowstore_stats *out)
{
    pthread_mutex_lock(&store->lock);
    *out = store->stats;
    out->spooled = store->spooled;
    pthread_mutex_unlock(&store->lock);
}

void flowstore_set_body_decoder(struct flowstore *store, flowstore_decode_fn decode)
{
    /* One lock at a time: read_lock is never held with another. */
    pthread_mutex_lock(&store->write_lock);
    store->index_decode = decode;
    pthread_mutex_unlock(&store->write_lock);
    pthread_mutex_lock(&store->read_lock);
    store->body_decode = decode;
    pthread_mutex_unlock(&store->read_lock);
}

void flowstore_set_retention(struct flowstore *store, int64_t max_db_bytes, int64_t retain_us)
{
    pthread_mutex_lock(&store->write_lock);
    store->limits.max_db_bytes = max_db_bytes;
    store->limits.retain_us = retain_us;
    pthread_mutex_lock(&store->lock);
    if (max_db_bytes > 0 && (uint64_t)max_db_bytes < FLOWSTORE_SPOOL_MAX_BYTES)
        store->spool_max_bytes = (uint64_t)max_db_bytes;
    else
        store->spool_max_bytes = FLOWSTORE_SPOOL_MAX_BYTES;
    pthread_mutex_unlock(&store->lock);
    pthread_mutex_unlock(&store->write_lock);
}

void flowstore_set_written_callback(struct flowstore *store, flowstore_written_fn fn, void *arg)
{
    pthread_mutex_lock(&store->callback_lock);
    store->written_fn = fn;
    store->written_arg = arg;
    pthread_mutex_unlock(&store->callback_lock);
}

/* ---- the writer ---- */

/* Binds consecutive parameters, keeping the first failure. NULLs are not
 * bound: every use of the insert statement ends in sqlite3_clear_bindings()
 * (step_done(), and the error path of insert_flow()), so each parameter
 * starts out NULL, and a flow leaves a dozen or more of them so. */
struct binder {
    sqlite3_stmt *stmt;
    int index;
    int rc;
};

static void bind_int(struct binder *b, int64_t value)
{
    b->index++;
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_int64(b->stmt, b->index, (sqlite3_int64)value);
}

static void bind_textn(struct binder *b, const char *text, size_t len)
{
    b->index++;
    if (b->rc != SQLITE_OK)
        return;
    if (text != NULL)
        b->rc = sqlite3_bind_text64(b->stmt, b->index, text, len, SQLITE_STATIC, SQLITE_UTF8);
}

/* NULL stays NULL: "not known" and "empty" differ for the dashboard. */
static void bind_text(struct binder *b, const char *text)
{
    bind_textn(b, text, text != NULL ? strlen(text) : 0);
}

/* Fixed-size fields of struct flow: empty means not known. */
static void bind_field(struct binder *b, const char *text)
{
    bind_text(b, text[0] != '\0' ? text : NULL);
}

/* value, or NULL when has is false: an original body's figures, NULL when
 * no rule rewrote that body. */
static void bind_int_if(struct binder *b, bool has, int64_t value)
{
    b->index++;
    if (b->rc != SQLITE_OK)
        return;
    if (has)
        b->rc = sqlite3_bind_int64(b->stmt, b->index, (sqlite3_int64)value);
}

/* A captured body small enough for the flow's row; NULL (the body is empty
 * or goes to flow_bodies) otherwise. */
static void bind_inline_body(struct binder *b, const struct flow_body *body, size_t max)
{
    b->index++;
    if (b->rc != SQLITE_OK)
        return;
    if (body->len > 0 && body->len <= max)
        b->rc = sqlite3_bind_blob64(b->stmt, b->index, body->data, body->len, SQLITE_STATIC);
}

static void bind_time(struct binder *b, int64_t us)
{
    b->index++;
    if (b->rc != SQLITE_OK)
        return;
    if (us != 0)
        b->rc = sqlite3_bind_int64(b->stmt, b->index, (sqlite3_int64)us);
}

/* Fills msg with what failed and a hint a person can act on. */
static void describe_error(sqlite3 *db, int rc, const char *what, char *msg, size_t msg_len)
{
    const char *hint = "";

    switch (rc & 0xff) {
    case SQLITE_FULL:
        hint = " (the disk is full)";
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        hint = " (another process holds the database locked)";
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        hint = " (the file is corrupt; move it away while tapwire is stopped)";
        break;
    case SQLITE_READONLY:
    case SQLITE_PERM:
        hint = " (the file is not writable)";
        break;
    case SQLITE_IOERR:
        hint = " (an I/O error: check the disk)";
        break;
    default:
        break;
    }
    errmsg_set(msg, msg_len, "%s: %s%s", what, sqlite3_errmsg(db), hint);
}

/* Steps a statement that returns no rows and resets it. Returns the step's
 * result code, with msg filled when it is not SQLITE_DONE. */
static int step_done(sqlite3 *db, sqlite3_stmt *stmt, const char *what, char *msg, size_t msg_len)
{
    int rc = sqlite3_step(stmt);

    if (rc != SQLITE_DONE)
        describe_error(db, rc, what, msg, msg_len);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

/* stmt: the newest segment's insert_body_stmt, or a live flow's (struct
 * live_row). */
static int insert_body(struct flowstore *store, sqlite3_stmt *stmt, int64_t id,
                       enum flowstore_direction direction, const struct flow_body *body, char *msg,
                       size_t msg_len)
{
    int rc;

    if (body->len == 0)
        return SQLITE_DONE;
    /* id is the one the writer just assigned, counting up from 1:
     * id * 4 is nowhere near overflow. */
    if ((rc = sqlite3_bind_int64(stmt, 1, id * 4 + (int64_t)direction)) != SQLITE_OK ||
        (rc = sqlite3_bind_blob64(stmt, 2, body->data, body->len, SQLITE_STATIC)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "storing a body", msg, msg_len);
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return step_done(store->wdb, stmt, "storing a body", msg, msg_len);
}

/* The text of a body for the search index, in *text and *len (pointing
 * into the body or into *owned, which the caller frees). Returns true when
 * the index then holds everything a body search could find in it: the
 * whole body, decoded, as UTF-8. */
static bool body_text(struct flowstore *store, const struct flow_body *body, const char *encoding,
                      size_t encoding_len, unsigned char **owned, const unsigned char **text,
                      size_t *len)
{
    const unsigned char *data = body->data;
    size_t data_len = body->len;
    size_t cut;

    *owned = NULL;
    *text = NULL;
    *len = 0;
    if (data_len == 0)
        return true;
    if (encoding != NULL && encoding_len > 0 &&
        !(encoding_len == 8 && strncasecmp(encoding, "identity", 8) == 0) &&
        store->index_decode != NULL) {
        char name[128];
        char why[128];
        size_t out_len = 0;

        if (encoding_len >= sizeof(name))
            return false;
        memcpy(name, encoding, encoding_len);
        name[encoding_len] = '\0';
        /* Past the bound the decoder fails: the body is then not indexed
         * and a search reads it (flows_unindexed). */
        if (store->index_decode(name, data, data_len, SEARCHTEXT_BODY_MAX_BYTES, owned, &out_len,
                                why, sizeof(why)) != 0)
            return false;
        data = *owned;
        data_len = out_len;
    }
    cut = searchtext_cut(data, data_len, SEARCHTEXT_BODY_MAX_BYTES);
    if (!searchtext_is_utf8(data, cut))
        return false;
    *text = data;
    *len = cut;
    return cut == data_len;
}

/*
 * Adds the byte pairs of a body the index does not hold to pairs (see
 * searchtext_pairs_add()). Returns false when the body can have no filter:
 * a body search also looks into what a Content-Encoding decodes to, which
 * the stored bytes' pairs do not cover, and a body over
 * SEARCHTEXT_PAIRS_MAX_BODY_BYTES would set almost every bit.
 */
static bool body_pairs(const struct flow_body *body, const struct header_facts *facts,
                       unsigned char pairs[SEARCHTEXT_PAIRS_BYTES])
{
    const char *encoding = facts->content_encoding;
    size_t encoding_len = facts->content_encoding_len;

    if (body->len == 0)
        return true;
    if (body->len > SEARCHTEXT_PAIRS_MAX_BODY_BYTES ||
        (encoding != NULL && encoding_len > 0 &&
         !(encoding_len == 8 && strncasecmp(encoding, "identity", 8) == 0)))
        return false;
    searchtext_pairs_add(pairs, body->data, body->len);
    return true;
}

/* Makes room for len bytes in the writer's index_text. */
static int reserve_index_text(struct flowstore *store, size_t len)
{
    char *grown;

    if (len <= store->index_text_cap)
        return SQLITE_OK;
    grown = realloc(store->index_text, len);
    if (grown == NULL)
        return SQLITE_NOMEM;
    store->index_text = grown;
    store->index_text_cap = len;
    return SQLITE_OK;
}

/* Adds the header values of the flow id (its two sections' texts) to a
 * segment's word index through stmt (INSERT INTO flows_hdr_N). */
static int index_headers(struct flowstore *store, sqlite3_stmt *stmt, int64_t id,
                         const char *req_headers, const char *resp_headers, char *msg,
                         size_t msg_len)
{
    size_t req_len = req_headers != NULL ? strlen(req_headers) : 0;
    size_t resp_len = resp_headers != NULL ? strlen(resp_headers) : 0;
    size_t len;
    int rc;

    if ((rc = reserve_index_text(store, req_len + resp_len + 1)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "indexing a flow's headers", msg, msg_len);
        return rc;
    }
    len = searchtext_put_header_values(req_headers, store->index_text);
    store->index_text[len++] = '\n';
    len += searchtext_put_header_values(resp_headers, store->index_text + len);
    if ((rc = sqlite3_bind_int64(stmt, 1, id)) != SQLITE_OK ||
        (rc = sqlite3_bind_text64(stmt, 2, store->index_text, len, SQLITE_STATIC, SQLITE_UTF8)) !=
            SQLITE_OK) {
        describe_error(store->wdb, rc, "indexing a flow's headers", msg, msg_len);
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return step_done(store->wdb, stmt, "indexing a flow's headers", msg, msg_len);
}

/* Adds flow to the newest segment's trigram index (and to its unindexed
 * list when a body is not all in the index); its header values follow
 * later (index_headers_upto()). */
static int index_flow(struct flowstore *store, const struct flow *flow,
                      const struct header_facts *req, const struct header_facts *resp, char *msg,
                      size_t msg_len)
{
    sqlite3_stmt *stmt = store->insert_fts_stmt;
    unsigned char *req_owned = NULL, *resp_owned = NULL;
    const unsigned char *req_text, *resp_text;
    size_t req_len, resp_len, host_len, target_len, len;
    char *text;
    bool is_complete;
    int rc;

    is_complete = body_text(store, &flow->request_body, req->content_encoding,
                            req->content_encoding_len, &req_owned, &req_text, &req_len);
    is_complete &= body_text(store, &flow->response_body, resp->content_encoding,
                             resp->content_encoding_len, &resp_owned, &resp_text, &resp_len);
    host_len = strlen(flow->host);
    target_len = flow->target != NULL ? strlen(flow->target) : 0;
    if ((rc = reserve_index_text(store, host_len + target_len + req_len + resp_len + 2)) !=
        SQLITE_OK) {
        describe_error(store->wdb, rc, "indexing a flow", msg, msg_len);
        goto out;
    }
    text = store->index_text;
    memcpy(text, flow->host, host_len);
    len = host_len;
    if (target_len > 0)
        memcpy(text + len, flow->target, target_len);
    len += target_len;
    text[len++] = '\n';
    if (req_len > 0)
        memcpy(text + len, req_text, req_len);
    len += req_len;
    text[len++] = '\n';
    if (resp_len > 0)
        memcpy(text + len, resp_text, resp_len);
    len += resp_len;
    if ((rc = sqlite3_bind_int64(stmt, 1, flow->id)) != SQLITE_OK ||
        (rc = sqlite3_bind_text64(stmt, 2, text, len, SQLITE_STATIC, SQLITE_UTF8)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "indexing a flow", msg, msg_len);
        sqlite3_clear_bindings(stmt);
        goto out;
    }
    rc = step_done(store->wdb, stmt, "indexing a flow", msg, msg_len);
    if (rc == SQLITE_DONE && !is_complete) {
        unsigned char pairs[SEARCHTEXT_PAIRS_BYTES] = {0};
        bool has_pairs = store->has_pairs_column && body_pairs(&flow->request_body, req, pairs) &&
                         body_pairs(&flow->response_body, resp, pairs);

        rc = sqlite3_bind_int64(store->insert_unindexed_stmt, 1, flow->id);
        if (rc == SQLITE_OK && has_pairs)
            rc = sqlite3_bind_blob(store->insert_unindexed_stmt, 2, pairs, sizeof(pairs),
                                   SQLITE_STATIC);
        if (rc != SQLITE_OK) {
            describe_error(store->wdb, rc, "indexing a flow", msg, msg_len);
            sqlite3_clear_bindings(store->insert_unindexed_stmt);
        } else {
            rc = step_done(store->wdb, store->insert_unindexed_stmt, "indexing a flow", msg,
                           msg_len);
        }
    }
out:
    free(req_owned);
    free(resp_owned);
    return rc;
}

/* The WebSocket messages a flow carries, after those of its live row
 * written before (struct flow_live); a batch whose row was lost goes too. */
static int insert_ws_messages(struct flowstore *store, struct flow *flow, int64_t id, char *msg,
                              size_t msg_len)
{
    uint64_t base = flow->live != NULL ? flow->live->messages_written : 0;
    int rc;

    if (id == 0)
        return SQLITE_DONE;
    rc = wsstore_insert(store->wdb, &store->insert_ws_stmt, id, base, &flow->ws, msg, msg_len);
    if (rc == SQLITE_DONE && flow->live != NULL)
        flow->live->messages_written = base + flow->ws.count;
    return rc;
}

/* The segment that holds id: the newest whose first_id is not above it. */
static size_t segment_of(const struct flowstore *store, int64_t id)
{
    size_t i = store->seg_count - 1;

    while (i > 0 && store->segs[i].first_id > id)
        i--;
    return i;
}

/*
 * Adds the header values of the stored flows from hdr_indexed_to up to
 * (not including) until_id to their segments' word indexes, reading them
 * back from the rows (still in the page cache: they were written moments
 * ago). In the caller's transaction. Why later than the row: the word
 * index is a quarter of the writer's work per flow and no dashboard query
 * reads it (SQL does, tapwire-db(5)), so under full load the writer puts
 * it off to its next idle moment, up to FLOWSTORE_HDR_LAG_MAX_FLOWS flows.
 * A flow indexed twice (after a restart, see flowstore_open()) costs
 * nothing but the space: with detail=none a rowid is listed once.
 */
static int index_headers_upto(struct flowstore *store, int64_t until_id, char *msg, size_t msg_len)
{
    size_t i;
    int rc = SQLITE_DONE;

    if (store->hdr_indexed_to < store->segs[0].first_id)
        store->hdr_indexed_to = store->segs[0].first_id;
    for (i = segment_of(store, store->hdr_indexed_to);
         i < store->seg_count && store->hdr_indexed_to < until_id && rc == SQLITE_DONE; i++) {
        bool is_newest = i == store->seg_count - 1;
        int64_t seg_end = is_newest ? INT64_MAX : store->segs[i + 1].first_id;
        int64_t end = until_id < seg_end ? until_id : seg_end;
        sqlite3_stmt *read = NULL, *insert = is_newest ? store->insert_hdr_stmt : NULL;
        char sql[256];

        snprintf(sql, sizeof(sql),
                 "SELECT id, req_headers, resp_headers FROM flows_%" PRId64
                 " WHERE id >= ?1 AND id < ?2 ORDER BY id",
                 store->segs[i].seg);
        rc = sqlite3_prepare_v2(store->wdb, sql, -1, &read, NULL);
        if (rc == SQLITE_OK && insert == NULL) {
            snprintf(sql, sizeof(sql),
                     "INSERT INTO flows_hdr_%" PRId64 " (rowid, text) VALUES (?1, ?2)",
                     store->segs[i].seg);
            rc = sqlite3_prepare_v2(store->wdb, sql, -1, &insert, NULL);
        }
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(read, 1, store->hdr_indexed_to);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(read, 2, end);
        if (rc != SQLITE_OK) {
            describe_error(store->wdb, rc, "indexing header values", msg, msg_len);
        } else {
            int step = SQLITE_DONE;

            rc = SQLITE_DONE;
            while (rc == SQLITE_DONE && (step = sqlite3_step(read)) == SQLITE_ROW)
                rc = index_headers(store, insert, sqlite3_column_int64(read, 0),
                                   (const char *)sqlite3_column_text(read, 1),
                                   (const char *)sqlite3_column_text(read, 2), msg, msg_len);
            if (rc == SQLITE_DONE && step != SQLITE_DONE && step != SQLITE_ROW) {
                rc = step;
                describe_error(store->wdb, rc, "indexing header values", msg, msg_len);
            }
        }
        sqlite3_finalize(read);
        if (!is_newest)
            sqlite3_finalize(insert);
        if (rc == SQLITE_DONE)
            store->hdr_indexed_to = end;
    }
    if (rc == SQLITE_DONE && store->hdr_indexed_to < until_id)
        store->hdr_indexed_to = until_id;
    return rc;
}

/* The id of the row a live flow's part belongs to (struct flow_live), 0
 * when it has none: never written, or lost with its batch. */
static int64_t live_id(const struct flow *flow)
{
    return flow->live != NULL ? flow->live->id : 0;
}

/* Whether flow's part makes a new row (in the newest segment): all but a
 * live flow's messages and its finished row over a row written before. */
static bool makes_row(const struct flow *flow)
{
    return flow->live_part != FLOW_LIVE_MESSAGES &&
           !(flow->live_part == FLOW_LIVE_FINAL && live_id(flow) != 0);
}

/* Whether the segment that held id is gone: dropped by retention or by
 * clear (flowstore_clear() starts a new segment), with the WebSocket
 * messages of its flows. */
static bool is_segment_gone(const struct flowstore *store, int64_t id)
{
    return id < store->segs[0].first_id;
}

/*
 * The statements for a live flow's finished row, which replaces its first
 * row where that went: in the segment that holds its id, which need not be
 * the newest any more. Prepared for each finished live flow (one per
 * WebSocket connection), on that segment's tables.
 */
struct live_row {
    sqlite3_stmt *replace_stmt; /* INSERT OR REPLACE INTO flows_N */
    sqlite3_stmt *body_stmt;    /* into flow_bodies_N */
    sqlite3_stmt *unindexed_stmt;
};

static void live_row_free(struct live_row *lr)
{
    sqlite3_finalize(lr->replace_stmt);
    sqlite3_finalize(lr->body_stmt);
    sqlite3_finalize(lr->unindexed_stmt);
}

static int live_row_prepare(struct flowstore *store, int64_t id, struct live_row *lr, char *msg,
                            size_t msg_len)
{
    int64_t seg = store->segs[segment_of(store, id)].seg;
    char sql[2048];
    int rc;

    /* Without recursive_triggers (SQLite's default) the row REPLACE
     * deletes fires no delete trigger; none is on flows_N anyway. */
    snprintf(sql, sizeof(sql),
             "INSERT OR REPLACE INTO flows_%" PRId64 " (id, " FLOW_INSERT_COLUMNS
             ", req_body, resp_body, " FLOW_TAIL_COLUMNS ") VALUES (?, " FLOW_INSERT_VALUES
             ", ?, ?, ?, ?, ?)",
             seg);
    rc = sqlite3_prepare_v2(store->wdb, sql, -1, &lr->replace_stmt, NULL);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql),
                 "INSERT OR REPLACE INTO flow_bodies_%" PRId64 " (body_key, data) VALUES (?1, ?2)",
                 seg);
        rc = sqlite3_prepare_v2(store->wdb, sql, -1, &lr->body_stmt, NULL);
    }
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql),
                 "INSERT OR IGNORE INTO flows_unindexed_%" PRId64 " (id) VALUES (?1)", seg);
        rc = sqlite3_prepare_v2(store->wdb, sql, -1, &lr->unindexed_stmt, NULL);
    }
    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, "storing a finished live flow", msg, msg_len);
        return rc;
    }
    return SQLITE_DONE;
}

/*
 * A finished live flow's row keeps the search index entries its first row
 * made (a contentless index cannot replace them): the URL and header
 * sections were already there then (the row goes in after the 101). A body
 * it gained since is found by the body search through flows_unindexed_N.
 */
static int live_row_unindexed(struct flowstore *store, const struct flow *flow,
                              const struct live_row *lr, int64_t id, char *msg, size_t msg_len)
{
    int rc;

    if (flow->request_body.len == 0 && flow->response_body.len == 0)
        return SQLITE_DONE;
    rc = sqlite3_bind_int64(lr->unindexed_stmt, 1, id);
    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, "storing a finished live flow", msg, msg_len);
        return rc;
    }
    return step_done(store->wdb, lr->unindexed_stmt, "storing a finished live flow", msg, msg_len);
}

/* Inserts one flow and its bodies; returns SQLITE_DONE and sets flow->id
 * when it made a new row (not for a live flow's messages or its finished
 * row, see struct flow_live). A live flow whose segment is gone (struct
 * flow_live) writes nothing more: it was pruned or cleared with its
 * messages. */
static int insert_flow(struct flowstore *store, struct flow *flow, char *msg, size_t msg_len)
{
    bool is_replace = !makes_row(flow);
    struct live_row lr = {NULL, NULL, NULL};
    struct binder b = {store->insert_flow_stmt, 0, SQLITE_OK};
    int64_t id = is_replace ? live_id(flow) : store->next_id;
    sqlite3_stmt *body_stmt = store->insert_body_stmt;
    const struct flow_tls *tls = &flow->tls;
    const struct flow_body *req_original = &flow->request_body_original;
    const struct flow_body *resp_original = &flow->response_body_original;
    bool has_req_original = flow->has_request_body_original;
    bool has_resp_original = flow->has_response_body_original;
    bool has_response = flow->status != 0 || flow->response_headers != NULL;
    char req_version[16], resp_version[16];
    struct header_facts req, resp;
    int rc;

    if (is_replace && (id == 0 || is_segment_gone(store, id)))
        return SQLITE_DONE;
    if (flow->live_part == FLOW_LIVE_MESSAGES)
        return insert_ws_messages(store, flow, id, msg, msg_len);
    if (is_replace) {
        rc = live_row_prepare(store, id, &lr, msg, msg_len);
        if (rc != SQLITE_DONE) {
            live_row_free(&lr);
            return rc;
        }
        b.stmt = lr.replace_stmt;
        body_stmt = lr.body_stmt;
    }
    section_facts(flow->request_headers, &flow->request_facts, &req);
    section_facts(flow->response_headers, &flow->response_facts, &resp);

    bind_int(&b, id);
    bind_int(&b, flow->kind);
    bind_int(&b, flow->timings.start);
    bind_text(&b, flow->client_addr);
    bind_text(&b, flow->scheme);
    bind_text(&b, flow->method);
    bind_text(&b, flow->host);
    bind_int(&b, flow->port);
    bind_text(&b, flow->target != NULL ? flow->target : "");
    bind_text(&b, flow_version_text(flow->request_version, req_version, sizeof(req_version)));
    bind_text(&b, has_response ? flow_version_text(flow->response_version, resp_version,
                                                   sizeof(resp_version))
                               : NULL);
    bind_text(&b, flow->request_headers);
    bind_text(&b, flow->response_headers);
    bind_int(&b, flow->status);
    bind_field(&b, flow->reason);
    bind_int(&b, (int64_t)flow->request_body.size);
    bind_int(&b, (int64_t)flow->response_body.size);
    bind_int(&b, (int64_t)flow->request_body.len);
    bind_int(&b, (int64_t)flow->response_body.len);
    bind_int(&b, flow->request_body.truncated || flow->request_body.size > flow->request_body.len);
    bind_int(&b,
             flow->response_body.truncated || flow->response_body.size > flow->response_body.len);
    bind_textn(&b, req.content_type, req.content_type_len);
    bind_textn(&b, resp.content_type, resp.content_type_len);
    bind_textn(&b, req.content_encoding, req.content_encoding_len);
    bind_textn(&b, resp.content_encoding, resp.content_encoding_len);
    bind_time(&b, flow->timings.connected);
    bind_time(&b, flow->timings.tls_done);
    bind_time(&b, flow->timings.request_sent);
    bind_time(&b, flow->timings.first_byte);
    bind_time(&b, flow->timings.done);
    bind_int(&b, flow->is_tls);
    bind_field(&b, tls->client_sni);
    bind_field(&b, tls->client_alpn);
    bind_field(&b, tls->client_version);
    bind_field(&b, tls->client_cipher);
    bind_field(&b, tls->upstream_version);
    bind_field(&b, tls->upstream_cipher);
    bind_text(&b, tls->cert_subject);
    bind_text(&b, tls->cert_issuer);
    bind_text(&b, tls->cert_sans);
    bind_time(&b, tls->cert_not_after);
    bind_text(&b, tls->verification);
    bind_text(&b, flow->error);
    bind_text(&b, flow->rules);
    bind_int(&b, (int64_t)flow->bytes_up);
    bind_int(&b, (int64_t)flow->bytes_down);
    bind_text(&b, flow->target_original);
    bind_text(&b, flow->request_headers_original);
    bind_text(&b, flow->response_headers_original);
    bind_int_if(&b, has_req_original, (int64_t)req_original->size);
    bind_int_if(&b, has_resp_original, (int64_t)resp_original->size);
    bind_int_if(&b, has_req_original, (int64_t)req_original->len);
    bind_int_if(&b, has_resp_original, (int64_t)resp_original->len);
    bind_int_if(&b, has_req_original,
                req_original->truncated || req_original->size > req_original->len);
    bind_int_if(&b, has_resp_original,
                resp_original->truncated || resp_original->size > resp_original->len);
    bind_text(&b, flow->rules_notes);
    bind_int_if(&b, flow->replay_of > 0, flow->replay_of);
    bind_inline_body(&b, &flow->request_body, store->inline_body_max);
    bind_inline_body(&b, &flow->response_body, store->inline_body_max);
    bind_int_if(&b, flow->is_imported, 1);
    bind_field(&b, flow->listener);
    bind_int_if(&b, flow->are_bodies_dropped, 1);
    if (b.rc != SQLITE_OK) {
        rc = b.rc;
        describe_error(store->wdb, rc, "storing a flow", msg, msg_len);
        sqlite3_clear_bindings(b.stmt);
        goto out;
    }
    rc = step_done(store->wdb, b.stmt, "storing a flow", msg, msg_len);
    if (rc != SQLITE_DONE)
        goto out;
    if (!is_replace) {
        flow->id = id;
        store->next_id = id + 1;
        if (flow->live != NULL)
            flow->live->id = id;
    }
    if (flow->request_body.len > store->inline_body_max)
        rc =
            insert_body(store, body_stmt, id, FLOWSTORE_REQUEST, &flow->request_body, msg, msg_len);
    if (rc == SQLITE_DONE && flow->response_body.len > store->inline_body_max)
        rc = insert_body(store, body_stmt, id, FLOWSTORE_RESPONSE, &flow->response_body, msg,
                         msg_len);
    if (rc == SQLITE_DONE && flow->has_request_body_original)
        rc = insert_body(store, body_stmt, id, FLOWSTORE_REQUEST_ORIGINAL,
                         &flow->request_body_original, msg, msg_len);
    if (rc == SQLITE_DONE && flow->has_response_body_original)
        rc = insert_body(store, body_stmt, id, FLOWSTORE_RESPONSE_ORIGINAL,
                         &flow->response_body_original, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = is_replace ? live_row_unindexed(store, flow, &lr, id, msg, msg_len)
                        : index_flow(store, flow, &req, &resp, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = insert_ws_messages(store, flow, id, msg, msg_len);
out:
    live_row_free(&lr);
    free(req.joined);
    free(resp.joined);
    return rc;
}

/* Called with write_lock held, in the batch's transaction: ids given out
 * stay given out, whatever is deleted later. */
static int save_next_id(struct flowstore *store, uint64_t spooled_to, char *msg, size_t msg_len)
{
    int rc = sqlite3_bind_int64(store->save_next_id_stmt, 1, store->next_id);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(store->save_next_id_stmt, 2, (sqlite3_int64)spooled_to);
    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, "storing the next flow id", msg, msg_len);
        return rc;
    }
    return step_done(store->wdb, store->save_next_id_stmt, "storing the next flow id", msg,
                     msg_len);
}

/* ---- segments (flowseg.h) ---- */

static int64_t wall_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Runs statements that take no values (segment DDL) on the writer's
 * connection. */
static int exec_writer(struct flowstore *store, const char *sql, const char *what, char *msg,
                       size_t msg_len)
{
    int rc = sqlite3_exec(store->wdb, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, what, msg, msg_len);
        return rc;
    }
    return SQLITE_DONE;
}

/* Writes segs[i]'s counters into flow_segments. */
static int save_segment(struct flowstore *store, size_t i, char *msg, size_t msg_len)
{
    sqlite3_stmt *stmt = store->update_seg_stmt;
    const struct flowseg *seg = &store->segs[i];
    int rc;

    if ((rc = sqlite3_bind_int64(stmt, 1, seg->seg)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 2, seg->last_us)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 3, seg->flows)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 4, seg->written)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 5, seg->first_id)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "updating a flow segment", msg, msg_len);
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    return step_done(store->wdb, stmt, "updating a flow segment", msg, msg_len);
}

/* Starts a new newest segment: its tables, its row, the writer's
 * statements on it. The views follow at the end of the transaction. */
static int start_segment(struct flowstore *store, int64_t now_us, char *msg, size_t msg_len)
{
    struct flowseg *seg;
    char sql[FLOWSEG_SQL_MAX_BYTES];
    int64_t number = store->segs[store->seg_count - 1].seg + 1;
    sqlite3_stmt *stmt = store->insert_seg_stmt;
    int rc;

    if (store->seg_count == FLOWSEG_MAX_SEGMENTS + 1) {
        errmsg_set(msg, msg_len, "starting a flow segment: too many segments");
        return SQLITE_FULL;
    }
    rc = save_segment(store, store->seg_count - 1, msg, msg_len);
    if (rc != SQLITE_DONE)
        return rc;
    if (flowseg_create_sql(number, sql, sizeof(sql)) != 0) {
        errmsg_set(msg, msg_len, "starting a flow segment: statement too long");
        return SQLITE_ERROR;
    }
    rc = exec_writer(store, sql, "starting a flow segment", msg, msg_len);
    if (rc == SQLITE_DONE && flowseg_tune_sql(number, sql, sizeof(sql)) == 0)
        rc = exec_writer(store, sql, "starting a flow segment", msg, msg_len);
    if (rc != SQLITE_DONE)
        return rc;
    if ((rc = sqlite3_bind_int64(stmt, 1, number)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 2, store->next_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 3, now_us)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 4, 0)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "starting a flow segment", msg, msg_len);
        sqlite3_clear_bindings(stmt);
        return rc;
    }
    rc = step_done(store->wdb, stmt, "starting a flow segment", msg, msg_len);
    if (rc != SQLITE_DONE)
        return rc;
    seg = &store->segs[store->seg_count++];
    memset(seg, 0, sizeof(*seg));
    seg->seg = number;
    seg->first_id = store->next_id;
    seg->created_us = now_us; /* last_us stays 0 until it holds a flow */
    store->are_views_stale = true;
    if (prepare_segment(store, msg, msg_len) != 0)
        return SQLITE_ERROR;
    return SQLITE_DONE;
}

/* Runs sql with ?1 bound to value; *changes counts the rows it touched
 * (may be NULL). For the statements on one segment's tables, which are not
 * kept prepared. */
static int step_sql_with_id(struct flowstore *store, const char *sql, int64_t value, int *changes,
                            const char *what, char *msg, size_t msg_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    rc = sqlite3_prepare_v2(store->wdb, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 1, value);
    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, what, msg, msg_len);
        goto out;
    }
    rc = step_done(store->wdb, stmt, what, msg, msg_len);
    if (rc == SQLITE_DONE && changes != NULL)
        *changes = sqlite3_changes(store->wdb);
out:
    sqlite3_finalize(stmt);
    return rc;
}

/* The id of the count-th oldest flow of segment seg, 0 when it has fewer. */
static int nth_oldest_id(struct flowstore *store, int64_t seg, int64_t count, int64_t *id,
                         char *msg, size_t msg_len)
{
    sqlite3_stmt *stmt = NULL;
    char sql[128];
    int rc;

    *id = 0;
    snprintf(sql, sizeof(sql), "SELECT id FROM flows_%" PRId64 " ORDER BY id LIMIT 1 OFFSET ?1",
             seg);
    rc = sqlite3_prepare_v2(store->wdb, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 1, count - 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_DONE;
    } else if (rc != SQLITE_DONE) {
        describe_error(store->wdb, rc, "trimming a flow segment", msg, msg_len);
    }
    sqlite3_finalize(stmt);
    return rc;
}

/*
 * A segment far larger than the segments --max-flows makes now (the one a
 * database from before schema version 10 became, or one made under a
 * higher --max-flows) is not dropped whole, which would lose all of its
 * flows at once: its oldest flows, one segment's worth, go in one range
 * DELETE per table instead. *is_trimmed says whether that was done.
 */
static int trim_oversized(struct flowstore *store, int64_t *pruned, bool *is_trimmed, char *msg,
                          size_t msg_len)
{
    struct flowseg *oldest = &store->segs[0];
    int64_t cap = (store->limits.max_flows + FLOWSEG_PER_STORE - 1) / FLOWSEG_PER_STORE;
    int64_t boundary = 0;
    char bodies_sql[128], unindexed_sql[128], flows_sql[128];
    int changes = 0;
    int rc;

    *is_trimmed = false;
    if (store->limits.max_flows <= 0 || oldest->flows <= 2 * cap)
        return SQLITE_DONE;
    rc = nth_oldest_id(store, oldest->seg, cap, &boundary, msg, msg_len);
    if (rc != SQLITE_DONE || boundary == 0)
        return rc;
    snprintf(bodies_sql, sizeof(bodies_sql),
             "DELETE FROM flow_bodies_%" PRId64 " WHERE body_key <= ?1 * 4 + 3", oldest->seg);
    snprintf(unindexed_sql, sizeof(unindexed_sql),
             "DELETE FROM flows_unindexed_%" PRId64 " WHERE id <= ?1", oldest->seg);
    snprintf(flows_sql, sizeof(flows_sql), "DELETE FROM flows_%" PRId64 " WHERE id <= ?1",
             oldest->seg);
    rc = step_sql_with_id(store, bodies_sql, boundary, NULL, "trimming a flow segment", msg,
                          msg_len);
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, "DELETE FROM ws_messages WHERE flow_id <= ?1", boundary, NULL,
                              "trimming a flow segment", msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, unindexed_sql, boundary, NULL, "trimming a flow segment", msg,
                              msg_len);
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, flows_sql, boundary, &changes, "trimming a flow segment", msg,
                              msg_len);
    if (rc != SQLITE_DONE)
        return rc;
    oldest->first_id = boundary + 1;
    oldest->flows -= changes;
    store->seg_total_flows -= changes;
    *pruned += changes;
    *is_trimmed = true;
    return save_segment(store, 0, msg, msg_len);
}

/* Drops the oldest segment whole (or trims an oversized one, see
 * trim_oversized()); *pruned grows by the flows that went. is_overwritten:
 * a person deleted them (clear), see flowseg_drop_sql(). */
static int drop_oldest(struct flowstore *store, int64_t *pruned, bool is_overwritten, char *msg,
                       size_t msg_len)
{
    char sql[FLOWSEG_SQL_MAX_BYTES];
    struct flowseg oldest = store->segs[0];
    bool is_trimmed = false;
    int rc;

    rc = trim_oversized(store, pruned, &is_trimmed, msg, msg_len);
    if (rc != SQLITE_DONE || is_trimmed)
        return rc;
    /* secure_delete (on in Debian's SQLite) would overwrite every page of
     * the segment with zeros and write each to the WAL: as much I/O again
     * as the segment took. FAST frees them as they are; the next segments
     * reuse them (tapwire-db(5), SEGMENTS). What a person deletes (one
     * flow, or every flow with clear) is still overwritten. */
    if (flowseg_drop_sql(oldest.seg, store->segs[1].first_id, is_overwritten, sql, sizeof(sql)) !=
        0) {
        errmsg_set(msg, msg_len, "dropping a flow segment: statement too long");
        return SQLITE_ERROR;
    }
    rc = exec_writer(store, sql, "dropping a flow segment", msg, msg_len);
    if (rc != SQLITE_DONE)
        return rc;
    if ((rc = sqlite3_bind_int64(store->delete_seg_stmt, 1, oldest.seg)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "dropping a flow segment", msg, msg_len);
        return rc;
    }
    rc = step_done(store->wdb, store->delete_seg_stmt, "dropping a flow segment", msg, msg_len);
    if (rc != SQLITE_DONE)
        return rc;
    memmove(&store->segs[0], &store->segs[1], (store->seg_count - 1) * sizeof(store->segs[0]));
    store->seg_count--;
    store->seg_total_flows -= oldest.flows;
    *pruned += oldest.flows;
    store->are_views_stale = true;
    return SQLITE_DONE;
}

/* The database's pages in use, in bytes; 0 without a size limit. */
static int used_db_bytes(struct flowstore *store, int64_t *bytes, char *msg, size_t msg_len)
{
    int rc;

    *bytes = 0;
    if (store->limits.max_db_bytes <= 0)
        return SQLITE_DONE;
    rc = sqlite3_step(store->used_pages_stmt);
    if (rc == SQLITE_ROW) {
        *bytes =
            sqlite3_column_int64(store->used_pages_stmt, 0) * (int64_t)(store->inline_body_max * 8);
        rc = SQLITE_DONE;
    } else {
        describe_error(store->wdb, rc, "measuring the database", msg, msg_len);
    }
    sqlite3_reset(store->used_pages_stmt);
    return rc;
}

/* Drops oldest segments while a limit asks for it, incoming flows
 * about to be written. */
static int apply_retention(struct flowstore *store, int64_t incoming, int64_t now_us,
                           int64_t *pruned, char *msg, size_t msg_len)
{
    int64_t used = 0;
    int rc = used_db_bytes(store, &used, msg, msg_len);

    while (rc == SQLITE_DONE &&
           flowseg_must_drop_oldest(store->segs, store->seg_count, store->seg_total_flows, incoming,
                                    used, &store->limits, now_us)) {
        rc = drop_oldest(store, pruned, false, msg, msg_len);
        if (rc == SQLITE_DONE)
            rc = used_db_bytes(store, &used, msg, msg_len);
    }
    return rc;
}

/* Before a flow is written: a new segment when the newest is full, and
 * room under --max-flows. */
static int make_room(struct flowstore *store, int64_t now_us, int64_t *pruned, char *msg,
                     size_t msg_len)
{
    int rc = SQLITE_DONE;

    if (flowseg_is_full(&store->segs[store->seg_count - 1], &store->limits, now_us))
        rc = start_segment(store, now_us, msg, msg_len);
    /* Only the count here; size and age once per batch. */
    while (rc == SQLITE_DONE && store->limits.max_flows > 0 && store->seg_count > 1 &&
           store->seg_total_flows + 1 > store->limits.max_flows)
        rc = drop_oldest(store, pruned, false, msg, msg_len);
    return rc;
}

static int refresh_views(struct flowstore *store, char *msg, size_t msg_len)
{
    char *sql;
    int rc;

    if (!store->are_views_stale)
        return SQLITE_DONE;
    sql = flowseg_views_sql(store->segs, store->seg_count);
    if (sql == NULL) {
        errmsg_set(msg, msg_len, "updating the flow views: out of memory");
        return SQLITE_NOMEM;
    }
    rc = exec_writer(store, sql, "updating the flow views", msg, msg_len);
    free(sql);
    if (rc == SQLITE_DONE)
        store->are_views_stale = false;
    return rc;
}

/* Called with lock held: rows left the table. */
static void stored_sub(struct flowstore *store, uint64_t rows)
{
    store->stats.stored -= rows <= store->stats.stored ? rows : store->stats.stored;
}

static void rollback_if_open(struct flowstore *store)
{
    char ignored[FLOWSTORE_ERROR_BYTES];

    if (!sqlite3_get_autocommit(store->wdb))
        step_done(store->wdb, store->rollback_stmt, "rolling back", ignored, sizeof(ignored));
}

/* Called with write_lock held after each batch. One log line per distinct
 * error, not per flow: a full disk must not also fill the log. */
static void report_batch(struct flowstore *store, size_t count, bool is_ok, const char *msg)
{
    if (is_ok && store->logged_error[0] != '\0') {
        log_warn("flowstore: database %s works again; %" PRIu64 " flow(s) were lost meanwhile",
                 store->db_path, store->lost_since_logged);
        store->logged_error[0] = '\0';
        store->lost_since_logged = 0;
    } else if (!is_ok) {
        store->lost_since_logged += count;
        if (strcmp(store->logged_error, msg) != 0) {
            log_error("flowstore: database %s: %s; captured flows are being lost (the proxy "
                      "keeps working)",
                      store->db_path, msg);
            snprintf(store->logged_error, sizeof(store->logged_error), "%s", msg);
        }
    }
}

/*
 * Waits until the idle thread has run (see FLOWSTORE_IDLE_CHUNK_FLOWS), at
 * most FLOWSTORE_IDLE_WAIT_MS, and not at all with FLOWSTORE_BUSY_FLOWS
 * flows waiting (backlog()), when stopping, or without an idle thread
 * (has_idle). In the writer's transaction: it holds write_lock, then
 * takes lock (the documented order).
 */
static void wait_for_idle(struct flowstore *store)
{
    struct timespec until;
    uint64_t tokens;

    if (!store->has_idle)
        return;
    until = clock_deadline_ms(CLOCK_MONOTONIC, FLOWSTORE_IDLE_WAIT_MS);
    pthread_mutex_lock(&store->lock);
    tokens = store->idle_tokens;
    if (backlog(store) < FLOWSTORE_BUSY_FLOWS && !store->is_stopping) {
        store->wants_idle = true;
        pthread_cond_signal(&store->idle_cond);
        while (store->idle_tokens == tokens && backlog(store) < FLOWSTORE_BUSY_FLOWS &&
               !store->is_stopping &&
               pthread_cond_timedwait(&store->token_cond, &store->lock, &until) == 0)
            ;
        store->wants_idle = false;
    }
    pthread_mutex_unlock(&store->lock);
}

/* The idle thread: at SCHED_IDLE it is run only when a core has nothing
 * else to run, and each time it is, it lets the writer write a chunk. */
static void *idle_run(void *arg)
{
    struct flowstore *store = arg;
    struct sched_param param = {0};

    pthread_setname_np(pthread_self(), "tw-flowidle");
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &param) != 0)
        log_warn("flowstore: the idle thread cannot take the idle scheduling policy; the "
                 "flow writer takes its turns at the proxy's priority");
    pthread_mutex_lock(&store->lock);
    for (;;) {
        while (!store->wants_idle && !store->is_stopping)
            pthread_cond_wait(&store->idle_cond, &store->lock);
        if (store->is_stopping)
            break;
        store->wants_idle = false;
        store->idle_tokens++;
        pthread_cond_signal(&store->token_cond);
    }
    pthread_mutex_unlock(&store->lock);
    return NULL;
}

/* One attempt at writing batch in one transaction, with the segments it
 * takes (flowseg.h). Returns SQLITE_DONE when it was committed (every new
 * row has its id, *pruned the rows retention dropped), else the error
 * code with msg filled, everything rolled back and the writer's state as
 * it was before. is_paced (the writer thread): each chunk of
 * FLOWSTORE_IDLE_CHUNK_FLOWS first waits for idle time (wait_for_idle()).
 * Called with write_lock held. */
static int try_batch(struct flowstore *store, struct flow **batch, size_t count, bool is_paced,
                     uint64_t spool_seq, int64_t *pruned, char *msg, size_t msg_len)
{
    uint64_t spooled_to = spool_seq > store->spooled_to ? spool_seq : store->spooled_to;
    struct flowseg saved[FLOWSEG_MAX_SEGMENTS + 1];
    size_t saved_count, i;
    int64_t first_id, saved_total, saved_hdr;
    int64_t now_us = wall_now_us();
    int rc;

    *pruned = 0;
    first_id = store->next_id;
    saved_hdr = store->hdr_indexed_to;
    saved_count = store->seg_count;
    saved_total = store->seg_total_flows;
    memcpy(saved, store->segs, saved_count * sizeof(saved[0]));
    rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, msg_len);
    for (i = 0; i < count && rc == SQLITE_DONE; i++) {
        struct flowseg *cur;

        if (is_paced && i % FLOWSTORE_IDLE_CHUNK_FLOWS == 0)
            wait_for_idle(store);
        /* A live flow's messages and finished row go where its first row
         * is; only a new row takes room in the newest segment. */
        if (makes_row(batch[i]))
            rc = make_room(store, now_us, pruned, msg, msg_len);
        if (rc == SQLITE_DONE)
            rc = insert_flow(store, batch[i], msg, msg_len);
        if (rc != SQLITE_DONE)
            break;
        cur = &store->segs[store->seg_count - 1];
        /* Messages too: they are bytes written while this segment fills. */
        cur->bytes += (int64_t)flow_bytes(batch[i]);
        if (batch[i]->id == 0)
            continue;
        cur->flows++;
        cur->written++;
        if (batch[i]->timings.start > cur->last_us)
            cur->last_us = batch[i]->timings.start;
        store->seg_total_flows++;
    }
    /* Under sustained load the header words wait at most this long. */
    if (rc == SQLITE_DONE && store->next_id - store->hdr_indexed_to > FLOWSTORE_HDR_LAG_MAX_FLOWS)
        rc = index_headers_upto(store, store->next_id - FLOWSTORE_HDR_LAG_MAX_FLOWS, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = apply_retention(store, 0, now_us, pruned, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = save_segment(store, store->seg_count - 1, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = save_next_id(store, spooled_to, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = refresh_views(store, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->commit_stmt, "committing flows", msg, msg_len);
    /* Only the writer's batches move it: the dashboard's (HAR import)
     * leave it, and never write it while the writer reads it. */
    if (rc == SQLITE_DONE && spooled_to != store->spooled_to)
        store->spooled_to = spooled_to;
    if (rc != SQLITE_DONE) {
        char ignored[FLOWSTORE_ERROR_BYTES];
        bool was_rotated = saved_count != store->seg_count ||
                           saved[saved_count - 1].seg != store->segs[store->seg_count - 1].seg;

        rollback_if_open(store);
        /* Nothing of the batch was stored: its ids are free again, and the
         * segments are as they were. */
        store->next_id = first_id;
        store->hdr_indexed_to = saved_hdr;
        memcpy(store->segs, saved, saved_count * sizeof(saved[0]));
        store->seg_count = saved_count;
        store->seg_total_flows = saved_total;
        store->are_views_stale = false;
        *pruned = 0;
        if (was_rotated && prepare_segment(store, ignored, sizeof(ignored)) != 0)
            log_error("flowstore: %s", ignored);
        for (i = 0; i < count; i++) {
            if (batch[i]->live_part == FLOW_LIVE_OPEN && batch[i]->live != NULL)
                batch[i]->live->id = 0;
            if (batch[i]->live_part == FLOW_LIVE_NONE || batch[i]->live_part == FLOW_LIVE_OPEN)
                batch[i]->id = 0;
        }
    }
    return rc;
}

/* Gives up the bodies of every flow of batch that has any. Returns how
 * many flows lost theirs. */
static uint64_t drop_batch_bodies(struct flow **batch, size_t count)
{
    uint64_t dropped = 0;
    size_t i;

    for (i = 0; i < count; i++)
        if (body_bytes(batch[i]) > 0) {
            batch[i] = flow_drop_bodies(batch[i]);
            dropped++;
        }
    return dropped;
}

/* Writes one batch in one transaction. A full disk may still hold the
 * records where it cannot hold their bodies: then the batch is tried once
 * more without them (the flows say so), rather than lost whole. A batch
 * from the spool (spool_seq: the sequence number of its last flow, 0 for
 * others) records that it is stored. Returns true when it was committed
 * (every flow has its id), false when it was rolled back. */
static bool write_batch(struct flowstore *store, struct flow **batch, size_t count, bool is_paced,
                        uint64_t spool_seq)
{
    char msg[FLOWSTORE_ERROR_BYTES] = "";
    char retry_msg[FLOWSTORE_ERROR_BYTES] = "";
    uint64_t stripped = 0, stripped_report = 0;
    int64_t pruned = 0;
    size_t i;
    int rc;
    bool is_ok;

    pthread_mutex_lock(&store->write_lock);
    rc = try_batch(store, batch, count, is_paced, spool_seq, &pruned, msg, sizeof(msg));
    if ((rc & 0xff) == SQLITE_FULL && (stripped = drop_batch_bodies(batch, count)) > 0) {
        rc = try_batch(store, batch, count, is_paced, spool_seq, &pruned, retry_msg,
                       sizeof(retry_msg));
        if (rc != SQLITE_DONE)
            stripped = 0; /* lost whole after all: counted as write errors */
    }
    is_ok = rc == SQLITE_DONE;

    pthread_mutex_lock(&store->lock);
    if (is_ok) {
        /* written counts complete flows, stored rows: a live flow's first
         * row is stored, its finished row replacing it written. */
        for (i = 0; i < count; i++) {
            if (batch[i]->live_part == FLOW_LIVE_NONE || batch[i]->live_part == FLOW_LIVE_FINAL)
                store->stats.written++;
            if (batch[i]->id != 0)
                store->stats.stored++;
        }
        stored_sub(store, (uint64_t)pruned);
        store->stats.is_write_failing = false;
        if (stripped > 0) {
            store->stats.bodies_dropped += stripped;
            stripped_report = report_due(store->stats.bodies_dropped, &store->body_drops_reported);
        }
    } else {
        store->stats.write_errors += count;
        store->stats.is_write_failing = true;
        snprintf(store->stats.last_error, sizeof(store->stats.last_error), "%s", msg);
    }
    pthread_mutex_unlock(&store->lock);
    report_batch(store, count, is_ok, msg);
    if (stripped_report > 0)
        /* msg is the first attempt's: what the disk said. */
        log_warn("flowstore: database %s: %s; flows are kept without their bodies (%" PRIu64
                 " so far)",
                 store->db_path, msg, stripped_report);
    pthread_mutex_unlock(&store->write_lock);
    return is_ok;
}

static void notify_written(struct flowstore *store, struct flow **batch, size_t count)
{
    int64_t ids[FLOWSTORE_BATCH_FLOWS];
    size_t i;

    size_t n = 0;

    /* New rows only: a live flow's messages and finished row have none. */
    for (i = 0; i < count; i++)
        if (batch[i]->id != 0)
            ids[n++] = batch[i]->id;
    pthread_mutex_lock(&store->callback_lock);
    if (store->written_fn != NULL && n > 0)
        store->written_fn(store->written_arg, ids, n);
    pthread_mutex_unlock(&store->callback_lock);
}

int flowstore_write(struct flowstore *store, struct flow **flows, size_t count, char *err,
                    size_t err_len)
{
    size_t done = 0, i;
    int ret = 0;

    while (done < count && ret == 0) {
        size_t n = count - done < FLOWSTORE_BATCH_FLOWS ? count - done : FLOWSTORE_BATCH_FLOWS;

        if (write_batch(store, flows + done, n, false, 0)) {
            notify_written(store, flows + done, n);
        } else {
            pthread_mutex_lock(&store->lock);
            errmsg_set(err, err_len, "database %s: %s", store->db_path, store->stats.last_error);
            pthread_mutex_unlock(&store->lock);
            ret = -1;
        }
        done += n;
    }
    for (i = 0; i < count; i++)
        flow_free(flows[i]);
    if (ret == 0)
        catch_up_headers(store);
    return ret;
}

/* Called with lock held while stopping after a failed batch: waiting out
 * the busy timeout once per remaining batch of a locked database would hold
 * up the exit for minutes, so the rest is counted as lost at once. */
static void drop_queue(struct flowstore *store)
{
    if (store->spool != NULL) {
        if (store->spooled > 0)
            log_warn("flowstore: %zu spooled flow(s) stay in the spool file for the next start",
                     store->spooled);
        store->stats.write_errors += store->spooled;
        store->finished += store->spooled;
        flowspool_close(store->spool); /* the file stays: they are not done with */
        store->spool = NULL;
        store->spooled = 0;
        store->spool_held_bytes = 0;
    }
    while (store->queue_count > 0) {
        flow_free(store->queue[store->queue_head]);
        store->queue_head = (store->queue_head + 1) % FLOWSTORE_QUEUE_FLOWS;
        store->queue_count--;
        store->stats.write_errors++;
        store->finished++;
    }
    store->queue_bytes = 0;
    pthread_cond_broadcast(&store->done_cond);
}

/*
 * Adds the header words the writer put off (index_headers_upto()) while
 * its queue stays empty, FLOWSTORE_HDR_CATCHUP_FLOWS flows per transaction,
 * so that flows coming in wait for at most one of them. Returns at once
 * when nothing waits, when flows are queued, or after a failure (the next
 * batch logs what is wrong with the database).
 */
static void catch_up_headers(struct flowstore *store)
{
    for (;;) {
        char msg[FLOWSTORE_ERROR_BYTES];
        int64_t saved;
        bool is_busy;
        int rc;

        pthread_mutex_lock(&store->lock);
        is_busy = has_work(store);
        pthread_mutex_unlock(&store->lock);
        if (is_busy)
            return;
        pthread_mutex_lock(&store->write_lock);
        saved = store->hdr_indexed_to;
        if (saved >= store->next_id) {
            pthread_mutex_unlock(&store->write_lock);
            return;
        }
        rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, sizeof(msg));
        if (rc == SQLITE_DONE)
            rc = index_headers_upto(store,
                                    saved + FLOWSTORE_HDR_CATCHUP_FLOWS < store->next_id
                                        ? saved + FLOWSTORE_HDR_CATCHUP_FLOWS
                                        : store->next_id,
                                    msg, sizeof(msg));
        if (rc == SQLITE_DONE)
            rc = step_done(store->wdb, store->commit_stmt, "committing header words", msg,
                           sizeof(msg));
        if (rc != SQLITE_DONE) {
            rollback_if_open(store);
            store->hdr_indexed_to = saved;
        }
        pthread_mutex_unlock(&store->write_lock);
        if (rc != SQLITE_DONE)
            return;
    }
}

/*
 * Hands the heap's free pages back to the system. A backlog of queued
 * flows (up to FLOWSTORE_QUEUE_FLOWS of them, ~6 KiB each for a small
 * exchange) grows the proxy threads' malloc arenas; once the writer has
 * freed them the memory is free but still the process's, so a burst of
 * traffic left RSS at its high-water mark for good (scenario 8's "RSS
 * with 100,000 flows" was the queue's peak, not the flows stored). Since
 * queued flows are packed into the ring (flowring.h), only those past it
 * are in the arenas; the arenas no longer keep a padded top for the next
 * burst either (glibc's M_TOP_PAD at 1 MiB measured the same CPU per
 * request as its default with the ring, and 1 MiB more RSS:
 * bench/README.md, "The recorder's cost with a full store").
 */
static void give_back_heap(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* What the others read of the spool (lock held; the spool itself is the
 * writer's). */
static void count_spool(struct flowstore *store)
{
    store->spooled = flowspool_count(store->spool);
    store->spool_held_bytes = flowspool_held_bytes(store->spool);
}

/* Whether the queue is at a mark of FLOWSTORE_DEFER_*. */
static bool is_queue_at_mark(const struct flowstore *store)
{
    return store->queue_count >= FLOWSTORE_DEFER_FLOWS ||
           store->queue_bytes >= FLOWSTORE_DEFER_BYTES;
}

/*
 * Opens the writer's spool (flowspool.h), in the file "DB-spool" beside
 * the database, or notes that it cannot be (is_spool_failed). Flows an
 * earlier run left in that file (killed in a burst) come first for the
 * writer. Called by flowstore_open() before the writer starts, only when
 * such a file is there (is_left_only), and by the writer, with lock held,
 * when a burst first needs the spool.
 */
static void open_spool(struct flowstore *store, bool is_left_only)
{
    struct flowspool_recovery found;
    char path[PATH_MAX + 8], err[PATH_MAX + 128];
    struct stat st;

    if (snprintf(path, sizeof(path), "%s-spool", store->db_path) >= (int)sizeof(path)) {
        store->is_spool_failed = true;
        return;
    }
    if (is_left_only && (stat(path, &st) != 0 || st.st_size == 0)) {
        unlink(path); /* an empty one: nothing to read back */
        return;
    }
    if (flowspool_open(path, store->spool_max_bytes, store->spooled_to, &found, &store->spool, err,
                       sizeof(err)) != 0) {
        log_warn("flowstore: %s; a long burst is written as it comes", err);
        store->is_spool_failed = true;
        return;
    }
    if (found.flows > 0) {
        log_info("flowstore: %zu flow(s) that an earlier run left in its spool (%s) are "
                 "written first",
                 found.flows, path);
        store->accepted += found.flows;
        store->stats.submitted += found.flows;
        store->stats.recovered += found.flows;
    }
    if (found.abandoned > 0)
        log_warn("flowstore: %" PRIu64 " flow(s) that an earlier run left in its spool (%s) "
                 "cannot be read back: it held them in memory, or another build of tapwire "
                 "wrote them",
                 found.abandoned, path);
    count_spool(store);
}

/*
 * The spool's bound for the burst it starts: spool_max_bytes, and at most
 * half the room left on the database's file system, which the database
 * needs for the same flows once the burst is over (a spool that took all
 * of it would have them written without their bodies). Looked up once a
 * burst: a statvfs() each time the spool starts from empty.
 */
static uint64_t spool_bound(const struct flowstore *store)
{
    uint64_t bound = store->spool_max_bytes;
    char dir[PATH_MAX];
    struct statvfs fs;
    const char *slash = strrchr(store->db_path, '/');

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s",
                 slash == store->db_path ? 1 : (int)(slash - store->db_path), store->db_path);
    if (statvfs(dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize / 2 < bound)
        bound = (uint64_t)fs.f_bavail * fs.f_frsize / 2;
    return bound;
}

/*
 * Moves every queued flow to the spool, oldest first, as far as it takes
 * them. Returns whether it took any. Called with lock held, which it
 * releases for the writing: only the writer takes flows off the queue's
 * head, so those it reads there stay while flowstore_submit() adds at the
 * tail.
 */
static bool spool_queue(struct flowstore *store)
{
    struct flow *flows[FLOWSTORE_BATCH_FLOWS];
    size_t sizes[FLOWSTORE_BATCH_FLOWS];
    bool is_any = false;

    if (store->spool == NULL && !store->is_spool_failed)
        open_spool(store, false);
    if (store->spool != NULL && flowspool_count(store->spool) == 0)
        flowspool_set_max(store->spool, spool_bound(store));
    while (store->spool != NULL && store->queue_count > 0 && flowspool_is_usable(store->spool)) {
        size_t n, i, taken;

        for (n = 0; n < FLOWSTORE_BATCH_FLOWS && n < store->queue_count; n++) {
            size_t at = (store->queue_head + n) % FLOWSTORE_QUEUE_FLOWS;

            flows[n] = store->queue[at];
            sizes[n] = store->queue_sizes[at];
        }
        pthread_mutex_unlock(&store->lock);
        taken = flowspool_put(store->spool, flows, sizes, n);
        pthread_mutex_lock(&store->lock);
        for (i = 0; i < taken; i++) {
            store->queue_bytes -= store->queue_sizes[store->queue_head];
            store->queue_head = (store->queue_head + 1) % FLOWSTORE_QUEUE_FLOWS;
            store->queue_count--;
        }
        count_spool(store);
        is_any |= taken > 0;
        if (taken < n)
            break;
    }
    return is_any;
}

/* Whether the writer must write what is queued now rather than wait for a
 * quiet moment: stopping, a flowstore_sync() waiting, or the queue at a
 * mark of FLOWSTORE_DEFER_*. Called with lock held. */
static bool must_write_now(const struct flowstore *store, int64_t now_ms)
{
    return store->is_stopping || store->sync_waiters > 0 ||
           store->queue_count >= FLOWSTORE_DEFER_FLOWS ||
           store->queue_bytes >= FLOWSTORE_DEFER_BYTES ||
           (store->defer_since_ms != 0 && now_ms - store->defer_since_ms >= FLOWSTORE_DEFER_MAX_MS);
}

/* The shortest window the rate is judged over: in a shorter one a busy
 * proxy may have taken no flow by chance. */
#define QUIET_WINDOW_MIN_MS 20

/*
 * Returns when the writer should write the queued flows: at once when the
 * proxy took fewer than FLOWSTORE_QUIET_FLOWS_PER_S flows a second since
 * the window began, else once it does or once it must (must_write_now()),
 * looking again every FLOWSTORE_GATHER_MS. Each look starts a new window,
 * so that after a batch written it is the rate during that batch which
 * says whether the next one waits. Called with lock held (and it waits on
 * work_cond, which flowstore_submit() and flowstore_sync() signal).
 */
static void defer_while_busy(struct flowstore *store)
{
    for (;;) {
        int64_t now_ms = clock_mono_ms();
        int64_t elapsed_ms = now_ms - store->window_start_ms;
        uint64_t taken = store->accepted - store->window_accepted;
        bool is_judged = elapsed_ms >= QUIET_WINDOW_MIN_MS;
        bool is_busy =
            is_judged && taken * 1000 >= (uint64_t)elapsed_ms * FLOWSTORE_QUIET_FLOWS_PER_S;
        struct timespec until;

        if (!has_work(store))
            break;
        if (must_write_now(store, now_ms)) {
            if (!store->is_stopping && store->sync_waiters == 0) {
                bool is_old = store->defer_since_ms != 0 &&
                              now_ms - store->defer_since_ms >= FLOWSTORE_DEFER_MAX_MS;

                /* A burst longer than the queue's marks goes on in the
                 * spool. */
                if (!is_old && is_queue_at_mark(store) && spool_queue(store))
                    continue;
                store->is_defer_spent = true;
            }
            break;
        }
        if (is_judged) {
            store->window_start_ms = now_ms;
            store->window_accepted = store->accepted;
            if (!is_busy) {
                store->is_defer_spent = false;
                break;
            }
        }
        /* Past the first burst of a sustained load, deferring again would
         * only trade the queue's memory back and forth: each time it
         * fills, the connection threads' heaps grow (page faults), and the
         * writer catches up as the load goes on all the same. */
        if (store->is_defer_spent)
            break;
        if (store->defer_since_ms == 0)
            store->defer_since_ms = now_ms;
        until = clock_deadline_ms(CLOCK_MONOTONIC, is_judged ? FLOWSTORE_GATHER_MS
                                                             : QUIET_WINDOW_MIN_MS - elapsed_ms);
        while (!must_write_now(store, clock_mono_ms()) &&
               pthread_cond_timedwait(&store->work_cond, &store->lock, &until) == 0)
            ;
    }
}

static void *writer_run(void *arg)
{
    struct flowstore *store = arg;
    struct flow *batch[FLOWSTORE_BATCH_FLOWS];
    bool has_failed = false;
    size_t backlog_peak = 0; /* the most flows queued and spooled since the heap was given back */
    uint64_t spool_seq;      /* the batch's last, when it came from the spool; else 0 */
    size_t count;
    size_t i;

    pthread_setname_np(pthread_self(), "tw-flowwriter");
    catch_up_headers(store); /* what an earlier run may have left (flowstore_open()) */
    pthread_mutex_lock(&store->lock);
    for (;;) {
        if (!has_work(store) && !store->is_stopping) {
            int64_t idle_from_ms = clock_mono_ms();

            while (!has_work(store) && !store->is_stopping)
                pthread_cond_wait(&store->work_cond, &store->lock);
            /* The rate is judged from the first flow of this run of them
             * on, not over the quiet time before it; a pause of the
             * proxy's flows that long is a quiet moment. */
            store->window_start_ms = clock_mono_ms();
            store->window_accepted = store->accepted - store->queue_count;
            if (store->window_start_ms - idle_from_ms >= FLOWSTORE_GATHER_MS)
                store->is_defer_spent = false;
        }
        /* Gather a batch for a moment rather than commit each flow as it
         * comes: one transaction per flow would cost the proxy most of a
         * core at a few thousand requests a second. */
        if (!store->is_stopping && store->spooled == 0 &&
            store->queue_count < FLOWSTORE_BATCH_FLOWS) {
            struct timespec until = clock_deadline_ms(CLOCK_MONOTONIC, FLOWSTORE_GATHER_MS);
            while (store->queue_count < FLOWSTORE_BATCH_FLOWS && !store->is_stopping &&
                   pthread_cond_timedwait(&store->work_cond, &store->lock, &until) == 0)
                ;
        }
        defer_while_busy(store);
        if (store->is_stopping && has_failed)
            drop_queue(store);
        if (!has_work(store))
            break; /* stopping, and everything queued is written */
        /* While the writer catches up with the spool, the queue's newer
         * flows join it at its marks rather than fill the queue. */
        if (store->spooled > 0 && !store->is_stopping && is_queue_at_mark(store))
            spool_queue(store);
        if (backlog(store) > backlog_peak)
            backlog_peak = backlog(store);
        spool_seq = 0;
        if (store->spooled > 0) {
            uint64_t lost_before = flowspool_lost(store->spool), lost;

            pthread_mutex_unlock(&store->lock);
            count = flowspool_take(store->spool, batch, FLOWSTORE_BATCH_FLOWS, &spool_seq);
            pthread_mutex_lock(&store->lock);
            lost = flowspool_lost(store->spool) - lost_before;
            if (lost > 0) {
                log_error("flowstore: the spool could not be read back; %" PRIu64 " flow(s) lost",
                          lost);
                store->stats.write_errors += lost;
                store->finished += lost;
            }
            count_spool(store);
        } else {
            for (count = 0; count < FLOWSTORE_BATCH_FLOWS && store->queue_count > 0; count++) {
                batch[count] = store->queue[store->queue_head];
                store->queue_bytes -= store->queue_sizes[store->queue_head];
                store->queue_head = (store->queue_head + 1) % FLOWSTORE_QUEUE_FLOWS;
                store->queue_count--;
            }
        }
        pthread_mutex_unlock(&store->lock);

        if (count > 0) {
            has_failed = !write_batch(store, batch, count, true, spool_seq);
            if (!has_failed)
                notify_written(store, batch, count);
            for (i = 0; i < count; i++)
                flow_free(batch[i]);
            /* Before these flows count as finished: flowstore_sync() then
             * returns with the header words of a quiet moment's flows in. */
            if (!has_failed)
                catch_up_headers(store);
        }
        /* Stored, failed, or lost in the reading (none taken): done with
         * either way, so that an emptied spool file is cut. */
        if (spool_seq != 0)
            flowspool_done(store->spool, spool_seq);

        pthread_mutex_lock(&store->lock);
        store->finished += count;
        if (!has_work(store))
            store->defer_since_ms = 0;
        pthread_cond_broadcast(&store->done_cond);
        /* Once a backlog is written and nothing waits: not under steady
         * load, where the queue never empties. */
        if (!has_work(store) && backlog_peak >= FLOWSTORE_TRIM_BACKLOG_FLOWS) {
            backlog_peak = 0;
            pthread_mutex_unlock(&store->lock);
            give_back_heap();
            pthread_mutex_lock(&store->lock);
        }
    }
    pthread_mutex_unlock(&store->lock);
    return NULL;
}

/* ---- deleting ---- */

int flowstore_delete(struct flowstore *store, int64_t id, bool *found, char *err, size_t err_len)
{
    char msg[FLOWSTORE_ERROR_BYTES];
    char bodies_sql[128], unindexed_sql[128], flows_sql[128];
    int changes = 0;
    size_t at;
    int64_t seg;
    int rc;

    *found = false;
    pthread_mutex_lock(&store->write_lock);
    at = segment_of(store, id);
    seg = store->segs[at].seg;
    /* One transaction, as nothing cascades (schema version 5; no trigger
     * since version 12): the flow, its bodies and its WebSocket messages
     * go together or not at all. Its entry in the search
     * index stays until the segment is dropped (contentless FTS5 rows
     * cannot be deleted); queries join the index with flows_N. SQLite's *
     * turns an overflowing product into a REAL, which no key equals: an
     * absurd id deletes nothing rather than wrapping onto another flow's
     * bodies. */
    snprintf(bodies_sql, sizeof(bodies_sql),
             "DELETE FROM flow_bodies_%" PRId64 " WHERE body_key BETWEEN ?1 * 4 AND ?1 * 4 + 3",
             seg);
    snprintf(unindexed_sql, sizeof(unindexed_sql),
             "DELETE FROM flows_unindexed_%" PRId64 " WHERE id = ?1", seg);
    snprintf(flows_sql, sizeof(flows_sql), "DELETE FROM flows_%" PRId64 " WHERE id = ?1", seg);
    rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, bodies_sql, id, NULL, "deleting a flow", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, unindexed_sql, id, NULL, "deleting a flow", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, "DELETE FROM ws_messages WHERE flow_id = ?1", id, NULL,
                              "deleting a flow", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_sql_with_id(store, flows_sql, id, &changes, "deleting a flow", msg, sizeof(msg));
    if (rc == SQLITE_DONE && changes > 0) {
        store->segs[at].flows -= changes;
        store->seg_total_flows -= changes;
        rc = save_segment(store, at, msg, sizeof(msg));
    }
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->commit_stmt, "deleting a flow", msg, sizeof(msg));
    if (rc != SQLITE_DONE) {
        rollback_if_open(store);
        if (changes > 0) {
            store->segs[at].flows += changes;
            store->seg_total_flows += changes;
        }
    } else {
        pthread_mutex_lock(&store->lock);
        stored_sub(store, (uint64_t)changes);
        pthread_mutex_unlock(&store->lock);
    }
    pthread_mutex_unlock(&store->write_lock);
    if (rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: %s", store->db_path, msg);
        return -1;
    }
    *found = changes > 0;
    return 0;
}

int flowstore_clear(struct flowstore *store, char *err, size_t err_len)
{
    char msg[FLOWSTORE_ERROR_BYTES];
    struct flowseg saved[FLOWSEG_MAX_SEGMENTS + 1];
    size_t saved_count;
    int64_t saved_total;
    int64_t pruned = 0;
    int rc;

    pthread_mutex_lock(&store->write_lock);
    saved_count = store->seg_count;
    saved_total = store->seg_total_flows;
    memcpy(saved, store->segs, saved_count * sizeof(saved[0]));
    /* A new empty segment, then every older one dropped whole. */
    rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = start_segment(store, wall_now_us(), msg, sizeof(msg));
    while (rc == SQLITE_DONE && store->seg_count > 1)
        rc = drop_oldest(store, &pruned, true, msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = refresh_views(store, msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->commit_stmt, "deleting every flow", msg, sizeof(msg));
    if (rc != SQLITE_DONE) {
        char ignored[FLOWSTORE_ERROR_BYTES];

        rollback_if_open(store);
        memcpy(store->segs, saved, saved_count * sizeof(saved[0]));
        store->seg_count = saved_count;
        store->seg_total_flows = saved_total;
        store->are_views_stale = false;
        if (prepare_segment(store, ignored, sizeof(ignored)) != 0)
            log_error("flowstore: %s", ignored);
    } else {
        store->hdr_indexed_to = store->next_id;
        pthread_mutex_lock(&store->lock);
        store->stats.stored = 0;
        pthread_mutex_unlock(&store->lock);
    }
    pthread_mutex_unlock(&store->write_lock);
    if (rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: %s", store->db_path, msg);
        return -1;
    }
    return 0;
}

/* ---- reading ---- */

void flowstore_record_free(struct flowstore_record *record)
{
    if (record == NULL)
        return;
    free(record->flow.target);
    free(record->flow.request_headers);
    free(record->flow.response_headers);
    flow_tls_clear(&record->flow.tls);
    free(record->flow.error);
    free(record->flow.rules);
    free(record->flow.target_original);
    free(record->flow.request_headers_original);
    free(record->flow.response_headers_original);
    free(record->flow.rules_notes);
    free(record->request_content_type);
    free(record->response_content_type);
    free(record->request_content_encoding);
    free(record->response_content_encoding);
    free(record);
}

void flowstore_records_free(struct flowstore_record **records, size_t count)
{
    size_t i;

    if (records == NULL)
        return;
    for (i = 0; i < count; i++)
        flowstore_record_free(records[i]);
    free(records);
}

/* Reads consecutive columns of a row, keeping the first failure. */
struct reader {
    sqlite3_stmt *stmt;
    int col;
    bool has_failed;
};

static int64_t read_int(struct reader *r)
{
    return (int64_t)sqlite3_column_int64(r->stmt, r->col++);
}

/* A malloc'd copy, NULL for SQL NULL. */
static char *read_text(struct reader *r)
{
    const unsigned char *text = sqlite3_column_text(r->stmt, r->col);
    int len = sqlite3_column_bytes(r->stmt, r->col);
    char *copy;

    r->col++;
    if (text == NULL)
        return NULL;
    copy = malloc((size_t)len + 1);
    if (copy == NULL) {
        r->has_failed = true;
        return NULL;
    }
    memcpy(copy, text, (size_t)len);
    copy[len] = '\0';
    return copy;
}

/* An original body's size column: false for NULL (not rewritten). */
static bool read_has(struct reader *r)
{
    return sqlite3_column_type(r->stmt, r->col) != SQLITE_NULL;
}

static void read_field(struct reader *r, char *out, size_t out_len)
{
    const unsigned char *text = sqlite3_column_text(r->stmt, r->col);

    r->col++;
    snprintf(out, out_len, "%s", text != NULL ? (const char *)text : "");
}

static int read_version(struct reader *r)
{
    const unsigned char *text = sqlite3_column_text(r->stmt, r->col);

    r->col++;
    return flow_version_parse((const char *)text);
}

/* The row the statement is on, in the column order of RECORD_COLUMNS. */
static struct flowstore_record *read_record(sqlite3_stmt *stmt)
{
    struct flowstore_record *rec = calloc(1, sizeof(*rec));
    struct reader r = {stmt, 0, false};
    struct flow *f;

    if (rec == NULL)
        return NULL;
    f = &rec->flow;
    f->id = read_int(&r);
    f->kind = (enum flow_kind)read_int(&r);
    f->timings.start = read_int(&r);
    read_field(&r, f->client_addr, sizeof(f->client_addr));
    read_field(&r, f->scheme, sizeof(f->scheme));
    read_field(&r, f->method, sizeof(f->method));
    read_field(&r, f->host, sizeof(f->host));
    f->port = (uint16_t)read_int(&r);
    f->target = read_text(&r);
    f->request_version = read_version(&r);
    f->response_version = read_version(&r);
    f->request_headers = read_text(&r);
    f->response_headers = read_text(&r);
    f->status = (int)read_int(&r);
    read_field(&r, f->reason, sizeof(f->reason));
    f->request_body.size = (uint64_t)read_int(&r);
    f->response_body.size = (uint64_t)read_int(&r);
    rec->request_captured = (size_t)read_int(&r);
    rec->response_captured = (size_t)read_int(&r);
    f->request_body.truncated = read_int(&r) != 0;
    f->response_body.truncated = read_int(&r) != 0;
    rec->request_content_type = read_text(&r);
    rec->response_content_type = read_text(&r);
    rec->request_content_encoding = read_text(&r);
    rec->response_content_encoding = read_text(&r);
    f->timings.connected = read_int(&r);
    f->timings.tls_done = read_int(&r);
    f->timings.request_sent = read_int(&r);
    f->timings.first_byte = read_int(&r);
    f->timings.done = read_int(&r);
    f->is_tls = read_int(&r) != 0;
    read_field(&r, f->tls.client_sni, sizeof(f->tls.client_sni));
    read_field(&r, f->tls.client_alpn, sizeof(f->tls.client_alpn));
    read_field(&r, f->tls.client_version, sizeof(f->tls.client_version));
    read_field(&r, f->tls.client_cipher, sizeof(f->tls.client_cipher));
    read_field(&r, f->tls.upstream_version, sizeof(f->tls.upstream_version));
    read_field(&r, f->tls.upstream_cipher, sizeof(f->tls.upstream_cipher));
    f->tls.cert_subject = read_text(&r);
    f->tls.cert_issuer = read_text(&r);
    f->tls.cert_sans = read_text(&r);
    f->tls.cert_not_after = read_int(&r);
    f->tls.verification = read_text(&r);
    f->error = read_text(&r);
    f->rules = read_text(&r);
    f->bytes_up = (uint64_t)read_int(&r);
    f->bytes_down = (uint64_t)read_int(&r);
    f->target_original = read_text(&r);
    f->request_headers_original = read_text(&r);
    f->response_headers_original = read_text(&r);
    f->has_request_body_original = read_has(&r);
    f->request_body_original.size = (uint64_t)read_int(&r);
    f->has_response_body_original = read_has(&r);
    f->response_body_original.size = (uint64_t)read_int(&r);
    rec->request_original_captured = (size_t)read_int(&r);
    rec->response_original_captured = (size_t)read_int(&r);
    f->request_body_original.truncated = read_int(&r) != 0;
    f->response_body_original.truncated = read_int(&r) != 0;
    f->rules_notes = read_text(&r);
    f->replay_of = read_int(&r);
    f->is_imported = read_int(&r) != 0;
    read_field(&r, f->listener, sizeof(f->listener));
    f->are_bodies_dropped = read_int(&r) != 0;
    if (r.has_failed) {
        flowstore_record_free(rec);
        return NULL;
    }
    return rec;
}

/* Lowercases ASCII like SQLite's built-in lower(), which the indexes use. */
static char *ascii_lower(const char *text)
{
    char *copy = strdup(text);
    char *p;

    if (copy != NULL)
        for (p = copy; *p != '\0'; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return copy;
}

/* Every fixed filter, and a filter expression's (filter.h bounds its
 * terms, and so its SQL and parameters). */
#define LIST_MAX_PARAMS (16 + 2 * FILTER_MAX_NODES)
#define LIST_SQL_MAX_BYTES (4096 + 4 * FILTER_MAX_INPUT_BYTES)

/*
 * A listing runs one statement per segment (flowseg.h), newest segment
 * first (oldest first for an ascending listing), until the page is full:
 * segments hold disjoint id ranges, so their pages simply follow each
 * other, and the first page of a common search reads the newest segment
 * only.
 *
 * With text to search for, the statement walks the segment's search index
 * (flows_fts_N, detail=none trigrams: a superset of the matches) in id
 * order and checks each flow it finds exactly as without an index:
 * instr() on the URL, body_has() on the bodies. A body search also walks
 * flows_unindexed_N, the flows whose bodies the index does not hold whole,
 * and merges the two. Without an index (text shorter than three
 * characters, or bytes that are not UTF-8) it walks flows_N.
 *
 * Built only from the constant fragments below and segment numbers; every
 * value is a bound parameter.
 */
struct list_query {
    char sql[LIST_SQL_MAX_BYTES];
    size_t len;
    bool has_failed;
    struct {
        enum { PARAM_INT, PARAM_TEXT, PARAM_BLOB } type;
        int64_t number;
        const void *data;
        size_t len;
    } params[LIST_MAX_PARAMS];
    int count;
};

static void query_add(struct list_query *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void query_add(struct list_query *q, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (q->has_failed)
        return;
    va_start(ap, fmt);
    n = vsnprintf(q->sql + q->len, sizeof(q->sql) - q->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(q->sql) - q->len) {
        q->has_failed = true;
        return;
    }
    q->len += (size_t)n;
}

static int param_int(struct list_query *q, int64_t value)
{
    if (q->count == LIST_MAX_PARAMS) {
        q->has_failed = true;
        return 0;
    }
    q->params[q->count].type = PARAM_INT;
    q->params[q->count].number = value;
    return ++q->count;
}

static int param_bytes(struct list_query *q, bool is_blob, const void *data, size_t len)
{
    if (q->count == LIST_MAX_PARAMS) {
        q->has_failed = true;
        return 0;
    }
    q->params[q->count].type = is_blob ? PARAM_BLOB : PARAM_TEXT;
    q->params[q->count].data = data;
    q->params[q->count].len = len;
    return ++q->count;
}

static int param_text(struct list_query *q, const char *text)
{
    return param_bytes(q, false, text, strlen(text));
}

/* " AND (where)" of a filter expression, its plain '?' placeholders
 * numbered as the statement's next parameters (the statement numbers its
 * own), outside quoted SQL text. */
static void add_filter_sql(struct list_query *q, const struct filter_sql *fs)
{
    size_t next = 0;
    char quote = 0;

    query_add(q, " AND ");
    for (const char *p = fs->where; *p != '\0' && !q->has_failed; p++) {
        if (quote != 0) {
            if (*p == quote)
                quote = 0;
            query_add(q, "%c", *p);
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
            query_add(q, "%c", *p);
        } else if (*p == '?' && next < fs->param_count) {
            const struct filter_sql_param *fp = &fs->params[next++];
            int n = fp->type == FILTER_SQL_INT ? param_int(q, fp->number)
                                               : param_bytes(q, false, fp->text, fp->len);
            query_add(q, "?%d", n);
        } else {
            query_add(q, "%c", *p);
        }
    }
    if (next != fs->param_count)
        q->has_failed = true; /* the SQL and its parameters disagree */
}

/* What every segment's statement shares, made once per listing. */
struct list_texts {
    char *host_glob, *host_text, *content_type, *url; /* lowercased copies, or NULL */
    char *match;        /* the FTS5 query for the index, NULL when it cannot help */
    bool has_body_text; /* match includes the body search's text */
};

static void list_texts_free(struct list_texts *t)
{
    free(t->host_glob);
    free(t->host_text);
    free(t->content_type);
    free(t->url);
    free(t->match);
}

/* NULL when text is NULL or empty; *has_failed when out of memory. */
static char *lower_or_null(const char *text, bool *has_failed)
{
    char *lowered;

    if (text == NULL || text[0] == '\0')
        return NULL;
    lowered = ascii_lower(text);
    if (lowered == NULL)
        *has_failed = true;
    return lowered;
}

/* "a AND b" of two FTS5 queries, either of which may be NULL (then the
 * other); takes both. NULL when both are, or out of memory: a search
 * without the index, slower but still right. */
static char *match_and(char *a, char *b)
{
    char *both = NULL;
    size_t len;

    if (a == NULL || b == NULL)
        return a != NULL ? a : b;
    len = strlen(a) + strlen(b) + 8;
    if ((both = malloc(len)) != NULL)
        snprintf(both, len, "%s AND %s", a, b);
    free(a);
    free(b);
    return both;
}

static int make_list_texts(const struct flowstore_filter *f, struct list_texts *t)
{
    char *url_query = NULL, *body_query = NULL;
    bool has_failed = false;

    memset(t, 0, sizeof(*t));
    t->host_glob = lower_or_null(f->host_glob, &has_failed);
    t->host_text = lower_or_null(f->host_text, &has_failed);
    t->content_type = lower_or_null(f->content_type, &has_failed);
    t->url = lower_or_null(f->url_text, &has_failed);
    if (t->url != NULL)
        url_query = searchtext_query(f->url_text, strlen(f->url_text));
    if (f->expr_sql != NULL && f->expr_sql->index_text != NULL)
        /* Text the expression's URL terms require: the index finds the
         * candidates, the expression's SQL (or filter_match()) decides. */
        url_query = match_and(
            url_query, searchtext_query(f->expr_sql->index_text, strlen(f->expr_sql->index_text)));
    if (f->body_bytes != NULL && f->body_len > 0)
        body_query = searchtext_query(f->body_bytes, f->body_len);
    t->has_body_text = body_query != NULL;
    t->match = match_and(url_query, body_query);
    if (t->match == NULL)
        t->has_body_text = false; /* out of memory for the join: no index, still right */
    return has_failed ? -1 : 0;
}

enum list_source {
    FROM_FLOWS,           /* walk flows_N */
    FROM_INDEX,           /* walk flows_fts_N's matches */
    FROM_UNINDEXED,       /* walk flows_unindexed_N */
    FROM_UNINDEXED_PAIRS, /* the same, skipping the bodies whose byte-pair filter rules the
                             text out */
};

/* The statement for one segment: at most limit flows of filter f from
 * segment seg, walked through source. */
static void build_segment_query(struct list_query *q, const struct flowstore_filter *f,
                                const struct list_texts *t, int64_t seg, enum list_source source,
                                size_t limit)
{
    char id[64];

    memset(q, 0, sizeof(*q));
    if (source == FROM_INDEX) {
        /* CROSS JOIN: the index is the outer loop, in its rowid order. */
        snprintf(id, sizeof(id), "flows_fts_%" PRId64 ".rowid", seg);
        query_add(q,
                  "SELECT " SUMMARY_COLUMNS " FROM flows_fts_%1$" PRId64
                  " CROSS JOIN flows_%1$" PRId64 " ON flows_%1$" PRId64 ".id = flows_fts_%1$" PRId64
                  ".rowid WHERE flows_fts_%1$" PRId64 " MATCH ?%2$d",
                  seg, param_text(q, t->match));
    } else if (source == FROM_UNINDEXED) {
        /* Renamed: SUMMARY_COLUMNS names flows_N's id as plain "id". */
        snprintf(id, sizeof(id), "unindexed_id");
        query_add(q,
                  "SELECT " SUMMARY_COLUMNS " FROM (SELECT id AS unindexed_id FROM "
                  "flows_unindexed_%1$" PRId64 ") CROSS JOIN flows_%1$" PRId64
                  " ON flows_%1$" PRId64 ".id = unindexed_id WHERE 1",
                  seg);
    } else if (source == FROM_UNINDEXED_PAIRS) {
        /* The filter is read from flows_unindexed_N's own small rows: a
         * flow it rules out costs no read of its row in flows_N, whose
         * pages (a 16 KiB page for each body the index lacks, most of
         * the segment when one flow in twenty has one) were what a body
         * search that matches nothing spent its time on. */
        snprintf(id, sizeof(id), "unindexed_id");
        query_add(q,
                  "SELECT " SUMMARY_COLUMNS " FROM (SELECT id AS unindexed_id FROM "
                  "flows_unindexed_%1$" PRId64 " WHERE pairs_may_hold(pairs, ?%2$d)) CROSS JOIN "
                  "flows_%1$" PRId64 " ON flows_%1$" PRId64 ".id = unindexed_id WHERE 1",
                  seg, param_bytes(q, true, f->body_bytes, f->body_len));
    } else {
        snprintf(id, sizeof(id), "flows_%" PRId64 ".id", seg);
        query_add(q, "SELECT " SUMMARY_COLUMNS " FROM flows_%" PRId64 " WHERE 1", seg);
    }
    if (f->before_id > 0)
        query_add(q, " AND %s < ?%d", id, param_int(q, f->before_id));
    if (f->after_id > 0)
        query_add(q, " AND %s > ?%d", id, param_int(q, f->after_id));
    if (t->host_glob != NULL) {
        /* Without wildcards the (lower(host)) index finds the page. */
        query_add(q, f->is_host_negated ? " AND NOT" : " AND");
        query_add(q,
                  strpbrk(t->host_glob, "*?[") != NULL ? " lower(host) GLOB ?%d"
                                                       : " lower(host) = ?%d",
                  param_text(q, t->host_glob));
    }
    if (t->host_text != NULL)
        query_add(q,
                  f->is_host_negated ? " AND instr(lower(host), ?%d) = 0"
                                     : " AND instr(lower(host), ?%d) > 0",
                  param_text(q, t->host_text));
    if (f->method != NULL && f->method[0] != '\0')
        query_add(q, " AND method = ?%d COLLATE NOCASE", param_text(q, f->method));
    if (f->status_class == 2) {
        query_add(q, " AND status / 100 = 2"); /* common: a walk down id finds a page */
    } else if (f->status_class >= 1 && f->status_class <= 5) {
        /* The partial index flows_N_status_class (2xx left out) is used
         * only when the query states its condition. */
        query_add(q, " AND status / 100 = ?%d AND status / 100 <> 2",
                  param_int(q, f->status_class));
    } else if (f->status_class == FLOWSTORE_STATUS_ERROR) {
        query_add(q, " AND error IS NOT NULL"); /* the partial index flows_N_error */
    }
    if (t->content_type != NULL)
        query_add(q, " AND instr(lower(resp_content_type), ?%d) > 0",
                  param_text(q, t->content_type));
    if (t->url != NULL)
        query_add(q, " AND instr(lower(host || target), ?%d) > 0", param_text(q, t->url));
    if (f->body_bytes != NULL && f->body_len > 0) {
        /* Both arguments are BLOBs, so the bytes match in binary bodies
         * too. Only the bodies as sent (directions 0 and 1, the first two
         * body keys of the flow): a hit must be in the body the detail
         * view shows first, not in an original a rule replaced. */
        int needle = param_bytes(q, true, f->body_bytes, f->body_len);
        int nocase = param_int(q, f->is_body_nocase);

        /* flow_bodies_N is looked into only when a body is not in the
         * row (schema version 8): a b-tree probe per flow otherwise. */
        query_add(q,
                  " AND (body_has(req_body, req_content_encoding, ?%1$d, ?%2$d) OR "
                  "body_has(resp_body, resp_content_encoding, ?%1$d, ?%2$d) OR (((req_body IS "
                  "NULL AND req_body_captured > 0) OR (resp_body IS NULL AND resp_body_captured > "
                  "0)) AND EXISTS (SELECT 1 FROM flow_bodies_%3$" PRId64
                  " WHERE body_key BETWEEN flows_%3$" PRId64 ".id * 4 AND flows_%3$" PRId64
                  ".id * 4 + 1 AND body_has(data, CASE body_key - "
                  "flows_%3$" PRId64 ".id * 4 WHEN 0 THEN flows_%3$" PRId64
                  ".req_content_encoding ELSE flows_%3$" PRId64
                  ".resp_content_encoding END, ?%1$d, ?%2$d))))",
                  needle, nocase, seg);
    }
    if (f->expr_sql != NULL)
        add_filter_sql(q, f->expr_sql);
    query_add(q, " ORDER BY %s %s LIMIT ?%d", id, f->is_oldest_first ? "ASC" : "DESC",
              param_int(q, (int64_t)limit));
}

static int bind_list_query(sqlite3_stmt *stmt, const struct list_query *q)
{
    int rc = SQLITE_OK;
    int i;

    for (i = 0; i < q->count && rc == SQLITE_OK; i++) {
        if (q->params[i].type == PARAM_INT)
            rc = sqlite3_bind_int64(stmt, i + 1, q->params[i].number);
        else if (q->params[i].type == PARAM_TEXT)
            rc = sqlite3_bind_text64(stmt, i + 1, q->params[i].data, q->params[i].len,
                                     SQLITE_STATIC, SQLITE_UTF8);
        else
            rc = sqlite3_bind_blob64(stmt, i + 1, q->params[i].data, q->params[i].len,
                                     SQLITE_STATIC);
    }
    return rc;
}

struct list_segment {
    int64_t seg;
    int64_t first_id;
};

/* Whether segment seg's flows_unindexed_N has the pairs column (a segment
 * from before it, where the writer could not add it, has not). Called
 * with read_lock held. */
static bool has_pairs(struct flowstore *store, int64_t seg)
{
    sqlite3_stmt *stmt = store->has_pairs_stmt;
    char table[64];
    bool has = false;

    snprintf(table, sizeof(table), "flows_unindexed_%" PRId64, seg);
    if (sqlite3_bind_text(stmt, 1, table, -1, SQLITE_TRANSIENT) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        has = sqlite3_column_int64(stmt, 0) > 0;
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return has;
}

/* The segments as of the read transaction in progress on the reader. */
static int read_segments(struct flowstore *store, struct list_segment *segs, size_t *count)
{
    sqlite3_stmt *stmt = store->segs_stmt;
    int rc;

    *count = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && *count < FLOWSEG_MAX_SEGMENTS + 1) {
        segs[*count].seg = sqlite3_column_int64(stmt, 0);
        segs[*count].first_id = sqlite3_column_int64(stmt, 1);
        (*count)++;
    }
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static int get_record_locked(struct flowstore *store, int64_t id, struct flowstore_record **out,
                             char *err, size_t err_len);
static int get_body_locked(struct flowstore *store, int64_t id, enum flowstore_direction direction,
                           unsigned char **data, size_t *len, char *err, size_t err_len);

/* A body of rec read whole into its flow, for the evaluator. */
static int load_body(struct flowstore *store, struct flowstore_record *rec,
                     enum flowstore_direction direction, char *err, size_t err_len)
{
    struct flow_body *b =
        direction == FLOWSTORE_REQUEST ? &rec->flow.request_body : &rec->flow.response_body;
    unsigned char *data = NULL;
    size_t len = 0;

    if (get_body_locked(store, rec->flow.id, direction, &data, &len, err, err_len) != 0)
        return -1;
    free(b->data);
    b->data = data;
    b->len = b->capacity = len;
    return 0;
}

/* Whether the flow of the listed *rec matches the filter expression: read
 * in full first (header sections, bodies) when the expression reads them,
 * *rec then replaced by the full record (its bodies dropped again: the
 * list carries none). Returns 1, 0, or -1 with err. */
static int matches_expr(struct flowstore *store, const struct filter *expr,
                        struct flowstore_record **rec, char *err, size_t err_len)
{
    unsigned needs = filter_needs(expr);
    struct flowstore_record *full = NULL;
    char why[FILTER_ERROR_BYTES];
    int m;

    if (needs & (FILTER_NEEDS_REQUEST_HEADERS | FILTER_NEEDS_RESPONSE_HEADERS |
                 FILTER_NEEDS_REQUEST_BODY | FILTER_NEEDS_RESPONSE_BODY)) {
        if (get_record_locked(store, (*rec)->flow.id, &full, err, err_len) != 0)
            return -1;
        if (full == NULL)
            return 0; /* deleted meanwhile */
        if (((needs & FILTER_NEEDS_REQUEST_BODY) &&
             load_body(store, full, FLOWSTORE_REQUEST, err, err_len) != 0) ||
            ((needs & FILTER_NEEDS_RESPONSE_BODY) &&
             load_body(store, full, FLOWSTORE_RESPONSE, err, err_len) != 0)) {
            flowstore_record_free(full);
            return -1;
        }
        flowstore_record_free(*rec);
        *rec = full;
    }
    /* -1 (a regex limit, the time budget) counts as no match. */
    m = filter_match(expr, &(*rec)->flow, why, sizeof(why));
    for (int side = 0; side < 2; side++) {
        struct flow_body *b = side == 0 ? &(*rec)->flow.request_body : &(*rec)->flow.response_body;
        free(b->data);
        b->data = NULL;
        b->len = b->capacity = 0;
    }
    return m == 1 ? 1 : 0;
}

/* Runs one segment's statement, appending at most limit records to
 * out[*n..]. Called with read_lock held. */
static int run_segment_query(struct flowstore *store, const struct flowstore_filter *f,
                             const struct list_texts *t, int64_t seg, enum list_source source,
                             size_t limit, struct flowstore_record **out, size_t *n, char *err,
                             size_t err_len)
{
    struct list_query *q = malloc(sizeof(*q)); /* 20 KiB: not on a server thread's stack */
    sqlite3_stmt *stmt = NULL;
    size_t got = 0;
    bool is_eval = f->expr != NULL && f->expr_sql != NULL && f->expr_sql->needs_eval;
    int rc;
    int ret = -1;

    if (q == NULL) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        return -1;
    }
    /* Rows the SQL cannot decide are read on, up to the scan bound, for
     * the evaluator to keep a page of. */
    build_segment_query(q, f, t, seg, source, is_eval ? FLOWSTORE_FILTER_SCAN_ROWS : limit);
    if (q->has_failed) {
        errmsg_set(err, err_len, "flowstore: listing flows: the query is too long");
        goto out;
    }
    rc = sqlite3_prepare_v2(store->rdb, q->sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = bind_list_query(stmt, q);
    while (rc == SQLITE_OK && got < limit && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        out[*n] = read_record(stmt);
        if (out[*n] == NULL) {
            errmsg_set(err, err_len, "flowstore: out of memory");
            goto out;
        }
        if (is_eval) {
            int m = matches_expr(store, f->expr, &out[*n], err, err_len);
            if (m < 0) {
                flowstore_record_free(out[*n]);
                out[*n] = NULL;
                goto out;
            }
            if (m == 0) {
                flowstore_record_free(out[*n]);
                out[*n] = NULL;
                rc = SQLITE_OK;
                continue;
            }
        }
        (*n)++;
        got++;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: listing flows: %s", store->db_path,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    ret = 0;
out:
    sqlite3_finalize(stmt);
    free(q);
    return ret;
}

/* Merges the two id-ordered runs out[from..mid) and out[mid..*n) into id
 * order (ascending or not), dropping a flow both found and what is beyond
 * limit records from from. */
static void merge_runs(struct flowstore_record **out, size_t from, size_t mid, size_t *n,
                       size_t limit, bool is_ascending, struct flowstore_record **tmp)
{
    size_t a = from, b = mid, k = 0, i;

    while (a < mid || b < *n) {
        struct flowstore_record *next;

        if (b == *n || (a < mid && (is_ascending ? out[a]->flow.id < out[b]->flow.id
                                                 : out[a]->flow.id > out[b]->flow.id))) {
            next = out[a++];
        } else if (a < mid && out[a]->flow.id == out[b]->flow.id) {
            flowstore_record_free(out[b++]);
            continue;
        } else {
            next = out[b++];
        }
        if (k < limit)
            tmp[k++] = next;
        else
            flowstore_record_free(next);
    }
    for (i = 0; i < k; i++)
        out[from + i] = tmp[i];
    *n = from + k;
}

int flowstore_list(struct flowstore *store, const struct flowstore_filter *filter,
                   struct flowstore_record ***records, size_t *count, char *err, size_t err_len)
{
    struct flowstore_filter f = *filter;
    struct flowstore_record **out = NULL, **tmp = NULL;
    struct list_segment segs[FLOWSEG_MAX_SEGMENTS + 1];
    struct list_texts t;
    size_t seg_count = 0;
    size_t n = 0;
    size_t k;
    bool is_locked = false, is_in_txn = false;
    int rc;
    int ret = -1;

    *records = NULL;
    *count = 0;
    if (f.limit == 0 || f.limit > FLOWSTORE_LIST_MAX_FLOWS)
        f.limit = FLOWSTORE_LIST_MAX_FLOWS;
    /* Room for two runs of a page each: the index's and the unindexed. */
    out = calloc(f.limit * 2, sizeof(out[0]));
    tmp = calloc(f.limit * 2, sizeof(tmp[0]));
    if (make_list_texts(&f, &t) != 0 || out == NULL || tmp == NULL) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        goto out;
    }
    pthread_mutex_lock(&store->read_lock);
    is_locked = true;
    /* One read transaction: the segments read are the ones the queries
     * see, even when the writer drops one meanwhile. */
    rc = sqlite3_step(store->read_begin_stmt);
    sqlite3_reset(store->read_begin_stmt);
    is_in_txn = rc == SQLITE_DONE;
    if (!is_in_txn || read_segments(store, segs, &seg_count) != 0) {
        errmsg_set(err, err_len, "database %s: listing flows: %s", store->db_path,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    for (k = 0; k < seg_count && n < f.limit; k++) {
        size_t i = f.is_oldest_first ? k : seg_count - 1 - k;
        int64_t last_id = i + 1 < seg_count ? segs[i + 1].first_id - 1 : INT64_MAX;
        size_t from = n;

        if (f.before_id > 0 && segs[i].first_id >= f.before_id)
            continue;
        if (f.after_id > 0 && last_id <= f.after_id)
            continue;
        if (run_segment_query(store, &f, &t, segs[i].seg, t.match != NULL ? FROM_INDEX : FROM_FLOWS,
                              f.limit - from, out, &n, err, err_len) != 0)
            goto out;
        if (t.has_body_text) {
            size_t mid = n;

            if (run_segment_query(store, &f, &t, segs[i].seg,
                                  has_pairs(store, segs[i].seg) ? FROM_UNINDEXED_PAIRS
                                                                : FROM_UNINDEXED,
                                  f.limit - from, out, &n, err, err_len) != 0)
                goto out;
            merge_runs(out, from, mid, &n, f.limit - from, f.is_oldest_first, tmp);
        }
    }
    if (n > 0) {
        *records = out;
        *count = n;
        out = NULL;
    }
    ret = 0;
out:
    if (is_in_txn) {
        sqlite3_step(store->read_commit_stmt);
        sqlite3_reset(store->read_commit_stmt);
    }
    if (is_locked)
        pthread_mutex_unlock(&store->read_lock);
    flowstore_records_free(out, n);
    free(tmp);
    list_texts_free(&t);
    return ret;
}

/* flowstore_get() for a caller that holds read_lock. */
static int get_record_locked(struct flowstore *store, int64_t id, struct flowstore_record **out,
                             char *err, size_t err_len)
{
    sqlite3_stmt *stmt = store->get_stmt;
    int rc;
    int ret = -1;

    *out = NULL;
    rc = sqlite3_bind_int64(stmt, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *out = read_record(stmt);
        if (*out == NULL) {
            errmsg_set(err, err_len, "flowstore: out of memory");
            goto out;
        }
    } else if (rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: reading flow %" PRId64 ": %s", store->db_path, id,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    ret = 0;
out:
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return ret;
}

int flowstore_get(struct flowstore *store, int64_t id, struct flowstore_record **out, char *err,
                  size_t err_len)
{
    int ret;

    pthread_mutex_lock(&store->read_lock);
    ret = get_record_locked(store, id, out, err, err_len);
    pthread_mutex_unlock(&store->read_lock);
    return ret;
}

/* flowstore_get_body() for a caller that holds read_lock. */
static int get_body_locked(struct flowstore *store, int64_t id, enum flowstore_direction direction,
                           unsigned char **data, size_t *len, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = store->get_body_stmt;
    int rc;
    int ret = -1;

    *data = NULL;
    *len = 0;
    /* Any other value would name a key of another flow's bodies. */
    if ((unsigned)direction > FLOWSTORE_RESPONSE_ORIGINAL)
        return 0;
    rc = sqlite3_bind_int64(stmt, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 2, (int)direction);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(stmt, 0);
        int n = sqlite3_column_bytes(stmt, 0);

        if (n > 0) {
            *data = malloc((size_t)n);
            if (*data == NULL) {
                errmsg_set(err, err_len, "flowstore: out of memory");
                goto out;
            }
            memcpy(*data, blob, (size_t)n);
            *len = (size_t)n;
        }
    } else if (rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: reading a body of flow %" PRId64 ": %s",
                   store->db_path, id, sqlite3_errmsg(store->rdb));
        goto out;
    }
    ret = 0;
out:
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return ret;
}

int flowstore_get_body(struct flowstore *store, int64_t id, enum flowstore_direction direction,
                       unsigned char **data, size_t *len, char *err, size_t err_len)
{
    int ret;

    pthread_mutex_lock(&store->read_lock);
    ret = get_body_locked(store, id, direction, data, len, err, err_len);
    pthread_mutex_unlock(&store->read_lock);
    return ret;
}

int flowstore_get_ws_messages(struct flowstore *store, int64_t id, int64_t from_seq,
                              struct flow_ws *out, char *err, size_t err_len)
{
    int ret;

    pthread_mutex_lock(&store->read_lock);
    ret = wsstore_read(store->rdb, id, from_seq, out, err, err_len);
    pthread_mutex_unlock(&store->read_lock);
    return ret;
}

int flowstore_newest_id(struct flowstore *store, int64_t *id, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = store->newest_stmt;
    int rc;
    int ret = -1;

    *id = 0;
    pthread_mutex_lock(&store->read_lock);
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        errmsg_set(err, err_len, "database %s: finding the newest flow: %s", store->db_path,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    if (rc == SQLITE_ROW) /* no row: no flows, 0 */
        *id = (int64_t)sqlite3_column_int64(stmt, 0);
    ret = 0;
out:
    sqlite3_reset(stmt);
    pthread_mutex_unlock(&store->read_lock);
    return ret;
}

int flowstore_newest_of_client(struct flowstore *store, const char *client, int64_t *id, char *err,
                               size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;
    int ret = -1;

    *id = 0;
    pthread_mutex_lock(&store->read_lock);
    /* Newest first from the end of the rowid b-tree: the flow just written
     * is found after a few rows, whatever the table holds. */
    rc = sqlite3_prepare_v2(store->rdb,
                            "SELECT id FROM flows WHERE client = ?1 ORDER BY id DESC LIMIT 1", -1,
                            &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(stmt, 0);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(err, err_len, "finding a flow: %s", sqlite3_errmsg(store->rdb));
        goto out;
    }
    ret = 0;
out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&store->read_lock);
    return ret;
}
