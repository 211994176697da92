/*
 * Unit tests for filter: the parser's errors and their columns, precedence
 * (seen through the canonical form), evaluation on hand-built flows, and
 * the SQL form run against the real schema in an in-memory database: for
 * every expression of the table, the rows the SQL selects are exactly the
 * flows the evaluator keeps when it says it needs no evaluator, and a
 * superset of them when it does.
 */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "codec.h"
#include "db.h"
#include "filter.h"
#include "flow.h"
#include "testutil.h"

#define FLOW_COUNT 5

static struct flow *flows[FLOW_COUNT]; /* flows[i] is row id i + 1 */
static sqlite3 *db;

/* Used by setup() too, where CUnit assertions cannot run: returns 0 or -1. */
static int set_body(struct flow_body *b, const void *data, size_t len)
{
    return flow_body_append(b, data, len); /* counts size too */
}

static struct flow *make_flow(enum flow_kind kind, const char *scheme, const char *method,
                              const char *host, uint16_t port, const char *target, int minor,
                              const char *client, bool is_tls, int status)
{
    struct flow *f = flow_new(1 << 20);

    if (f == NULL)
        abort();
    f->kind = kind;
    snprintf(f->scheme, sizeof(f->scheme), "%s", scheme);
    snprintf(f->method, sizeof(f->method), "%s", method);
    snprintf(f->host, sizeof(f->host), "%s", host);
    snprintf(f->client_addr, sizeof(f->client_addr), "%s", client);
    f->port = port;
    f->target = strdup(target);
    f->request_version = 10 + minor;
    f->response_version = 10 + minor;
    f->is_tls = is_tls;
    f->status = status;
    return f;
}

/* The first Content-Type of a section, as the flow store keeps it. */
static char *content_type(const char *section)
{
    const char *name, *value;
    size_t name_len, value_len, pos = 0;

    while (section != NULL &&
           flow_headers_next(section, &pos, &name, &name_len, &value, &value_len))
        if (name_len == 12 && strncasecmp(name, "Content-Type", 12) == 0)
            return strndup(value, value_len);
    return NULL;
}

/* Returns 0 or -1 (no CUnit assertions: setup() calls it). flows is a view
 * over the segments (schema version 12): a new database's flows are in
 * segment 1's table, and its indexes are named after it. */
