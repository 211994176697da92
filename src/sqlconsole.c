/*
 * sqlconsole: the dashboard's read-only SQL console.
 *
 * Defence in depth, because the statement is the user's text and the
 * dashboard may be reached by anyone holding the token: the file is opened
 * SQLITE_OPEN_READONLY (SQLite refuses every write to it), PRAGMA query_only
 * refuses writes to temporary tables too, the authorizer refuses at prepare
 * time everything but reading (so ATTACH, which would open or create another
 * file, never runs, and neither does a PRAGMA with side effects), and
 * load_extension is off both in the connection and in the authorizer.
 * SQLITE_DBCONFIG_DEFENSIVE and trusted_schema off keep a doctored schema
 * (the file is the user's) from running functions in views or triggers.
 *
 * The statement must finish before the next one starts: it is finalized
 * before sqlconsole_query() returns, so no read transaction outlives a
 * query and the flow writer's checkpoints are never held back.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "sqlconsole.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include <sqlite3.h>

#include "clock.h"
#include "db.h"
#include "errmsg.h"

/* How many virtual machine steps between two looks at the clock: cheap,
 * and keeps the time limit within a few milliseconds. */
#define PROGRESS_STEPS 1000

struct sqlconsole {
    sqlite3 *db;
    pthread_mutex_t lock; /* one query at a time on db */
    /* The running query's deadline, read by the progress handler. */
    int64_t deadline_ms;
    bool is_expired;
};

/* Written against sql/schema.sql; tapwire-db(5) lists them too. Times are
 * microseconds, shown here as milliseconds. */
const struct sqlconsole_example sqlconsole_examples[] = {
    {"Slowest hosts (average time to the end of the response)",
     "SELECT host, count(*) AS flows,\n"
     "       round(avg(done_us - time_start_us) / 1000.0, 1) AS avg_ms,\n"
     "       round(max(done_us - time_start_us) / 1000.0, 1) AS max_ms\n"
     "FROM flows WHERE done_us IS NOT NULL\n"
     "GROUP BY host ORDER BY avg_ms DESC LIMIT 20"},
    {"Largest responses",
     "SELECT id, method, host, target, status, resp_body_size, resp_content_type\n"
     "FROM flows ORDER BY resp_body_size DESC LIMIT 20"},
    {"Error rates per host (4xx, 5xx, or no response)",
     "SELECT host, count(*) AS flows,\n"
     "       sum(status >= 400 OR error IS NOT NULL) AS errors,\n"
     "       round(100.0 * sum(status >= 400 OR error IS NOT NULL) / count(*), 1) AS error_pct\n"
     "FROM flows GROUP BY host ORDER BY error_pct DESC, flows DESC LIMIT 20"},
    {NULL, NULL},
};

/* Read-only PRAGMAs: the ones that describe the schema and the file.
 * may_take_argument: whether an argument is a name to look at (table_info(x))
 * rather than a value to set (user_version = 5). */
static const struct {
    const char *name;
    bool may_take_argument;
} allowed_pragmas[] = {
    {"table_info", true},
    {"table_xinfo", true},
    {"table_list", true},
    {"index_list", true},
    {"index_info", true},
    {"index_xinfo", true},
    {"foreign_key_list", true},
    {"user_version", false},
    {"schema_version", false},
    {"page_size", false},
    {"page_count", false},
    {"freelist_count", false},
    {"journal_mode", false},
    {"encoding", false},
    {"collation_list", false},
    {"function_list", false},
    {"database_list", false},
    /* FTS5 reads it whenever it opens the search index (tapwire-db(5)). */
    {"data_version", false},
};

/* Functions that reach outside the database (load_extension loads code;
 * the others exist only in some builds or in the shell, and read or write
 * files) or change how text is split (fts3_tokenizer with two arguments
 * takes a pointer). */
static const char *const denied_functions[] = {
    "load_extension", "fts3_tokenizer", "readfile", "writefile", "edit",
};

