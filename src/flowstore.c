/*
 * flowstore: captured exchanges in SQLite, written by one thread.
 *
 * Proxy threads only ever take `lock` for the time of a ring-buffer push:
 * flowstore_submit() never touches SQLite, never allocates and never waits
 * for the writer, so a slow, locked, full or corrupt database costs them
 * nothing; the flows are then dropped (queue full) or lost (write error) and
 * counted. The writer frees every flow once its batch is committed or has
 * failed: nothing is kept in memory after writing, so memory use does not
 * grow with the number of stored flows.
 *
 * Locks, always taken in this order and never the other way round:
 * write_lock (the writer connection: the writer thread, delete and clear),
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
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sqlite3.h>

#include "db.h"
#include "log.h"
#include "wsstore.h"

/* Queued flows may each hold two bodies up to the capture limit; bounding
 * their bytes, not only their number, bounds memory while the disk is slow. */
#define FLOWSTORE_QUEUE_MAX_BYTES ((size_t)256 * 1024 * 1024)
#define FLOWSTORE_ERROR_BYTES 256

/* A body's row in flow_bodies is body_key = flow id * 4 + direction (schema
 * version 5: one b-tree entry per body, a flow's bodies adjacent). The
 * statements below spell out the 4; every direction must fit below it. */
_Static_assert(FLOWSTORE_RESPONSE_ORIGINAL < 4, "a direction must fit in a flow's 4 body keys");

struct flowstore {
    char *db_path;
    int64_t max_flows;
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
    size_t queue_head;
    size_t queue_count;
    size_t queue_bytes;
    bool is_stopping;
    uint64_t accepted;       /* flows queued since open */
    uint64_t finished;       /* of those, written or lost */
    uint64_t drops_reported; /* dropped count when the last drop warning was logged */
    struct flowstore_stats stats;

    pthread_t writer;
    bool has_writer;

    /* The writer connection, guarded by write_lock. */
    pthread_mutex_t write_lock;
    bool has_write_lock;
    sqlite3 *wdb;
    sqlite3_stmt *begin_stmt;
    sqlite3_stmt *commit_stmt;
    sqlite3_stmt *rollback_stmt;
    sqlite3_stmt *insert_flow_stmt;
    sqlite3_stmt *insert_body_stmt;
    sqlite3_stmt *insert_ws_stmt;    /* prepared by wsstore on first use */
    sqlite3_stmt *replace_flow_stmt; /* a live flow's finished row over its first */
    sqlite3_stmt *save_next_id_stmt;
    /* The id the next stored flow gets (flow_ids, schema version 7): the
     * writer assigns ids itself rather than through AUTOINCREMENT. */
    int64_t next_id;
    sqlite3_stmt *prune_bodies_stmt;
    sqlite3_stmt *prune_flows_stmt;
    sqlite3_stmt *delete_bodies_stmt;
    sqlite3_stmt *delete_stmt;
    sqlite3_stmt *clear_bodies_stmt;
    sqlite3_stmt *clear_flows_stmt;
    char logged_error[FLOWSTORE_ERROR_BYTES]; /* last error logged; "" while writes work */
    uint64_t lost_since_logged;