static int insert_flow(int64_t id, const struct flow *f)
{
    static const char sql[] =
        "INSERT INTO flows_1 (id, kind, time_start_us, client, scheme, method, host, port, target, "
        "req_version, resp_version, req_headers, resp_headers, status, req_body_size, "
        "resp_body_size, req_body_captured, resp_body_captured, req_truncated, resp_truncated, "
        "req_content_type, resp_content_type, is_tls, error, bytes_up, bytes_down, listener) "
        "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, ?, ?, ?, ?, 0, 0, ?)";
    sqlite3_stmt *st = NULL;
    char version[16];
    char *req_type = content_type(f->request_headers);
    char *resp_type = content_type(f->response_headers);
    int k = 1;
    int rc;

    {
        char other[16];
        snprintf(version, sizeof(version), "%s",
                 flow_version_text(f->request_version, other, sizeof(other)));
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        abort();
    sqlite3_bind_int64(st, k++, id);
    sqlite3_bind_int(st, k++, f->kind);
    sqlite3_bind_text(st, k++, f->client_addr, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, k++, f->scheme, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, k++, f->method, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, k++, f->host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, k++, f->port);
    sqlite3_bind_text(st, k++, f->target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, k++, version, -1, SQLITE_TRANSIENT);
    if (f->status != 0)
        sqlite3_bind_text(st, k, version, -1, SQLITE_TRANSIENT);
    k++;
    sqlite3_bind_text(st, k++, f->request_headers, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, k++, f->response_headers, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, k++, f->status);
    sqlite3_bind_text(st, k++, req_type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, k++, resp_type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, k++, f->is_tls);
    sqlite3_bind_text(st, k++, f->error, -1, SQLITE_TRANSIENT);
    if (f->listener[0] != '\0')
        sqlite3_bind_text(st, k, f->listener, -1, SQLITE_TRANSIENT);
    k++;
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    free(req_type);
    free(resp_type);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int setup(void)
{
    static const char page[] = "<html>hello secret world</html>";
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    char err[CODEC_ERROR_BYTES];
    struct flow *f;

    /* 1: a page over TLS, its body gzip-compressed. */
    f = flows[0] = make_flow(FLOW_HTTP, "https", "GET", "www.example.com", 443, "/index.html?q=1",
                             1, "127.0.0.1:5000", true, 200);
    f->request_headers = strdup("Host: www.example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n");
    f->response_headers =
        strdup("Content-Type: text/html; charset=utf-8\r\nContent-Encoding: gzip\r\n");
    if (codec_encode_content("gzip", (const unsigned char *)page, strlen(page), &gz, &gz_len, err,
                             sizeof(err)) != 0)
        return 1;
    if (set_body(&f->response_body, gz, gz_len) != 0)
        return 1;
    free(gz);
    /* 2: a JSON API call on a port of its own, answered 404. */
    f = flows[1] = make_flow(FLOW_HTTP, "http", "POST", "api.test", 8080, "/v1/users", 1,
                             "127.0.0.1:5001", false, 404);
    f->request_headers = strdup("Host: api.test:8080\r\nContent-Type: application/json\r\n");
    f->response_headers = strdup("Content-Type: application/json\r\n");
    if (set_body(&f->request_body, "{\"name\":\"alice\"}", 16) != 0 ||
        set_body(&f->response_body, "{\"error\":\"not found\"}", 21) != 0)
        return 1;
    /* 3: a WebSocket to an IPv6 literal on the default port. */
    f = flows[2] =
        make_flow(FLOW_WEBSOCKET, "http", "GET", "::1", 80, "/ws", 1, "[::1]:5002", false, 101);
    f->request_headers = strdup("Host: [::1]\r\nUpgrade: websocket\r\n");
    f->response_headers = strdup("Upgrade: websocket\r\nConnection: Upgrade\r\n");
    /* 4: a tunnel that failed: no response, no header sections. */
    f = flows[3] = make_flow(FLOW_TUNNEL, "https", "CONNECT", "pinned.example.net", 443,
                             "pinned.example.net:443", 0, "127.0.0.1:5003", false, 0);
    f->error = strdup("upstream: connection refused");
    /* 5: a script over TLS, HTTP/1.0, answered 503. */
    f = flows[4] = make_flow(FLOW_HTTP, "https", "GET", "cdn.example.org", 443, "/app.JS", 0,
                             "127.0.0.1:5004", true, 503);
    f->request_headers = strdup("Host: cdn.example.org\r\n");
    f->response_headers = strdup("Content-Type: text/javascript\r\n");

    /* The ways in (flows.listener); flow 4 was stored before there was one. */
    snprintf(flows[0]->listener, sizeof(flows[0]->listener), "proxy");
    snprintf(flows[1]->listener, sizeof(flows[1]->listener), "socks5");
    snprintf(flows[2]->listener, sizeof(flows[2]->listener), "reverse");
    snprintf(flows[4]->listener, sizeof(flows[4]->listener), "socks5");

    /* db_open() migrates as tapwire does (version 13 runs per segment). */
    if (db_open(":memory:", &db, err, sizeof(err)) != 0)
        return 1;
    for (int i = 0; i < FLOW_COUNT; i++)
        if (insert_flow(i + 1, flows[i]) != 0)
            return 1;
    return 0;
}

static int teardown(void)
{
    for (int i = 0; i < FLOW_COUNT; i++)
        flow_free(flows[i]);
    sqlite3_close(db);
    return 0;
}

static struct filter *parse_ok(const char *text)
{
    char err[FILTER_ERROR_BYTES] = "";
    struct filter *f = NULL;

    if (filter_parse(text, strlen(text), &f, err, sizeof(err)) != 0)
        fprintf(stderr, "\n  '%s' did not parse: %s\n", text, err);
    CU_ASSERT_PTR_NOT_NULL(f);
    return f;
}

/* ---- parsing ---- */

static void test_errors_name_the_column(void)
{
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {"", "column 1: empty filter"},
        {"   ", "column 1: empty filter"},
        {"~", "column 1: '~' must be followed by a filter name such as ~d or ~u"},
        {"~x foo", "column 1: unknown filter ~x"},
        {"~d", "column 1: ~d needs a value (quote it if it starts with '~' or '!')"},
        {"~d ~m GET", "column 1: ~d needs a value (quote it if it starts with '~' or '!')"},
        {"~d foo &", "column 9: expected a filter after '&'"},
        {"~d foo |", "column 9: expected a filter after '|'"},
        {"!", "column 2: expected a filter after '!'"},
        {"(~d foo", "column 8: expected ')' to close the '(' at column 1"},
        {"~d foo)", "column 7: unexpected ')'"},
        {"()", "column 2: unexpected ')' (expected a filter after '(')"},
        {"a | | b", "column 5: unexpected '|' (expected a filter after '|')"},
        {"& a", "column 1: unexpected '&' (expected a filter)"},
        {"~c abc", "column 4: ~c needs a status code (404) or class (4xx)"},
        {"~listener sock", "column 11: ~listener needs proxy, socks5, transparent, reverse or "
                           "replay"},
        {"~listener", "column 1: ~listener needs a value (quote it if it starts with '~' or '!')"},
        {"~c 0xx", "column 4: ~c needs a status code (404) or class (4xx)"},
        {"~c 1000", "column 4: ~c needs a status code (404) or class (4xx)"},
        {"~u \"abc", "column 4: unterminated quote"},
        {"~u \"(a\"", "column 7: regex error: missing closing parenthesis"},
        {"~d a[", "column 6: regex error: missing terminating ] for character class"},
        {"~q~s", "column 3: a blank must separate ~q from what follows"},
        {"a\x01", "column 2: control character 0x01"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[FILTER_ERROR_BYTES] = "";
        struct filter *f = (struct filter *)1;
        int rc = filter_parse(cases[i].text, strlen(cases[i].text), &f, err, sizeof(err));

        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_PTR_NULL(f);
        if (strcmp(err, cases[i].err) != 0)
            fprintf(stderr, "\n  '%s': got '%s', want '%s'\n", cases[i].text, err, cases[i].err);
        CU_ASSERT_STRING_EQUAL(err, cases[i].err);
    }
}

static void test_bounds_refuse_hostile_input(void)
{
    char text[FILTER_MAX_INPUT_BYTES + 2];
    char err[FILTER_ERROR_BYTES];
    struct filter *f = NULL;

    /* Nesting past the bound, by parentheses and by '!'. */
    memset(text, '(', FILTER_MAX_DEPTH + 1);
    strcpy(text + FILTER_MAX_DEPTH + 1, "a");
    CU_ASSERT_EQUAL(filter_parse(text, strlen(text), &f, err, sizeof(err)), -1);
    CU_ASSERT_STRING_EQUAL(err, "column 33: nested deeper than 32 levels");
    memset(text, '!', FILTER_MAX_DEPTH + 1);
    strcpy(text + FILTER_MAX_DEPTH + 1, "a");
    CU_ASSERT_EQUAL(filter_parse(text, strlen(text), &f, err, sizeof(err)), -1);
    CU_ASSERT_STRING_EQUAL(err, "column 33: nested deeper than 32 levels");
    /* At the bound it parses. */
    memset(text, '(', FILTER_MAX_DEPTH);
    text[FILTER_MAX_DEPTH] = 'a';
    memset(text + FILTER_MAX_DEPTH + 1, ')', FILTER_MAX_DEPTH);
    text[2 * FILTER_MAX_DEPTH + 1] = '\0';
    f = parse_ok(text);
    filter_free(f);
    /* Too many terms: 200 words are 399 nodes. */
    for (int i = 0; i < 200; i++)
        memcpy(text + 2 * i, "a ", 2);
    text[400] = '\0';
    CU_ASSERT_EQUAL(filter_parse(text, strlen(text), &f, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too many terms and operators (at most 256)"));
    CU_ASSERT_EQUAL(strncmp(err, "column ", 7), 0);
    /* Too long. */
    memset(text, 'a', FILTER_MAX_INPUT_BYTES + 1);
    CU_ASSERT_EQUAL(filter_parse(text, FILTER_MAX_INPUT_BYTES + 1, &f, err, sizeof(err)), -1);
    CU_ASSERT_STRING_EQUAL(err, "column 4097: the filter is longer than 4096 bytes");
    CU_ASSERT_PTR_NULL(f);
}

/* The canonical form shows how the parser grouped the expression. */
static void test_precedence_and_canonical_form(void)
{
    static const struct {
        const char *text;
        const char *canonical;
    } cases[] = {
        {"~d foo ~m GET | !~c 404", "~d \"foo\" & ~m \"GET\" | !~c \"404\""},
        {"~m GET | ~m POST & ~c 404", "~m \"GET\" | ~m \"POST\" & ~c \"404\""},
        {"(~m GET | ~m POST) ~c 404", "(~m \"GET\" | ~m \"POST\") & ~c \"404\""},
        {"!(a | b) & c", "!(\"a\" | \"b\") & \"c\""},
        {"!!a", "!!\"a\""},
        {"!~q&~e", "!~q & ~e"},
        {"(a)", "\"a\""},
        {"a | (b | c)", "\"a\" | \"b\" | \"c\""},
        {"a & (b & c)", "\"a\" & \"b\" & \"c\""},
        {"~u 'a\"b'", "~u \"a\\\"b\""},
        {"~u \"x\\\\d\\.y\"", "~u \"x\\\\d\\\\.y\""},
        {"\"a b\" ~websocket", "\"a b\" & ~websocket"},
        {"a!b", "\"a!b\""},
        {"~c 4XX ~src x", "~c \"4XX\" & ~src \"x\""},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct filter *f = parse_ok(cases[i].text);
        struct filter *again;
        char *text, *text2;

        if (f == NULL)
            continue;
        text = filter_format(f);
        CU_ASSERT_PTR_NOT_NULL_FATAL(text);
        if (strcmp(text, cases[i].canonical) != 0)
            fprintf(stderr, "\n  '%s': got '%s'\n", cases[i].text, text);
        CU_ASSERT_STRING_EQUAL(text, cases[i].canonical);
        again = parse_ok(text);
        text2 = again != NULL ? filter_format(again) : NULL;
        CU_ASSERT(text2 != NULL && strcmp(text, text2) == 0);
        free(text2);
        free(text);
        filter_free(again);
        filter_free(f);
    }
}

static void test_needs_reports_what_evaluation_reads(void)
{
    static const struct {
        const char *text;
        unsigned needs;
    } cases[] = {
        {"~d a ~m GET ~u x ~e ~tls", 0},
        {"~c 200", FILTER_NEEDS_RESPONSE},
        {"!~q", FILTER_NEEDS_RESPONSE},
        {"~hq a", FILTER_NEEDS_REQUEST_HEADERS},
        {"~tq a", FILTER_NEEDS_REQUEST_HEADERS},
        {"~bq a", FILTER_NEEDS_REQUEST_HEADERS | FILTER_NEEDS_REQUEST_BODY},
        {"~hs a", FILTER_NEEDS_RESPONSE | FILTER_NEEDS_RESPONSE_HEADERS},
        {"~b a", FILTER_NEEDS_REQUEST_HEADERS | FILTER_NEEDS_REQUEST_BODY | FILTER_NEEDS_RESPONSE |
                     FILTER_NEEDS_RESPONSE_HEADERS | FILTER_NEEDS_RESPONSE_BODY},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct filter *f = parse_ok(cases[i].text);

        if (f != NULL)
            CU_ASSERT_EQUAL(filter_needs(f), cases[i].needs);
        filter_free(f);
    }
}

/* ---- evaluation and SQL, one table ---- */

#define F(n) (1u << ((n)-1))
#define ALL (F(1) | F(2) | F(3) | F(4) | F(5))

static const struct {
    const char *text;
    unsigned matches; /* F(n): flows[n - 1] matches */
    bool needs_eval;  /* the SQL is a superset, not the answer */
} table[] = {
    {"~d example", F(1) | F(4) | F(5), false},
    {"~d ^www\\.example\\.com$", F(1), false},
    {"~d EXAMPLE\\.org$", F(5), false},
    {"~d ^pinned", F(4), false},
    {"~d example.com", F(1), true},
    {"~d \"ex(am|xx)ple\"", F(1) | F(4) | F(5), true},
    {"~m post", F(2), false},
    {"~m ^GET$", F(1) | F(3) | F(5), false},
    {"~c 404", F(2), false},
    {"~c 5xx", F(5), false},
    {"~c 2xx", F(1), false},
    {"!~c 2xx", F(2) | F(3) | F(4) | F(5), false},
    {"~q", F(4), false},
    {"~s", F(1) | F(2) | F(3) | F(5), false},
    {"~e", F(4), false},
    {"!~e", F(1) | F(2) | F(3) | F(5), false},
    {"~websocket", F(3), false},
    {"~tunnel", F(4), false},
    {"~tls", F(1) | F(5), false},
    {"~http2", 0, false},
    {"~version 1\\.0$", F(4) | F(5), false},
    {"~src 5001$", F(2), false},
    {"~u ^https://www\\.example\\.com/index", F(1), false},
    {"~u :8080/", F(2), false},
    {"~u \\[::1\\]/ws$", F(3), false},
    {"~u ^http://\\[::1\\]/", F(3), false},
    {"~u \"/v[0-9]+/\"", F(2), true},
    {"~u \\.js$", F(5), false},
    {"users", F(2), false},
    {"INDEX.HTML", F(1), false},
    {"'a%b'", 0, false},
    {"~h curl", F(1), false},
    {"~h UPGRADE", F(3), false},
    {"~hq json", F(2), false},
    {"~hs websocket", F(3), false},
    {"~hq ^accept:", F(1), true},
    {"~hs \"\"", F(1) | F(2) | F(3) | F(5), false},
    {"~t json", F(2), false},
    {"~ts javascript", F(5), false},
    {"~tq html", 0, false},
    {"~t \"\"", F(1) | F(2) | F(5), false},
    {"~ts ^text/", F(1) | F(5), false},
    {"~b secret", F(1), true},
    {"~bq alice", F(2), true},
    {"~bs 'not found'", F(2), true},
    {"!~b secret", F(2) | F(3) | F(4) | F(5), true},
    {"~b secret | ~c 404", F(1) | F(2), true},
    {"~b secret & ~tls", F(1), true},
    {"!~d example.com", F(2) | F(3) | F(4) | F(5), true},
    {"~d example & ~c 5xx", F(5), false},
    {"~d example ~c 5xx", F(5), false},
    {"~m GET | ~m POST & ~c 404", F(1) | F(2) | F(3) | F(5), false},
    {"(~m GET | ~m POST) & ~c 404", F(2), false},
    {"!(~d example | ~websocket)", F(2), false},
    {"~all", ALL, false},
    {"!~all", 0, false},
    {"~listener socks5", F(2) | F(5), false},
    {"~listener SOCKS5", F(2) | F(5), false},
    {"!~listener socks5", F(1) | F(3) | F(4), false},
    {"~listener proxy & ~tls", F(1), false},
    {"~listener reverse | ~tunnel", F(3) | F(4), false},
    {"~listener 'transparent'", 0, false},
    {"~listener replay", 0, false},
};

static unsigned sql_rows(const struct filter_sql *sql)
{
    char query[8192];
    sqlite3_stmt *st = NULL;
    unsigned rows = 0;
    int rc;

    snprintf(query, sizeof(query), "SELECT id FROM flows WHERE %s ORDER BY id", sql->where);
    rc = sqlite3_prepare_v2(db, query, -1, &st, NULL);
    if (rc != SQLITE_OK)
        fprintf(stderr, "\n  %s: %s\n", query, sqlite3_errmsg(db));
    CU_ASSERT_EQUAL_FATAL(rc, SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_bind_parameter_count(st), (int)sql->param_count);
    for (size_t i = 0; i < sql->param_count; i++) {
        const struct filter_sql_param *p = &sql->params[i];

        if (p->type == FILTER_SQL_INT)
            rc = sqlite3_bind_int64(st, (int)i + 1, p->number);
        else
            rc = sqlite3_bind_text(st, (int)i + 1, p->text, (int)p->len, SQLITE_STATIC);
        CU_ASSERT_EQUAL(rc, SQLITE_OK);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        rows |= 1u << (sqlite3_column_int(st, 0) - 1);
    CU_ASSERT_EQUAL(rc, SQLITE_DONE);
    sqlite3_finalize(st);
    return rows;
}

static void test_evaluates_hand_built_flows(void)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        struct filter *f = parse_ok(table[i].text);
        unsigned got = 0;

        if (f == NULL)
            continue;
        for (int k = 0; k < FLOW_COUNT; k++) {
            char why[256] = "";
            int rc = filter_match(f, flows[k], why, sizeof(why));

            CU_ASSERT(rc == 0 || rc == 1);
            if (rc == 1)
                got |= 1u << k;
        }
        if (got != table[i].matches)
            fprintf(stderr, "\n  '%s': matched %#x, want %#x\n", table[i].text, got,
                    table[i].matches);
        CU_ASSERT_EQUAL(got, table[i].matches);
        filter_free(f);
    }
}

static void test_sql_selects_the_matching_rows(void)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        struct filter *f = parse_ok(table[i].text);
        struct filter_sql sql;
        char err[FILTER_ERROR_BYTES];
        unsigned rows;

        if (f == NULL)
            continue;
        CU_ASSERT_EQUAL_FATAL(filter_to_sql(f, &sql, err, sizeof(err)), 0);
        rows = sql_rows(&sql);
        if (sql.needs_eval != table[i].needs_eval || (!sql.needs_eval && rows != table[i].matches))
            fprintf(stderr, "\n  '%s': %s needs_eval %d rows %#x\n", table[i].text, sql.where,
                    sql.needs_eval, rows);
        CU_ASSERT_EQUAL(sql.needs_eval, table[i].needs_eval);
        if (!sql.needs_eval)
            CU_ASSERT_EQUAL(rows, table[i].matches);
        CU_ASSERT_EQUAL(rows & table[i].matches, table[i].matches); /* never drops a match */
        filter_sql_free(&sql);
        filter_free(f);
    }
}

/* Values are parameters, never SQL text, and the expected forms reach the
 * indexes. */
static void test_sql_binds_values_and_uses_indexes(void)
{
    static const struct {
        const char *text;
        const char *where;
        const char *param; /* text of params[0], or NULL for an integer */
        int64_t number;
        const char *index; /* in EXPLAIN QUERY PLAN, or NULL */
    } cases[] = {
        {"~d ^www\\.Example\\.com$", "(lower(host) = ?)", "www.example.com", 0, "flows_1_host"},
        {"~c 4xx", "(status / 100 = ? AND status / 100 <> 2)", NULL, 4, "flows_1_status_class"},
        {"~c 2xx", "(status / 100 = ?)", NULL, 2, NULL},
        {"~e", "(error IS NOT NULL)", NULL, 0, "flows_1_error"},
        {"~m \"'; DROP TABLE flows; --\"", "(instr(lower(method), ?) > 0)",
         "'; drop table flows; --", 0, NULL},
        {"~d ^a_b%", "(lower(host) LIKE ? ESCAPE '\\')", "a\\_b\\%%", 0, NULL},
        {"~b x", "(1)", NULL, 0, NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct filter *f = parse_ok(cases[i].text);
        struct filter_sql sql;
        char err[FILTER_ERROR_BYTES];

        if (f == NULL)
            continue;
        CU_ASSERT_EQUAL_FATAL(filter_to_sql(f, &sql, err, sizeof(err)), 0);
        if (strcmp(sql.where, cases[i].where) != 0)
            fprintf(stderr, "\n  '%s': %s\n", cases[i].text, sql.where);
        CU_ASSERT_STRING_EQUAL(sql.where, cases[i].where);
        if (cases[i].param != NULL) {
            CU_ASSERT_EQUAL_FATAL(sql.param_count, 1);
            CU_ASSERT_EQUAL(sql.params[0].type, FILTER_SQL_TEXT);
            CU_ASSERT_STRING_EQUAL(sql.params[0].text, cases[i].param);
        } else if (cases[i].number != 0) {
            CU_ASSERT_EQUAL_FATAL(sql.param_count, 1);
            CU_ASSERT_EQUAL(sql.params[0].type, FILTER_SQL_INT);
            CU_ASSERT_EQUAL(sql.params[0].number, cases[i].number);
        }
        if (cases[i].index != NULL) {
            char query[1024];
            sqlite3_stmt *st = NULL;
            bool is_used = false;

            snprintf(query, sizeof(query),
                     "EXPLAIN QUERY PLAN SELECT id FROM flows WHERE %s ORDER BY id DESC LIMIT 100",
                     sql.where);
            CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, query, -1, &st, NULL), SQLITE_OK);
            while (sqlite3_step(st) == SQLITE_ROW)
                is_used |= strstr((const char *)sqlite3_column_text(st, 3), cases[i].index) != NULL;
            sqlite3_finalize(st);
            CU_ASSERT_TRUE(is_used);
        }
        filter_sql_free(&sql);
        filter_free(f);
    }
    CU_ASSERT_EQUAL(sqlite3_exec(db, "SELECT count(*) FROM flows", NULL, NULL, NULL), SQLITE_OK);
}

