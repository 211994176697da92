/*
 * db: opening the SQLite database and migrating its schema.
 *
 * Connections are opened with SQLITE_OPEN_NOMUTEX (SQLite's multi-thread
 * mode): each module owns its connection and already serialises its use
 * (certstore under its mutex, the flow writer on its one thread), because a
 * bind-step-reset sequence on a shared prepared statement has to be atomic
 * anyway and FULLMUTEX only makes single calls atomic. The per-call mutex
 * would be pure cost.
 *
 * The migrations are the sections of sql/schema.sql (see its header): each
 * one newer than PRAGMA user_version runs in its own transaction, which also
 * sets user_version, so a database is always at exactly one known version.
 * A migration's statements after a line "-- each segment:" run once per
 * flow segment (flowseg.h: flows_N and its tables), with $SEG replaced by
 * the segment's number: a column added to the flows must reach every
 * segment table, and SQL alone cannot name tables from a query's rows.
 * This module never formats data into SQL but for those integers.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "db.h"
#include "clock.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embedded.h"

#define DB_VERSION_PREFIX "-- version: "
#define DB_EACH_SEGMENT_LINE "-- each segment:"
#define DB_SEGMENT_PLACEHOLDER "$SEG"
#define DB_MAX_SEGMENTS 4096         /* far beyond flowseg's FLOWSEG_MAX_SEGMENTS */
#define DB_MAX_SCHEMA_VERSION 100000 /* far beyond any real count; bounds the parse */

struct migration {
    int version;
    const char *sql; /* points into embedded_schema_sql, not NUL-terminated */
    size_t len;
};

struct schema_iter {
    const char *text;
    size_t len;
    size_t pos;
};

/* Must be called right after the failing call: sqlite3_errmsg() describes
 * the most recent call on the connection. */
static void sqlite_err(char *err, size_t err_len, sqlite3 *db, const char *path, int rc,
                       const char *what)
{
    const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int primary = rc & 0xff;

    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
        errmsg_set(err, err_len,
                   "database %s is corrupt (%s); move it away and tapwire will create a new one",
                   path, msg);
    else if (primary == SQLITE_CANTOPEN && db != NULL && sqlite3_system_errno(db) != 0)
        errmsg_set(err, err_len, "database %s: %s: %s (%s)", path, what, msg,
                   strerror(sqlite3_system_errno(db)));
    else
        errmsg_set(err, err_len, "database %s: %s: %s", path, what, msg);
}

/* Runs one statement that returns no rows we need. */
static int exec_sql(sqlite3 *db, const char *path, const char *sql, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        sqlite_err(err, err_len, db, path, rc, sql);
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE) {
        sqlite_err(err, err_len, db, path, rc, sql);
        goto out;
    }
    rc = SQLITE_OK;
out:
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

static int user_version(sqlite3 *db, const char *path, int *out, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        sqlite_err(err, err_len, db, path, rc, "reading the schema version");
        goto out;
    }
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        sqlite_err(err, err_len, db, path, rc, "reading the schema version");
        goto out;
    }
    *out = sqlite3_column_int(stmt, 0);
    rc = SQLITE_OK;
out:
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

/* 1 when line (without its newline) is a version marker, with *version set;
 * 0 when it is not; -1 when it starts like one but is not well-formed, so
 * that a typo fails the build's tests instead of merging two migrations. */
static int parse_version_line(const char *line, size_t len, int *version)
{
    size_t prefix_len = strlen(DB_VERSION_PREFIX);
    long value = 0;
    size_t i;

    if (len < strlen("-- version:") || memcmp(line, "-- version:", strlen("-- version:")) != 0)
        return 0;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len <= prefix_len || memcmp(line, DB_VERSION_PREFIX, prefix_len) != 0)
        return -1;
    for (i = prefix_len; i < len; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -1;
        value = value * 10 + (line[i] - '0');
        if (value > DB_MAX_SCHEMA_VERSION)
            return -1;
    }
    if (line[prefix_len] == '0')
        return -1;
    *version = (int)value;
    return 1;
}

/* Next migration: 1 with *m filled, 0 at the end, -1 when the text is
 * malformed (SQL before the first marker, or a bad marker line). */