    /* The read connection, guarded by read_lock. */
    pthread_mutex_t read_lock;
    bool has_read_lock;
    sqlite3 *rdb;
    sqlite3_stmt *get_stmt;
    sqlite3_stmt *get_body_stmt;
    sqlite3_stmt *newest_stmt;
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
#define RECORD_COLUMNS "id, " FLOW_INSERT_COLUMNS
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
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"

static int prepare_writer(struct flowstore *store, char *err, size_t err_len)
{
    sqlite3 *db = store->wdb;
    const char *path = store->db_path;

    /* IMMEDIATE: take the write lock at BEGIN, so a busy database fails
     * (after the busy timeout) before any work is done, not at COMMIT. */
    if (prepare(db, path, "BEGIN IMMEDIATE", &store->begin_stmt, err, err_len) != 0 ||
        prepare(db, path, "COMMIT", &store->commit_stmt, err, err_len) != 0 ||
        prepare(db, path, "ROLLBACK", &store->rollback_stmt, err, err_len) != 0 ||
        prepare(db, path,
                "INSERT INTO flows (id, " FLOW_INSERT_COLUMNS
                ", req_body, resp_body) VALUES (?, " FLOW_INSERT_VALUES ", ?, ?)",
                &store->insert_flow_stmt, err, err_len) != 0 ||
        /* Without recursive_triggers (SQLite's default) the row REPLACE
         * deletes fires no delete trigger: the messages stay. */
        prepare(db, path,
                "INSERT OR REPLACE INTO flows (id, " FLOW_INSERT_COLUMNS
                ", req_body, resp_body) VALUES (?, " FLOW_INSERT_VALUES ", ?, ?)",
                &store->replace_flow_stmt, err, err_len) != 0 ||
        prepare(db, path, "UPDATE flow_ids SET next_id = ?1", &store->save_next_id_stmt, err,
                err_len) != 0 ||
        prepare(db, path, "INSERT INTO flow_bodies (body_key, data) VALUES (?1, ?2)",
                &store->insert_body_stmt, err, err_len) != 0 ||
        /* max(id) is one b-tree descent and both deletes are range scans
         * (body keys of flows up to id N end at N * 4 + 3), so pruning
         * after every batch costs the rows it removes. It keeps exactly
         * max_flows while ids have no gaps; after deletions from the
         * dashboard it keeps fewer, never more. Nothing cascades: the
         * bodies are deleted here, first, while max(id) still names the
         * same flow in both statements. */
        prepare(db, path,
                "DELETE FROM flow_bodies WHERE body_key <= ((SELECT max(id) FROM flows) - ?1) * 4 "
                "+ 3",
                &store->prune_bodies_stmt, err, err_len) != 0 ||
        prepare(db, path, "DELETE FROM flows WHERE id <= (SELECT max(id) FROM flows) - ?1",
                &store->prune_flows_stmt, err, err_len) != 0 ||
        /* SQLite's * turns an overflowing product into a REAL, which no
         * key equals: an absurd id deletes nothing rather than wrapping
         * onto another flow's bodies. */
        prepare(db, path, "DELETE FROM flow_bodies WHERE body_key BETWEEN ?1 * 4 AND ?1 * 4 + 3",
                &store->delete_bodies_stmt, err, err_len) != 0 ||
        prepare(db, path, "DELETE FROM flows WHERE id = ?1", &store->delete_stmt, err, err_len) !=
            0 ||
        prepare(db, path, "DELETE FROM flow_bodies", &store->clear_bodies_stmt, err, err_len) !=
            0 ||
        prepare(db, path, "DELETE FROM flows", &store->clear_flows_stmt, err, err_len) != 0)
        return -1;
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

/* memmem() with ASCII letters folded when is_nocase: bodies are bytes in
 * any charset, and folding ASCII alone never changes another byte. */
static bool contains_bytes(const unsigned char *hay, size_t hay_len, const unsigned char *needle,
                           size_t needle_len, bool is_nocase)
{
    size_t i, j;

    if (needle_len > hay_len)
        return false;
    if (!is_nocase)
        return memmem(hay, hay_len, needle, needle_len) != NULL;
    for (i = 0; i + needle_len <= hay_len; i++) {
        for (j = 0; j < needle_len && fold_ascii(hay[i + j]) == fold_ascii(needle[j]); j++)
            ;
        if (j == needle_len)
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
                                   sql_body_has, NULL, NULL, NULL) != SQLITE_OK) {
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
        prepare(db, path, "SELECT max(id) FROM flows", &store->newest_stmt, err, err_len) != 0)
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

static int count_stored(struct flowstore *store, char *err, size_t err_len)
{
    int64_t count;

    if (query_int64(store->rdb, store->db_path, "SELECT count(*) FROM flows",
                    "the number of stored flows", &count, err, err_len) != 0)
        return -1;
    store->stats.stored = (uint64_t)count;
    return 0;
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
    return query_int64(store->wdb, store->db_path,
                       "SELECT max(coalesce((SELECT max(next_id) FROM flow_ids), 1), "
                       "coalesce((SELECT max(id) FROM flows), 0) + 1)",
                       "the next flow id", &store->next_id, err, err_len);
}

static void *writer_run(void *arg);

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
    store->max_flows = max_flows;
    store->db_path = strdup(db_path);
    store->queue = calloc(FLOWSTORE_QUEUE_FLOWS, sizeof(store->queue[0]));
    if (store->db_path == NULL || store->queue == NULL) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        goto out;
    }
    store->has_lock = pthread_mutex_init(&store->lock, NULL) == 0;
    store->has_work_cond = store->has_lock && init_monotonic_cond(&store->work_cond) == 0;
    store->has_done_cond = store->has_work_cond && init_monotonic_cond(&store->done_cond) == 0;
    store->has_write_lock =
        store->has_done_cond && pthread_mutex_init(&store->write_lock, NULL) == 0;
    store->has_read_lock =
        store->has_write_lock && pthread_mutex_init(&store->read_lock, NULL) == 0;
    store->has_callback_lock =
        store->has_read_lock && pthread_mutex_init(&store->callback_lock, NULL) == 0;
    if (!store->has_callback_lock) {
        errmsg_set(err, err_len, "flowstore: cannot create a mutex");
        goto out;
    }