static void test_catastrophic_regex_is_bounded(void)
{
    struct filter *f = parse_ok("~bs \"(a|aa)+$\"");
    struct flow *fl = flow_new(1 << 20);
    char body[4096];
    char why[256] = "";
    struct timespec t0, t1;
    int rc;

    CU_ASSERT_PTR_NOT_NULL_FATAL(fl);
    memset(body, 'a', sizeof(body));
    body[sizeof(body) - 1] = 'b';
    CU_ASSERT_EQUAL(set_body(&fl->response_body, body, sizeof(body)), 0);
    fl->status = 200;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = filter_match(f, fl, why, sizeof(why));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_TRUE(strstr(why, "limit") != NULL || strstr(why, "took longer") != NULL);
    CU_ASSERT_TRUE((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 <
                   FILTER_MATCH_BUDGET_MS + 2000);
    flow_free(fl);
    filter_free(f);
}

/* A compressed body whose capture was cut off cannot be decoded: its
 * stored bytes are searched instead, and nothing fails. */
static void test_truncated_compressed_body_searches_stored_bytes(void)
{
    struct filter *f = parse_ok("~bs secret");
    struct flow *fl = flow_new(4);

    CU_ASSERT_PTR_NOT_NULL_FATAL(fl);
    fl->status = 200;
    fl->response_headers = strdup("Content-Encoding: gzip\r\n");
    CU_ASSERT_EQUAL(flow_body_append(&fl->response_body, "secret, and more", 16), 0);
    CU_ASSERT_TRUE(fl->response_body.truncated || fl->response_body.len < 16);
    CU_ASSERT_EQUAL(filter_match(f, fl, NULL, 0), 0); /* only "secr" was kept */
    filter_free(f);
    f = parse_ok("~bs ^secr");
    CU_ASSERT_EQUAL(filter_match(f, fl, NULL, 0), 1);
    filter_free(f);
    flow_free(fl);
}

/* The text handed to the search index is held by the host || target of
 * every flow the expression matches: only terms of the AND chain at the
 * top, never a run that may lie in the scheme, the "//" or the port. */
static void test_index_text_is_what_every_match_holds(void)
{
    static const struct {
        const char *text;
        const char *index_text; /* NULL: none */
    } cases[] = {
        {"rare-marker", "rare-marker"},
        {"~u rare-marker & ~c 404", "rare-marker"},
        {"~d example\\.com & foo/bar", "example.com"},
        {"~d example.com", "example"},
        {"~u //login", "login"},
        {"~u 8443/api/v2", "api/v2"},
        {"~u :8080/path", NULL},
        {"https", NULL},
        {"~u tps", NULL},
        {"~u ab", NULL},
        {"!~u secret", NULL},
        {"login | logout", NULL},
        {"~u 'rare-mark[e]r'", NULL},
        {"~m POST & ~c 200", NULL},
        {"~hq cookie-name", NULL},
    };
    static const char *const urls[][4] = {
        /* scheme, host, port, target */
        {"https", "www.example.com", "443", "/login?next=rare-marker"},
        {"http", "api.test", "8443", "/api/v2/items"},
        {"https", "example.com", "8080", "/path"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct filter *f = parse_ok(cases[i].text);
        struct filter_sql sql;
        char err[FILTER_ERROR_BYTES];

        if (f == NULL)
            continue;
        CU_ASSERT_EQUAL_FATAL(filter_to_sql(f, &sql, err, sizeof(err)), 0);
        if (cases[i].index_text == NULL) {
            if (sql.index_text != NULL)
                fprintf(stderr, "\n  '%s': %s\n", cases[i].text, sql.index_text);
            CU_ASSERT_PTR_NULL(sql.index_text);
        } else {
            CU_ASSERT_PTR_NOT_NULL_FATAL(sql.index_text);
            CU_ASSERT_STRING_EQUAL(sql.index_text, cases[i].index_text);
        }
        for (size_t u = 0; u < sizeof(urls) / sizeof(urls[0]) && sql.index_text != NULL; u++) {
            struct flow *fl = flow_new(1024);
            char indexed[512];

            CU_ASSERT_PTR_NOT_NULL_FATAL(fl);
            snprintf(fl->scheme, sizeof(fl->scheme), "%s", urls[u][0]);
            snprintf(fl->host, sizeof(fl->host), "%s", urls[u][1]);
            fl->port = (unsigned)atoi(urls[u][2]);
            fl->target = strdup(urls[u][3]);
            snprintf(fl->method, sizeof(fl->method), "GET");
            fl->status = 404;
            snprintf(indexed, sizeof(indexed), "%s%s", urls[u][1], urls[u][3]);
            if (filter_match(f, fl, NULL, 0) == 1)
                CU_ASSERT_PTR_NOT_NULL(strstr(indexed, sql.index_text));
            flow_free(fl);
        }
        filter_sql_free(&sql);
        filter_free(f);
    }
}

#define ADD(suite, fn) (CU_add_test(suite, #fn + 5, fn) != NULL)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("filter_parse", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_errors_name_the_column) ||
        !ADD(suite, test_bounds_refuse_hostile_input) ||
        !ADD(suite, test_precedence_and_canonical_form) ||
        !ADD(suite, test_needs_reports_what_evaluation_reads))
        goto fail;
    suite = CU_add_suite("filter_match", setup, teardown);
    if (suite == NULL || !ADD(suite, test_evaluates_hand_built_flows) ||
        !ADD(suite, test_catastrophic_regex_is_bounded) ||
        !ADD(suite, test_truncated_compressed_body_searches_stored_bytes))
        goto fail;
    suite = CU_add_suite("filter_sql", setup, teardown);
    if (suite == NULL || !ADD(suite, test_sql_selects_the_matching_rows) ||
        !ADD(suite, test_sql_binds_values_and_uses_indexes) ||
        !ADD(suite, test_index_text_is_what_every_match_holds))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
