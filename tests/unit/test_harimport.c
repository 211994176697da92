/*
 * Unit tests for harimport: export -> import -> export through a real flow
 * store gives the same entries (bodies plain, compressed, binary and
 * absent; timings with and without a new connection; a failed exchange),
 * imported flows are marked, the export of a filter holds what the filter
 * lists, and a hostile document is refused or its bad entries skipped,
 * each with a reason.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "codec.h"
#include "db.h"
#include "flowstore.h"
#include "har.h"
#include "harimport.h"
#include "log.h"
#include "testutil.h"

#define SYNC_MS 10000
#define T0_US INT64_C(1700000000000000) /* 2023-11-14T22:13:20Z */
#define MAX_FLOWS 64

static char dir[64];
static char db_path[128];
static struct flowstore *store;

static void setup(void)
{
    char err[512] = "";

    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-harimport-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    snprintf(db_path, sizeof(db_path), "%s/%s", dir, DB_FILE);
    log_init(2, LOG_WARN);
    if (flowstore_open(db_path, 1000, &store, err, sizeof(err)) != 0) {
        fprintf(stderr, "flowstore_open: %s\n", err);
        abort();
    }
    flowstore_set_body_decoder(store, codec_decode_content);
}

static void teardown(void)
{
    flowstore_close(store);
    store = NULL;
    testutil_remove_dir(dir);
}

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);

    if (copy == NULL)
        abort();
    return copy;
}

static struct flow *base_flow(const char *scheme, const char *host, uint16_t port,
                              const char *target, int64_t start)
{
    struct flow *f = flow_new(1024 * 1024);

    if (f == NULL)
        abort();
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:50000");
    snprintf(f->scheme, sizeof(f->scheme), "%s", scheme);
    snprintf(f->method, sizeof(f->method), "GET");
    snprintf(f->host, sizeof(f->host), "%s", host);
    f->port = port;
    f->target = xstrdup(target);
    f->request_version = 11;
    f->request_headers = xstrdup("Host: x\r\nAccept: */*\r\nCookie: a=1; b=2\r\n");
    f->status = 200;
    f->response_version = 11;
    snprintf(f->reason, sizeof(f->reason), "OK");
    f->timings.start = start;
    f->timings.request_sent = start + 2000;
    f->timings.first_byte = start + 7000;
    f->timings.done = start + 8500;
    return f;
}

/* A mix of what a capture holds. */
static void store_known_flows(void)
{
    struct flow *f;
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    char err[128];
    static const char page[] = "<html><body>the compressed page, a bit repeated repeated "
                               "repeated repeated</body></html>";

    /* 1: a plain text response, a query, an origin on another port. */
    f = base_flow("http", "plain.test", 8080, "/search?q=a+b&x=1", T0_US);
    f->response_headers = xstrdup("Content-Type: text/plain\r\nSet-Cookie: s=9; Path=/\r\n");
    flow_body_append(&f->response_body, "hello plain", 11);
    snprintf(f->listener, sizeof(f->listener), "socks5"); /* _listener goes round too */
    CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);
    /* 2: a POST with a JSON body over TLS, a new connection with TLS, HTTP/2. */
    f = base_flow("https", "api.test", 443, "/login", T0_US + 1000000);
    snprintf(f->method, sizeof(f->method), "POST");
    free(f->request_headers);
    f->request_headers = xstrdup("Host: api.test\r\nContent-Type: application/json\r\n");
    f->request_version = 20; /* HTTP/2 both ways, as h2relay records it */
    f->response_version = 20;
    flow_body_append(&f->request_body, "{\"user\":\"u\"}", 12);
    f->response_headers = xstrdup("Content-Type: application/json\r\n");
    flow_body_append(&f->response_body, "{\"ok\":true}", 11);
    f->is_tls = true;
    f->timings.connected = T0_US + 1000000 + 1000;
    f->timings.tls_done = T0_US + 1000000 + 1800;
    f->timings.request_sent = T0_US + 1000000 + 2500;
    snprintf(f->listener, sizeof(f->listener), "reverse");
    CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);
    /* 3: a gzip response, stored compressed as captured. */
    f = base_flow("https", "gz.test", 443, "/page", T0_US + 2000000);
    f->response_headers = xstrdup("Content-Type: text/html\r\nContent-Encoding: gzip\r\n");
    CU_ASSERT_FATAL(codec_encode_content("gzip", (const unsigned char *)page, strlen(page), &gz,
                                         &gz_len, err, sizeof(err)) == 0);
    flow_body_append(&f->response_body, gz, gz_len);
    free(gz);
    CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);
    /* 4: a binary response (base64 in HAR), HTTP/1.0. */
    f = base_flow("http", "img.test", 80, "/logo.png", T0_US + 3000000);
    f->request_version = 10;
    f->response_version = 10;
    f->response_headers = xstrdup("Content-Type: image/png\r\n");
    flow_body_append(&f->response_body, "\x89PNG\r\n\x1a\n\0\xff\xfe", 11);
    CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);
    /* 5: no response: the origin refused. */
    f = base_flow("http", "down.test", 80, "/", T0_US + 4000000);
    f->status = 0;
    f->reason[0] = '\0';
    f->timings.request_sent = 0;
    f->timings.first_byte = 0;
    f->timings.done = T0_US + 4000000 + 300;
    f->error = xstrdup("connection refused");
    CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
}