static int schema_next(struct schema_iter *it, struct migration *m)
{
    bool in_section = false;

    while (it->pos < it->len) {
        const char *line = it->text + it->pos;
        const char *nl = memchr(line, '\n', it->len - it->pos);
        size_t line_len = nl != NULL ? (size_t)(nl - line) : it->len - it->pos;
        size_t next = it->pos + line_len + (nl != NULL);
        int version;
        int kind = parse_version_line(line, line_len, &version);

        if (kind < 0)
            return -1;
        if (kind == 1 && in_section)
            return 1; /* the next section starts here; pos stays on its marker */
        if (kind == 1) {
            in_section = true;
            m->version = version;
            m->sql = it->text + next;
            m->len = 0;
        } else if (in_section) {
            m->len = (size_t)(it->text + next - m->sql);
        } else {
            size_t i;

            /* Before the first marker only comments and blank lines. */
            for (i = 0; i < line_len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'); i++)
                ;
            if (i < line_len && (line_len - i < 2 || line[i] != '-' || line[i + 1] != '-'))
                return -1;
        }
        it->pos = next;
    }
    return in_section ? 1 : 0;
}

/* The newest version in the embedded schema, or -1 when the schema text is
 * malformed or its versions do not count up 1, 2, 3... */
int db_schema_version(void)
{
    struct schema_iter it = {(const char *)embedded_schema_sql, embedded_schema_sql_len, 0};
    struct migration m;
    int expected = 1;
    int rc;

    while ((rc = schema_next(&it, &m)) == 1) {
        if (m.version != expected)
            return -1;
        expected++;
    }
    return rc < 0 ? -1 : expected - 1;
}

/* Runs the statements of one migration; sqlite3_prepare_v2's tail pointer
 * walks from one statement to the next. */
static int run_migration_sql(sqlite3 *db, const char *path, const struct migration *m, char *err,
                             size_t err_len)
{
    const char *sql = m->sql;
    const char *end = m->sql + m->len;
    sqlite3_stmt *stmt = NULL;
    int rc = SQLITE_OK;

    while (sql < end) {
        const char *tail = NULL;

        rc = sqlite3_prepare_v2(db, sql, (int)(end - sql), &stmt, &tail);
        if (rc != SQLITE_OK) {
            sqlite_err(err, err_len, db, path, rc, "preparing a migration");
            goto out;
        }
        if (stmt == NULL) /* only comments or whitespace were left */
            break;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
            ;
        if (rc != SQLITE_DONE) {
            sqlite_err(err, err_len, db, path, rc, "running a migration");
            goto out;
        }
        rc = SQLITE_OK;
        sqlite3_finalize(stmt);
        stmt = NULL;
        sql = tail;
    }
out:
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Where the part of m after its "-- each segment:" line starts, or NULL
 * when it has none; *marker_at is where that line starts. */
static const char *each_segment_part(const struct migration *m, const char **marker_at)
{
    const char *line = m->sql;
    const char *end = m->sql + m->len;
    size_t marker_len = strlen(DB_EACH_SEGMENT_LINE);

    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t len = nl != NULL ? (size_t)(nl - line) : (size_t)(end - line);

        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len == marker_len && memcmp(line, DB_EACH_SEGMENT_LINE, marker_len) == 0) {
            *marker_at = line;
            return nl != NULL ? nl + 1 : end;
        }
        line = nl != NULL ? nl + 1 : end;
    }
    return NULL;
}

/* The segment numbers of flow_segments, ascending, into segs (at most
 * DB_MAX_SEGMENTS). */
