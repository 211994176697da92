/*
 * rulestore: rewrite rules kept in the rules table (schema version 3) for
 * the dashboard.
 *
 * The connection comes from db_open(); the caller serialises use of one
 * connection (rulebook does). Rules are stored as their canonical line
 * (rules_format_as_stored()), the enabled flag in its own column, and
 * re-parsed by rules.c when loaded, so the parser is the only place that
 * knows what a rule means and this module the only one that knows the SQL.
 * Return values: 0, or one of these with err filled for a person:
 */
#ifndef TAPWIRE_RULESTORE_H
#define TAPWIRE_RULESTORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rules.h"

#define RULESTORE_ERROR (-1)     /* database failure (HTTP 500) */
#define RULESTORE_INVALID (-2)   /* bad spec, ids or too many rules (HTTP 400) */
#define RULESTORE_NOT_FOUND (-3) /* no rule with that id (HTTP 404) */

struct rulestore_row {
    int64_t id;
    int64_t position;
    bool is_enabled;
    char *spec;         /* owned */
    int64_t created_at; /* unix seconds */
};

/* All rows in order. Free with rulestore_rows_free(). */
int rulestore_list(sqlite3 *db, struct rulestore_row **rows, size_t *count, char *err,
                   size_t err_len);
void rulestore_rows_free(struct rulestore_row *rows, size_t count);

/* All enabled and disabled rules in order as a set (labels "#ID" unless
 * named). A row that no longer parses fails the load, naming the row. */
int rulestore_load(sqlite3 *db, struct rule_set **out, char *err, size_t err_len);

/* Appends a rule; a spec with "disabled" is stored disabled whatever
 * is_enabled says. *id (may be NULL) gets the new row id. */
int rulestore_add(sqlite3 *db, const char *spec, bool is_enabled, int64_t *id, char *err,
                  size_t err_len);
/* Replaces the spec and the enabled flag of rule id. */
int rulestore_update(sqlite3 *db, int64_t id, const char *spec, bool is_enabled, char *err,
                     size_t err_len);
int rulestore_delete(sqlite3 *db, int64_t id, char *err, size_t err_len);
/* ids[0..count) must name every rule exactly once: the new order. */
int rulestore_reorder(sqlite3 *db, const int64_t *ids, size_t count, char *err, size_t err_len);
/* Replaces every row with the rules of set, in its order, in one
 * transaction (e.g. importing a file). */
int rulestore_replace_all(sqlite3 *db, const struct rule_set *set, char *err, size_t err_len);

#endif
