/*
 * Unit tests for flowseg: the segment tables' statements run on a real
 * SQLite connection (FTS5 trigram included), the views join the segments
 * in order, and the rules for starting a segment and dropping the oldest.
 */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "flowseg.h"

static const struct flowseg_limits no_limits = {0, 0, 0};

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    int64_t value = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

static void test_segments_are_created_joined_and_dropped(void)
{
    struct flowseg segs[2] = {{.seg = 3}, {.seg = 4}};
    char sql[FLOWSEG_SQL_MAX_BYTES];
    sqlite3 *db = NULL;
    char *views;

    CU_ASSERT_FATAL(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(flowseg_create_sql(3, sql, sizeof(sql)), 0);
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(flowseg_create_sql(4, sql, sizeof(sql)), 0);
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    views = flowseg_views_sql(segs, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(views);
    CU_ASSERT_EQUAL(sqlite3_exec(db, views, NULL, NULL, NULL), SQLITE_OK);
    free(views);
    CU_ASSERT_EQUAL(sqlite3_exec(db,
                                 "INSERT INTO flows_3 (id, kind, time_start_us, client, scheme, "
                                 "method, host, port, target, req_version, status, req_body_size, "
                                 "resp_body_size, req_body_captured, resp_body_captured, "
                                 "req_truncated, resp_truncated, is_tls, bytes_up, bytes_down) "
                                 "VALUES (7, 0, 0, '', 'http', 'GET', 'a', 80, '/', 'HTTP/1.1', "
                                 "200, 0, 0, 0, 0, 0, 0, 0, 0, 0);"
                                 "INSERT INTO flows_4 SELECT * FROM flows_3;"
                                 "UPDATE flows_4 SET id = 9;"
                                 "INSERT INTO flow_bodies_4 VALUES (36, x'00');"
                                 "INSERT INTO flows_fts_4 (rowid, text) VALUES (9, 'a/longer');",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(query_int(db, "SELECT count(*) FROM flows"), 2);
    CU_ASSERT_EQUAL(query_int(db, "SELECT id FROM flows ORDER BY id DESC LIMIT 1"), 9);
    CU_ASSERT_EQUAL(query_int(db, "SELECT body_key FROM flow_bodies"), 36);
    /* Trigram: any substring of three characters or more, any case. */
    CU_ASSERT_EQUAL(query_int(db, "SELECT rowid FROM flows_fts_4 WHERE flows_fts_4 MATCH "
                                  "'\"LON\"'"),
                    9);
    /* ws_messages (schema version 10) is one table for every segment: the
     * messages of segment 3's flow 7 go with it, those of flow 9 stay. */
    CU_ASSERT_EQUAL(sqlite3_exec(db,
                                 "CREATE TABLE ws_messages (flow_id INTEGER NOT NULL, seq INTEGER "
                                 "NOT NULL, direction INTEGER NOT NULL, time_us INTEGER NOT NULL, "
                                 "opcode INTEGER NOT NULL, flags INTEGER NOT NULL, size INTEGER "
                                 "NOT NULL, data BLOB, PRIMARY KEY (flow_id, seq)) WITHOUT ROWID;"
                                 "INSERT INTO ws_messages VALUES (7, 0, 0, 0, 1, 0, 1, 'a'), "
                                 "(7, 1, 1, 0, 1, 0, 1, 'b'), (9, 0, 0, 0, 1, 0, 1, 'c');",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(query_int(db, "SELECT replay_of IS NULL FROM flows WHERE id = 7"), 1);
    CU_ASSERT_EQUAL(flowseg_drop_sql(3, 8, false, sql, sizeof(sql)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(sql, "secure_delete = FAST"));
    CU_ASSERT_EQUAL(sqlite3_exec(db, "PRAGMA secure_delete = ON", NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(query_int(db, "SELECT count(*) FROM sqlite_master WHERE name GLOB '*_3*'"), 0);
    CU_ASSERT_EQUAL(query_int(db, "SELECT group_concat(flow_id) FROM ws_messages"), 9);
    /* Only the drop went without overwriting: later deletes overwrite. */
    CU_ASSERT_EQUAL(query_int(db, "PRAGMA secure_delete"), 1);
    CU_ASSERT_EQUAL(query_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'flows_hdr_4'"),
                    1);
    views = flowseg_views_sql(&segs[1], 1);
    CU_ASSERT_EQUAL(sqlite3_exec(db, views, NULL, NULL, NULL), SQLITE_OK);
    free(views);
    CU_ASSERT_EQUAL(query_int(db, "SELECT count(*) FROM flows"), 1);
    sqlite3_close(db);
}

static void test_a_statement_too_long_for_the_buffer_is_refused(void)
{
    char sql[64];

    CU_ASSERT_EQUAL(flowseg_create_sql(1, sql, sizeof(sql)), -1);
    CU_ASSERT_EQUAL(flowseg_drop_sql(1, 2, true, sql, sizeof(sql)), -1);
    CU_ASSERT_PTR_NULL(flowseg_views_sql(NULL, 0));
}

static void test_a_segment_is_full_at_an_eighth_of_each_limit(void)
{
    struct flowseg cur = {.seg = 1, .created_us = 1000000};
    struct flowseg_limits count = {80, 0, 0};
    struct flowseg_limits size = {0, 8000, 0};
    struct flowseg_limits age = {0, 0, 80000000};

    CU_ASSERT_FALSE(flowseg_is_full(&cur, &count, 1000000)); /* empty never is */
    cur.written = 9;
    CU_ASSERT_FALSE(flowseg_is_full(&cur, &count, 1000000));
    cur.written = 10;
    CU_ASSERT_TRUE(flowseg_is_full(&cur, &count, 1000000));
    CU_ASSERT_FALSE(flowseg_is_full(&cur, &no_limits, 1000000));
    cur.bytes = 999;
    CU_ASSERT_FALSE(flowseg_is_full(&cur, &size, 1000000));
    cur.bytes = 1000;
    CU_ASSERT_TRUE(flowseg_is_full(&cur, &size, 1000000));
    CU_ASSERT_FALSE(flowseg_is_full(&cur, &age, 1000000 + 9999999));
    CU_ASSERT_TRUE(flowseg_is_full(&cur, &age, 1000000 + 10000000));
    /* --max-flows 1: a segment per flow. */
    count.max_flows = 1;
    cur.written = 1;
    CU_ASSERT_TRUE(flowseg_is_full(&cur, &count, 0));
}

static void test_the_oldest_goes_for_count_size_age_or_emptiness(void)
{
    struct flowseg segs[3] = {
        {.seg = 1, .flows = 10, .last_us = 5000000},
        {.seg = 2, .flows = 10, .last_us = 9000000},
        {.seg = 3, .flows = 5, .last_us = 9500000},
    };
    struct flowseg_limits count = {25, 0, 0};
    struct flowseg_limits size = {0, 1000, 0};
    struct flowseg_limits age = {0, 0, 4000000};

    CU_ASSERT_FALSE(flowseg_must_drop_oldest(segs, 3, 25, 0, 0, &count, 0));
    CU_ASSERT_TRUE(flowseg_must_drop_oldest(segs, 3, 25, 1, 0, &count, 0));
    CU_ASSERT_FALSE(flowseg_must_drop_oldest(segs, 3, 25, 0, 1000, &size, 0));
    CU_ASSERT_TRUE(flowseg_must_drop_oldest(segs, 3, 25, 0, 1001, &size, 0));
    /* Whole segments: segment 1's newest flow (5 s) must be past the age. */
    CU_ASSERT_FALSE(flowseg_must_drop_oldest(segs, 3, 25, 0, 0, &age, 9000000));
    CU_ASSERT_TRUE(flowseg_must_drop_oldest(segs, 3, 25, 0, 0, &age, 9000001));
    CU_ASSERT_FALSE(flowseg_must_drop_oldest(segs, 3, 25, 0, 0, &no_limits, 0));
    segs[0].flows = 0;
    CU_ASSERT_TRUE(flowseg_must_drop_oldest(segs, 3, 15, 0, 0, &no_limits, 0));
    /* The newest segment alone stays, whatever the limits. */
    CU_ASSERT_FALSE(flowseg_must_drop_oldest(&segs[2], 1, 5, 100, 1 << 30, &count, INT64_MAX));
}

int main(void)
{
    unsigned failures;
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("flowseg", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "segments_are_created_joined_and_dropped",
                     test_segments_are_created_joined_and_dropped) ||
        !CU_add_test(s, "a_statement_too_long_for_the_buffer_is_refused",
                     test_a_statement_too_long_for_the_buffer_is_refused) ||
        !CU_add_test(s, "a_segment_is_full_at_an_eighth_of_each_limit",
                     test_a_segment_is_full_at_an_eighth_of_each_limit) ||
        !CU_add_test(s, "the_oldest_goes_for_count_size_age_or_emptiness",
                     test_the_oldest_goes_for_count_size_age_or_emptiness)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
