/*
 * db: opening the SQLite database with WAL and applying the schema
 * migrations of sql/schema.sql (compiled into the binary), tracked by
 * PRAGMA user_version. Each module opens its own connection with db_open().
 */
#ifndef TAPWIRE_DB_H
#define TAPWIRE_DB_H

#include <stddef.h>
#include <sqlite3.h>

#define DB_FILE "tapwire.db"
#define DB_BUSY_TIMEOUT_MS 5000
#define DB_PAGE_SIZE 16384 /* bytes, for a new file (see db_open) */

/*
 * Opens (creating if needed) path, sets WAL and the busy timeout, and migrates
 * the schema to the newest version. Returns 0 and *out (close with
 * sqlite3_close()), or -1 with err filled in (e.g. "database is corrupt").
 */
int db_open(const char *path, sqlite3 **out, char *err, size_t err_len);

/*
 * Opens an existing database file read-only (SQLITE_OPEN_READONLY, never
 * created, never migrated) with the busy timeout, for readers that must not
 * change it (sqlconsole). Returns 0 and *out (close with sqlite3_close()),
 * or -1 with err filled in (a missing file, ":memory:").
 */
int db_open_readonly(const char *path, sqlite3 **out, char *err, size_t err_len);

#define DB_CHECK_BUDGET_MS 3000 /* start-up page check; a larger file is checked in part */

enum db_check_result {
    DB_CHECK_OK,         /* every page looked at was sound, or there is no file yet */
    DB_CHECK_UNFINISHED, /* the budget ran out before the end; nothing wrong so far */
    DB_CHECK_CORRUPT,    /* a bad page: err names the file and what to do */
};

/*
 * Runs SQLite's quick_check on path for at most budget_ms, before any
 * connection of this process has the file open (a corrupt page otherwise
 * shows itself only as every later flow failing). Never creates, repairs or
 * overwrites anything. Returns 0 (*result OK or UNFINISHED), or -1 with err
 * filled in (*result CORRUPT, or OK when the file could not be read at all).
 */
int db_check(const char *path, int budget_ms, enum db_check_result *result, char *err,
             size_t err_len);

/* The newest schema version this binary knows. */
int db_schema_version(void);

#endif
