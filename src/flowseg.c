/*
 * flowseg: segment tables and the rules for rotating and dropping them.
 *
 * Why segments and not a DELETE of the oldest ids: a DELETE, however it is
 * batched, unlinks every row, its index entries and its overflow pages one
 * by one, about as much b-tree work as inserting the flow was, and the
 * search index (contentless FTS5, see flowstore.c) cannot delete rows at
 * all. DROP TABLE puts a segment's pages on the free list without reading
 * its rows, and the writer reuses them for the next segment, so a full
 * store costs no more per flow than an empty one.
 *
 * flows_unindexed_N's pairs column (the byte-pair filter of searchtext.h,
 * NULL when a body has none) is not in the migration that made segment 1:
 * the flow store adds it to older segments when it opens.
 *
 * The column list of flows_N must stay exactly that of flows_1 as the
 * migrations of sql/schema.sql leave it (version 12 made it, version 13
 * added listener and bodies_dropped to every segment; the views are UNION
 * ALL of SELECT *): add a column to both, in the same place.
 * Only integers are ever formatted into SQL here.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "flowseg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The columns of flows up to schema version 11 (see sql/schema.sql: replay_of
 * is version 11's), then imported (version 12), then listener and
 * bodies_dropped (version 13). %1$ is the segment number. */
static const char create_fmt[] =
    "CREATE TABLE flows_%1$" PRId64 " ("
    "id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, time_start_us INTEGER NOT NULL, "
    "client TEXT NOT NULL, scheme TEXT NOT NULL, method TEXT NOT NULL, host TEXT NOT NULL, "
    "port INTEGER NOT NULL, target TEXT NOT NULL, req_version TEXT NOT NULL, resp_version TEXT, "
    "req_headers TEXT, resp_headers TEXT, status INTEGER NOT NULL, reason TEXT, "
    "req_body_size INTEGER NOT NULL, resp_body_size INTEGER NOT NULL, "
    "req_body_captured INTEGER NOT NULL, resp_body_captured INTEGER NOT NULL, "
    "req_truncated INTEGER NOT NULL, resp_truncated INTEGER NOT NULL, req_content_type TEXT, "
    "resp_content_type TEXT, req_content_encoding TEXT, resp_content_encoding TEXT, "
    "connected_us INTEGER, tls_done_us INTEGER, request_sent_us INTEGER, first_byte_us INTEGER, "
    "done_us INTEGER, is_tls INTEGER NOT NULL, tls_client_sni TEXT, tls_client_alpn TEXT, "
    "tls_client_version TEXT, tls_client_cipher TEXT, tls_upstream_version TEXT, "
    "tls_upstream_cipher TEXT, tls_cert_subject TEXT, tls_cert_issuer TEXT, tls_cert_sans TEXT, "
    "tls_cert_not_after INTEGER, tls_verification TEXT, error TEXT, rules TEXT, "
    "bytes_up INTEGER NOT NULL, bytes_down INTEGER NOT NULL, target_original TEXT, "
    "req_headers_original TEXT, resp_headers_original TEXT, req_body_original_size INTEGER, "
    "resp_body_original_size INTEGER, req_body_original_captured INTEGER, "
    "resp_body_original_captured INTEGER, req_original_truncated INTEGER, "
    "resp_original_truncated INTEGER, rules_notes TEXT, req_body BLOB, resp_body BLOB, "
    "replay_of INTEGER, imported INTEGER, listener TEXT, bodies_dropped INTEGER);"
    "CREATE INDEX flows_%1$" PRId64 "_host ON flows_%1$" PRId64 " (lower(host));"
    "CREATE INDEX flows_%1$" PRId64 "_status_class ON flows_%1$" PRId64
    " (status / 100) WHERE status / 100 <> 2;"
    "CREATE INDEX flows_%1$" PRId64 "_error ON flows_%1$" PRId64 " (id) WHERE error IS NOT NULL;"
    "CREATE TABLE flow_bodies_%1$" PRId64 " (body_key INTEGER PRIMARY KEY, data BLOB NOT NULL);"
    "CREATE VIRTUAL TABLE flows_fts_%1$" PRId64 " USING fts5 (text, content = '', "
    "columnsize = 0, detail = none, tokenize = 'trigram');"
    "CREATE VIRTUAL TABLE flows_hdr_%1$" PRId64 " USING fts5 (text, content = '', "
    "columnsize = 0, detail = none, tokenize = 'unicode61');"
    "CREATE TABLE flows_unindexed_%1$" PRId64 " (id INTEGER PRIMARY KEY, pairs BLOB);";

/* automerge 16 (FTS5's default is 4): each batch the writer commits adds
 * an FTS5 segment to both indexes, and with 4 they were merged every few
 * batches, the merges a sixth of the writer's instructions per flow. A
 * flow segment's indexes live only as long as it does (an eighth of
 * --max-flows), so with 16 most are dropped before a merge; a search looks
 * into at most about 16 small FTS5 segments per index instead of 4. */