static json_t *read_har(struct har *har)
{
    char err[512] = "";
    char *doc = NULL;
    size_t doc_len = 0, len;
    const char *piece;
    json_error_t jerr;
    json_t *root = NULL;
    int rc;

    while ((rc = har_read(har, &piece, &len, err, sizeof(err))) == 1) {
        char *grown = realloc(doc, doc_len + len + 1);

        if (grown == NULL)
            abort();
        doc = grown;
        memcpy(doc + doc_len, piece, len);
        doc_len += len;
        doc[doc_len] = '\0';
    }
    if (rc != 0)
        fprintf(stderr, "har_read: %s\n", err);
    else if ((root = json_loadb(doc, doc_len, 0, &jerr)) == NULL)
        fprintf(stderr, "HAR does not parse: %s\n", jerr.text);
    har_close(har);
    free(doc);
    return root;
}

static json_t *export_ids(const int64_t *ids, size_t count)
{
    struct har *har = NULL;
    char err[512];

    CU_ASSERT_FATAL(har_open(store, ids, count, codec_decode_content, &har, err, sizeof(err)) == 0);
    return read_har(har);
}

static json_t *export_filter(const struct flowstore_filter *filter)
{
    struct har *har = NULL;
    char err[512];

    CU_ASSERT_FATAL(
        har_open_filtered(store, filter, codec_decode_content, &har, err, sizeof(err)) == 0);
    return read_har(har);
}

struct collected {
    struct flow *flows[MAX_FLOWS];
    size_t count;
};

static int collect(void *arg, struct flow *flow)
{
    struct collected *c = arg;

    if (c->count == MAX_FLOWS) {
        flow_free(flow);
        return -1;
    }
    c->flows[c->count++] = flow;
    return 0;
}

/* Imports text into the store; returns the result (-1 imported on error). */
static struct harimport_result import_text(const char *text, int *rc, char *err, size_t err_len)
{
    struct collected c = {.count = 0};
    struct harimport_result result;
    char werr[256];

    *rc = harimport_parse(text, strlen(text), 1024 * 1024, collect, &c, &result, err, err_len);
    CU_ASSERT_EQUAL(flowstore_write(store, c.flows, c.count, werr, sizeof(werr)), 0);
    return result;
}

static int64_t query_int(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int64_t value = -1;

    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static void test_export_import_export_gives_the_same_entries(void)
{
    int64_t ids[5] = {1, 2, 3, 4, 5};
    int64_t new_ids[5] = {6, 7, 8, 9, 10};
    json_t *first, *second, *e1, *e2;
    struct harimport_result result;
    char err[512] = "";
    char *text;
    size_t i;
    int rc;

    store_known_flows();
    first = export_ids(ids, 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(first);
    text = json_dumps(first, JSON_COMPACT | JSON_REAL_PRECISION(16));
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    result = import_text(text, &rc, err, sizeof(err));
    free(text);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(result.imported, 5);
    CU_ASSERT_EQUAL(result.skipped, 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE imported = 1"), 5);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows WHERE imported = 1"), 6);
    /* HTTP/2 comes back as HTTP/2 (version 20), not as HTTP/1.1. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE req_version = 'HTTP/2' AND "
                              "resp_version = 'HTTP/2'"),
                    2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE imported = 1 AND req_version = "
                              "'HTTP/1.0'"),
                    1);
    /* tapwire's own _listener comes back; none stays none. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE imported = 1 AND (id = 6 AND "
                              "listener = 'socks5' OR id = 7 AND listener = 'reverse' OR id > 7 "
                              "AND listener IS NULL)"),
                    5);
    /* The gzip body is kept compressed again, as captured. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE id = 8 AND resp_content_encoding "
                              "= 'gzip' AND hex(substr(resp_body, 1, 2)) = '1F8B'"),
                    1);

    second = export_ids(new_ids, 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(second);
    CU_ASSERT_EQUAL_FATAL(
        json_array_size(json_object_get(json_object_get(second, "log"), "entries")), 5);
    for (i = 0; i < 5; i++) {
        e1 = json_array_get(json_object_get(json_object_get(first, "log"), "entries"), i);
        e2 = json_array_get(json_object_get(json_object_get(second, "log"), "entries"), i);
        json_object_del(e1, "_tapwire_id");
        json_object_del(e2, "_tapwire_id");
        CU_ASSERT_TRUE(json_equal(e1, e2));
        if (!json_equal(e1, e2)) {
            char *a = json_dumps(e1, JSON_SORT_KEYS), *b = json_dumps(e2, JSON_SORT_KEYS);

            fprintf(stderr, "entry %zu differs:\n%s\n%s\n", i + 1, a, b);
            free(a);
            free(b);
        }
    }
    json_decref(first);
    json_decref(second);
}

static void test_filtered_export_holds_what_the_filter_lists(void)
{
    struct flowstore_filter filter = {0};
    json_t *har, *entries;

    store_known_flows();
    filter.url_text = ".test/LOG"; /* /login and /logo.png */
    har = export_filter(&filter);
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    entries = json_object_get(json_object_get(har, "log"), "entries");
    CU_ASSERT_EQUAL_FATAL(json_array_size(entries), 2);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
                               json_object_get(json_array_get(entries, 0), "request"), "url")),
                           "http://img.test/logo.png");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
                               json_object_get(json_array_get(entries, 1), "request"), "url")),
                           "https://api.test/login");
    json_decref(har);
    filter.url_text = NULL;
    filter.status_class = FLOWSTORE_STATUS_ERROR;
    har = export_filter(&filter);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(json_object_get(har, "log"), "entries")), 1);
    json_decref(har);
}

