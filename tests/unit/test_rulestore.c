/*
 * Unit tests for rulestore: rules kept in the rules table survive a reopen
 * in order with their flags, bad specs and ids are refused with a message,
 * and a stored row that no longer parses is named when loading.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "rules.h"
#include "rulestore.h"
#include "testutil.h"

static char err[RULES_ERROR_BYTES];
static char dir[64];

static struct rule_set *parse_ok(const char *text)
{
    struct rule_set *set = NULL;
    int rc = rules_parse_text(text, strlen(text), "t.rules", &set, err, sizeof(err));

    if (rc != 0)
        fprintf(stderr, "\nunexpected parse error: %s\n  in: %s\n", err, text);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(set);
    return set;
}

/* ---- the rules table ---- */

static sqlite3 *open_db(const char *name)
{
    char path[160];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (db_open(path, &db, err, sizeof(err)) != 0)
        fprintf(stderr, "\ndb_open: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    return db;
}

static char *format_all(const struct rule_set *set)
{
    size_t len = 1;
    char *all = calloc(1, 1);

    for (size_t i = 0; i < rules_set_count(set); i++) {
        char *line = rules_format(rules_set_get(set, i));
        char *grown = realloc(all, len + strlen(line) + 1);

        CU_ASSERT_PTR_NOT_NULL_FATAL(grown);
        all = grown;
        strcat(all, line);
        strcat(all, "\n");
        len += strlen(line) + 1;
        free(line);
    }
    return all;
}

static void test_db_round_trip_survives_reopen(void)
{
    sqlite3 *db = open_db("a.db");
    struct rule_set *set = NULL;
    int64_t ids[3];
    char *text;

    CU_ASSERT_EQUAL(rulestore_add(db,
                                  "request url host=www.google.com 'q=cybersecurity' "
                                  "'q=SEED+Labs'",
                                  true, &ids[0], err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(rulestore_add(db,
                                  "response body name=dom type=text/html 'Example Domain' "
                                  "\"Tapwire\\tDomain\"",
                                  true, &ids[1], err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(
        rulestore_add(db, "request header Cookie remove", false, &ids[2], err, sizeof(err)), 0);
    sqlite3_close(db);

    db = open_db("a.db");
    CU_ASSERT_EQUAL_FATAL(rulestore_load(db, &set, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rules_set_count(set), 3);
    text = format_all(set);
    CU_ASSERT_STRING_EQUAL(text, "request url host=www.google.com 'q=cybersecurity' "
                                 "'q=SEED+Labs'\n"
                                 "response body name=dom type=text/html 'Example Domain' "
                                 "\"Tapwire\\tDomain\"\n"
                                 "request header Cookie remove disabled\n");
    CU_ASSERT_EQUAL(rules_set_get(set, 0)->id, ids[0]);
    CU_ASSERT_STRING_EQUAL(rules_set_get(set, 1)->label, "dom");
    {
        char want[32];

        snprintf(want, sizeof(want), "#%lld", (long long)ids[0]);
        CU_ASSERT_STRING_EQUAL(rules_set_get(set, 0)->label, want);
    }
    CU_ASSERT_FALSE(rules_set_get(set, 2)->is_enabled);
    free(text);
    rules_set_unref(set);
    sqlite3_close(db);
}

static void test_db_add_rejects_bad_spec_with_message(void)
{
    sqlite3 *db = open_db("b.db");
    struct rulestore_row *rows = NULL;
    size_t count = 9;

    CU_ASSERT_EQUAL(rulestore_add(db, "request url regex '(' x", true, NULL, err, sizeof(err)),
                    RULESTORE_INVALID);
    CU_ASSERT_STRING_EQUAL(err, "column 21: regex error: missing closing parenthesis");
    CU_ASSERT_EQUAL(rulestore_add(db, "", true, NULL, err, sizeof(err)), RULESTORE_INVALID);
    CU_ASSERT_EQUAL(rulestore_list(db, &rows, &count, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(count, 0);
    rulestore_rows_free(rows, count);
    sqlite3_close(db);
}

static void test_db_update_and_delete(void)
{
    sqlite3 *db = open_db("c.db");
    struct rulestore_row *rows = NULL;
    size_t count = 0;
    int64_t id;

    CU_ASSERT_EQUAL_FATAL(rulestore_add(db, "request url a b", true, &id, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rulestore_update(db, id, "request url a c disabled", true, err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(rulestore_list(db, &rows, &count, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(count, 1);
    CU_ASSERT_STRING_EQUAL(rows[0].spec, "request url 'a' 'c'");
    CU_ASSERT_FALSE(rows[0].is_enabled);
    CU_ASSERT_TRUE(rows[0].created_at > 0);
    rulestore_rows_free(rows, count);

    CU_ASSERT_EQUAL(rulestore_update(db, id, "request url a", true, err, sizeof(err)),
                    RULESTORE_INVALID);
    CU_ASSERT_EQUAL(rulestore_update(db, id + 100, "request url a b", true, err, sizeof(err)),
                    RULESTORE_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no rule #"));
    CU_ASSERT_EQUAL(rulestore_delete(db, id, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rulestore_delete(db, id, err, sizeof(err)), RULESTORE_NOT_FOUND);
    sqlite3_close(db);
}

static void test_db_reorder_requires_every_id_once(void)
{
    sqlite3 *db = open_db("d.db");
    struct rule_set *set = NULL;
    int64_t ids[3];
    char *text;

    for (int i = 0; i < 3; i++) {
        char spec[64];

        snprintf(spec, sizeof(spec), "request url name=r%d a b", i);
        CU_ASSERT_EQUAL_FATAL(rulestore_add(db, spec, true, &ids[i], err, sizeof(err)), 0);
    }
    {
        int64_t missing[] = {ids[2], ids[0]};
        int64_t twice[] = {ids[2], ids[0], ids[0]};
        int64_t order[] = {ids[2], ids[0], ids[1]};

        CU_ASSERT_EQUAL(rulestore_reorder(db, missing, 2, err, sizeof(err)), RULESTORE_INVALID);
        CU_ASSERT_STRING_EQUAL(err, "the new order must list every rule exactly once");
        CU_ASSERT_EQUAL(rulestore_reorder(db, twice, 3, err, sizeof(err)), RULESTORE_INVALID);
        CU_ASSERT_EQUAL(rulestore_reorder(db, order, 3, err, sizeof(err)), 0);
    }
    CU_ASSERT_EQUAL_FATAL(rulestore_load(db, &set, err, sizeof(err)), 0);
    text = format_all(set);
    CU_ASSERT_STRING_EQUAL(text, "request url name=r2 'a' 'b'\nrequest url name=r0 'a' 'b'\n"
                                 "request url name=r1 'a' 'b'\n");
    free(text);
    rules_set_unref(set);
    sqlite3_close(db);
}

static void test_db_replace_all_keeps_order_and_flags(void)
{
    sqlite3 *db = open_db("e.db");
    struct rule_set *file = parse_ok("request url a b\nresponse body disabled x y\n");
    struct rule_set *set = NULL;
    char *want, *got;

    CU_ASSERT_EQUAL_FATAL(rulestore_add(db, "request url old new", true, NULL, err, sizeof(err)),
                          0);
    CU_ASSERT_EQUAL(rulestore_replace_all(db, file, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rulestore_load(db, &set, err, sizeof(err)), 0);
    want = format_all(file);
    got = format_all(set);
    CU_ASSERT_STRING_EQUAL(got, want);
    free(want);
    free(got);
    rules_set_unref(set);
    rules_set_unref(file);
    sqlite3_close(db);
}

static void test_db_load_names_a_row_that_no_longer_parses(void)
{
    sqlite3 *db = open_db("f.db");
    struct rule_set *set = NULL;
    sqlite3_stmt *stmt = NULL;

    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "INSERT INTO rules (id, position, enabled, spec, "
                                             "created_at) VALUES (7, 0, 1, 'request bdy a b', 0)",
                                             -1, &stmt, NULL),
                          SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    CU_ASSERT_EQUAL(rulestore_load(db, &set, err, sizeof(err)), RULESTORE_INVALID);
    CU_ASSERT_PTR_NULL(set);
    CU_ASSERT_STRING_EQUAL(err, "rule #7 in the database: column 9: unknown target 'bdy' "
                                "(expected url, header, body, mock, map-local, block or "
                                "map-remote)");
    sqlite3_close(db);
}

/* ---- runner ---- */

static void remove_dir(void)
{
    const char *names[] = {"a.db", "b.db", "c.db", "d.db", "e.db", "f.db"};
    const char *suffixes[] = {"", "-wal", "-shm"};
    char path[200];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (size_t k = 0; k < 3; k++) {
            snprintf(path, sizeof(path), "%s/%s%s", dir, names[i], suffixes[k]);
            unlink(path);
        }
    }
    rmdir(dir);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-rulestore-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

static void teardown(void)
{
    remove_dir();
}

/* Registers fn under its name without the "test_" prefix. */
#define ADD(suite, fn) (CU_add_test(suite, #fn + 5, fn) != NULL)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("rulestore", NULL, NULL, setup, teardown);
    if (suite == NULL || !ADD(suite, test_db_round_trip_survives_reopen) ||
        !ADD(suite, test_db_add_rejects_bad_spec_with_message) ||
        !ADD(suite, test_db_update_and_delete) ||
        !ADD(suite, test_db_reorder_requires_every_id_once) ||
        !ADD(suite, test_db_replace_all_keeps_order_and_flags) ||
        !ADD(suite, test_db_load_names_a_row_that_no_longer_parses))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