static const char tune_fmt[] =
    "INSERT INTO flows_fts_%1$" PRId64 " (flows_fts_%1$" PRId64 ", rank) VALUES ('automerge', 16);"
    "INSERT INTO flows_hdr_%1$" PRId64 " (flows_hdr_%1$" PRId64 ", rank) VALUES ('automerge', 16);";

/* %3$ is the first id of the next segment: the WebSocket messages of
 * every flow below it go too (ws_messages is one table for all segments). */
static const char drop_fmt[] = "PRAGMA secure_delete = %2$s;"
                               "DELETE FROM ws_messages WHERE flow_id < %3$" PRId64 ";"
                               "DROP TABLE flows_%1$" PRId64 ";"
                               "DROP TABLE flow_bodies_%1$" PRId64 ";"
                               "DROP TABLE flows_fts_%1$" PRId64 ";"
                               "DROP TABLE flows_hdr_%1$" PRId64 ";"
                               "DROP TABLE flows_unindexed_%1$" PRId64 ";"
                               "PRAGMA secure_delete = ON;";

int flowseg_create_sql(int64_t seg, char *out, size_t out_len)
{
    int n = snprintf(out, out_len, create_fmt, seg);

    return n > 0 && (size_t)n < out_len ? 0 : -1;
}

int flowseg_tune_sql(int64_t seg, char *out, size_t out_len)
{
    int n = snprintf(out, out_len, tune_fmt, seg);

    return n > 0 && (size_t)n < out_len ? 0 : -1;
}

int flowseg_drop_sql(int64_t seg, int64_t next_first_id, bool is_overwritten, char *out,
                     size_t out_len)
{
    int n = snprintf(out, out_len, drop_fmt, seg, is_overwritten ? "ON" : "FAST", next_first_id);

    return n > 0 && (size_t)n < out_len ? 0 : -1;
}

char *flowseg_views_sql(const struct flowseg *segs, size_t count)
{
    static const char head[] = "DROP VIEW IF EXISTS flows; DROP VIEW IF EXISTS flow_bodies;";
    /* Per segment: " UNION ALL SELECT * FROM flow_bodies_<20 digits>" twice. */
    size_t cap = sizeof(head) + 128 + count * 160;
    char *sql = malloc(cap);
    size_t len;
    size_t i;
    int pass;

    if (sql == NULL || count == 0) {
        free(sql);
        return NULL;
    }
    len = (size_t)snprintf(sql, cap, "%s", head);
    for (pass = 0; pass < 2; pass++) {
        const char *table = pass == 0 ? "flows" : "flow_bodies";

        len += (size_t)snprintf(sql + len, cap - len, " CREATE VIEW %s AS", table);
        for (i = 0; i < count; i++)
            len += (size_t)snprintf(sql + len, cap - len, "%s SELECT * FROM %s_%" PRId64,
                                    i > 0 ? " UNION ALL" : "", table, segs[i].seg);
        len += (size_t)snprintf(sql + len, cap - len, ";");
    }
    return sql;
}

bool flowseg_is_full(const struct flowseg *cur, const struct flowseg_limits *limits, int64_t now_us)
{
    if (cur->written == 0)
        return false;
    /* Each limit starts a new segment at an eighth of what it keeps, so
     * that dropping the oldest segment gives back about an eighth. */
    if (limits->max_flows > 0 &&
        cur->written >= (limits->max_flows + FLOWSEG_PER_STORE - 1) / FLOWSEG_PER_STORE)
        return true;
    if (limits->max_db_bytes > 0 && cur->bytes >= limits->max_db_bytes / FLOWSEG_PER_STORE)
        return true;
    if (limits->retain_us > 0 && now_us - cur->created_us >= limits->retain_us / FLOWSEG_PER_STORE)
        return true;
    return false;
}

bool flowseg_must_drop_oldest(const struct flowseg *segs, size_t count, int64_t total_flows,
                              int64_t incoming, int64_t used_db_bytes,
                              const struct flowseg_limits *limits, int64_t now_us)
{
    const struct flowseg *oldest = &segs[0];

    if (count <= 1)
        return false;
    if (count > FLOWSEG_MAX_SEGMENTS || oldest->flows == 0)
        return true;
    if (limits->max_flows > 0 && total_flows + incoming > limits->max_flows)
        return true;
    if (limits->max_db_bytes > 0 && used_db_bytes > limits->max_db_bytes)
        return true;
    /* Whole segments only: it goes when its newest flow is past the age. */
    if (limits->retain_us > 0 && oldest->last_us < now_us - limits->retain_us)
        return true;
    return false;
}