    /* The first db_open() creates and migrates the file; the second finds
     * it at the current version. */
    if (db_open(db_path, &store->wdb, err, err_len) != 0 ||
        prepare_writer(store, err, err_len) != 0 ||
        db_open(db_path, &store->rdb, err, err_len) != 0 ||
        prepare_reader(store, err, err_len) != 0 || count_stored(store, err, err_len) != 0 ||
        load_next_id(store, err, err_len) != 0 || load_inline_body_max(store, err, err_len) != 0)
        goto out;

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
    if (store->has_writer) {
        pthread_mutex_lock(&store->lock);
        store->is_stopping = true;
        pthread_cond_signal(&store->work_cond);
        pthread_mutex_unlock(&store->lock);
        pthread_join(store->writer, NULL);
        flowstore_log_totals(store);
    }
    if (store->queue != NULL)
        for (i = 0; i < store->queue_count; i++)
            flow_free(store->queue[(store->queue_head + i) % FLOWSTORE_QUEUE_FLOWS]);

    sqlite3_finalize(store->begin_stmt);
    sqlite3_finalize(store->commit_stmt);
    sqlite3_finalize(store->rollback_stmt);
    sqlite3_finalize(store->insert_flow_stmt);
    sqlite3_finalize(store->insert_body_stmt);
    sqlite3_finalize(store->insert_ws_stmt);
    sqlite3_finalize(store->replace_flow_stmt);
    sqlite3_finalize(store->prune_bodies_stmt);
    sqlite3_finalize(store->prune_flows_stmt);
    sqlite3_finalize(store->save_next_id_stmt);
    sqlite3_finalize(store->delete_bodies_stmt);
    sqlite3_finalize(store->delete_stmt);
    sqlite3_finalize(store->clear_bodies_stmt);
    sqlite3_finalize(store->clear_flows_stmt);
    sqlite3_finalize(store->get_stmt);
    sqlite3_finalize(store->get_body_stmt);
    sqlite3_finalize(store->newest_stmt);
    close_db(store->rdb, store->db_path);
    close_db(store->wdb, store->db_path);
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
    free(store->queue);
    free(store->db_path);
    free(store);
}

/* ---- submitting ---- */

static size_t flow_bytes(const struct flow *flow)
{
    return sizeof(*flow) + flow->request_body.capacity + flow->response_body.capacity +
           flow->request_body_original.capacity + flow->response_body_original.capacity +
           flow->ws.bytes + flow->ws.capacity * sizeof(struct flow_ws_message);
}