static int segment_numbers(sqlite3 *db, const char *path, int64_t *segs, size_t *count, char *err,
                           size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    *count = 0;
    rc = sqlite3_prepare_v2(db, "SELECT seg FROM flow_segments ORDER BY seg", -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        sqlite_err(err, err_len, db, path, rc, "listing the flow segments");
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (*count == DB_MAX_SEGMENTS) {
            errmsg_set(err, err_len, "database %s: more than %d flow segments", path,
                       DB_MAX_SEGMENTS);
            rc = SQLITE_ERROR;
            goto out;
        }
        segs[(*count)++] = sqlite3_column_int64(stmt, 0);
    }
    if (rc != SQLITE_DONE) {
        sqlite_err(err, err_len, db, path, rc, "listing the flow segments");
        goto out;
    }
    rc = SQLITE_OK;
out:
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Runs part (the statements after "-- each segment:") once per segment,
 * with every $SEG replaced by its number. */
static int run_each_segment(sqlite3 *db, const char *path, const struct migration *part, char *err,
                            size_t err_len)
{
    size_t ph_len = strlen(DB_SEGMENT_PLACEHOLDER);
    int64_t *segs = malloc(DB_MAX_SEGMENTS * sizeof(*segs));
    char *sql = NULL;
    size_t count = 0;
    size_t i;
    int ret = -1;

    /* Each $SEG becomes at most 20 digits. */
    sql = malloc(part->len / ph_len * 20 + part->len + 1);
    if (segs == NULL || sql == NULL) {
        errmsg_set(err, err_len, "database %s: out of memory migrating the flow segments", path);
        goto out;
    }
    if (segment_numbers(db, path, segs, &count, err, err_len) != 0)
        goto out;
    for (i = 0; i < count; i++) {
        struct migration one = {part->version, sql, 0};
        size_t at = 0;

        while (at < part->len) {
            if (part->len - at >= ph_len &&
                memcmp(part->sql + at, DB_SEGMENT_PLACEHOLDER, ph_len) == 0) {
                one.len += (size_t)sprintf(sql + one.len, "%" PRId64, segs[i]);
                at += ph_len;
            } else {
                sql[one.len++] = part->sql[at++];
            }
        }
        sql[one.len] = '\0';
        if (run_migration_sql(db, path, &one, err, err_len) != 0)
            goto out;
    }
    ret = 0;
out:
    free(sql);
    free(segs);
    return ret;
}

/* The statements of m, those after a "-- each segment:" line once per
 * segment. */
static int run_migration(sqlite3 *db, const char *path, const struct migration *m, char *err,
                         size_t err_len)
{
    const char *marker_at = NULL;
    const char *each = each_segment_part(m, &marker_at);
    struct migration once = *m;
    struct migration part;

    if (each == NULL)
        return run_migration_sql(db, path, m, err, err_len);
    once.len = (size_t)(marker_at - m->sql);
    part = (struct migration){m->version, each, (size_t)(m->sql + m->len - each)};
    if (run_migration_sql(db, path, &once, err, err_len) != 0 ||
        run_each_segment(db, path, &part, err, err_len) != 0)
        return -1;
    return 0;
}

static int apply_migration(sqlite3 *db, const char *path, const struct migration *m, char *err,
                           size_t err_len)
{
    char set_version[sizeof("PRAGMA user_version = ") + 12];
    bool in_txn = false;
    int current;
    int rc = -1;

    /* IMMEDIATE takes the write lock before reading the version, so two
     * processes starting at once cannot both run the same migration. */
    if (exec_sql(db, path, "BEGIN IMMEDIATE", err, err_len) != 0)
        goto out;
    in_txn = true;
    if (user_version(db, path, &current, err, err_len) != 0)
        goto out;
    if (current < m->version) {
        if (run_migration(db, path, m, err, err_len) != 0)
            goto out;
        /* PRAGMA takes no bound parameters; the value is an int parsed from
         * the schema compiled into this binary, never outside data. */
        snprintf(set_version, sizeof(set_version), "PRAGMA user_version = %d", m->version);
        if (exec_sql(db, path, set_version, err, err_len) != 0)
            goto out;
    }
    if (exec_sql(db, path, "COMMIT", err, err_len) != 0)
        goto out;
    in_txn = false;
    rc = 0;
out:
    if (in_txn)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    if (rc != 0 && err != NULL && err_len > 0) {
        size_t used = strnlen(err, err_len);

        if (used + 1 < err_len)
            snprintf(err + used, err_len - used, " (schema version %d)", m->version);
    }
    return rc;
}

static int migrate(sqlite3 *db, const char *path, char *err, size_t err_len)
{
    struct schema_iter it = {(const char *)embedded_schema_sql, embedded_schema_sql_len, 0};
    struct migration m;
    int known = db_schema_version();
    int current;
    int rc = -1;

    if (known < 1) {
        errmsg_set(err, err_len, "the schema built into tapwire is malformed (sql/schema.sql)");
        goto out;
    }
    if (user_version(db, path, &current, err, err_len) != 0)
        goto out;
    if (current > known) {
        errmsg_set(err, err_len,
                   "database %s has schema version %d, newer than this tapwire knows (%d); "
                   "run a newer tapwire, or move the file away to start afresh",
                   path, current, known);
        goto out;
    }
    while (schema_next(&it, &m) == 1) {
        if (m.version <= current)
            continue;
        if (apply_migration(db, path, &m, err, err_len) != 0)
            goto out;
    }
    rc = 0;
out:
    return rc;
}

/* Before SQLite's first use (sqlite3_config() is refused after it): no
 * memory statistics, which SQLite otherwise keeps under a global mutex on
 * every allocation, from every connection of every thread (the flow writer
 * allocates for each row). Nothing here reads them. */
static pthread_once_t configure_once = PTHREAD_ONCE_INIT;

static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static bool is_memory_path(const char *path)
{
    return path[0] == '\0' || strcmp(path, ":memory:") == 0;
}

/*
 * Creates the database file with mode 0600 whatever the umask (flows hold
 * cookies and passwords; SQLite gives the -wal and -shm files the main
 * file's mode), and never touches a file that exists already: closing any
 * descriptor of a file drops every POSIX lock this process holds on it,
 * SQLite's included, so opening and closing the file while another
 * connection has it open would let an outside reader (the sqlite3 shell, a
 * backup script) take the file for its last user, checkpoint the WAL and
 * delete it under tapwire ("How To Corrupt An SQLite Database File", 2.2).
 * O_EXCL makes the descriptor exist only for a file no one can have open.
 */
static int create_private_file(const char *path, char *err, size_t err_len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);

    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    errmsg_set(err, err_len, "cannot create database %s: %s", path, strerror(errno));
    return -1;
}