static bool is_pragma_allowed(const char *name, const char *argument)
{
    size_t i;

    if (name == NULL)
        return false;
    for (i = 0; i < sizeof(allowed_pragmas) / sizeof(allowed_pragmas[0]); i++)
        if (strcasecmp(name, allowed_pragmas[i].name) == 0)
            return argument == NULL || allowed_pragmas[i].may_take_argument;
    return false;
}

static bool is_function_allowed(const char *name)
{
    size_t i;

    if (name == NULL)
        return false;
    for (i = 0; i < sizeof(denied_functions) / sizeof(denied_functions[0]); i++)
        if (strcasecmp(name, denied_functions[i]) == 0)
            return false;
    return true;
}

/* sqlite3_set_authorizer(): called while a statement is prepared, for each
 * thing it would do. Everything not named here is refused, so an action
 * added by a later SQLite is refused too. */
static int authorize(void *arg, int action, const char *arg1, const char *arg2, const char *db_name,
                     const char *trigger)
{
    (void)arg;
    (void)db_name;
    (void)trigger;
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        return is_function_allowed(arg2) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_PRAGMA:
        return is_pragma_allowed(arg1, arg2) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_UPDATE:
        /* SQLite asks this of the schema table while it connects a
         * virtual table (the FTS5 search index, tapwire-db(5)), and
         * writes nothing. A user's UPDATE of it is refused all the same:
         * SQLite never lets a statement modify sqlite_master, and the
         * connection is read-only and query_only. */
        return arg1 != NULL && strcmp(arg1, "sqlite_master") == 0 ? SQLITE_OK : SQLITE_DENY;
    default:
        return SQLITE_DENY;
    }
}

/* SQLite's progress handler: a nonzero return interrupts the statement. */
static int on_progress(void *arg)
{
    struct sqlconsole *console = arg;

    if (clock_mono_ms() < console->deadline_ms)
        return 0;
    console->is_expired = true;
    return 1;
}

