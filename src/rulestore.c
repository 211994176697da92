/*
 * rulestore: the rules table. Every statement is prepared here; what a rule
 * means is rules.c's (rules_parse_stored(), rules_format_as_stored()).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "rulestore.h"

#include "errmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int db_fail(sqlite3 *db, char *err, size_t err_len, const char *what)
{
    errmsg_set(err, err_len, "rules database: %s: %s", what, sqlite3_errmsg(db));
    return RULESTORE_ERROR;
}

/* Runs one fixed statement (transaction control). */
static int run_sql(sqlite3 *db, const char *sql, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc = RULESTORE_ERROR;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        db_fail(db, err, err_len, sql);
        goto out;
    }
    if (sqlite3_step(stmt) != SQLITE_DONE) {
        db_fail(db, err, err_len, sql);
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(stmt);
    return rc;
}

static void rollback(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;

    if (sqlite3_get_autocommit(db))
        return; /* SQLite already rolled back (e.g. after SQLITE_FULL) */
    if (sqlite3_prepare_v2(db, "ROLLBACK", -1, &stmt, NULL) == SQLITE_OK)
        sqlite3_step(stmt);
    sqlite3_finalize(stmt);
}

void rulestore_rows_free(struct rulestore_row *rows, size_t count)
{
    for (size_t i = 0; rows != NULL && i < count; i++)
        free(rows[i].spec);
    free(rows);
}

int rulestore_list(sqlite3 *db, struct rulestore_row **rows, size_t *count, char *err,
                   size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    struct rulestore_row *list = NULL;
    size_t n = 0, cap = 0;
    int step;
    int rc = RULESTORE_ERROR;

    *rows = NULL;
    *count = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, position, enabled, spec, created_at FROM rules "
                           "ORDER BY position, id",
                           -1, &stmt, NULL) != SQLITE_OK) {
        db_fail(db, err, err_len, "listing rules");
        goto out;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const unsigned char *spec = sqlite3_column_text(stmt, 3);

        if (n == cap) {
            size_t grown_cap = cap == 0 ? 16 : cap * 2;
            struct rulestore_row *grown = realloc(list, grown_cap * sizeof(*grown));

            if (grown == NULL) {
                errmsg_set(err, err_len, "out of memory");
                goto out;
            }
            list = grown;
            cap = grown_cap;
        }
        list[n].id = sqlite3_column_int64(stmt, 0);
        list[n].position = sqlite3_column_int64(stmt, 1);
        list[n].is_enabled = sqlite3_column_int(stmt, 2) != 0;
        list[n].created_at = sqlite3_column_int64(stmt, 4);
        list[n].spec = strdup(spec != NULL ? (const char *)spec : "");
        if (list[n].spec == NULL) {
            errmsg_set(err, err_len, "out of memory");
            goto out;
        }
        n++;
    }
    if (step != SQLITE_DONE) {
        db_fail(db, err, err_len, "listing rules");
        goto out;
    }
    *rows = list;
    *count = n;
    list = NULL;
    rc = 0;
out:
    rulestore_rows_free(list, n);
    sqlite3_finalize(stmt);
    return rc;
}

/* rows[0..count) parsed one by one into parts[0..count), sets of one rule
 * each (the caller unrefs the ones set). */
static int parse_rows(const struct rulestore_row *rows, size_t count, struct rule_set **parts,
                      char *err, size_t err_len)
{
    for (size_t i = 0; i < count; i++) {
        char why[RULES_ERROR_BYTES];
        int rc = rules_parse_stored(rows[i].spec, rows[i].id, rows[i].is_enabled, &parts[i], why,
                                    sizeof(why));

        if (rc == -1) {
            errmsg_set(err, err_len, "rule #%lld in the database: %s", (long long)rows[i].id, why);
            return RULESTORE_INVALID;
        }
        if (rc != 0) {
            errmsg_set(err, err_len, "out of memory");
            return RULESTORE_ERROR;
        }
        if (i == RULES_MAX_RULES) {
            errmsg_set(err, err_len, "too many rules in the database");
            return RULESTORE_INVALID;
        }
    }
    return 0;
}

