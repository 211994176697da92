/*
 * Unit tests for sqlconsole: a SELECT returns its rows and columns; every
 * write, ATTACH, a PRAGMA that sets something and load_extension() are
 * refused with SQLite's message and change nothing; only one statement runs;
 * the time limit interrupts a runaway query and the row limit truncates;
 * opening and closing the console never drops the writer's locks nor
 * creates a file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "clock.h"
#include "db.h"
#include "sqlconsole.h"
#include "testutil.h"

static char dir[64];
static char db_path[128];
static sqlite3 *writer;
static struct sqlconsole *console;

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, msg != NULL ? msg : "?");
    sqlite3_free(msg);
    CU_ASSERT_EQUAL_FATAL(rc, SQLITE_OK);
}

static void add_flow(int64_t id, const char *host, int status, int64_t duration_us)
{
    char sql[1024];

    snprintf(sql, sizeof(sql),
             "INSERT INTO flows_1 (id, kind, time_start_us, client, scheme, method, host, port, "
             "target, req_version, status, req_body_size, resp_body_size, req_body_captured, "
             "resp_body_captured, req_truncated, resp_truncated, is_tls, bytes_up, bytes_down, "
             "done_us, resp_body) VALUES (%lld, 0, 1000000, '127.0.0.1:1', 'https', 'GET', '%s', "
             "443, '/', 'HTTP/1.1', %d, 0, 3, 0, 3, 0, 0, 1, 10, 20, %lld, x'616263')",
             (long long)id, host, status, (long long)(1000000 + duration_us));
    exec_ok(writer, sql);
}

/* A database as tapwire makes it, with three flows, held open by a writer
 * connection the way the flow store holds it while the console runs. */
static void setup(void)
{
    char err[512] = "";

    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-sqlconsole.XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(db_path, sizeof(db_path), "%s/%s", dir, DB_FILE);
    CU_ASSERT_EQUAL_FATAL(db_open(db_path, &writer, err, sizeof(err)), 0);
    add_flow(1, "a.example", 200, 1000);
    add_flow(2, "b.example", 500, 250000);
    add_flow(3, "a.example", 404, 3000);
    if (sqlconsole_open(db_path, &console, err, sizeof(err)) != 0)
        fprintf(stderr, "sqlconsole_open: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(console);
}

static void teardown(void)
{
    sqlconsole_close(console);
    console = NULL;
    sqlite3_close(writer);
    writer = NULL;
    testutil_remove_dir(dir);
}

/* Runs sql expecting a refusal; returns whether err holds want. */
static bool is_refused_with(const char *sql, const char *want)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";
    int rc = sqlconsole_query(console, sql, &result, err, sizeof(err));

    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NULL(result);
    sqlconsole_result_free(result);
    if (strstr(err, want) == NULL)
        fprintf(stderr, "%s: got \"%s\", wanted \"%s\"\n", sql, err, want);
    return rc == -1 && strstr(err, want) != NULL;
}

static int64_t count_flows(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";
    int64_t n = -1;

    CU_ASSERT_EQUAL_FATAL(
        sqlconsole_query(console, "SELECT count(*) FROM flows", &result, err, sizeof(err)), 0);
    if (result->row_count == 1 && result->cells[0].type == SQLCONSOLE_INTEGER)
        n = result->cells[0].integer;
    sqlconsole_result_free(result);
    return n;
}

static void test_select_returns_rows_and_columns(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";

    CU_ASSERT_EQUAL_FATAL(sqlconsole_query(console,
                                           "SELECT id, host, status / 100.0 AS class, NULL, "
                                           "resp_body FROM flows ORDER BY id",
                                           &result, err, sizeof(err)),
                          0);
    CU_ASSERT_EQUAL_FATAL(result->column_count, 5);
    CU_ASSERT_STRING_EQUAL(result->columns[0], "id");
    CU_ASSERT_STRING_EQUAL(result->columns[2], "class");
    CU_ASSERT_EQUAL_FATAL(result->row_count, 3);
    CU_ASSERT_FALSE(result->is_truncated);
    CU_ASSERT_EQUAL(result->cells[0].type, SQLCONSOLE_INTEGER);
    CU_ASSERT_EQUAL(result->cells[0].integer, 1);
    CU_ASSERT_EQUAL(result->cells[1].type, SQLCONSOLE_TEXT);
    CU_ASSERT_STRING_EQUAL(result->cells[1].text, "a.example");
    CU_ASSERT_EQUAL(result->cells[2].type, SQLCONSOLE_REAL);
    CU_ASSERT_DOUBLE_EQUAL(result->cells[2].real, 2.0, 1e-9);
    CU_ASSERT_EQUAL(result->cells[3].type, SQLCONSOLE_NULL);
    /* A blob is its size, never its bytes. */
    CU_ASSERT_EQUAL(result->cells[4].type, SQLCONSOLE_BLOB);
    CU_ASSERT_STRING_EQUAL(result->cells[4].text, "<3 bytes>");
    CU_ASSERT_STRING_EQUAL(result->cells[5 + 1].text, "b.example");
    sqlconsole_result_free(result);
}