int flowstore_submit(struct flowstore *store, struct flow *flow)
{
    uint64_t dropped = 0;
    size_t bytes;
    int ret = -1;

    if (flow == NULL)
        return -1;
    if (store == NULL) {
        flow_free(flow);
        return -1;
    }
    bytes = flow_bytes(flow);
    pthread_mutex_lock(&store->lock);
    if (flow->live_part == FLOW_LIVE_NONE || flow->live_part == FLOW_LIVE_FINAL)
        store->stats.submitted++;
    if (!store->is_stopping && store->queue_count < FLOWSTORE_QUEUE_FLOWS &&
        (store->queue_count == 0 || store->queue_bytes + bytes <= FLOWSTORE_QUEUE_MAX_BYTES)) {
        store->queue[(store->queue_head + store->queue_count) % FLOWSTORE_QUEUE_FLOWS] = flow;
        store->queue_count++;
        store->queue_bytes += bytes;
        store->accepted++;
        flow = NULL;
        /* Wake the writer when work appears and when a batch is full; in
         * between it is gathering a batch (see writer_run). */
        if (store->queue_count == 1 || store->queue_count == FLOWSTORE_BATCH_FLOWS)
            pthread_cond_signal(&store->work_cond);
        ret = 0;
    } else {
        store->stats.dropped++;
        /* Warn at the 1st, 2nd, 4th, 8th... drop: visible, never a flood. */
        if (store->stats.dropped >= store->drops_reported * 2 || store->drops_reported == 0) {
            store->drops_reported = store->stats.dropped;
            dropped = store->stats.dropped;
        }
    }
    pthread_mutex_unlock(&store->lock);
    if (dropped > 0)
        log_warn("flowstore: the flow queue is full (the database cannot keep up); %" PRIu64
                 " flow(s) dropped so far",
                 dropped);
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
    while (store->finished < target) {
        if (pthread_cond_timedwait(&store->done_cond, &store->lock, &deadline) == ETIMEDOUT &&
            store->finished < target) {
            ret = -1;
            break;
        }
    }
    pthread_mutex_unlock(&store->lock);
    return ret;
}

void flowstore_log_totals(struct flowstore *store)
{
    struct flowstore_stats stats;

    flowstore_stats(store, &stats);
    log_info("flows: %llu written, %llu dropped (queue full), %llu lost to database errors",
             (unsigned long long)stats.written, (unsigned long long)stats.dropped,
             (unsigned long long)stats.write_errors);
}

void flowstore_stats(struct flowstore *store, struct flowstore_stats *out)
{
    pthread_mutex_lock(&store->lock);
    *out = store->stats;
    pthread_mutex_unlock(&store->lock);
}

void flowstore_set_body_decoder(struct flowstore *store, flowstore_decode_fn decode)
{
    pthread_mutex_lock(&store->read_lock);
    store->body_decode = decode;
    pthread_mutex_unlock(&store->read_lock);
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

static int insert_body(struct flowstore *store, int64_t id, enum flowstore_direction direction,
                       const struct flow_body *body, char *msg, size_t msg_len)
{
    sqlite3_stmt *stmt = store->insert_body_stmt;
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

/* Inserts one flow and its bodies; returns SQLITE_DONE and sets flow->id
 * when it made a new row (not for a live flow's messages or its finished
 * row, see struct flow_live). */
static int insert_flow(struct flowstore *store, struct flow *flow, char *msg, size_t msg_len)
{
    bool is_replace =
        flow->live_part == FLOW_LIVE_FINAL && flow->live != NULL && flow->live->id != 0;
    struct binder b = {is_replace ? store->replace_flow_stmt : store->insert_flow_stmt, 0,
                       SQLITE_OK};
    int64_t id = is_replace ? flow->live->id : store->next_id;
    const struct flow_tls *tls = &flow->tls;
    const struct flow_body *req_original = &flow->request_body_original;
    const struct flow_body *resp_original = &flow->response_body_original;
    bool has_req_original = flow->has_request_body_original;
    bool has_resp_original = flow->has_response_body_original;
    bool has_response = flow->status != 0 || flow->response_headers != NULL;
    char req_version[16], resp_version[16];
    struct header_facts req, resp;
    int rc;

    if (flow->live_part == FLOW_LIVE_MESSAGES)
        return insert_ws_messages(store, flow, flow->live != NULL ? flow->live->id : 0, msg,
                                  msg_len);
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
        rc = insert_body(store, flow->id, FLOWSTORE_REQUEST, &flow->request_body, msg, msg_len);
    if (rc == SQLITE_DONE && flow->response_body.len > store->inline_body_max)
        rc = insert_body(store, flow->id, FLOWSTORE_RESPONSE, &flow->response_body, msg, msg_len);
    if (rc == SQLITE_DONE && flow->has_request_body_original)
        rc = insert_body(store, flow->id, FLOWSTORE_REQUEST_ORIGINAL, &flow->request_body_original,
                         msg, msg_len);
    if (rc == SQLITE_DONE && flow->has_response_body_original)
        rc = insert_body(store, flow->id, FLOWSTORE_RESPONSE_ORIGINAL,
                         &flow->response_body_original, msg, msg_len);
    if (rc == SQLITE_DONE)
        rc = insert_ws_messages(store, flow, id, msg, msg_len);
out:
    free(req.joined);
    free(resp.joined);
    return rc;
}

/* Called with write_lock held, in the batch's transaction: ids given out
 * stay given out, whatever is deleted later. */
static int save_next_id(struct flowstore *store, char *msg, size_t msg_len)
{
    int rc = sqlite3_bind_int64(store->save_next_id_stmt, 1, store->next_id);

    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, "storing the next flow id", msg, msg_len);
        return rc;
    }
    return step_done(store->wdb, store->save_next_id_stmt, "storing the next flow id", msg,
                     msg_len);
}

