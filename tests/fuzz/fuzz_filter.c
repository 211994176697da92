/*
 * libFuzzer target for filter expressions: the text comes from the
 * dashboard's search box, the intercept control and rule files, so it is
 * hostile. After every parse the contract the rest of tapwire relies on is
 * checked (a violation traps, so the fuzzer reports it like a crash):
 *
 * fuzz-sources: src/filter.c src/regexsearch.c src/buf.c src/errmsg.c src/codec.c src/flow.c
 * fuzz-libs: libpcre2-8 sqlite3 zlib libbrotlidec libbrotlienc libzstd
 *
 *  - all or nothing: a filter on success, NULL and "column N: ..." on
 *    failure;
 *  - the canonical form parses back to a filter with the same form, the
 *    same needs, and the same verdict on every flow;
 *  - evaluating on fixed flows returns 1, 0 or -1, never anything else;
 *  - the SQL prepares against a flows table, has one '?' per parameter and
 *    none of the value's bytes that could end or comment a statement, and
 *    selects exactly the rows that match when it says it needs no
 *    evaluator, a superset of them when it does.
 */
#include "filter.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define FLOW_COUNT 3

static struct flow *flows[FLOW_COUNT];
static sqlite3 *db;

/* The columns filter_to_sql() may name, as sql/schema.sql has them. */
static const char schema[] =
    "CREATE TABLE flows (id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, client TEXT NOT NULL, "
    "scheme TEXT NOT NULL, method TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL, "
    "target TEXT NOT NULL, req_version TEXT NOT NULL, req_headers TEXT, resp_headers TEXT, "
    "status INTEGER NOT NULL, req_content_type TEXT, resp_content_type TEXT, "
    "is_tls INTEGER NOT NULL, error TEXT, listener TEXT);"
    "CREATE INDEX flows_host ON flows (lower(host));"
    "CREATE INDEX flows_status_class ON flows (status / 100) WHERE status / 100 <> 2;"
    "CREATE INDEX flows_error ON flows (id) WHERE error IS NOT NULL;";

static struct flow *make(enum flow_kind kind, const char *scheme, const char *method,
                         const char *host, uint16_t port, const char *target, int status,
                         const char *req_headers, const char *resp_headers)
{
    struct flow *f = flow_new(4096);

    CHECK(f != NULL);
    f->kind = kind;
    snprintf(f->scheme, sizeof(f->scheme), "%s", scheme);
    snprintf(f->method, sizeof(f->method), "%s", method);
    snprintf(f->host, sizeof(f->host), "%s", host);
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:40000");
    f->port = port;
    f->target = strdup(target);
    f->request_version = 11;
    f->status = status;
    f->request_headers = req_headers != NULL ? strdup(req_headers) : NULL;
    f->response_headers = resp_headers != NULL ? strdup(resp_headers) : NULL;
    return f;
}

static const char *first_type(const char *section, char *buf, size_t len)
{
    const char *name, *value;
    size_t name_len, value_len, pos = 0;

    while (section != NULL &&
           flow_headers_next(section, &pos, &name, &name_len, &value, &value_len))
        if (name_len == 12 && strncasecmp(name, "Content-Type", 12) == 0) {
            snprintf(buf, len, "%.*s", (int)value_len, value);
            return buf;
        }
    return NULL;
}

static void insert(int id, const struct flow *f)
{
    sqlite3_stmt *st = NULL;
    char version[16], t1[128], t2[128];

    {
        char other[16];
        snprintf(version, sizeof(version), "%s",
                 flow_version_text(f->request_version, other, sizeof(other)));
    }
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO flows VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1,
                             &st, NULL) == SQLITE_OK);
    sqlite3_bind_int(st, 1, id);
    sqlite3_bind_int(st, 2, f->kind);
    sqlite3_bind_text(st, 3, f->client_addr, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, f->scheme, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, f->method, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, f->host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 7, f->port);
    sqlite3_bind_text(st, 8, f->target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 9, version, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 10, f->request_headers, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 11, f->response_headers, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 12, f->status);
    sqlite3_bind_text(st, 13, first_type(f->request_headers, t1, sizeof(t1)), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 14, first_type(f->response_headers, t2, sizeof(t2)), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 15, f->is_tls);
    sqlite3_bind_text(st, 16, f->error, -1, SQLITE_TRANSIENT);
    if (f->listener[0] != '\0') /* else NULL, as a flow stored before it was recorded */
        sqlite3_bind_text(st, 17, f->listener, -1, SQLITE_TRANSIENT);
    CHECK(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    flows[0] = make(FLOW_HTTP, "https", "GET", "www.Example.com", 443, "/search?q=a&b=%41", 200,
                    "Host: www.example.com\r\nUser-Agent: curl/8.0\r\nCookie: a=1\r\n",
                    "Content-Type: text/html; charset=utf-8\r\nSet-Cookie: s=2\r\n");
    flows[0]->is_tls = true;
    CHECK(flow_body_append(&flows[0]->response_body, "<p>hello world</p>", 18) == 0);
    flows[1] = make(FLOW_HTTP, "http", "POST", "::1", 8080, "/api/v1", 404,
                    "Content-Type: application/json\r\n", "Content-Type: \r\n\r\n");
    CHECK(flow_body_append(&flows[1]->request_body, "{\"a\":[1,2]}", 11) == 0);
    flows[2] =
        make(FLOW_TUNNEL, "https", "CONNECT", "pinned.test", 443, "pinned.test:443", 0, NULL, NULL);
    flows[2]->error = strdup("refused");
    flows[2]->request_version = 10;
    snprintf(flows[0]->listener, sizeof(flows[0]->listener), "proxy");
    snprintf(flows[1]->listener, sizeof(flows[1]->listener), "socks5");
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, schema, NULL, NULL, NULL) == SQLITE_OK);
    for (int i = 0; i < FLOW_COUNT; i++)
        insert(i + 1, flows[i]);
    return 0;
}

