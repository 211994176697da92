/*
 * Unit tests for db and instancelock: opening one more connection never
 * drops the locks of the connections already open (else an outside reader
 * deletes the WAL under tapwire), the start-up check finds a corrupt page
 * and leaves the file as it was, stops at its time budget, and makes no
 * file; a second lock on one lock file is refused with the holder's PID.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "instancelock.h"
#include "testutil.h"

static char dir[64];
static char db_path[128];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-db.XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(db_path, sizeof(db_path), "%s/%s", dir, DB_FILE);
}

static void teardown(void)
{
    testutil_remove_dir(dir);
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, msg != NULL ? msg : "?");
    sqlite3_free(msg);
    CU_ASSERT_EQUAL_FATAL(rc, SQLITE_OK);
}

/* A database made by db_open with a table of rows spread over many pages;
 * returns the table's root page. */
static int make_filled_db(int rows)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    char err[512] = "", sql[160];
    int root = 0;

    CU_ASSERT_EQUAL_FATAL(db_open(db_path, &db, err, sizeof(err)), 0);
    exec_ok(db, "CREATE TABLE filler(id INTEGER PRIMARY KEY, data BLOB)");
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
             "INSERT INTO filler(data) SELECT randomblob(300) FROM n",
             rows);
    exec_ok(db, sql);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "SELECT rootpage FROM sqlite_master "
                                             "WHERE name = 'filler'",
                                             -1, &stmt, NULL),
                          SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        root = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK); /* the last one: checkpoints the WAL */
    CU_ASSERT_FATAL(root > 1);
    return root;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *data = NULL;
    long size;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        data = malloc((size_t)size);
        if (data != NULL && fread(data, 1, (size_t)size, f) != (size_t)size) {
            free(data);
            data = NULL;
        }
        *len = (size_t)size;
    }
    fclose(f);
    return data;
}

static void test_opening_a_connection_keeps_the_others_locks(void)
{
    sqlite3 *first = NULL, *second = NULL;
    char err[512] = "";

    CU_ASSERT_EQUAL_FATAL(db_open(db_path, &first, err, sizeof(err)), 0);
    /* A connection in WAL mode holds a shared lock on the database file for
     * its life: that lock tells an outside reader it is not the last user. */
    CU_ASSERT_FATAL(testutil_other_process_sees_a_lock(db_path));
    CU_ASSERT_EQUAL_FATAL(db_open(db_path, &second, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(sqlite3_close(second), SQLITE_OK);
    CU_ASSERT_TRUE(testutil_other_process_sees_a_lock(db_path));
    CU_ASSERT_EQUAL(sqlite3_close(first), SQLITE_OK);
}

static void test_new_database_file_is_private(void)
{
    sqlite3 *db = NULL;
    char err[512] = "";
    struct stat st;
    mode_t old = umask(0);

    CU_ASSERT_EQUAL_FATAL(db_open(db_path, &db, err, sizeof(err)), 0);
    umask(old);
    CU_ASSERT_EQUAL_FATAL(stat(db_path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    sqlite3_close(db);
}

static void test_check_passes_a_sound_database(void)
{
    enum db_check_result result = DB_CHECK_CORRUPT;
    char err[512] = "";

    make_filled_db(100);
    CU_ASSERT_EQUAL(db_check(db_path, 10000, &result, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(result, DB_CHECK_OK);
}

static void test_check_finds_a_corrupt_page_and_leaves_the_file(void)
{
    enum db_check_result result = DB_CHECK_OK;
    unsigned char *before, *after;
    size_t before_len = 0, after_len = 0;
    char err[512] = "";
    unsigned char junk[64];
    int root = make_filled_db(2000);
    FILE *f = fopen(db_path, "r+b");

    CU_ASSERT_FATAL(f != NULL);
    memset(junk, 0x99, sizeof(junk));
    CU_ASSERT_EQUAL(fseek(f, (long)(root - 1) * DB_PAGE_SIZE, SEEK_SET), 0);
    CU_ASSERT_EQUAL(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
    fclose(f);
    before = read_file(db_path, &before_len);
    CU_ASSERT_FATAL(before != NULL);

    CU_ASSERT_EQUAL(db_check(db_path, 10000, &result, err, sizeof(err)), -1);
    CU_ASSERT_EQUAL(result, DB_CHECK_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, db_path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "corrupt"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "move it away"));
    after = read_file(db_path, &after_len);
    CU_ASSERT_FATAL(after != NULL);
    CU_ASSERT_EQUAL(after_len, before_len);
    CU_ASSERT_EQUAL(memcmp(before, after, before_len), 0);
    free(before);
    free(after);
}

static void test_check_stops_at_its_budget(void)
{
    enum db_check_result result = DB_CHECK_CORRUPT;
    char err[512] = "";

    make_filled_db(20000);
    CU_ASSERT_EQUAL(db_check(db_path, 0, &result, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(result, DB_CHECK_UNFINISHED);
}

static void test_check_of_a_missing_file_makes_none(void)
{
    enum db_check_result result = DB_CHECK_CORRUPT;
    char err[512] = "";
    struct stat st;

    CU_ASSERT_EQUAL(db_check(db_path, 1000, &result, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(result, DB_CHECK_OK);
    CU_ASSERT_NOT_EQUAL(stat(db_path, &st), 0);
}

static void test_second_lock_is_refused_with_the_holders_pid(void)
{
    struct instancelock *first = NULL, *second = NULL;
    char path[192], err[512] = "", pid[32];
    pid_t child;
    int status = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, INSTANCELOCK_FILE);
    CU_ASSERT_EQUAL_FATAL(instancelock_acquire(path, &first, err, sizeof(err)), 0);
    /* flock(2) locks belong to the open file: even this process is refused
     * a second one, as another process would be. */
    CU_ASSERT_EQUAL(instancelock_acquire(path, &second, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(second);
    snprintf(pid, sizeof(pid), "PID %ld", (long)getpid());
    CU_ASSERT_PTR_NOT_NULL(strstr(err, pid));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));

    child = fork();
    CU_ASSERT_FATAL(child >= 0);
    if (child == 0) {
        struct instancelock *other = NULL;
        char child_err[512];

        _exit(instancelock_acquire(path, &other, child_err, sizeof(child_err)) == -1 ? 0 : 1);
    }
    CU_ASSERT_FATAL(waitpid(child, &status, 0) == child);
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    instancelock_release(first);
    CU_ASSERT_EQUAL(instancelock_acquire(path, &second, err, sizeof(err)), 0);
    instancelock_release(second);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("db", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "opening_a_connection_keeps_the_others_locks",
                     test_opening_a_connection_keeps_the_others_locks) ||
        !CU_add_test(suite, "new_database_file_is_private", test_new_database_file_is_private) ||
        !CU_add_test(suite, "check_passes_a_sound_database", test_check_passes_a_sound_database) ||
        !CU_add_test(suite, "check_finds_a_corrupt_page_and_leaves_the_file",
                     test_check_finds_a_corrupt_page_and_leaves_the_file) ||
        !CU_add_test(suite, "check_stops_at_its_budget", test_check_stops_at_its_budget) ||
        !CU_add_test(suite, "check_of_a_missing_file_makes_none",
                     test_check_of_a_missing_file_makes_none))
        goto fail;
    suite = CU_add_suite_with_setup_and_teardown("instancelock", NULL, NULL, setup, teardown);
    if (suite == NULL || !CU_add_test(suite, "second_lock_is_refused_with_the_holders_pid",
                                      test_second_lock_is_refused_with_the_holders_pid))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
