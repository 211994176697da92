/*
 * sqlconsole: one SQL statement at a time from the dashboard's user, run on
 * a connection of its own that can only read (tapwire-db(5) documents the
 * schema the statements are written against).
 *
 * The connection is opened read-only (db_open_readonly()), with PRAGMA
 * query_only, extensions off, no ATTACH, and an authorizer that allows
 * reading and nothing else: each layer alone refuses writes, together they
 * also refuse what reads files or loads code. A statement runs for at most
 * SQLCONSOLE_TIME_LIMIT_MS and returns at most SQLCONSOLE_MAX_ROWS rows of
 * bounded cells. It must never share the flow writer's connection, nor
 * leave a read transaction open between queries (the WAL could not be
 * checkpointed past it).
 * Thread safety: sqlconsole_query() may be called from any thread; the
 * queries of one console run one after the other under its mutex.
 */
#ifndef TAPWIRE_SQLCONSOLE_H
#define TAPWIRE_SQLCONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SQLCONSOLE_TIME_LIMIT_MS 2000
/* A query waits this long for the one before it, then gets SQLCONSOLE_BUSY:
 * slow queries sent together must not hold the dashboard's connections. */
#define SQLCONSOLE_WAIT_MS (SQLCONSOLE_TIME_LIMIT_MS / 2)
#define SQLCONSOLE_BUSY (-2)
#define SQLCONSOLE_MAX_ROWS 1000
#define SQLCONSOLE_MAX_SQL_BYTES 16384
/* A cell's text beyond this is cut (at a UTF-8 boundary), the cell marked. */
#define SQLCONSOLE_MAX_CELL_BYTES 4096
/* The cells of one result together; past it the rows stop, as truncated. */
#define SQLCONSOLE_MAX_RESULT_BYTES (4 * 1024 * 1024)
/* No value a statement makes or reads may be larger (SQLITE_LIMIT_LENGTH):
 * bounds what one cell costs before it is cut. */
#define SQLCONSOLE_MAX_VALUE_BYTES (64 * 1024 * 1024)
#define SQLCONSOLE_ERROR_BYTES 512

enum sqlconsole_type {
    SQLCONSOLE_NULL,
    SQLCONSOLE_INTEGER,
    SQLCONSOLE_REAL,
    SQLCONSOLE_TEXT,
    SQLCONSOLE_BLOB, /* text is "<N bytes>": bytes are never sent, only their count */
};

struct sqlconsole_cell {
    enum sqlconsole_type type;
    int64_t integer;
    double real;
    char *text; /* TEXT (maybe cut, maybe not UTF-8) and BLOB; NULL otherwise */
    size_t text_len;
    bool is_cut; /* the text was longer than SQLCONSOLE_MAX_CELL_BYTES */
};

struct sqlconsole_result {
    size_t column_count;
    char **columns; /* column_count names */
    size_t row_count;
    struct sqlconsole_cell *cells; /* row_count * column_count, row by row */
    bool is_truncated;             /* more rows than SQLCONSOLE_MAX_ROWS or the byte bound */
    int64_t elapsed_ms;
};

struct sqlconsole_example {
    const char *name;
    const char *sql;
};

/* The saved example queries, ending with {NULL, NULL}. */
extern const struct sqlconsole_example sqlconsole_examples[];

struct sqlconsole;

/*
 * Opens db_path (an existing file, see db_open_readonly()) for queries.
 * Returns 0 and *out (close with sqlconsole_close()), or -1 with err.
 */
int sqlconsole_open(const char *db_path, struct sqlconsole **out, char *err, size_t err_len);
/* NULL is fine. */
void sqlconsole_close(struct sqlconsole *console);

/*
 * Runs sql, exactly one statement that only reads. Returns 0 and *result
 * (caller frees with sqlconsole_result_free()), SQLCONSOLE_BUSY when another
 * query held the console for SQLCONSOLE_WAIT_MS, or -1 with err set to
 * SQLite's message ("not authorized", "no such table: x"), or ours for the
 * limits ("interrupted after 2000 ms", "only one statement at a time").
 */
int sqlconsole_query(struct sqlconsole *console, const char *sql, struct sqlconsole_result **result,
                     char *err, size_t err_len);
/* NULL is fine. */
void sqlconsole_result_free(struct sqlconsole_result *result);

#endif