#define ENTRY(url, extra)                                                                          \
    "{\"startedDateTime\":\"2023-11-14T22:13:20.500+01:00\",\"request\":{\"method\":\"GET\","      \
    "\"url\":\"" url "\",\"httpVersion\":\"HTTP/1.1\",\"headers\":[{\"name\":\"Host\","            \
    "\"value\":\"h\"}]" extra "},\"response\":{\"status\":200,\"statusText\":\"OK\","              \
    "\"httpVersion\":\"HTTP/1.1\",\"headers\":[],\"content\":{\"size\":0,\"mimeType\":\"\"}},"     \
    "\"timings\":{\"send\":1,\"wait\":2,\"receive\":3}}"

static void test_bad_entries_are_skipped_with_a_reason(void)
{
    static const char doc[] = "{\"log\":{\"version\":\"1.2\",\"entries\":[" ENTRY("ftp://x.test/", "") "," ENTRY(
        "http://ok.test/fine?x=1#frag",
        "") ",{\"request\":7}," ENTRY("http://bad host/",
                                      "") "," ENTRY("http://u@x.test/",
                                                    "") "," ENTRY("http://"
                                                                  "x.test:"
                                                                  "99999/",
                                                                  "") "," ENTRY("https://"
                                                                                "[::1]:8443/v6",
                                                                                "") "," ENTRY("http"
                                                                                              "://"
                                                                                              "x."
                                                                                              "test"
                                                                                              "/",
                                                                                              ",\"p"
                                                                                              "ostD"
                                                                                              "ata"
                                                                                              "\":{"
                                                                                              "\"te"
                                                                                              "xt\""
                                                                                              ":\"@"
                                                                                              "@@"
                                                                                              "\","
                                                                                              "\"en"
                                                                                              "codi"
                                                                                              "ng\""
                                                                                              ":\"b"
                                                                                              "ase6"
                                                                                              "4\""
                                                                                              "}") "]}}";
    static const char *const refused[] = {
        "not json",
        "{\"log\":{}}",
        "{\"log\":{\"entries\":{}}}",
        "[1,2]",
    };
    struct harimport_result result;
    char err[512] = "";
    size_t i;
    int rc;

    result = import_text(doc, &rc, err, sizeof(err));
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(result.imported, 2);
    CU_ASSERT_EQUAL(result.skipped, 6);
    CU_ASSERT_STRING_EQUAL(result.first_skipped, "entry 1: the URL is not http or https");
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE host = 'ok.test' AND target = "
                              "'/fine?x=1' AND port = 80"),
                    1);
    /* 22:13:20.500+01:00 is 21:13:20.5 UTC; the phases become marks. */
    CU_ASSERT_EQUAL(query_int("SELECT time_start_us FROM flows WHERE host = 'ok.test'"),
                    T0_US - INT64_C(3600000000) + 500000);
    CU_ASSERT_EQUAL(query_int("SELECT done_us - time_start_us FROM flows WHERE host = 'ok.test'"),
                    6000);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE host = '::1' AND port = 8443"), 1);
    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        result = import_text(refused[i], &rc, err, sizeof(err));
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_EQUAL(result.imported, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "HAR"));
    }
}