int rulestore_load(sqlite3 *db, struct rule_set **out, char *err, size_t err_len)
{
    struct rulestore_row *rows = NULL;
    struct rule_set **parts = NULL;
    size_t count = 0;
    int rc;

    *out = NULL;
    rc = rulestore_list(db, &rows, &count, err, err_len);
    if (rc != 0)
        goto out;
    parts = calloc(count > 0 ? count : 1, sizeof(*parts));
    if (parts == NULL) {
        errmsg_set(err, err_len, "out of memory");
        rc = RULESTORE_ERROR;
        goto out;
    }
    rc = parse_rows(rows, count, parts, err, err_len);
    if (rc != 0)
        goto out;
    /* The parts share their parsed rules with the new set. */
    *out = rules_set_concat(parts, count, err, err_len);
    rc = *out != NULL ? 0 : RULESTORE_ERROR;
out:
    for (size_t i = 0; parts != NULL && i < count; i++)
        rules_set_unref(parts[i]);
    free(parts);
    rulestore_rows_free(rows, count);
    return rc;
}

/* Validates spec and gives its canonical text for the table (without
 * "disabled": the enabled column says that). */
static int canonical_spec(const char *spec, bool *is_enabled, char **canon, char *err,
                          size_t err_len)
{
    struct rule_set *set = NULL;
    const struct rule *r;
    int rc;

    *canon = NULL;
    rc = rules_parse_stored(spec, 0, true, &set, err, err_len);
    if (rc != 0)
        return rc == -1 ? RULESTORE_INVALID : RULESTORE_ERROR;
    r = rules_set_get(set, 0);
    if (!r->is_enabled)
        *is_enabled = false;
    *canon = rules_format_as_stored(r);
    rules_set_unref(set);
    if (*canon == NULL) {
        errmsg_set(err, err_len, "out of memory");
        return RULESTORE_ERROR;
    }
    return 0;
}

static int insert_row(sqlite3 *db, int64_t position, bool is_enabled, const char *spec, int64_t *id,
                      char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc = RULESTORE_ERROR;

    if (sqlite3_prepare_v2(db,
                           "INSERT INTO rules (position, enabled, spec, created_at) "
                           "VALUES (?, ?, ?, ?)",
                           -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 1, position) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 2, is_enabled ? 1 : 0) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 3, spec, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, (int64_t)time(NULL)) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE) {
        db_fail(db, err, err_len, "adding a rule");
        goto out;
    }
    if (id != NULL)
        *id = sqlite3_last_insert_rowid(db);
    rc = 0;
out:
    sqlite3_finalize(stmt);
    return rc;
}

int rulestore_add(sqlite3 *db, const char *spec, bool is_enabled, int64_t *id, char *err,
                  size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    char *canon = NULL;
    bool in_txn = false;
    int64_t rows, next;
    int rc;

    rc = canonical_spec(spec, &is_enabled, &canon, err, err_len);
    if (rc != 0)
        goto out;
    rc = run_sql(db, "BEGIN IMMEDIATE", err, err_len);
    if (rc != 0)
        goto out;
    in_txn = true;
    rc = RULESTORE_ERROR;
    if (sqlite3_prepare_v2(db, "SELECT count(*), coalesce(max(position) + 1, 0) FROM rules", -1,
                           &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        db_fail(db, err, err_len, "adding a rule");
        goto out;
    }
    rows = sqlite3_column_int64(stmt, 0);
    next = sqlite3_column_int64(stmt, 1);
    if (rows >= RULES_MAX_RULES) {
        errmsg_set(err, err_len, "there are already %d rules", RULES_MAX_RULES);
        rc = RULESTORE_INVALID;
        goto out;
    }
    rc = insert_row(db, next, is_enabled, canon, id, err, err_len);
    if (rc != 0)
        goto out;
    rc = run_sql(db, "COMMIT", err, err_len);
    if (rc != 0)
        goto out;
    in_txn = false;
out:
    sqlite3_finalize(stmt);
    if (in_txn)
        rollback(db);
    free(canon);
    return rc;
}

/* Runs a one-row UPDATE or DELETE bound by the caller; NOT_FOUND when no
 * row had that id. */
static int change_row(sqlite3 *db, sqlite3_stmt *stmt, int64_t id, const char *what, char *err,
                      size_t err_len)
{
    if (sqlite3_step(stmt) != SQLITE_DONE)
        return db_fail(db, err, err_len, what);
    if (sqlite3_changes(db) == 0) {
        errmsg_set(err, err_len, "no rule #%lld", (long long)id);
        return RULESTORE_NOT_FOUND;
    }
    return 0;
}

int rulestore_update(sqlite3 *db, int64_t id, const char *spec, bool is_enabled, char *err,
                     size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    char *canon = NULL;
    int rc;

    rc = canonical_spec(spec, &is_enabled, &canon, err, err_len);
    if (rc != 0)
        goto out;
    if (sqlite3_prepare_v2(db, "UPDATE rules SET spec = ?, enabled = ? WHERE id = ?", -1, &stmt,
                           NULL) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 1, canon, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 2, is_enabled ? 1 : 0) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, id) != SQLITE_OK) {
        rc = db_fail(db, err, err_len, "updating a rule");
        goto out;
    }
    rc = change_row(db, stmt, id, "updating a rule", err, err_len);