/* The ids the SQL selects, as bits. */
static unsigned sql_rows(const struct filter_sql *sql)
{
    static const char head[] = "SELECT id FROM flows WHERE ";
    size_t len = sizeof(head) + strlen(sql->where);
    char *query = malloc(len);
    sqlite3_stmt *st = NULL;
    unsigned rows = 0;
    size_t marks = 0;
    int rc;

    CHECK(query != NULL);
    snprintf(query, len, "%s%s", head, sql->where);
    for (const char *p = sql->where; *p != '\0'; p++)
        marks += *p == '?';
    CHECK(marks == sql->param_count);
    CHECK(strchr(sql->where, ';') == NULL && strchr(sql->where, '"') == NULL &&
          strstr(sql->where, "--") == NULL);
    CHECK(sqlite3_prepare_v2(db, query, -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_bind_parameter_count(st) == (int)sql->param_count);
    for (size_t i = 0; i < sql->param_count; i++) {
        const struct filter_sql_param *p = &sql->params[i];

        rc = p->type == FILTER_SQL_INT
                 ? sqlite3_bind_int64(st, (int)i + 1, p->number)
                 : sqlite3_bind_text(st, (int)i + 1, p->text, (int)p->len, SQLITE_STATIC);
        CHECK(rc == SQLITE_OK);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        rows |= 1u << (sqlite3_column_int(st, 0) - 1);
    CHECK(rc == SQLITE_DONE);
    sqlite3_finalize(st);
    free(query);
    return rows;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FILTER_ERROR_BYTES];
    struct filter *f = (struct filter *)1, *again = NULL;
    struct filter_sql sql;
    char *text, *text2;
    unsigned matched = 0, failed = 0, rows;
    int rc;

    err[0] = '\0';
    rc = filter_parse((const char *)data, size, &f, err, sizeof(err));
    CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        CHECK(f == NULL);
        CHECK(strncmp(err, "column ", 7) == 0 || strcmp(err, "out of memory") == 0);
        return 0;
    }
    CHECK(f != NULL);
    text = filter_format(f);
    CHECK(text != NULL);
    CHECK(filter_parse(text, strlen(text), &again, err, sizeof(err)) == 0 ||
          strlen(text) > FILTER_MAX_INPUT_BYTES);
    if (again != NULL) {
        text2 = filter_format(again);
        CHECK(text2 != NULL && strcmp(text, text2) == 0);
        CHECK(filter_needs(again) == filter_needs(f));
        free(text2);
    }
    for (int i = 0; i < FLOW_COUNT; i++) {
        char why[128];
        int a = filter_match(f, flows[i], why, sizeof(why));

        CHECK(a == 0 || a == 1 || a == -1);
        if (again != NULL) {
            int b = filter_match(again, flows[i], why, sizeof(why));

            CHECK(a == -1 || b == -1 || a == b);
        }
        if (a == 1)
            matched |= 1u << i;
        if (a == -1)
            failed |= 1u << i;
    }
    CHECK(filter_to_sql(f, &sql, err, sizeof(err)) == 0);
    rows = sql_rows(&sql);
    CHECK((rows & matched) == matched); /* never drops a match */
    if (!sql.needs_eval)
        CHECK((rows & ~failed) == (matched & ~failed));
    /* The search index finds flows by index_text in host || target (its
     * trigrams fold ASCII case): every match must hold it there. */
    for (int i = 0; i < FLOW_COUNT && sql.index_text != NULL; i++) {
        char indexed[4096];

        if (!(matched & (1u << i)))
            continue;
        snprintf(indexed, sizeof(indexed), "%s%s", flows[i]->host,
                 flows[i]->target != NULL ? flows[i]->target : "");
        CHECK(strcasestr(indexed, sql.index_text) != NULL);
    }
    filter_sql_free(&sql);
    filter_free(again);
    free(text);
    filter_free(f);
    return 0;
}