static void test_header_with_a_line_break_skips_the_entry(void)
{
    static const char doc[] =
        "{\"log\":{\"entries\":[{\"startedDateTime\":\"2023-11-14T22:13:20Z\",\"request\":{"
        "\"method\":\"GET\",\"url\":\"http://x.test/\",\"headers\":[{\"name\":\"X-A\","
        "\"value\":\"1\\r\\nX-Injected: 2\"}]},\"response\":{\"status\":200}},"
        "{\"startedDateTime\":\"2023-11-14T22:13:20Z\",\"request\":{\"method\":\"G ET\","
        "\"url\":\"http://x.test/\"},\"response\":{\"status\":200}},"
        "{\"startedDateTime\":\"yesterday\",\"request\":{\"method\":\"GET\","
        "\"url\":\"http://x.test/\"},\"response\":{\"status\":200}}]}}";
    struct harimport_result result;
    char err[512] = "";
    int rc;

    result = import_text(doc, &rc, err, sizeof(err));
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(result.imported, 0);
    CU_ASSERT_EQUAL(result.skipped, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(result.first_skipped, "characters a field cannot have"));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 0);
}

/* httpVersion as browsers spell it: HTTP/2 as "h2" and "http/2.0" too; a
 * version a flow cannot name is HTTP/1.1. */
static void test_http_versions_are_read_as_flow_versions(void)
{
    static const char *const spellings[][2] = {
        {"HTTP/2", "HTTP/2"},     {"h2", "HTTP/2"},         {"http/2.0", "HTTP/2"},
        {"HTTP/1.0", "HTTP/1.0"}, {"http/1.1", "HTTP/1.1"}, {"h3", "HTTP/1.1"},
    };
    char doc[512], query[256], err[512] = "";
    struct harimport_result result;
    size_t i;
    int rc;

    for (i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        snprintf(doc, sizeof(doc),
                 "{\"log\":{\"entries\":[{\"startedDateTime\":\"2023-11-14T22:13:20Z\","
                 "\"request\":{\"method\":\"GET\",\"url\":\"http://v%zu.test/\","
                 "\"httpVersion\":\"%s\"},\"response\":{\"status\":200,\"httpVersion\":"
                 "\"%s\"}}]}}",
                 i, spellings[i][0], spellings[i][0]);
        result = import_text(doc, &rc, err, sizeof(err));
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(result.imported, 1);
        snprintf(query, sizeof(query),
                 "SELECT count(*) FROM flows WHERE host = 'v%zu.test' AND req_version = '%s' AND "
                 "resp_version = '%s'",
                 i, spellings[i][1], spellings[i][1]);
        CU_ASSERT_EQUAL(query_int(query), 1);
    }
}

/* _listener is kept only when it names a listener tapwire has. */
static void test_listener_is_kept_only_when_tapwire_knows_it(void)
{
    static const char *const names[][2] = {
        {"\"transparent\"", "transparent"},
        {"\"proxy\"", "proxy"},
        {"\"bogus\"", NULL},
        {"\"SOCKS5\"", NULL},
        {"42", NULL},
        {"\"\"", NULL},
    };
    char doc[512], query[256], err[512] = "";
    struct harimport_result result;
    size_t i;
    int rc;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(doc, sizeof(doc),
                 "{\"log\":{\"entries\":[{\"startedDateTime\":\"2023-11-14T22:13:20Z\","
                 "\"request\":{\"method\":\"GET\",\"url\":\"http://l%zu.test/\"},"
                 "\"response\":{\"status\":200},\"_listener\":%s}]}}",
                 i, names[i][0]);
        result = import_text(doc, &rc, err, sizeof(err));
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(result.imported, 1);
        if (names[i][1] != NULL)
            snprintf(query, sizeof(query),
                     "SELECT count(*) FROM flows WHERE host = 'l%zu.test' AND listener = '%s'", i,
                     names[i][1]);
        else
            snprintf(query, sizeof(query),
                     "SELECT count(*) FROM flows WHERE host = 'l%zu.test' AND listener IS NULL", i);
        CU_ASSERT_EQUAL(query_int(query), 1);
    }
}

int main(void)
{
    CU_pSuite suite;
    unsigned failures;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("harimport", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "export_import_export_gives_the_same_entries",
                     test_export_import_export_gives_the_same_entries) ||
        !CU_add_test(suite, "listener_is_kept_only_when_tapwire_knows_it",
                     test_listener_is_kept_only_when_tapwire_knows_it) ||
        !CU_add_test(suite, "filtered_export_holds_what_the_filter_lists",
                     test_filtered_export_holds_what_the_filter_lists) ||
        !CU_add_test(suite, "bad_entries_are_skipped_with_a_reason",
                     test_bad_entries_are_skipped_with_a_reason) ||
        !CU_add_test(suite, "header_with_a_line_break_skips_the_entry",
                     test_header_with_a_line_break_skips_the_entry) ||
        !CU_add_test(suite, "http_versions_are_read_as_flow_versions",
                     test_http_versions_are_read_as_flow_versions)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
