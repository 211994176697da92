/*
 * flowseg: the segments of the flow store (sql/schema.sql, versions 12 and 13).
 *
 * Flows are kept in time-ordered segments, each its own set of tables
 * (flows_N, flow_bodies_N, flows_fts_N, flows_hdr_N, flows_unindexed_N), so that
 * retention drops the oldest segment whole with DROP TABLE instead of
 * deleting rows one by one. This module owns the segment tables' statements
 * and the decisions of when to start a new segment and when to drop the
 * oldest; flowstore.c runs them. It never touches a database itself.
 */
#ifndef TAPWIRE_FLOWSEG_H
#define TAPWIRE_FLOWSEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A full store is about this many segments: what retention drops at once
 * is this fraction of what it keeps. */
#define FLOWSEG_PER_STORE 8
/* Live segments at most; beyond it the oldest goes whatever the limits say
 * (every limit already keeps the count near FLOWSEG_PER_STORE + 1). */
#define FLOWSEG_MAX_SEGMENTS 64
#define FLOWSEG_SQL_MAX_BYTES 4096 /* flowseg_create_sql() and flowseg_drop_sql() */

/* What the store keeps; 0 in a field is no limit of that kind. */
struct flowseg_limits {
    int64_t max_flows;
    int64_t max_db_bytes; /* pages in use (the file less its free pages) */
    int64_t retain_us;
};

/* One row of flow_segments. */
struct flowseg {
    int64_t seg;
    int64_t first_id;
    int64_t created_us;
    int64_t last_us;
    int64_t flows;   /* stored now */
    int64_t written; /* ever written into it */
    int64_t bytes;   /* bytes of flows written since this process opened it (not stored) */
};

/* The statements (';'-separated) that create segment seg's empty tables and
 * indexes. Returns 0, or -1 when out_len is too small. */
int flowseg_create_sql(int64_t seg, char *out, size_t out_len);

/* The statements that set segment seg's search indexes' merge policy
 * (FTS5 automerge). Run on the segment the writer fills, when it starts
 * and when the store opens (segment 1 comes from a migration). */
int flowseg_tune_sql(int64_t seg, char *out, size_t out_len);

/* The statements that drop the oldest segment seg's tables (and their
 * indexes) and delete the WebSocket messages (ws_messages) of every flow id
 * below next_first_id, the first id of the segment after it; their pages
 * overwritten with zeros when is_overwritten (secure_delete; every page
 * written once more), else freed as they are (secure_delete FAST). They
 * leave secure_delete on. */
int flowseg_drop_sql(int64_t seg, int64_t next_first_id, bool is_overwritten, char *out,
                     size_t out_len);

/* The statements that replace the views flows and flow_bodies with the
 * UNION ALL of segs[0..count) (count >= 1). Returns a malloc'd string
 * (caller frees) or NULL when out of memory. */
char *flowseg_views_sql(const struct flowseg *segs, size_t count);

/* Whether the newest segment cur is full: a new flow goes into a new
 * segment. */
bool flowseg_is_full(const struct flowseg *cur, const struct flowseg_limits *limits,
                     int64_t now_us);

/* Whether the oldest of segs[0..count) must be dropped before incoming
 * more flows are written: over a limit, or empty. The newest segment
 * (count == 1) never is. total_flows is the sum of segs[].flows and
 * used_db_bytes the database's pages in use, in bytes (0 when unknown). */
bool flowseg_must_drop_oldest(const struct flowseg *segs, size_t count, int64_t total_flows,
                              int64_t incoming, int64_t used_db_bytes,
                              const struct flowseg_limits *limits, int64_t now_us);

#endif