static void test_sees_flows_written_after_it_opened(void)
{
    CU_ASSERT_EQUAL(count_flows(), 3);
    add_flow(4, "c.example", 200, 10);
    CU_ASSERT_EQUAL(count_flows(), 4);
}

/* The search index (an FTS5 table) answers in the console too. */
static void test_search_index_can_be_queried(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";

    exec_ok(writer, "INSERT INTO flows_fts_1 (rowid, text) VALUES (2, 'b.example/search-me')");
    if (sqlconsole_query(console,
                         "SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH '\"ARC\" AND "
                         "\"H-M\"'",
                         &result, err, sizeof(err)) != 0)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(result);
    CU_ASSERT_EQUAL_FATAL(result->row_count, 1);
    CU_ASSERT_EQUAL(result->cells[0].integer, 2);
    sqlconsole_result_free(result);
}

static void test_writes_are_refused(void)
{
    /* flows is a view over the segment tables flows_N (schema version 10);
     * the tables are what a write would reach. */
    CU_ASSERT_TRUE(is_refused_with("INSERT INTO flows_1 (id) VALUES (9)", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("UPDATE flows_1 SET host = 'x'", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("DELETE FROM flows_1", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("DELETE FROM flows", "cannot modify"));
    CU_ASSERT_TRUE(is_refused_with("DROP VIEW flows", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("UPDATE sqlite_master SET type = 'x'", "may not be modified"));
    CU_ASSERT_TRUE(is_refused_with("DROP TABLE flows_fts_1", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("CREATE TABLE t (x)", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("CREATE TEMP TABLE t (x)", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("DROP TABLE flows_1", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("DROP INDEX flows_1_host", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("REPLACE INTO flow_ids VALUES (1)", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("BEGIN IMMEDIATE", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("VACUUM", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("VACUUM INTO '/tmp/x.db'", "not authorized"));
    CU_ASSERT_EQUAL(count_flows(), 3);
}

static void test_attach_is_refused_and_makes_no_file(void)
{
    char other[192];
    char sql[256];
    struct stat st;

    snprintf(other, sizeof(other), "%s/other.db", dir);
    snprintf(sql, sizeof(sql), "ATTACH DATABASE '%s' AS other", other);
    CU_ASSERT_TRUE(is_refused_with(sql, "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("DETACH DATABASE main", "not authorized"));
    CU_ASSERT_TRUE(stat(other, &st) != 0);
}

static void test_pragma_writes_are_refused_and_reads_allowed(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";
    int version = 0;
    sqlite3_stmt *stmt = NULL;

    CU_ASSERT_TRUE(is_refused_with("PRAGMA user_version = 5", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("PRAGMA main.user_version = 5", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("PRAGMA journal_mode = DELETE", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("PRAGMA query_only = 0", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("PRAGMA writable_schema = 1", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("PRAGMA wal_checkpoint(TRUNCATE)", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("PRAGMA integrity_check", "not authorized"));

    CU_ASSERT_EQUAL_FATAL(
        sqlconsole_query(console, "PRAGMA table_info(flows)", &result, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(result->row_count > 40); /* one row per column of flows */
    CU_ASSERT_STRING_EQUAL(result->columns[1], "name");
    CU_ASSERT_STRING_EQUAL(result->cells[1].text, "id");
    sqlconsole_result_free(result);
    result = NULL;
    CU_ASSERT_EQUAL_FATAL(
        sqlconsole_query(console, "PRAGMA user_version", &result, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(result->cells[0].integer, db_schema_version());
    sqlconsole_result_free(result);

    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(writer, "PRAGMA user_version", -1, &stmt, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(stmt), SQLITE_ROW);
    version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    CU_ASSERT_EQUAL(version, db_schema_version());
}

static void test_load_extension_is_refused(void)
{
    CU_ASSERT_TRUE(is_refused_with("SELECT load_extension('/nonexistent/x.so')", "not authorized"));
    CU_ASSERT_TRUE(is_refused_with("SELECT LOAD_EXTENSION('x')", "not authorized"));
}

static void test_only_one_statement_runs(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";

    CU_ASSERT_TRUE(is_refused_with("SELECT 1; SELECT 2", "only one statement"));
    CU_ASSERT_TRUE(is_refused_with("SELECT 1; DELETE FROM flows", "only one statement"));
    CU_ASSERT_TRUE(is_refused_with("SELECT 1;; SELECT 2", "only one statement"));
    CU_ASSERT_TRUE(is_refused_with("", "empty"));
    CU_ASSERT_TRUE(is_refused_with("SELEC 1", "syntax error"));
    CU_ASSERT_TRUE(is_refused_with("SELECT * FROM missing_table", "no such table: missing_table"));
    /* A trailing semicolon and comment are not a statement. */
    CU_ASSERT_EQUAL(sqlconsole_query(console, "SELECT 1; -- done\n ;", &result, err, sizeof(err)),
                    0);
    sqlconsole_result_free(result);
    CU_ASSERT_EQUAL(count_flows(), 3);
}

static void test_time_limit_interrupts_a_runaway_query(void)
{
    int64_t start = clock_mono_ms();
    int64_t took;

    CU_ASSERT_TRUE(
        is_refused_with("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                        "SELECT count(*) FROM n",
                        "interrupted after 2000 ms"));
    took = clock_mono_ms() - start;
    CU_ASSERT_TRUE(took >= SQLCONSOLE_TIME_LIMIT_MS);
    CU_ASSERT_TRUE(took < SQLCONSOLE_TIME_LIMIT_MS + 1500);
    /* The console works again at once. */
    CU_ASSERT_EQUAL(count_flows(), 3);
}

static void *run_runaway(void *arg)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES];

    *(int *)arg = sqlconsole_query(console,
                                   "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                                   "FROM n) SELECT count(*) FROM n",
                                   &result, err, sizeof(err));
    sqlconsole_result_free(result);
    return NULL;
}

static void test_a_query_behind_a_slow_one_is_told_busy(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";
    pthread_t slow;
    int slow_rc = 0;
    int64_t start;
    int rc;

    CU_ASSERT_FATAL(pthread_create(&slow, NULL, run_runaway, &slow_rc) == 0);
    usleep(200 * 1000); /* the slow one holds the console until its limit */
    start = clock_mono_ms();
    rc = sqlconsole_query(console, "SELECT 1", &result, err, sizeof(err));
    CU_ASSERT_EQUAL(rc, SQLCONSOLE_BUSY);
    CU_ASSERT_PTR_NULL(result);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "busy"));
    CU_ASSERT_TRUE(clock_mono_ms() - start >= SQLCONSOLE_WAIT_MS - 50);
    CU_ASSERT_TRUE(clock_mono_ms() - start < SQLCONSOLE_TIME_LIMIT_MS);
    pthread_join(slow, NULL);
    CU_ASSERT_EQUAL(slow_rc, -1); /* interrupted at its own limit */
    sqlconsole_result_free(result);
    CU_ASSERT_EQUAL(count_flows(), 3); /* and then the console answers again */
}

static void test_row_limit_truncates(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";

    CU_ASSERT_EQUAL_FATAL(
        sqlconsole_query(console,
                         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                         "WHERE i < 5000) SELECT i FROM n",
                         &result, err, sizeof(err)),
        0);
    CU_ASSERT_EQUAL(result->row_count, SQLCONSOLE_MAX_ROWS);
    CU_ASSERT_TRUE(result->is_truncated);
    CU_ASSERT_EQUAL(result->cells[SQLCONSOLE_MAX_ROWS - 1].integer, SQLCONSOLE_MAX_ROWS);
    sqlconsole_result_free(result);
    result = NULL;
    /* Exactly the limit is not truncated. */
    CU_ASSERT_EQUAL_FATAL(
        sqlconsole_query(console,
                         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                         "WHERE i < 1000) SELECT i FROM n",
                         &result, err, sizeof(err)),
        0);
    CU_ASSERT_EQUAL(result->row_count, SQLCONSOLE_MAX_ROWS);
    CU_ASSERT_FALSE(result->is_truncated);
    sqlconsole_result_free(result);
}

static void test_long_text_is_cut_at_a_character(void)
{
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";

    /* "é" is two bytes: an odd cut would split one. */
    CU_ASSERT_EQUAL_FATAL(sqlconsole_query(console,
                                           "SELECT 'x' || replace(hex(zeroblob(2500)), '0', 'é')",
                                           &result, err, sizeof(err)),
                          0);
    CU_ASSERT_TRUE(result->cells[0].is_cut);
    CU_ASSERT_EQUAL(result->cells[0].text_len, SQLCONSOLE_MAX_CELL_BYTES - 1);
    sqlconsole_result_free(result);
}

static void test_examples_run(void)
{
    const struct sqlconsole_example *ex;
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";

    for (ex = sqlconsole_examples; ex->name != NULL; ex++) {
        if (sqlconsole_query(console, ex->sql, &result, err, sizeof(err)) != 0)
            fprintf(stderr, "%s: %s\n", ex->name, err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(result);
        CU_ASSERT_TRUE(result->row_count >= 2);
        sqlconsole_result_free(result);
        result = NULL;
    }
    /* The slowest host first. */
    CU_ASSERT_EQUAL_FATAL(
        sqlconsole_query(console, sqlconsole_examples[0].sql, &result, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(result->cells[0].text, "b.example");
    sqlconsole_result_free(result);
}

static void test_closing_keeps_the_writers_locks_and_makes_no_file(void)
{
    struct sqlconsole *missing = NULL;
    char other[192];
    char err[512] = "";
    struct stat st;

    sqlconsole_close(console);
    console = NULL;
    CU_ASSERT_TRUE(testutil_other_process_sees_a_lock(db_path));

    snprintf(other, sizeof(other), "%s/missing.db", dir);
    CU_ASSERT_EQUAL(sqlconsole_open(other, &missing, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(missing);
    CU_ASSERT_TRUE(stat(other, &st) != 0);
    CU_ASSERT_EQUAL(sqlconsole_open(":memory:", &missing, err, sizeof(err)), -1);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("sqlconsole", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "select_returns_rows_and_columns",
                     test_select_returns_rows_and_columns) ||
        !CU_add_test(suite, "sees_flows_written_after_it_opened",
                     test_sees_flows_written_after_it_opened) ||
        !CU_add_test(suite, "writes_are_refused", test_writes_are_refused) ||
        !CU_add_test(suite, "search_index_can_be_queried", test_search_index_can_be_queried) ||
        !CU_add_test(suite, "attach_is_refused_and_makes_no_file",
                     test_attach_is_refused_and_makes_no_file) ||
        !CU_add_test(suite, "pragma_writes_are_refused_and_reads_allowed",
                     test_pragma_writes_are_refused_and_reads_allowed) ||
        !CU_add_test(suite, "load_extension_is_refused", test_load_extension_is_refused) ||
        !CU_add_test(suite, "only_one_statement_runs", test_only_one_statement_runs) ||
        !CU_add_test(suite, "time_limit_interrupts_a_runaway_query",
                     test_time_limit_interrupts_a_runaway_query) ||
        !CU_add_test(suite, "row_limit_truncates", test_row_limit_truncates) ||
        !CU_add_test(suite, "a_query_behind_a_slow_one_is_told_busy",
                     test_a_query_behind_a_slow_one_is_told_busy) ||
        !CU_add_test(suite, "long_text_is_cut_at_a_character",
                     test_long_text_is_cut_at_a_character) ||
        !CU_add_test(suite, "examples_run", test_examples_run) ||
        !CU_add_test(suite, "closing_keeps_the_writers_locks_and_makes_no_file",
                     test_closing_keeps_the_writers_locks_and_makes_no_file))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