/* A connection (mode: SQLITE_OPEN_READWRITE, with SQLITE_OPEN_CREATE or
 * not, or SQLITE_OPEN_READONLY) with extended result codes and the busy
 * timeout. Returns 0 with *out, or -1 with err and *out NULL. */
static int open_connection(const char *path, int mode, sqlite3 **out, char *err, size_t err_len)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, mode | SQLITE_OPEN_NOMUTEX, NULL);

    *out = NULL;
    if (rc != SQLITE_OK) {
        if (db == NULL)
            errmsg_set(err, err_len, "cannot open database %s: out of memory", path);
        else
            sqlite_err(err, err_len, db, path, rc, "cannot open");
        goto fail;
    }
    sqlite3_extended_result_codes(db, 1);
    rc = sqlite3_busy_timeout(db, DB_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK) {
        sqlite_err(err, err_len, db, path, rc, "setting the busy timeout");
        goto fail;
    }
    *out = db;
    return 0;
fail:
    sqlite3_close(db);
    return -1;
}

int db_open(const char *path, sqlite3 **out, char *err, size_t err_len)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    const char *mode;
    char page_size[48];
    int rc;
    int ret = -1;

    *out = NULL;
    pthread_once(&configure_once, configure_sqlite);
    if (sqlite3_threadsafe() == 0) {
        errmsg_set(err, err_len, "SQLite was built without thread support; tapwire needs it");
        goto out;
    }
    if (!is_memory_path(path) && create_private_file(path, err, err_len) != 0)
        goto out;
    if (open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db, err, err_len) != 0)
        goto out;

    /* 16 KiB pages for a new file (an existing one keeps its size: WAL
     * pins it). The flow writer appends ~2.5 KB a flow, and SQLite writes
     * the WAL, then the checkpoint, one page per system call: with 4 KiB
     * pages that was about half of the writer's kernel time.
     * bench/flowwrite: 23 -> 17.7 us of CPU per flow, sys time halved. */
    snprintf(page_size, sizeof(page_size), "PRAGMA page_size = %d", DB_PAGE_SIZE);
    if (exec_sql(db, path, page_size, err, err_len) != 0)
        goto out;
    /* WAL lets the dashboard read while the flow writer writes. The pragma
     * answers with the mode in effect, which is not WAL where the file
     * system cannot share memory between processes (some network mounts). */
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        sqlite_err(err, err_len, db, path, rc, "enabling WAL");
        goto out;
    }
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        sqlite_err(err, err_len, db, path, rc, "enabling WAL");
        goto out;
    }
    mode = (const char *)sqlite3_column_text(stmt, 0);
    if (mode == NULL ||
        (strcmp(mode, "wal") != 0 && !(is_memory_path(path) && strcmp(mode, "memory") == 0))) {
        errmsg_set(err, err_len,
                   "database %s: cannot enable WAL (journal mode stays %s); put the data "
                   "directory on a local file system",
                   path, mode != NULL ? mode : "unknown");
        goto out;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;

    /* NORMAL is durable with WAL except for the last commits before a power
     * loss, and never corrupts; a lost flow record or cached leaf costs
     * nothing, an fsync per commit would cost every exchange. */
    if (exec_sql(db, path, "PRAGMA synchronous=NORMAL", err, err_len) != 0 ||
        exec_sql(db, path, "PRAGMA foreign_keys=ON", err, err_len) != 0)
        goto out;
    if (migrate(db, path, err, err_len) != 0)
        goto out;

    *out = db;
    db = NULL;
    ret = 0;
out:
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return ret;
}