static int exec_setup(sqlite3 *db, const char *sql, char *err, size_t err_len)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK)
        errmsg_set(err, err_len, "%s: %s", sql, msg != NULL ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Everything that makes the connection read-only, before the authorizer
 * (which would refuse the PRAGMAs set here). */
static int lock_down(sqlite3 *db, char *err, size_t err_len)
{
    int rc = SQLITE_OK;
    int ret = -1;

    rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
#ifdef SQLITE_DBCONFIG_TRUSTED_SCHEMA
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
#endif
    if (rc != SQLITE_OK) {
        errmsg_set(err, err_len, "cannot configure the SQL console's connection: %s",
                   sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, SQLCONSOLE_MAX_VALUE_BYTES);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, SQLCONSOLE_MAX_SQL_BYTES);
    if (exec_setup(db, "PRAGMA query_only = 1", err, err_len) != 0)
        goto out;
    /* A reader waits for the writer only while a checkpoint restarts the
     * WAL; never longer than a query may run. */
    sqlite3_busy_timeout(db, SQLCONSOLE_TIME_LIMIT_MS);
    if (sqlite3_set_authorizer(db, authorize, NULL) != SQLITE_OK) {
        errmsg_set(err, err_len, "cannot set the SQL console's authorizer");
        goto out;
    }
    ret = 0;
out:
    return ret;
}

int sqlconsole_open(const char *db_path, struct sqlconsole **out, char *err, size_t err_len)
{
    struct sqlconsole *console = NULL;
    bool has_lock = false;
    int ret = -1;

    *out = NULL;
    console = calloc(1, sizeof(*console));
    if (console == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (pthread_mutex_init(&console->lock, NULL) != 0) {
        errmsg_set(err, err_len, "cannot create a mutex");
        goto out;
    }
    has_lock = true;
    if (db_open_readonly(db_path, &console->db, err, err_len) != 0)
        goto out;
    if (lock_down(console->db, err, err_len) != 0)
        goto out;
    sqlite3_progress_handler(console->db, PROGRESS_STEPS, on_progress, console);
    *out = console;
    console = NULL;
    ret = 0;
out:
    if (console != NULL) {
        sqlite3_close(console->db);
        if (has_lock)
            pthread_mutex_destroy(&console->lock);
        free(console);
    }
    return ret;
}

void sqlconsole_close(struct sqlconsole *console)
{
    if (console == NULL)
        return;
    sqlite3_close(console->db);
    pthread_mutex_destroy(&console->lock);
    free(console);
}

void sqlconsole_result_free(struct sqlconsole_result *result)
{
    size_t i;

    if (result == NULL)
        return;
    for (i = 0; i < result->column_count; i++)
        free(result->columns[i]);
    free(result->columns);
    for (i = 0; i < result->row_count * result->column_count; i++)
        free(result->cells[i].text);
    free(result->cells);
    free(result);
}

/* The longest prefix of text of at most max bytes that does not end inside
 * a UTF-8 sequence (a byte 10xxxxxx continues one). */
static size_t utf8_cut(const unsigned char *text, size_t len, size_t max)
{
    size_t n = max;
    int back;

    if (len <= max)
        return len;
    for (back = 0; back < 3 && n > 0 && (text[n] & 0xc0) == 0x80; back++)
        n--;
    return n;
}

/* Fills cell from column i of stmt's row. Returns 0 or -1 (out of memory). */
static int read_cell(sqlite3_stmt *stmt, int i, struct sqlconsole_cell *cell)
{
    const unsigned char *text;
    size_t len;
    char desc[48];

    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
        cell->type = SQLCONSOLE_INTEGER;
        cell->integer = sqlite3_column_int64(stmt, i);
        return 0;
    case SQLITE_FLOAT:
        cell->type = SQLCONSOLE_REAL;
        cell->real = sqlite3_column_double(stmt, i);
        return 0;
    case SQLITE_TEXT:
        cell->type = SQLCONSOLE_TEXT;
        text = sqlite3_column_text(stmt, i);
        len = (size_t)sqlite3_column_bytes(stmt, i);
        if (text == NULL)
            return -1;
        cell->is_cut = len > SQLCONSOLE_MAX_CELL_BYTES;
        len = utf8_cut(text, len, SQLCONSOLE_MAX_CELL_BYTES);
        break;
    case SQLITE_BLOB:
        /* Only the size: a body's bytes are reached through the flow's
         * body API, which sends them as an attachment, never as text. */
        cell->type = SQLCONSOLE_BLOB;
        snprintf(desc, sizeof(desc), "<%d bytes>", sqlite3_column_bytes(stmt, i));
        text = (const unsigned char *)desc;
        len = strlen(desc);
        break;
    default:
        cell->type = SQLCONSOLE_NULL;
        return 0;
    }
    cell->text = malloc(len + 1);
    if (cell->text == NULL)
        return -1;
    memcpy(cell->text, text, len);
    cell->text[len] = '\0';
    cell->text_len = len;
    return 0;
}

/* Appends the current row of stmt to result. Returns 0 or -1 (out of
 * memory); *bytes grows by what the row's cells hold. */
static int append_row(sqlite3_stmt *stmt, struct sqlconsole_result *result, size_t *capacity,
                      size_t *bytes)
{
    size_t columns = result->column_count;
    struct sqlconsole_cell *row;
    size_t i;

    if (result->row_count == *capacity) {
        size_t more = *capacity == 0 ? 16 : *capacity * 2;
        struct sqlconsole_cell *cells =
            columns > 0 ? realloc(result->cells, more * columns * sizeof(*cells)) : NULL;

        if (columns > 0 && cells == NULL)
            return -1;
        result->cells = cells;
        *capacity = more;
    }
    row = result->cells + result->row_count * columns;
    memset(row, 0, columns * sizeof(*row));
    /* Counted before reading, so an error half-way frees what was read. */
    result->row_count++;
    for (i = 0; i < columns; i++) {
        if (read_cell(stmt, (int)i, &row[i]) != 0)
            return -1;
        *bytes += sizeof(row[i]) + row[i].text_len;
    }
    return 0;
}

static int read_columns(sqlite3_stmt *stmt, struct sqlconsole_result *result)
{
    int count = sqlite3_column_count(stmt);
    int i;

    if (count <= 0)
        return 0;
    result->columns = calloc((size_t)count, sizeof(*result->columns));
    if (result->columns == NULL)
        return -1;
    result->column_count = (size_t)count;
    for (i = 0; i < count; i++) {
        const char *name = sqlite3_column_name(stmt, i);

        result->columns[i] = strdup(name != NULL ? name : "");
        if (result->columns[i] == NULL)
            return -1;
    }
    return 0;
}

/* Refuses what follows the first statement, unless only blanks, comments
 * and semicolons: a second statement would otherwise be silently ignored. */
static int check_tail(sqlite3 *db, const char *tail, char *err, size_t err_len)
{
    sqlite3_stmt *next = NULL;
    int rc = SQLITE_OK;

    while (tail != NULL && *tail != '\0') {
        const char *rest = NULL;

        rc = sqlite3_prepare_v2(db, tail, -1, &next, &rest);
        if (rc != SQLITE_OK || next != NULL)
            break;
        if (rest == tail)
            break;
        tail = rest;
    }
    sqlite3_finalize(next);
    if (rc == SQLITE_OK && next == NULL)
        return 0;
    errmsg_set(err, err_len, "only one statement at a time");
    return -1;
}

/* pthread_mutex_timedlock() takes a CLOCK_REALTIME deadline. */
static int lock_within(pthread_mutex_t *lock, int timeout_ms)
{
    struct timespec deadline = clock_deadline_ms(CLOCK_REALTIME, timeout_ms);

    return pthread_mutex_timedlock(lock, &deadline);
}

int sqlconsole_query(struct sqlconsole *console, const char *sql, struct sqlconsole_result **out,
                     char *err, size_t err_len)
{
    struct sqlconsole_result *result = NULL;
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int64_t start = clock_mono_ms();
    size_t capacity = 0, bytes = 0;
    int rc;
    int ret = -1;

    *out = NULL;
    if (lock_within(&console->lock, SQLCONSOLE_WAIT_MS) != 0) {
        errmsg_set(err, err_len, "the console is busy with another query; try again");
        return SQLCONSOLE_BUSY;
    }
    if (strlen(sql) > SQLCONSOLE_MAX_SQL_BYTES) {
        errmsg_set(err, err_len, "the query is longer than %d bytes", SQLCONSOLE_MAX_SQL_BYTES);
        goto out;
    }
    /* The deadline covers preparing too: a huge schema or a pathological
     * parse is bounded like a slow step. */
    console->deadline_ms = start + SQLCONSOLE_TIME_LIMIT_MS;
    console->is_expired = false;
    rc = sqlite3_prepare_v2(console->db, sql, -1, &stmt, &tail);
    if (rc != SQLITE_OK) {
        errmsg_set(err, err_len, "%s", sqlite3_errmsg(console->db));
        goto out;
    }
    if (stmt == NULL) {
        errmsg_set(err, err_len, "the query is empty");
        goto out;
    }
    if (check_tail(console->db, tail, err, err_len) != 0)
        goto out;
    /* The authorizer already refused every write; this would catch one it
     * missed. */
    if (!sqlite3_stmt_readonly(stmt)) {
        errmsg_set(err, err_len, "not authorized: the console only reads");
        goto out;
    }
    result = calloc(1, sizeof(*result));
    if (result == NULL || read_columns(stmt, result) != 0) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (result->row_count == SQLCONSOLE_MAX_ROWS || bytes > SQLCONSOLE_MAX_RESULT_BYTES) {
            result->is_truncated = true;
            break;
        }
        if (append_row(stmt, result, &capacity, &bytes) != 0) {
            errmsg_set(err, err_len, "out of memory");
            goto out;
        }
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_INTERRUPT && console->is_expired)
            errmsg_set(err, err_len, "interrupted after %d ms", SQLCONSOLE_TIME_LIMIT_MS);
        else
            errmsg_set(err, err_len, "%s", sqlite3_errmsg(console->db));
        goto out;
    }
    result->elapsed_ms = clock_mono_ms() - start;
    *out = result;
    result = NULL;
    ret = 0;
out:
    /* Ends the statement's read transaction before the next query. */
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&console->lock);
    sqlconsole_result_free(result);
    return ret;
}