out:
    sqlite3_finalize(stmt);
    free(canon);
    return rc;
}

int rulestore_delete(sqlite3 *db, int64_t id, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (sqlite3_prepare_v2(db, "DELETE FROM rules WHERE id = ?", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 1, id) != SQLITE_OK) {
        rc = db_fail(db, err, err_len, "deleting a rule");
        goto out;
    }
    rc = change_row(db, stmt, id, "deleting a rule", err, err_len);
out:
    sqlite3_finalize(stmt);
    return rc;
}

static int compare_ids(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int rulestore_reorder(sqlite3 *db, const int64_t *ids, size_t count, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int64_t *want = NULL, *have = NULL;
    size_t have_count = 0;
    bool in_txn = false;
    int step;
    int rc = RULESTORE_ERROR;

    if (count > RULES_MAX_RULES) {
        errmsg_set(err, err_len, "more than %d ids", RULES_MAX_RULES);
        rc = RULESTORE_INVALID;
        goto out;
    }
    want = malloc((count > 0 ? count : 1) * sizeof(*want));
    have = malloc((count > 0 ? count : 1) * sizeof(*have));
    if (want == NULL || have == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (count > 0)
        memcpy(want, ids, count * sizeof(*want));
    qsort(want, count, sizeof(*want), compare_ids);
    rc = run_sql(db, "BEGIN IMMEDIATE", err, err_len);
    if (rc != 0)
        goto out;
    in_txn = true;
    rc = RULESTORE_ERROR;
    if (sqlite3_prepare_v2(db, "SELECT id FROM rules ORDER BY id", -1, &stmt, NULL) != SQLITE_OK) {
        db_fail(db, err, err_len, "reordering rules");
        goto out;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (have_count == count) {
            have_count++; /* more rows than ids: caught below */
            break;
        }
        have[have_count++] = sqlite3_column_int64(stmt, 0);
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        db_fail(db, err, err_len, "reordering rules");
        goto out;
    }
    if (have_count != count || (count > 0 && memcmp(have, want, count * sizeof(*want)) != 0)) {
        errmsg_set(err, err_len, "the new order must list every rule exactly once");
        rc = RULESTORE_INVALID;
        goto out;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE rules SET position = ? WHERE id = ?", -1, &stmt, NULL) !=
        SQLITE_OK) {
        db_fail(db, err, err_len, "reordering rules");
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        if (sqlite3_bind_int64(stmt, 1, (int64_t)i) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 2, ids[i]) != SQLITE_OK || sqlite3_step(stmt) != SQLITE_DONE ||
            sqlite3_reset(stmt) != SQLITE_OK) {
            db_fail(db, err, err_len, "reordering rules");
            goto out;
        }
    }
    rc = run_sql(db, "COMMIT", err, err_len);
    if (rc != 0)
        goto out;
    in_txn = false;
out:
    sqlite3_finalize(stmt);
    if (in_txn)
        rollback(db);
    free(want);
    free(have);
    return rc;
}

int rulestore_replace_all(sqlite3 *db, const struct rule_set *set, char *err, size_t err_len)
{
    bool in_txn = false;
    char *canon = NULL;
    int rc;

    rc = run_sql(db, "BEGIN IMMEDIATE", err, err_len);
    if (rc != 0)
        goto out;
    in_txn = true;
    rc = run_sql(db, "DELETE FROM rules", err, err_len);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < rules_set_count(set); i++) {
        const struct rule *r = rules_set_get(set, i);

        canon = rules_format_as_stored(r);
        if (canon == NULL) {
            errmsg_set(err, err_len, "out of memory");
            rc = RULESTORE_ERROR;
            goto out;
        }
        rc = insert_row(db, (int64_t)i, r->is_enabled, canon, NULL, err, err_len);
        if (rc != 0)
            goto out;
        free(canon);
        canon = NULL;
    }
    rc = run_sql(db, "COMMIT", err, err_len);
    if (rc != 0)
        goto out;
    in_txn = false;
out:
    if (in_txn)
        rollback(db);
    free(canon);
    return rc;
}