int db_open_readonly(const char *path, sqlite3 **out, char *err, size_t err_len)
{
    int ret = -1;

    *out = NULL;
    pthread_once(&configure_once, configure_sqlite);
    if (is_memory_path(path)) {
        errmsg_set(err, err_len, "an in-memory database cannot be shared with another connection");
        goto out;
    }
    /* SQLite opens the file itself and never creates it in this mode: no
     * descriptor of ours to close (see create_private_file()). */
    if (open_connection(path, SQLITE_OPEN_READONLY, out, err, err_len) != 0)
        goto out;
    ret = 0;
out:
    return ret;
}

struct check_deadline {
    int64_t until_ms;
    bool is_expired;
};

/* SQLite's progress handler: a nonzero return interrupts the statement. */
static int check_progress(void *arg)
{
    struct check_deadline *deadline = arg;

    if (clock_mono_ms() < deadline->until_ms)
        return 0;
    deadline->is_expired = true;
    return 1;
}

int db_check(const char *path, int budget_ms, enum db_check_result *result, char *err,
             size_t err_len)
{
    struct check_deadline deadline = {clock_mono_ms() + budget_ms, false};
    struct stat st;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    const char *first = NULL;
    int rc;
    int ret = -1;

    *result = DB_CHECK_OK;
    pthread_once(&configure_once, configure_sqlite);
    if (is_memory_path(path) || (stat(path, &st) != 0 && errno == ENOENT)) {
        ret = 0; /* nothing yet to check: db_open creates it */
        goto out;
    }
    /* Not SQLITE_OPEN_CREATE: a check must never make or change a file. */
    if (open_connection(path, SQLITE_OPEN_READWRITE, &db, err, err_len) != 0)
        goto out;
    /* Every 1000 virtual machine steps: cheap, and fine-grained enough that
     * the budget holds to a few milliseconds. */
    sqlite3_progress_handler(db, 1000, check_progress, &deadline);
    rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        first = (const char *)sqlite3_column_text(stmt, 0);
        if (first != NULL && strcmp(first, "ok") == 0) {
            ret = 0;
            goto out;
        }
        errmsg_set(err, err_len,
                   "database %s is corrupt (%s); tapwire leaves it as it is: move it away "
                   "(mv %s %s.corrupt) and tapwire will create a new one",
                   path, first != NULL ? first : "quick_check failed", path, path);
        *result = DB_CHECK_CORRUPT;
        goto out;
    }
    if ((rc & 0xff) == SQLITE_INTERRUPT && deadline.is_expired) {
        *result = DB_CHECK_UNFINISHED;
        ret = 0;
        goto out;
    }
    if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB)
        *result = DB_CHECK_CORRUPT;
    sqlite_err(err, err_len, db, path, rc, "checking its pages");
out:
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return ret;
}