/* Deletes the oldest flows beyond max_flows; *pruned counts them. */
static int prune(struct flowstore *store, int64_t *pruned, char *msg, size_t msg_len)
{
    int rc;

    *pruned = 0;
    if (store->max_flows <= 0)
        return SQLITE_DONE;
    if ((rc = sqlite3_bind_int64(store->prune_bodies_stmt, 1, store->max_flows)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(store->prune_flows_stmt, 1, store->max_flows)) != SQLITE_OK) {
        describe_error(store->wdb, rc, "pruning old flows", msg, msg_len);
        return rc;
    }
    rc = step_done(store->wdb, store->prune_bodies_stmt, "pruning old flows", msg, msg_len);
    if (rc == SQLITE_DONE) {
        rc = step_done(store->wdb, store->prune_flows_stmt, "pruning old flows", msg, msg_len);
        if (rc == SQLITE_DONE)
            *pruned = sqlite3_changes(store->wdb);
    }
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

/* Writes one batch in one transaction, then prunes. Returns true when it
 * was committed (every flow has its id), false when it was rolled back. */
static bool write_batch(struct flowstore *store, struct flow **batch, size_t count)
{
    char msg[FLOWSTORE_ERROR_BYTES] = "";
    int64_t first_id;
    int64_t pruned = 0;
    size_t i;
    int rc;
    bool is_ok = false;

    pthread_mutex_lock(&store->write_lock);
    first_id = store->next_id;
    rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, sizeof(msg));
    for (i = 0; i < count && rc == SQLITE_DONE; i++)
        rc = insert_flow(store, batch[i], msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = save_next_id(store, msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = prune(store, &pruned, msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->commit_stmt, "committing flows", msg, sizeof(msg));
    is_ok = rc == SQLITE_DONE;
    if (!is_ok) {
        rollback_if_open(store);
        /* Nothing of the batch was stored: its ids are free again, so ids
         * stay without gaps (prune counts on that). */
        store->next_id = first_id;
        for (i = 0; i < count; i++)
            if (batch[i]->live_part == FLOW_LIVE_OPEN && batch[i]->live != NULL)
                batch[i]->live->id = 0;
    }

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
    } else {
        store->stats.write_errors += count;
        snprintf(store->stats.last_error, sizeof(store->stats.last_error), "%s", msg);
    }
    pthread_mutex_unlock(&store->lock);
    report_batch(store, count, is_ok, msg);
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

/* Called with lock held while stopping after a failed batch: waiting out
 * the busy timeout once per remaining batch of a locked database would hold
 * up the exit for minutes, so the rest is counted as lost at once. */
static void drop_queue(struct flowstore *store)
{
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

static void *writer_run(void *arg)
{
    struct flowstore *store = arg;
    struct flow *batch[FLOWSTORE_BATCH_FLOWS];
    bool has_failed = false;
    size_t count;
    size_t i;

    pthread_setname_np(pthread_self(), "tw-flowwriter");
    pthread_mutex_lock(&store->lock);
    for (;;) {
        while (store->queue_count == 0 && !store->is_stopping)
            pthread_cond_wait(&store->work_cond, &store->lock);
        /* Gather a batch for a moment rather than commit each flow as it
         * comes: one transaction per flow would cost the proxy most of a
         * core at a few thousand requests a second. */
        if (!store->is_stopping && store->queue_count < FLOWSTORE_BATCH_FLOWS) {
            struct timespec until = clock_deadline_ms(CLOCK_MONOTONIC, FLOWSTORE_GATHER_MS);
            while (store->queue_count < FLOWSTORE_BATCH_FLOWS && !store->is_stopping &&
                   pthread_cond_timedwait(&store->work_cond, &store->lock, &until) == 0)
                ;
        }
        if (store->is_stopping && has_failed)
            drop_queue(store);
        if (store->queue_count == 0)
            break; /* stopping, and everything queued is written */
        for (count = 0; count < FLOWSTORE_BATCH_FLOWS && store->queue_count > 0; count++) {
            batch[count] = store->queue[store->queue_head];
            store->queue_head = (store->queue_head + 1) % FLOWSTORE_QUEUE_FLOWS;
            store->queue_count--;
            store->queue_bytes -= flow_bytes(batch[count]);
        }
        pthread_mutex_unlock(&store->lock);

        has_failed = !write_batch(store, batch, count);
        if (!has_failed)
            notify_written(store, batch, count);
        for (i = 0; i < count; i++)
            flow_free(batch[i]);

        pthread_mutex_lock(&store->lock);
        store->finished += count;
        pthread_cond_broadcast(&store->done_cond);
    }
    pthread_mutex_unlock(&store->lock);
    return NULL;
}

/* ---- deleting ---- */

/* Binds id as ?1 and steps stmt; returns the step's result code, with msg
 * filled when it is not SQLITE_DONE. */
static int step_with_id(struct flowstore *store, sqlite3_stmt *stmt, int64_t id, const char *what,
                        char *msg, size_t msg_len)
{
    int rc = sqlite3_bind_int64(stmt, 1, id);

    if (rc != SQLITE_OK) {
        describe_error(store->wdb, rc, what, msg, msg_len);
        return rc;
    }
    return step_done(store->wdb, stmt, what, msg, msg_len);
}

int flowstore_delete(struct flowstore *store, int64_t id, bool *found, char *err, size_t err_len)
{
    char msg[FLOWSTORE_ERROR_BYTES];
    int changes = 0;
    int rc;

    *found = false;
    pthread_mutex_lock(&store->write_lock);
    /* One transaction, as nothing cascades (schema version 5): the flow
     * and its bodies go together or not at all. */
    rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc =
            step_with_id(store, store->delete_bodies_stmt, id, "deleting a flow", msg, sizeof(msg));
    if (rc == SQLITE_DONE) {
        rc = step_with_id(store, store->delete_stmt, id, "deleting a flow", msg, sizeof(msg));
        changes = sqlite3_changes(store->wdb);
    }
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->commit_stmt, "deleting a flow", msg, sizeof(msg));
    if (rc != SQLITE_DONE) {
        rollback_if_open(store);
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
    int rc;

    pthread_mutex_lock(&store->write_lock);
    rc = step_done(store->wdb, store->begin_stmt, "starting a transaction", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->clear_bodies_stmt, "deleting every flow", msg,
                       sizeof(msg));
    if (rc == SQLITE_DONE)
        rc =
            step_done(store->wdb, store->clear_flows_stmt, "deleting every flow", msg, sizeof(msg));
    if (rc == SQLITE_DONE)
        rc = step_done(store->wdb, store->commit_stmt, "deleting every flow", msg, sizeof(msg));
    if (rc != SQLITE_DONE) {
        rollback_if_open(store);
    } else {
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

#define LIST_MAX_PARAMS 12

/* The statement for a filter. Built only from the constant fragments below;
 * every value is a bound parameter. */
struct list_query {
    char sql[2048]; /* the longest query, every filter set, is about 1,000 bytes */
    struct {
        enum { PARAM_INT, PARAM_TEXT, PARAM_BLOB } type;
        int64_t number;
        const void *data;
        size_t len;
    } params[LIST_MAX_PARAMS];
    int count;
    char *lowered[4]; /* owned copies behind text params */
    int lowered_count;
};

static void query_add(struct list_query *q, const char *fragment)
{
    size_t used = strlen(q->sql);

    snprintf(q->sql + used, sizeof(q->sql) - used, "%s", fragment);
}

static void param_int(struct list_query *q, int64_t value)
{
    q->params[q->count].type = PARAM_INT;
    q->params[q->count].number = value;
    q->count++;
}

static void param_bytes(struct list_query *q, bool is_blob, const void *data, size_t len)
{
    q->params[q->count].type = is_blob ? PARAM_BLOB : PARAM_TEXT;
    q->params[q->count].data = data;
    q->params[q->count].len = len;
    q->count++;
}

/* A lowercased copy of text as a text parameter; -1 when out of memory. */
static int param_lower(struct list_query *q, const char *text)
{
    char *lowered = ascii_lower(text);

    if (lowered == NULL)
        return -1;
    q->lowered[q->lowered_count++] = lowered;
    param_bytes(q, false, lowered, strlen(lowered));
    return 0;
}

static int build_list_query(struct list_query *q, const struct flowstore_filter *f)
{
    memset(q, 0, sizeof(*q));
    query_add(q, "SELECT " SUMMARY_COLUMNS " FROM flows WHERE 1");
    if (f->before_id > 0) {
        query_add(q, " AND id < ?");
        param_int(q, f->before_id);
    }
    if (f->after_id > 0) {
        query_add(q, " AND id > ?");
        param_int(q, f->after_id);
    }
    if (f->host_glob != NULL && f->host_glob[0] != '\0') {
        /* Without wildcards the (lower(host)) index finds the page. */
        query_add(q, f->is_host_negated ? " AND NOT" : " AND");
        query_add(q, strpbrk(f->host_glob, "*?[") != NULL ? " lower(host) GLOB ?"
                                                          : " lower(host) = ?");
        if (param_lower(q, f->host_glob) != 0)
            return -1;
    }
    if (f->host_text != NULL && f->host_text[0] != '\0') {
        query_add(q, f->is_host_negated ? " AND instr(lower(host), ?) = 0"
                                        : " AND instr(lower(host), ?) > 0");
        if (param_lower(q, f->host_text) != 0)
            return -1;
    }
    if (f->method != NULL && f->method[0] != '\0') {
        query_add(q, " AND method = ? COLLATE NOCASE");
        param_bytes(q, false, f->method, strlen(f->method));
    }
    if (f->status_class == 2) {
        query_add(q, " AND status / 100 = 2"); /* common: a walk down id finds a page */
    } else if (f->status_class >= 1 && f->status_class <= 5) {
        /* The partial index flows_status_class (2xx left out) is used only
         * when the query states its condition. */
        query_add(q, " AND status / 100 = ? AND status / 100 <> 2");
        param_int(q, f->status_class);
    } else if (f->status_class == FLOWSTORE_STATUS_ERROR) {
        query_add(q, " AND error IS NOT NULL"); /* the partial index flows_error */
    }
    if (f->content_type != NULL && f->content_type[0] != '\0') {
        query_add(q, " AND instr(lower(resp_content_type), ?) > 0");
        if (param_lower(q, f->content_type) != 0)
            return -1;
    }
    if (f->url_text != NULL && f->url_text[0] != '\0') {
        query_add(q, " AND instr(lower(host || target), ?) > 0");
        if (param_lower(q, f->url_text) != 0)
            return -1;
    }
    if (f->body_bytes != NULL && f->body_len > 0) {
        /* A scan of stored bytes, newest first from the cursor, that stops
         * after `limit` matches: fast when the text is common, and when it
         * is rare it reads every body below the cursor once. Acceptable
         * for an interactive search; both arguments are BLOBs, so instr()
         * compares bytes and finds text in binary bodies too. Only the
         * bodies as sent (directions 0 and 1, the first two body keys of
         * the flow): a hit must be in the body the detail view shows first,
         * not in an original a rule replaced. */
        int i;

        query_add(q, " AND (body_has(req_body, req_content_encoding, ?, ?) OR "
                     "body_has(resp_body, resp_content_encoding, ?, ?) OR EXISTS (SELECT 1 "
                     "FROM flow_bodies WHERE body_key BETWEEN flows.id * 4 AND flows.id * 4 + 1 "
                     "AND body_has(data, CASE body_key - flows.id * 4 WHEN 0 THEN "
                     "flows.req_content_encoding ELSE flows.resp_content_encoding END, ?, ?)))");
        for (i = 0; i < 3; i++) {
            param_bytes(q, true, f->body_bytes, f->body_len);
            param_int(q, f->is_body_nocase);
        }
    }
    query_add(q, f->is_oldest_first ? " ORDER BY id ASC LIMIT ?" : " ORDER BY id DESC LIMIT ?");
    param_int(q, (int64_t)f->limit);
    return 0;
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

int flowstore_list(struct flowstore *store, const struct flowstore_filter *filter,
                   struct flowstore_record ***records, size_t *count, char *err, size_t err_len)
{
    struct flowstore_filter f = *filter;
    struct flowstore_record **out = NULL;
    struct list_query q;
    sqlite3_stmt *stmt = NULL;
    size_t n = 0;
    bool is_locked = false;
    int rc;
    int ret = -1;
    int i;

    *records = NULL;
    *count = 0;
    if (f.limit == 0 || f.limit > FLOWSTORE_LIST_MAX_FLOWS)
        f.limit = FLOWSTORE_LIST_MAX_FLOWS;
    if (build_list_query(&q, &f) != 0) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        goto out;
    }
    out = calloc(f.limit, sizeof(out[0]));
    if (out == NULL) {
        errmsg_set(err, err_len, "flowstore: out of memory");
        goto out;
    }
    pthread_mutex_lock(&store->read_lock);
    is_locked = true;
    rc = sqlite3_prepare_v2(store->rdb, q.sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = bind_list_query(stmt, &q);
    if (rc != SQLITE_OK) {
        errmsg_set(err, err_len, "database %s: listing flows: %s", store->db_path,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && n < f.limit) {
        out[n] = read_record(stmt);
        if (out[n] == NULL) {
            errmsg_set(err, err_len, "flowstore: out of memory");
            goto out;
        }
        n++;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        errmsg_set(err, err_len, "database %s: listing flows: %s", store->db_path,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    if (n > 0) {
        *records = out;
        *count = n;
        out = NULL;
    }
    ret = 0;
out:
    sqlite3_finalize(stmt);
    if (is_locked)
        pthread_mutex_unlock(&store->read_lock);
    flowstore_records_free(out, n);
    for (i = 0; i < q.lowered_count; i++)
        free(q.lowered[i]);
    return ret;
}

int flowstore_get(struct flowstore *store, int64_t id, struct flowstore_record **out, char *err,
                  size_t err_len)
{
    sqlite3_stmt *stmt = store->get_stmt;
    int rc;
    int ret = -1;

    *out = NULL;
    pthread_mutex_lock(&store->read_lock);
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
    pthread_mutex_unlock(&store->read_lock);
    return ret;
}

int flowstore_get_body(struct flowstore *store, int64_t id, enum flowstore_direction direction,
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
    pthread_mutex_lock(&store->read_lock);
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
    if (rc != SQLITE_ROW) {
        errmsg_set(err, err_len, "database %s: finding the newest flow: %s", store->db_path,
                   sqlite3_errmsg(store->rdb));
        goto out;
    }
    *id = (int64_t)sqlite3_column_int64(stmt, 0); /* NULL reads as 0: no flows */
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
