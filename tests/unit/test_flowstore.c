/*
 * Unit tests for flowstore: what goes through the queue comes back field by
 * field, bodies are bounded by the capture limit, the oldest flows are
 * pruned, a full queue drops and counts, database errors are counted while
 * the writer keeps going, listing pages and filters, delete and clear, HAR
 * export, what rewrite rules changed (the originals), where a body is kept
 * (small ones in the flow's row, the rest in flow_bodies) and the migrations
 * of version-1, -3, -4, -6 and -7 databases.
 *
 * The writer is paused where a test needs it by a written-callback that
 * blocks (the callback contract says it must not; here that is the point),
 * so no test-only knob is compiled into the store.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "clock.h"
#include "codec.h"
#include "db.h"
#include "embedded.h"
#include "flowseg.h"
#include "flowstore.h"
#include "har.h"
#include "log.h"
#include "searchtext.h"
#include "testutil.h"

#define SYNC_MS 10000
#define T0_US INT64_C(1700000000000000) /* 2023-11-14T22:13:20Z */
/* The flow store keeps a captured body as sent in its flow's row when it is
 * at most an eighth of a page (schema version 8), else in flow_bodies: 2 KiB
 * in a new file. A large body is well past that. */
#define INLINE_BODY_MAX_BYTES (DB_PAGE_SIZE / 8)
#define LARGE_BODY_BYTES (INLINE_BODY_MAX_BYTES + 1000)

static char dir[64];
static char db_path[128];
static char log_path[160];
static int log_fd = -1;

/* Each test gets a new directory, database and log file; run by CUnit
 * around each test, so a failed test still cleans up. */
static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-flowstore-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    snprintf(db_path, sizeof(db_path), "%s/%s", dir, DB_FILE);
    snprintf(log_path, sizeof(log_path), "%s/log", dir);
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        perror("open log");
        abort();
    }
    log_init(log_fd, LOG_DEBUG);
}

static void teardown(void)
{
    log_init(2, LOG_WARN);
    close(log_fd);
    log_fd = -1;
    testutil_remove_dir(dir);
}

static struct flowstore *open_store(int64_t max_flows)
{
    struct flowstore *store = NULL;
    char err[512] = "";

    if (flowstore_open(db_path, max_flows, &store, err, sizeof(err)) != 0)
        fprintf(stderr, "flowstore_open: %s\n", err);
    return store;
}

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);

    if (copy == NULL)
        abort();
    return copy;
}

/* A plain GET of host/path answered with status; no bodies. */
static struct flow *simple_flow(const char *method, const char *host, const char *path, int status)
{
    struct flow *f = flow_new(1024);

    if (f == NULL)
        abort();
    f->timings.start = T0_US;
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:50000");
    snprintf(f->scheme, sizeof(f->scheme), "http");
    snprintf(f->method, sizeof(f->method), "%s", method);
    snprintf(f->host, sizeof(f->host), "%s", host);
    f->port = 80;
    f->target = xstrdup(path);
    f->request_version = 11;
    f->request_headers = xstrdup("Host: x\r\n");
    if (status != 0) {
        f->status = status;
        f->response_version = 11;
        snprintf(f->reason, sizeof(f->reason), "Reason");
        f->response_headers = xstrdup("Content-Type: text/plain\r\n");
    }
    return f;
}

static void submit(struct flowstore *store, struct flow *f)
{
    CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);
}

static void submit_many(struct flowstore *store, int count)
{
    char path[32];
    int i;

    for (i = 0; i < count; i++) {
        snprintf(path, sizeof(path), "/n/%d", i);
        submit(store, simple_flow("GET", "many.test", path, 200));
    }
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
    else
        fprintf(stderr, "%s: %s\n", sql, db != NULL ? sqlite3_errmsg(db) : "no database");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static int exec_sql(const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    int rc = sqlite3_open(db_path, &db);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, msg != NULL ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static struct flowstore_record **list(struct flowstore *store, const struct flowstore_filter *f,
                                      size_t *count)
{
    struct flowstore_record **records = NULL;
    char err[512] = "";

    *count = 0;
    if (flowstore_list(store, f, &records, count, err, sizeof(err)) != 0)
        fprintf(stderr, "flowstore_list: %s\n", err);
    return records;
}

/* The ids a filter lists, newest first, as "3,2,1". */
static void listed_ids(struct flowstore *store, const struct flowstore_filter *f, char *out,
                       size_t out_len)
{
    size_t count, i, used = 0;
    struct flowstore_record **records = list(store, f, &count);

    out[0] = '\0';
    for (i = 0; i < count && used < out_len; i++)
        used += (size_t)snprintf(out + used, out_len - used, "%s%" PRId64, i > 0 ? "," : "",
                                 records[i]->flow.id);
    flowstore_records_free(records, count);
}

/* The bytes of one stored body are exactly want (want NULL: no body). */
static void expect_body(struct flowstore *store, int64_t id, enum flowstore_direction direction,
                        const void *want, size_t want_len)
{
    unsigned char *body = NULL;
    size_t len = 0;
    char err[512] = "";

    CU_ASSERT_EQUAL(flowstore_get_body(store, id, direction, &body, &len, err, sizeof(err)), 0);
    if (want == NULL) {
        CU_ASSERT_PTR_NULL(body);
        CU_ASSERT_EQUAL(len, 0);
    } else {
        CU_ASSERT_EQUAL(len, want_len);
        CU_ASSERT(body != NULL && len == want_len && memcmp(body, want, len) == 0);
        if (body == NULL || len != want_len || memcmp(body, want, len) != 0)
            fprintf(stderr, "flow %" PRId64 " body %d: %zu bytes, expected %zu\n", id,
                    (int)direction, len, want_len);
    }
    free(body);
}

/* len bytes that change from one offset to the next and from one seed to
 * another, so a body read back shifted, cut short or from another flow does
 * not compare equal. Caller frees with free(). */
static unsigned char *patterned_bytes(size_t len, unsigned seed)
{
    unsigned char *bytes = malloc(len > 0 ? len : 1);
    size_t i;

    if (bytes == NULL)
        abort();
    for (i = 0; i < len; i++)
        bytes[i] = (unsigned char)((i * 31 + seed) % 251);
    return bytes;
}

/* Captures len patterned bytes into body, raising its capture limit so
 * that all of them are kept. */
static void append_patterned(struct flow_body *body, size_t len, unsigned seed)
{
    unsigned char *bytes = patterned_bytes(len, seed);

    if (body->limit < body->len + len)
        body->limit = body->len + len;
    CU_ASSERT_EQUAL(flow_body_append(body, bytes, len), 0);
    free(bytes);
}

static void expect_patterned_body(struct flowstore *store, int64_t id,
                                  enum flowstore_direction direction, size_t len, unsigned seed)
{
    unsigned char *want = patterned_bytes(len, seed);

    expect_body(store, id, direction, want, len);
    free(want);
}

/* The value sql selects is exactly the BLOB want (want NULL: SQL NULL);
 * reads the file itself, past the store, to see where a body was put. */
static bool query_blob_is(const char *sql, const void *want, size_t want_len)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    bool is_equal = false;

    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        int type = sqlite3_column_type(stmt, 0); /* before any conversion */
        const void *blob = sqlite3_column_blob(stmt, 0);
        size_t len = (size_t)sqlite3_column_bytes(stmt, 0);

        if (want == NULL)
            is_equal = type == SQLITE_NULL;
        else
            is_equal = type == SQLITE_BLOB && len == want_len && memcmp(blob, want, len) == 0;
        if (!is_equal)
            fprintf(stderr, "%s: type %d, %zu bytes, expected %s of %zu bytes\n", sql, type, len,
                    want == NULL ? "NULL" : "a BLOB", want_len);
    } else {
        fprintf(stderr, "%s: %s\n", sql, db != NULL ? sqlite3_errmsg(db) : "no database");
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return is_equal;
}

static size_t count_lines_containing(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, needle) != NULL)
            n++;
    fclose(f);
    return n;
}

/* ---- bodies and header parsing ---- */

static void test_body_append_holds_at_most_limit_and_counts_every_byte(void)
{
    struct flow_body body = {0};
    char chunk[700];

    memset(chunk, 'a', sizeof(chunk));
    body.limit = 1000;
    CU_ASSERT_EQUAL(flow_body_append(&body, chunk, sizeof(chunk)), 0);
    CU_ASSERT_EQUAL(body.len, 700);
    CU_ASSERT_FALSE(body.truncated);
    CU_ASSERT_EQUAL(flow_body_append(&body, chunk, sizeof(chunk)), 0);
    CU_ASSERT_EQUAL(flow_body_append(&body, chunk, sizeof(chunk)), 0);
    CU_ASSERT_EQUAL(body.len, 1000);
    CU_ASSERT_EQUAL(body.size, 2100);
    CU_ASSERT_TRUE(body.truncated);
    CU_ASSERT(body.capacity <= body.limit);
    free(body.data);
}

static void test_body_with_zero_limit_counts_without_holding(void)
{
    struct flow_body body = {0};

    CU_ASSERT_EQUAL(flow_body_append(&body, "hello", 5), 0);
    CU_ASSERT_PTR_NULL(body.data);
    CU_ASSERT_EQUAL(body.len, 0);
    CU_ASSERT_EQUAL(body.size, 5);
    CU_ASSERT_TRUE(body.truncated);
}

static void test_headers_next_walks_fields_in_order_trimming_blanks(void)
{
    const char *text = "Host: a\r\nX-Odd:\t spaced \t\r\nno colon line\r\nEmpty:\r\nLast: z";
    const char *name, *value;
    size_t name_len, value_len, pos = 0;

    CU_ASSERT_TRUE(flow_headers_next(text, &pos, &name, &name_len, &value, &value_len));
    CU_ASSERT_EQUAL(name_len, 4);
    CU_ASSERT_NSTRING_EQUAL(name, "Host", 4);
    CU_ASSERT_NSTRING_EQUAL(value, "a", value_len);
    CU_ASSERT_TRUE(flow_headers_next(text, &pos, &name, &name_len, &value, &value_len));
    CU_ASSERT_NSTRING_EQUAL(name, "X-Odd", name_len);
    CU_ASSERT_EQUAL(value_len, 6);
    CU_ASSERT_NSTRING_EQUAL(value, "spaced", 6);
    CU_ASSERT_TRUE(flow_headers_next(text, &pos, &name, &name_len, &value, &value_len));
    CU_ASSERT_NSTRING_EQUAL(name, "Empty", name_len);
    CU_ASSERT_EQUAL(value_len, 0);
    CU_ASSERT_TRUE(flow_headers_next(text, &pos, &name, &name_len, &value, &value_len));
    CU_ASSERT_NSTRING_EQUAL(name, "Last", name_len);
    CU_ASSERT_NSTRING_EQUAL(value, "z", value_len);
    CU_ASSERT_FALSE(flow_headers_next(text, &pos, &name, &name_len, &value, &value_len));
    pos = 0;
    CU_ASSERT_FALSE(flow_headers_next(NULL, &pos, &name, &name_len, &value, &value_len));
}

/* ---- writing and reading back ---- */

static const char request_headers[] = "Host: api.example.test:8443\r\n"
                                      "user-agent: Test/1.0\r\n"
                                      "X-Dup: one\r\n"
                                      "CONTENT-TYPE: application/json\r\n"
                                      "x-dup: two\r\n";
static const char response_headers[] = "Content-Type: text/html; charset=utf-8\r\n"
                                       "Content-Encoding: gzip\r\n"
                                       "Set-Cookie: a=1\r\n"
                                       "Content-Encoding: br\r\n";

static struct flow *full_flow(void)
{
    struct flow *f = flow_new(8);

    if (f == NULL)
        abort();
    f->kind = FLOW_HTTP;
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:41234");
    snprintf(f->scheme, sizeof(f->scheme), "https");
    snprintf(f->method, sizeof(f->method), "POST");
    snprintf(f->host, sizeof(f->host), "api.example.test");
    f->port = 8443;
    f->target = xstrdup("/v1/items?id=7&x");
    f->request_version = 11;
    f->response_version = 10;
    f->request_headers = xstrdup(request_headers);
    f->response_headers = xstrdup(response_headers);
    flow_body_append(&f->request_body, "{\"a\":1}", 7);
    flow_body_append(&f->response_body, "0123456789abcdef", 16); /* limit 8: truncated */
    f->status = 201;
    snprintf(f->reason, sizeof(f->reason), "Created");
    f->timings.start = T0_US + 1;
    f->timings.connected = T0_US + 1000;
    f->timings.tls_done = T0_US + 3000;
    f->timings.request_sent = T0_US + 4000;
    f->timings.first_byte = T0_US + 9000;
    f->timings.done = T0_US + 12000;
    f->is_tls = true;
    snprintf(f->tls.client_sni, sizeof(f->tls.client_sni), "api.example.test");
    snprintf(f->tls.client_alpn, sizeof(f->tls.client_alpn), "http/1.1");
    snprintf(f->tls.client_version, sizeof(f->tls.client_version), "TLSv1.3");
    snprintf(f->tls.client_cipher, sizeof(f->tls.client_cipher), "TLS_AES_128_GCM_SHA256");
    snprintf(f->tls.upstream_version, sizeof(f->tls.upstream_version), "TLSv1.2");
    snprintf(f->tls.upstream_cipher, sizeof(f->tls.upstream_cipher), "ECDHE-RSA-AES128-GCM-SHA256");
    f->tls.cert_subject = xstrdup("CN=api.example.test");
    f->tls.cert_issuer = xstrdup("CN=Test CA");
    f->tls.cert_sans = xstrdup("DNS:api.example.test, IP:127.0.0.1");
    f->tls.cert_not_after = 1900000000;
    f->tls.verification = xstrdup("ok");
    f->error = xstrdup("client went away");
    f->rules = xstrdup("rule-1");
    f->bytes_up = 11;
    f->bytes_down = 22;
    return f;
}

static void test_submitted_flow_reads_back_field_by_field(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    struct flowstore_stats st;
    unsigned char *body = NULL;
    size_t len = 0;
    char err[512] = "";
    const struct flow *f;

    CU_ASSERT_FATAL(store != NULL);
    submit(store, full_flow());
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    f = &rec->flow;
    CU_ASSERT_EQUAL(f->id, 1);
    CU_ASSERT_EQUAL(f->kind, FLOW_HTTP);
    CU_ASSERT_STRING_EQUAL(f->client_addr, "127.0.0.1:41234");
    CU_ASSERT_STRING_EQUAL(f->scheme, "https");
    CU_ASSERT_STRING_EQUAL(f->method, "POST");
    CU_ASSERT_STRING_EQUAL(f->host, "api.example.test");
    CU_ASSERT_EQUAL(f->port, 8443);
    CU_ASSERT_STRING_EQUAL(f->target, "/v1/items?id=7&x");
    CU_ASSERT_EQUAL(f->request_version, 11);
    CU_ASSERT_EQUAL(f->response_version, 10);
    /* Byte for byte: order, case and duplicates as received. */
    CU_ASSERT_STRING_EQUAL(f->request_headers, request_headers);
    CU_ASSERT_STRING_EQUAL(f->response_headers, response_headers);
    CU_ASSERT_EQUAL(f->status, 201);
    CU_ASSERT_STRING_EQUAL(f->reason, "Created");
    CU_ASSERT_EQUAL(f->request_body.size, 7);
    CU_ASSERT_FALSE(f->request_body.truncated);
    CU_ASSERT_EQUAL(rec->request_captured, 7);
    CU_ASSERT_EQUAL(f->response_body.size, 16);
    CU_ASSERT_TRUE(f->response_body.truncated);
    CU_ASSERT_EQUAL(rec->response_captured, 8);
    CU_ASSERT_PTR_NULL(f->response_body.data);
    CU_ASSERT_STRING_EQUAL(rec->request_content_type, "application/json");
    CU_ASSERT_STRING_EQUAL(rec->response_content_type, "text/html; charset=utf-8");
    CU_ASSERT_PTR_NULL(rec->request_content_encoding);
    /* Two Content-Encoding fields are one list, applied in order. */
    CU_ASSERT_STRING_EQUAL(rec->response_content_encoding, "gzip, br");
    CU_ASSERT_EQUAL(f->timings.start, T0_US + 1);
    CU_ASSERT_EQUAL(f->timings.connected, T0_US + 1000);
    CU_ASSERT_EQUAL(f->timings.tls_done, T0_US + 3000);
    CU_ASSERT_EQUAL(f->timings.request_sent, T0_US + 4000);
    CU_ASSERT_EQUAL(f->timings.first_byte, T0_US + 9000);
    CU_ASSERT_EQUAL(f->timings.done, T0_US + 12000);
    CU_ASSERT_TRUE(f->is_tls);
    CU_ASSERT_STRING_EQUAL(f->tls.client_sni, "api.example.test");
    CU_ASSERT_STRING_EQUAL(f->tls.client_alpn, "http/1.1");
    CU_ASSERT_STRING_EQUAL(f->tls.client_version, "TLSv1.3");
    CU_ASSERT_STRING_EQUAL(f->tls.client_cipher, "TLS_AES_128_GCM_SHA256");
    CU_ASSERT_STRING_EQUAL(f->tls.upstream_version, "TLSv1.2");
    CU_ASSERT_STRING_EQUAL(f->tls.upstream_cipher, "ECDHE-RSA-AES128-GCM-SHA256");
    CU_ASSERT_STRING_EQUAL(f->tls.cert_subject, "CN=api.example.test");
    CU_ASSERT_STRING_EQUAL(f->tls.cert_issuer, "CN=Test CA");
    CU_ASSERT_STRING_EQUAL(f->tls.cert_sans, "DNS:api.example.test, IP:127.0.0.1");
    CU_ASSERT_EQUAL(f->tls.cert_not_after, 1900000000);
    CU_ASSERT_STRING_EQUAL(f->tls.verification, "ok");
    CU_ASSERT_STRING_EQUAL(f->error, "client went away");
    CU_ASSERT_STRING_EQUAL(f->rules, "rule-1");
    CU_ASSERT_EQUAL(f->bytes_up, 11);
    CU_ASSERT_EQUAL(f->bytes_down, 22);

    CU_ASSERT_EQUAL(flowstore_get_body(store, 1, FLOWSTORE_REQUEST, &body, &len, err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(len, 7);
    CU_ASSERT(body != NULL && memcmp(body, "{\"a\":1}", 7) == 0);
    free(body);
    CU_ASSERT_EQUAL(flowstore_get_body(store, 1, FLOWSTORE_RESPONSE, &body, &len, err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(len, 8);
    CU_ASSERT(body != NULL && memcmp(body, "01234567", 8) == 0);
    free(body);

    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.submitted, 1);
    CU_ASSERT_EQUAL(st.written, 1);
    CU_ASSERT_EQUAL(st.dropped, 0);
    CU_ASSERT_EQUAL(st.write_errors, 0);
    CU_ASSERT_EQUAL(st.stored, 1);
    CU_ASSERT_STRING_EQUAL(st.last_error, "");
    flowstore_record_free(rec);
    flowstore_close(store);
}

static void test_flow_without_response_or_tls_reads_back_as_absent(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    struct flow *f = simple_flow("GET", "down.test", "/", 0);
    unsigned char *body = NULL;
    size_t len = 1;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL);
    f->error = xstrdup("connection refused");
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_EQUAL(rec->flow.status, 0);
    CU_ASSERT_PTR_NULL(rec->flow.response_headers);
    CU_ASSERT_STRING_EQUAL(rec->flow.reason, "");
    CU_ASSERT_FALSE(rec->flow.is_tls);
    CU_ASSERT_STRING_EQUAL(rec->flow.tls.client_sni, "");
    CU_ASSERT_PTR_NULL(rec->flow.tls.verification);
    CU_ASSERT_EQUAL(rec->flow.timings.done, 0);
    CU_ASSERT_PTR_NULL(rec->response_content_type);
    CU_ASSERT_STRING_EQUAL(rec->flow.error, "connection refused");
    CU_ASSERT_EQUAL(flowstore_get_body(store, 1, FLOWSTORE_RESPONSE, &body, &len, err, sizeof(err)),
                    0);
    CU_ASSERT_PTR_NULL(body);
    CU_ASSERT_EQUAL(len, 0);
    flowstore_record_free(rec);
    CU_ASSERT_EQUAL(flowstore_get(store, 99, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NULL(rec);
    flowstore_close(store);
}

static void test_flows_survive_close_and_reopen(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_stats st;
    int64_t newest = 0;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL);
    submit_many(store, 3);
    flowstore_close(store); /* writes what is queued */
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.stored, 3);
    CU_ASSERT_EQUAL(flowstore_newest_id(store, &newest, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(newest, 3);
    flowstore_close(store);
}

struct seen {
    pthread_mutex_t lock;
    int64_t ids[64];
    size_t count;
    size_t calls;
};

static void record_written(void *arg, const int64_t *ids, size_t count)
{
    struct seen *seen = arg;
    size_t i;

    pthread_mutex_lock(&seen->lock);
    for (i = 0; i < count && seen->count < 64; i++)
        seen->ids[seen->count++] = ids[i];
    seen->calls++;
    pthread_mutex_unlock(&seen->lock);
}

static void test_written_callback_gets_every_id_ascending(void)
{
    struct flowstore *store = open_store(100);
    struct seen seen = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0};
    size_t i;

    CU_ASSERT_FATAL(store != NULL);
    flowstore_set_written_callback(store, record_written, &seen);
    submit_many(store, 20);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    flowstore_set_written_callback(store, NULL, NULL);
    submit_many(store, 1);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    pthread_mutex_lock(&seen.lock);
    CU_ASSERT_EQUAL(seen.count, 20);
    for (i = 0; i < seen.count; i++)
        CU_ASSERT_EQUAL(seen.ids[i], (int64_t)i + 1);
    CU_ASSERT(seen.calls >= 1 && seen.calls <= 20);
    pthread_mutex_unlock(&seen.lock);
    flowstore_close(store);
}

/* ---- bounds ---- */

/* --max-flows 10 makes segments of 2 flows (an eighth, rounded up): the
 * oldest segment goes whole, so 9 or 10 flows stay, never more. */
static void test_pruning_drops_whole_segments_keeping_at_most_max_flows(void)
{
    struct flowstore *store = open_store(10);
    struct flowstore_filter filter = {0};
    struct flowstore_stats st;
    char ids[256];
    int i;

    CU_ASSERT_FATAL(store != NULL);
    /* Several batches, so segments start and go inside and across them. */
    for (i = 0; i < 5; i++) {
        submit_many(store, 7);
        CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    }
    filter.limit = 100;
    listed_ids(store, &filter, ids, sizeof(ids));
    CU_ASSERT_STRING_EQUAL(ids, "35,34,33,32,31,30,29,28,27");
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 9);
    /* Bodies went with their flows (body_key = flow id * 4 + direction). */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key < 27 * 4"), 0);
    /* Segments 27-28, 29-30, 31-32, 33-34 and 35; the older ones' tables
     * are gone, not emptied. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_segments"), 5);
    CU_ASSERT_EQUAL(query_int("SELECT min(first_id) FROM flow_segments"), 27);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name IN ('flows_1', "
                              "'flow_bodies_1', 'flows_fts_1', 'flows_unindexed_1')"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name "
                              "GLOB 'flows_[0-9]*'"),
                    5);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.stored, 9);
    CU_ASSERT_EQUAL(st.written, 35);
    flowstore_close(store);

    /* The counts survive a restart: one more flow starts no new drop. */
    store = open_store(10);
    CU_ASSERT_FATAL(store != NULL);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.stored, 9);
    submit_many(store, 1);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 10);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows"), 27);
    flowstore_close(store);
}

/* Each flow has a body in each place a body can be: its small request in
 * the flow's row, its large response and a response original in
 * flow_bodies (the original's key, id * 4 + 3, is the last of a flow's). */
static void test_pruned_flow_takes_its_bodies(void)
{
    struct flowstore *store = open_store(1);
    struct flow *f;
    int i;

    CU_ASSERT_FATAL(store != NULL);
    for (i = 1; i <= 3; i++) {
        f = simple_flow("POST", "b.test", "/", 200);
        flow_body_append(&f->request_body, "req", 3);
        append_patterned(&f->response_body, LARGE_BODY_BYTES, (unsigned)i);
        f->has_response_body_original = true;
        flow_body_append(&f->response_body_original, "orig", 4);
        submit(store, f);
        CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    }
    /* Flow 3's response and original, nothing of flows 1 and 2. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT min(body_key) FROM flow_bodies"), 3 * 4 + FLOWSTORE_RESPONSE);
    CU_ASSERT_EQUAL(query_int("SELECT max(body_key) FROM flow_bodies"),
                    3 * 4 + FLOWSTORE_RESPONSE_ORIGINAL);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE req_body IS NOT NULL"), 1);
    expect_body(store, 2, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 2, FLOWSTORE_RESPONSE, NULL, 0);
    expect_body(store, 2, FLOWSTORE_RESPONSE_ORIGINAL, NULL, 0);
    expect_body(store, 3, FLOWSTORE_REQUEST, "req", 3);
    expect_patterned_body(store, 3, FLOWSTORE_RESPONSE, LARGE_BODY_BYTES, 3);
    expect_body(store, 3, FLOWSTORE_RESPONSE_ORIGINAL, "orig", 4);
    flowstore_close(store);
}

struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool is_entered;
    bool is_open;
};

/* Holds the writer thread inside the callback until the test opens it. */
static void hold_writer(void *arg, const int64_t *ids, size_t count)
{
    struct gate *gate = arg;

    pthread_mutex_lock(&gate->lock);
    gate->is_entered = true;
    pthread_cond_broadcast(&gate->cond);
    while (!gate->is_open)
        pthread_cond_wait(&gate->cond, &gate->lock);
    pthread_mutex_unlock(&gate->lock);
}

/* Field n (counted from 1, as in proc(5)) of the stat line of this
 * process's thread named name; -100 when there is none. */
static long thread_stat_field(const char *name, int n)
{
    DIR *tasks = opendir("/proc/self/task");
    struct dirent *d;
    long value = -100;

    if (tasks == NULL)
        return -100;
    while ((d = readdir(tasks)) != NULL) {
        char path[300], comm[64] = "", line[1024];
        const char *p;
        FILE *f;
        int field;

        if (d->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", d->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(comm, sizeof(comm), f) == NULL)
            comm[0] = '\0';
        fclose(f);
        comm[strcspn(comm, "\n")] = '\0';
        if (strcmp(comm, name) != 0)
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", d->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(line, sizeof(line), f) != NULL) {
            /* Fields 3 on follow the ")" that ends field 2 (the name). */
            p = strrchr(line, ')');
            for (field = 2; field < n && p != NULL; field++)
                p = strchr(p + 1, ' ');
            if (p != NULL)
                value = strtol(p + 1, NULL, 10);
        }
        fclose(f);
    }
    closedir(tasks);
    return value;
}

/* The writer keeps the proxy's priority (it holds the database); the
 * thread that tells it the CPU is idle runs at SCHED_IDLE. */
static void test_writer_takes_turns_from_an_idle_thread(void)
{
    struct flowstore *store = open_store(0);
    int i;

    CU_ASSERT_FATAL(store != NULL);
    submit_many(store, 3 * FLOWSTORE_IDLE_CHUNK_FLOWS);
    CU_ASSERT_EQUAL(flowstore_sync(store, 30000), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 3 * FLOWSTORE_IDLE_CHUNK_FLOWS);
    /* The writer may have finished on its waits' timeouts before the idle
     * thread first ran on a busy machine: give it a moment. */
    for (i = 0; i < 500 && thread_stat_field("tw-flowidle", 41) != SCHED_IDLE; i++)
        usleep(10000);
    CU_ASSERT_EQUAL(thread_stat_field("tw-flowidle", 41), SCHED_IDLE); /* policy */
    CU_ASSERT_EQUAL(thread_stat_field("tw-flowwriter", 41), SCHED_OTHER);
    CU_ASSERT_EQUAL(thread_stat_field("tw-flowwriter", 19),
                    getpriority(PRIO_PROCESS, 0)); /* nice */
    flowstore_close(store);
}

/* Waits (at most 30 s) until the writer has written every flow submitted
 * to store, without flowstore_sync(), which would hurry it; fills *st. */
static void wait_written_unhurried(struct flowstore *store, struct flowstore_stats *st)
{
    int64_t from_ms = clock_mono_ms();

    flowstore_stats(store, st);
    while (st->written < st->submitted && clock_mono_ms() - from_ms < 30000) {
        usleep(10000);
        flowstore_stats(store, st);
    }
}

/* A burst faster than FLOWSTORE_QUIET_FLOWS_PER_S stays queued while it
 * lasts and is written once the flows stop coming. A stall of this thread
 * of a tenth of a second looks quiet to the writer, which then writes what
 * is queued: on a machine busy enough for that, the burst is tried again,
 * at most three times. A writer that does not defer fails every time. */
static void test_burst_waits_in_the_queue_until_the_proxy_is_quiet(void)
{
    struct flowstore *store = open_store(0);
    struct flowstore_stats before, after;
    bool is_deferred = false;
    int64_t start_ms;
    int attempt, i;

    CU_ASSERT_FATAL(store != NULL);
    for (attempt = 0; attempt < 3 && !is_deferred; attempt++) {
        wait_written_unhurried(store, &before);
        /* 100 flows every 10 ms: 10,000 a second if the machine keeps
         * up, above the quiet rate even if every sleep takes four times
         * as long. */
        start_ms = clock_mono_ms();
        while (clock_mono_ms() - start_ms < 600) {
            for (i = 0; i < 100; i++)
                CU_ASSERT_EQUAL(flowstore_submit(store, simple_flow("GET", "b.test", "/", 200)), 0);
            usleep(10000);
        }
        flowstore_stats(store, &after);
        CU_ASSERT(after.submitted - before.submitted >= 1000);
        /* A writer that writes as flows come would have most of them in. */
        is_deferred = (after.written - before.written) * 3 < after.submitted - before.submitted;
    }
    CU_ASSERT_TRUE(is_deferred);
    /* Quiet now: everything goes in without a sync to hurry it. */
    wait_written_unhurried(store, &after);
    CU_ASSERT_EQUAL(after.written, after.submitted);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), (int)after.submitted);
    flowstore_close(store);
}

/* A burst past FLOWSTORE_DEFER_FLOWS goes on in the spool rather than be
 * written while it lasts, and all of it is written afterwards, in the
 * order it came, a large flow (kept in memory in its place) among them. */
static void test_long_burst_goes_on_in_the_spool_and_comes_out_in_order(void)
{
    struct flowstore *store = open_store(0);
    struct flowstore_stats st;
    int total = FLOWSTORE_DEFER_FLOWS + FLOWSTORE_DEFER_FLOWS / 2;
    uint64_t most_spooled = 0;
    int64_t from_ms;
    char path[32];
    int i;

    CU_ASSERT_FATAL(store != NULL);
    for (i = 0; i < total; i++) {
        struct flow *f;

        snprintf(path, sizeof(path), "/s/%d", i);
        f = simple_flow("GET", "spool.test", path, 200);
        if (i == total - 100)
            append_patterned(&f->response_body, LARGE_BODY_BYTES * 4, 7);
        submit(store, f);
        if (i % 1024 == 0) {
            flowstore_stats(store, &st);
            if (st.spooled > most_spooled)
                most_spooled = st.spooled;
        }
    }
    from_ms = clock_mono_ms();
    do {
        flowstore_stats(store, &st);
        if (st.spooled > most_spooled)
            most_spooled = st.spooled;
        usleep(5000);
    } while (st.written < st.submitted && clock_mono_ms() - from_ms < 60000);
    CU_ASSERT(most_spooled > 0);
    CU_ASSERT_EQUAL(st.written, (uint64_t)total);
    CU_ASSERT_EQUAL(st.spooled, 0);
    CU_ASSERT_EQUAL(st.write_errors, 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), total);
    /* Ids follow the order the flows came in. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE target != '/s/' || "
                              "(id - (SELECT min(id) FROM flows))"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE resp_body_captured > 0"), 1);
    flowstore_close(store);
}

/* hold_writer() once armed; until then the writer passes. */
struct armed_gate {
    struct gate gate;
    bool is_armed; /* atomic */
};

static void hold_writer_once_armed(void *arg, const int64_t *ids, size_t count)
{
    struct armed_gate *armed = arg;

    if (__atomic_load_n(&armed->is_armed, __ATOMIC_ACQUIRE))
        hold_writer(&armed->gate, ids, count);
}

/* What the killed process saw just before it died. */
struct kill_report {
    uint64_t written, spooled, submitted;
    int status; /* 0: it got as far as the kill */
};

/*
 * The child of test_killed_in_a_burst...: a burst goes to the spool, the
 * writer is held once it has stored a batch of it (its spooled_to in the
 * database, the file not yet cut), and the process kills itself.
 */
static void burst_and_die(int report_fd)
{
    struct armed_gate armed = {{PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false},
                               false};
    struct kill_report report = {0, 0, 0, 1};
    int total = FLOWSTORE_DEFER_FLOWS * 16;
    struct flowstore *store = open_store(0);
    struct flowstore_stats st;
    int64_t from_ms;
    char path[32];
    int i;

    if (store == NULL)
        goto out;
    flowstore_set_written_callback(store, hold_writer_once_armed, &armed);
    /* A burst until the spool holds more than two batches: the writer
     * takes one batch from it once the burst is over, so the spool still
     * holds flows when the writer is held, even if a moment's stall of
     * this thread let one batch by before the gate was armed. */
    for (i = 0; i < total; i++) {
        snprintf(path, sizeof(path), "/k/%d", i);
        if (flowstore_submit(store, simple_flow("GET", "kill.test", path, 200)) != 0)
            goto out;
        if (i % 256 == 255) {
            flowstore_stats(store, &st);
            if (st.spooled > 2 * FLOWSTORE_BATCH_FLOWS)
                break;
        }
    }
    from_ms = clock_mono_ms();
    do {
        flowstore_stats(store, &st);
        usleep(1000);
    } while (st.spooled == 0 && clock_mono_ms() - from_ms < 30000);
    if (st.spooled == 0) {
        report.status = 2; /* the burst was never spooled */
        goto out;
    }
    __atomic_store_n(&armed.is_armed, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&armed.gate.lock);
    while (!armed.gate.is_entered && clock_mono_ms() - from_ms < 60000) {
        pthread_mutex_unlock(&armed.gate.lock);
        usleep(1000);
        pthread_mutex_lock(&armed.gate.lock);
    }
    pthread_mutex_unlock(&armed.gate.lock);
    flowstore_stats(store, &st);
    if (!armed.gate.is_entered || st.spooled == 0) {
        report.status = 3; /* the spool was written whole before the writer was held */
        goto out;
    }
    report.written = st.written;
    report.spooled = st.spooled;
    report.submitted = st.submitted;
    report.status = 0;
out:
    if (write(report_fd, &report, sizeof(report)) != (ssize_t)sizeof(report))
        _exit(4);
    kill(getpid(), SIGKILL);
    _exit(5);
}

/* A proxy killed (SIGKILL) in a burst: what its spool held is stored at
 * the next start, once each: every flow but those still in the memory
 * queue, none twice. */
static void test_killed_in_a_burst_leaves_the_spool_to_the_next_start(void)
{
    struct kill_report report = {0, 0, 0, -1};
    struct flowstore_stats st;
    struct flowstore *store;
    char spool_path[160];
    struct stat sb;
    int fds[2], status = 0;
    pid_t pid;

    snprintf(spool_path, sizeof(spool_path), "%s-spool", db_path);
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        burst_and_die(fds[1]);
    }
    close(fds[1]);
    CU_ASSERT_EQUAL(read(fds[0], &report, sizeof(report)), (ssize_t)sizeof(report));
    close(fds[0]);
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CU_ASSERT_EQUAL_FATAL(report.status, 0);
    CU_ASSERT(report.spooled > 0);
    CU_ASSERT(report.written > 0);
    CU_ASSERT(stat(spool_path, &sb) == 0 && sb.st_size > 0);

    store = open_store(0);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(flowstore_sync(store, 60000), 0);
    flowstore_stats(store, &st);
    /* What the spool held, none of the batch the writer had stored. */
    CU_ASSERT_EQUAL(st.recovered, report.spooled);
    CU_ASSERT_EQUAL(st.written, report.spooled);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"),
                    (int)(report.written + report.spooled));
    CU_ASSERT_EQUAL(query_int("SELECT count(DISTINCT target) FROM flows"),
                    (int)(report.written + report.spooled));
    /* In the order they came: the ids follow their numbers. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE target != '/k/' || "
                              "(id - (SELECT min(id) FROM flows))"),
                    0);
    flowstore_close(store);
    CU_ASSERT(stat(spool_path, &sb) != 0);
}

static void test_full_queue_drops_and_counts(void)
{
    struct flowstore *store = open_store(0);
    struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    struct flowstore_stats st;
    int accepted = 0;
    int i;

    CU_ASSERT_FATAL(store != NULL);
    flowstore_set_written_callback(store, hold_writer, &gate);
    submit_many(store, 1);
    pthread_mutex_lock(&gate.lock);
    while (!gate.is_entered)
        pthread_cond_wait(&gate.cond, &gate.lock);
    pthread_mutex_unlock(&gate.lock);

    /* The writer is held: the queue fills and the rest is dropped. */
    for (i = 0; i < FLOWSTORE_QUEUE_FLOWS + 5; i++)
        if (flowstore_submit(store, simple_flow("GET", "q.test", "/", 200)) == 0)
            accepted++;
    CU_ASSERT_EQUAL(accepted, FLOWSTORE_QUEUE_FLOWS);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.dropped, 5);
    CU_ASSERT_EQUAL(st.submitted, FLOWSTORE_QUEUE_FLOWS + 6);

    pthread_mutex_lock(&gate.lock);
    gate.is_open = true;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.lock);
    CU_ASSERT_EQUAL(flowstore_sync(store, 30000), 0);
    flowstore_set_written_callback(store, NULL, NULL);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.written, FLOWSTORE_QUEUE_FLOWS + 1);
    CU_ASSERT_EQUAL(st.stored, FLOWSTORE_QUEUE_FLOWS + 1);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), FLOWSTORE_QUEUE_FLOWS + 1);
    /* Warned at the 1st, 2nd and 4th drop, not at every one. */
    CU_ASSERT_EQUAL(count_lines_containing(log_path, "flow queue is full"), 3);
    flowstore_close(store);
}

static void test_database_error_counts_losses_and_writer_recovers(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_stats st;
    struct flow *f;
    int i;

    CU_ASSERT_FATAL(store != NULL);
    submit_many(store, 1);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    /* Another process breaks the database under the running store. */
    CU_ASSERT_EQUAL_FATAL(exec_sql("DROP TABLE flow_bodies_1"), 0);
    for (i = 0; i < 3; i++) {
        f = simple_flow("POST", "err.test", "/", 200);
        append_patterned(&f->request_body, LARGE_BODY_BYTES, 1); /* for flow_bodies_1 */
        CU_ASSERT_EQUAL(flowstore_submit(store, f), 0);          /* the proxy notices nothing */
        CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    }
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.write_errors, 3);
    CU_ASSERT_EQUAL(st.written, 1);
    CU_ASSERT_EQUAL(st.stored, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(st.last_error, "flow_bodies"));
    /* One line for three failed batches with the same error. */
    CU_ASSERT_EQUAL(count_lines_containing(log_path, "captured flows are being lost"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 1); /* rolled back whole */

    CU_ASSERT_EQUAL_FATAL(
        exec_sql("CREATE TABLE flow_bodies_1 (body_key INTEGER PRIMARY KEY, data BLOB NOT NULL)"),
        0);
    f = simple_flow("POST", "ok.test", "/", 200);
    flow_body_append(&f->request_body, "y", 1);
    submit(store, f);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.written, 2);
    CU_ASSERT_EQUAL(st.write_errors, 3);
    CU_ASSERT_EQUAL(count_lines_containing(log_path, "works again; 3 flow(s) were lost"), 1);
    flowstore_close(store);
}

static void test_locked_database_is_reported_once_and_close_is_bounded(void)
{
    struct flowstore *store = open_store(100);
    sqlite3 *holder = NULL;
    struct timespec t0, t1;
    double seconds;

    CU_ASSERT_FATAL(store != NULL);
    /* Another process holds the write lock for the whole test. */
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(db_path, &holder), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    submit_many(store, 3 * FLOWSTORE_BATCH_FLOWS);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    flowstore_close(store);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* One busy timeout, not one per remaining batch. */
    CU_ASSERT(seconds < DB_BUSY_TIMEOUT_MS / 1000.0 + 3.0);
    if (seconds >= DB_BUSY_TIMEOUT_MS / 1000.0 + 3.0)
        fprintf(stderr, "flowstore_close() took %.1f s\n", seconds);
    CU_ASSERT_EQUAL(count_lines_containing(log_path, "another process holds the database locked"),
                    1);
    sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(holder);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 0);
}

/* ---- listing ---- */

static void test_cursor_pages_list_every_id_once_newest_first(void)
{
    struct flowstore *store = open_store(1000);
    struct flowstore_filter filter = {0};
    struct flowstore_record **records;
    size_t count, i;
    int64_t expected = 250;
    int pages = 0;

    CU_ASSERT_FATAL(store != NULL);
    submit_many(store, 250);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    filter.limit = 40;
    do {
        records = list(store, &filter, &count);
        for (i = 0; i < count; i++)
            CU_ASSERT_EQUAL(records[i]->flow.id, expected--);
        if (count > 0)
            filter.before_id = records[count - 1]->flow.id;
        flowstore_records_free(records, count);
        pages++;
    } while (count == filter.limit && pages < 100);
    CU_ASSERT_EQUAL(expected, 0);
    CU_ASSERT_EQUAL(pages, 7); /* 6 full pages and one of 10 */
    flowstore_close(store);
}

static void test_listing_leaves_out_headers_and_tls_details(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter filter = {0};
    struct flowstore_record **records;
    size_t count;

    CU_ASSERT_FATAL(store != NULL);
    submit(store, full_flow());
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    filter.limit = 10;
    records = list(store, &filter, &count);
    CU_ASSERT_EQUAL_FATAL(count, 1);
    CU_ASSERT_PTR_NULL(records[0]->flow.request_headers);
    CU_ASSERT_PTR_NULL(records[0]->flow.tls.cert_subject);
    CU_ASSERT_STRING_EQUAL(records[0]->flow.host, "api.example.test");
    CU_ASSERT_STRING_EQUAL(records[0]->response_content_type, "text/html; charset=utf-8");
    CU_ASSERT_EQUAL(records[0]->flow.response_body.size, 16);
    CU_ASSERT_TRUE(records[0]->flow.is_tls);
    CU_ASSERT_STRING_EQUAL(records[0]->flow.rules, "rule-1");
    flowstore_records_free(records, count);
    flowstore_close(store);
}

static void test_oldest_first_after_id_lists_newer_flows_ascending(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter filter = {0};
    char ids[128];

    CU_ASSERT_FATAL(store != NULL);
    submit_many(store, 6);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    filter.after_id = 2;
    filter.is_oldest_first = true;
    filter.limit = 3;
    listed_ids(store, &filter, ids, sizeof(ids));
    CU_ASSERT_STRING_EQUAL(ids, "3,4,5");
    flowstore_close(store);
}

/* Flows 1..8 with varied fields for the filter tests. */
static struct flowstore *filter_fixture(void)
{
    struct flowstore *store = open_store(100);
    struct flow *f;

    if (store == NULL)
        return NULL;
    submit(store, simple_flow("GET", "api.example.com", "/users?id=1", 200)); /* 1 */
    submit(store, simple_flow("POST", "API.Example.com", "/login", 302));     /* 2 */
    f = simple_flow("GET", "cdn.other.org", "/app.js", 404);                  /* 3 */
    free(f->response_headers);
    f->response_headers = xstrdup("content-type: Application/JavaScript\r\n");
    submit(store, f);
    f = simple_flow("PUT", "example.com", "/upload", 500); /* 4 */
    flow_body_append(&f->request_body, "secret-token-42", 15);
    submit(store, f);
    f = simple_flow("GET", "down.example.com", "/", 0); /* 5 */
    f->error = xstrdup("connection refused");
    submit(store, f);
    f = simple_flow("get", "img.example.com", "/Logo.PNG", 200); /* 6 */
    free(f->response_headers);
    f->response_headers = xstrdup("Content-Type: image/png\r\n");
    flow_body_append(&f->response_body, "\x89PNG\r\n\x1a\n\0binary", 15);
    submit(store, f);
    submit(store, simple_flow("DELETE", "api.example.com", "/users/1", 204)); /* 7 */
    submit(store, simple_flow("GET", "example.com.evil", "/", 101));          /* 8 */
    if (flowstore_sync(store, SYNC_MS) != 0) {
        flowstore_close(store);
        return NULL;
    }
    return store;
}

static void expect_ids(struct flowstore *store, const struct flowstore_filter *filter,
                       const char *want)
{
    struct flowstore_filter f = *filter;
    char ids[256];

    f.limit = 100;
    listed_ids(store, &f, ids, sizeof(ids));
    CU_ASSERT_STRING_EQUAL(ids, want);
    if (strcmp(ids, want) != 0)
        fprintf(stderr, "listed %s, expected %s\n", ids, want);
}

/* A response sent with content_encoding whose decoded text is text. */
static struct flow *encoded_flow(const char *path, const char *content_encoding, const char *text)
{
    struct flow *f = simple_flow("GET", "enc.test", path, 200);
    unsigned char *encoded = NULL;
    size_t encoded_len = 0;
    char err[128], headers[128];

    f->response_body.limit = 1024 * 1024;
    CU_ASSERT_FATAL(codec_encode_content(content_encoding, (const unsigned char *)text,
                                         strlen(text), &encoded, &encoded_len, err,
                                         sizeof(err)) == 0);
    flow_body_append(&f->response_body, encoded, encoded_len);
    free(encoded);
    free(f->response_headers);
    snprintf(headers, sizeof(headers), "Content-Type: text/html\r\nContent-Encoding: %s\r\n",
             content_encoding);
    f->response_headers = xstrdup(headers);
    return f;
}

static void test_body_search_looks_into_compressed_bodies_and_can_ignore_case(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter f = {0};
    char large[8192];
    size_t i;

    CU_ASSERT_FATAL(store != NULL);
    /* Random-looking filler so that the encoded large body stays above the
     * inline limit and lands in flow_bodies. */
    uint32_t state = 12345;

    for (i = 0; i + 1 < sizeof(large); i++) {
        state = state * 1103515245u + 12345u;
        large[i] = (char)('a' + (state >> 16) % 26);
    }
    large[sizeof(large) - 1] = '\0';
    memcpy(large + 4000, "Kettle-Large", 12);
    submit(store, encoded_flow("/gzip", "gzip", "<p>The Kettle is on</p>"));
    submit(store, encoded_flow("/br", "br", "<p>a kettle of fish</p>"));
    submit(store, encoded_flow("/zstd-large", "zstd", large));
    submit(store, encoded_flow("/deflate", "deflate", "<p>nothing to see</p>"));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT(query_int("SELECT count(*) FROM flow_bodies") >= 1);

    /* Without a decoder only the stored (compressed) bytes are searched. */
    f.body_bytes = "The Kettle is on";
    f.body_len = 16;
    expect_ids(store, &f, "");

    flowstore_set_body_decoder(store, codec_decode_content);
    expect_ids(store, &f, "1");
    f.body_bytes = "Kettle";
    f.body_len = 6;
    expect_ids(store, &f, "3,1");
    f.body_bytes = "kettle";
    expect_ids(store, &f, "2");
    f.is_body_nocase = true;
    expect_ids(store, &f, "3,2,1");
    f.body_bytes = "KETTLE-LARGE";
    f.body_len = 12;
    expect_ids(store, &f, "3");
    f.body_bytes = "see";
    f.body_len = 3;
    expect_ids(store, &f, "4");
    f.body_bytes = "absent";
    f.body_len = 6;
    expect_ids(store, &f, "");
    flowstore_close(store);
}

/* The folded search (is_body_nocase) copies a body folded a chunk of
 * 4096 bytes at a time: a match across two chunks, at the very start and
 * at the very end of a binary body (which the index does not hold) is
 * found, and a needle without letters, or longer than the folded needle
 * bound, too. */
static void test_folded_body_search_finds_matches_across_chunks(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter f = {0};
    unsigned char body[10000];
    char long_needle[300];
    size_t i;

    CU_ASSERT_FATAL(store != NULL);
    for (i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(0x80 | (i * 7)); /* never an ASCII letter, never UTF-8 */
    memcpy(body + 4093, "MiXeD", 5);               /* across the first chunk boundary */
    memcpy(body, "StartX", 6);
    memcpy(body + sizeof(body) - 4, "EnD!", 4);
    memcpy(body + 6000, "0123-4567", 9);
    for (i = 0; i < sizeof(long_needle); i++)
        long_needle[i] = (char)('A' + i % 26);
    memcpy(body + 7000, long_needle, sizeof(long_needle));
    for (i = 0; i < 2; i++) {
        struct flow *fl = simple_flow("GET", "bin.test", i == 0 ? "/with" : "/without", 200);

        fl->response_body.limit = sizeof(body);
        if (i == 0)
            flow_body_append(&fl->response_body, body, sizeof(body));
        submit(store, fl);
    }
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    f.is_body_nocase = true;
    f.body_bytes = "mixed";
    f.body_len = 5;
    expect_ids(store, &f, "1");
    f.body_bytes = "STARTx";
    f.body_len = 6;
    expect_ids(store, &f, "1");
    f.body_bytes = "end!";
    f.body_len = 4;
    expect_ids(store, &f, "1");
    f.body_bytes = "0123-4567";
    f.body_len = 9;
    expect_ids(store, &f, "1");
    for (i = 0; i < sizeof(long_needle); i++)
        long_needle[i] = (char)('a' + i % 26);
    f.body_bytes = long_needle;
    f.body_len = sizeof(long_needle);
    expect_ids(store, &f, "1");
    f.body_bytes = "mixee";
    f.body_len = 5;
    expect_ids(store, &f, "");
    /* Case kept: only the exact bytes. */
    f.is_body_nocase = false;
    f.body_bytes = "mixed";
    f.body_len = 5;
    expect_ids(store, &f, "");
    f.body_bytes = "MiXeD";
    expect_ids(store, &f, "1");
    flowstore_close(store);
}

/* The search indexes of the segment being filled merge FTS5 segments 16
 * at a time, not 4 (flowseg.c): segment 1, which a migration made, gets
 * that when the store opens, a new segment when it starts. */
static void test_search_indexes_merge_sixteen_segments_at_a_time(void)
{
    struct flowstore *store = open_store(16); /* segments of 2 flows */

    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("SELECT v FROM flows_fts_1_config WHERE k = 'automerge'"), 16);
    CU_ASSERT_EQUAL(query_int("SELECT v FROM flows_hdr_1_config WHERE k = 'automerge'"), 16);
    submit_many(store, 3);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT max(seg) FROM flow_segments"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT v FROM flows_fts_2_config WHERE k = 'automerge'"), 16);
    CU_ASSERT_EQUAL(query_int("SELECT v FROM flows_hdr_2_config WHERE k = 'automerge'"), 16);
    flowstore_close(store);
}

/* A flow whose binary body the index does not hold has a byte-pair
 * filter in flows_unindexed_N, unless a Content-Encoding or its size rules
 * one out; the body search skips the flows whose filter lacks a pair of
 * the text and still finds every match, with a filter, without one
 * (NULL), and in a segment whose table had no pairs column (added when
 * the store opens, NULL for the rows already there). */
static void test_body_pairs_filter_skips_only_what_cannot_match(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter f = {0};
    unsigned char bin[300], big[SEARCHTEXT_PAIRS_MAX_BODY_BYTES + 10];
    struct flow *fl;
    size_t i;

    CU_ASSERT_FATAL(store != NULL);
    for (i = 0; i < sizeof(bin); i++)
        bin[i] = (unsigned char)(0x80 | (i * 5));
    memcpy(bin + 100, "Needle-One", 10);
    fl = simple_flow("GET", "bin.test", "/plain", 200); /* 1: a filter */
    flow_body_append(&fl->response_body, bin, sizeof(bin));
    submit(store, fl);
    fl = simple_flow("GET", "bin.test", "/encoded", 200); /* 2: encoded, no filter */
    flow_body_append(&fl->response_body, bin, sizeof(bin));
    free(fl->response_headers);
    fl->response_headers = xstrdup("Content-Encoding: x-unknown\r\n");
    submit(store, fl);
    for (i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(0x80 | (i * 7));
    memcpy(big + 2000, "Needle-Big", 10);
    fl = simple_flow("GET", "bin.test", "/big", 200); /* 3: too big for a filter */
    fl->response_body.limit = sizeof(big);
    flow_body_append(&fl->response_body, big, sizeof(big));
    submit(store, fl);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT length(pairs) FROM flows_unindexed_1 WHERE id = 1"),
                    SEARCHTEXT_PAIRS_BYTES);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_unindexed_1 WHERE pairs IS NULL"), 2);
    f.is_body_nocase = true;
    f.body_bytes = "needle-one";
    f.body_len = 10;
    expect_ids(store, &f, "2,1");
    f.body_bytes = "Needle-Big";
    expect_ids(store, &f, "3");
    f.body_bytes = "Needle-Non";
    expect_ids(store, &f, "");
    flowstore_close(store);

    /* A segment from before the column: the store adds it, NULL for the
     * rows it holds, and they are searched as ever. */
    CU_ASSERT_EQUAL_FATAL(exec_sql("ALTER TABLE flows_unindexed_1 DROP COLUMN pairs"), 0);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_unindexed_1 WHERE pairs IS NULL"), 3);
    f.body_bytes = "needle-one";
    expect_ids(store, &f, "2,1");
    fl = simple_flow("GET", "bin.test", "/after", 200); /* 4: a filter again */
    flow_body_append(&fl->response_body, bin, sizeof(bin));
    submit(store, fl);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT length(pairs) FROM flows_unindexed_1 WHERE id = 4"),
                    SEARCHTEXT_PAIRS_BYTES);
    expect_ids(store, &f, "4,2,1");
    flowstore_close(store);
}

/* The header word index is filled after the rows, while the writer is
 * idle, and once it is done flowstore_sync() returns; header words an
 * earlier run had not added yet (here: a word index emptied while the
 * store was closed) are added when the writer starts. */
static void test_header_words_follow_the_rows_and_survive_a_restart(void)
{
    struct flowstore *store = open_store(100);
    struct flow *f;
    int i;

    CU_ASSERT_FATAL(store != NULL);
    for (i = 0; i < 3; i++) {
        f = simple_flow("GET", "hdr.test", "/", 200);
        free(f->response_headers);
        f->response_headers = xstrdup("X-Marker: zebrafish\r\n");
        submit(store, f);
    }
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(
        query_int("SELECT count(*) FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'zebrafish'"), 3);
    flowstore_close(store);

    CU_ASSERT_EQUAL_FATAL(exec_sql("DROP TABLE flows_hdr_1; CREATE VIRTUAL TABLE flows_hdr_1 USING "
                                   "fts5 (text, content = '', columnsize = 0, detail = none, "
                                   "tokenize = 'unicode61')"),
                          0);
    CU_ASSERT_EQUAL(
        query_int("SELECT count(*) FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'zebrafish'"), 0);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    f = simple_flow("GET", "hdr.test", "/", 200);
    free(f->response_headers);
    f->response_headers = xstrdup("X-Marker: zebrafish\r\n");
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(
        query_int("SELECT count(*) FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'zebrafish'"), 4);
    /* Indexed twice (the three before the restart, when a restart cannot
     * tell): still one row each. */
    CU_ASSERT_EQUAL(query_int("SELECT count(DISTINCT rowid) FROM flows_hdr_1 WHERE flows_hdr_1 "
                              "MATCH 'zebrafish'"),
                    4);
    flowstore_close(store);
}

static void test_host_filter_globs_and_ignores_case(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};

    CU_ASSERT_FATAL(store != NULL);
    f.host_glob = "api.example.com";
    expect_ids(store, &f, "7,2,1");
    f.host_glob = "*.EXAMPLE.com";
    expect_ids(store, &f, "7,6,5,2,1");
    f.host_glob = "example.com";
    expect_ids(store, &f, "4");
    f.host_glob = "*example.com*";
    expect_ids(store, &f, "8,7,6,5,4,2,1");
    f.host_glob = "?dn.*";
    expect_ids(store, &f, "3");
    flowstore_close(store);
}

static void test_host_filter_finds_substrings_and_can_hide(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};

    CU_ASSERT_FATAL(store != NULL);
    f.host_text = "EXAMPLE";
    expect_ids(store, &f, "8,7,6,5,4,2,1");
    f.host_text = "other";
    expect_ids(store, &f, "3");
    f.is_host_negated = true;
    expect_ids(store, &f, "8,7,6,5,4,2,1");
    f.host_text = NULL;
    f.host_glob = "*.example.com";
    expect_ids(store, &f, "8,4,3");
    f.host_glob = "example.com";
    expect_ids(store, &f, "8,7,6,5,3,2,1");
    flowstore_close(store);
}

static void test_method_and_status_filters(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};

    CU_ASSERT_FATAL(store != NULL);
    f.method = "GET";
    expect_ids(store, &f, "8,6,5,3,1");
    f.method = "post";
    expect_ids(store, &f, "2");
    f.method = NULL;
    f.status_class = 2;
    expect_ids(store, &f, "7,6,1");
    f.status_class = 3;
    expect_ids(store, &f, "2");
    f.status_class = 4;
    expect_ids(store, &f, "3");
    f.status_class = 5;
    expect_ids(store, &f, "4");
    f.status_class = 1;
    expect_ids(store, &f, "8");
    f.status_class = FLOWSTORE_STATUS_ERROR;
    expect_ids(store, &f, "5");
    f.status_class = 2;
    f.method = "GET";
    expect_ids(store, &f, "6,1");
    flowstore_close(store);
}

/* The status-class index leaves out 2xx (schema version 6): the fixture's
 * 200, 200, 204 are not in it; 302, 404, 500, 0 and 101 are. */
static void test_status_index_leaves_out_2xx(void)
{
    struct flowstore *store = filter_fixture();

    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 8);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_1 INDEXED BY flows_1_status_class "
                              "WHERE status / 100 <> 2"),
                    5);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = "
                              "'flows_1_status_class' AND sql LIKE '%WHERE status / 100 <> 2%'"),
                    1);
    flowstore_close(store);
}

static void test_content_type_url_and_body_filters(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};

    CU_ASSERT_FATAL(store != NULL);
    f.content_type = "javascript";
    expect_ids(store, &f, "3");
    f.content_type = "IMAGE/";
    expect_ids(store, &f, "6");
    f.content_type = NULL;
    f.url_text = "users";
    expect_ids(store, &f, "7,1");
    f.url_text = "EXAMPLE.COM/UP";
    expect_ids(store, &f, "4");
    f.url_text = "logo.png";
    expect_ids(store, &f, "6");
    f.url_text = NULL;
    f.body_bytes = "token-42";
    f.body_len = 8;
    expect_ids(store, &f, "4");
    /* Raw bytes, a NUL included, in a binary response body. */
    f.body_bytes = "\0binary";
    f.body_len = 7;
    expect_ids(store, &f, "6");
    f.body_bytes = "absent";
    f.body_len = 6;
    expect_ids(store, &f, "");
    flowstore_close(store);
}

static void test_filter_pages_with_cursor(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};
    char ids[64];

    CU_ASSERT_FATAL(store != NULL);
    f.host_glob = "*example.com";
    f.limit = 2;
    listed_ids(store, &f, ids, sizeof(ids));
    CU_ASSERT_STRING_EQUAL(ids, "7,6");
    f.before_id = 6;
    listed_ids(store, &f, ids, sizeof(ids));
    CU_ASSERT_STRING_EQUAL(ids, "5,4");
    f.before_id = 4;
    listed_ids(store, &f, ids, sizeof(ids));
    CU_ASSERT_STRING_EQUAL(ids, "2,1");
    flowstore_close(store);
}

/* ---- delete and clear ---- */

/* The fixture's bodies are small and in their flows' rows; flows 9 and 10
 * add bodies in flow_bodies, so deleting is seen to take both kinds, and
 * nothing of the neighbours. */
static void submit_large_body_flows(struct flowstore *store)
{
    struct flow *f = simple_flow("POST", "big.test", "/9", 200); /* 9 */

    flow_body_append(&f->request_body, "small", 5);
    append_patterned(&f->response_body, LARGE_BODY_BYTES, 9);
    submit(store, f);
    f = simple_flow("POST", "big.test", "/10", 200); /* 10 */
    append_patterned(&f->request_body, LARGE_BODY_BYTES, 10);
    append_patterned(&f->response_body, LARGE_BODY_BYTES, 11);
    submit(store, f);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
}

static void test_delete_removes_flow_and_bodies(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};
    struct flowstore_record *rec = NULL;
    struct flowstore_stats st;
    char err[512] = "";
    bool found = false;

    CU_ASSERT_FATAL(store != NULL);
    submit_large_body_flows(store);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key = 9 * 4 + 1"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE id = 9 AND req_body IS NOT NULL"),
                    1);

    /* Flow 9: a body in each place. */
    CU_ASSERT_EQUAL(flowstore_delete(store, 9, &found, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(found);
    CU_ASSERT_EQUAL(flowstore_get(store, 9, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NULL(rec);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key BETWEEN 9 * 4 AND "
                              "9 * 4 + 3"),
                    0);
    expect_body(store, 9, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 9, FLOWSTORE_RESPONSE, NULL, 0);
    /* Flow 10's bodies, the next keys up, stay. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT min(body_key) FROM flow_bodies"), 10 * 4 + FLOWSTORE_REQUEST);
    expect_patterned_body(store, 10, FLOWSTORE_REQUEST, LARGE_BODY_BYTES, 10);
    expect_patterned_body(store, 10, FLOWSTORE_RESPONSE, LARGE_BODY_BYTES, 11);

    /* Flow 4: its request body in its row. */
    expect_body(store, 4, FLOWSTORE_REQUEST, "secret-token-42", 15);
    CU_ASSERT_EQUAL(flowstore_delete(store, 4, &found, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(found);
    expect_body(store, 4, FLOWSTORE_REQUEST, NULL, 0);
    f.body_bytes = "token-42";
    f.body_len = 8;
    expect_ids(store, &f, "");
    /* Flow 6's response body, in its row too, stays. */
    expect_body(store, 6, FLOWSTORE_RESPONSE, "\x89PNG\r\n\x1a\n\0binary", 15);
    f.body_bytes = NULL;
    f.body_len = 0;
    expect_ids(store, &f, "10,8,7,6,5,3,2,1");
    CU_ASSERT_EQUAL(flowstore_delete(store, 4, &found, err, sizeof(err)), 0);
    CU_ASSERT_FALSE(found);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.stored, 8);
    flowstore_close(store);
}

static void test_clear_removes_everything_and_ids_are_not_reused(void)
{
    struct flowstore *store = filter_fixture();
    struct flowstore_filter f = {0};
    struct flowstore_stats st;
    char err[512] = "";
    int64_t newest = -1;

    CU_ASSERT_FATAL(store != NULL);
    submit_large_body_flows(store);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE req_body IS NOT NULL OR "
                              "resp_body IS NOT NULL"),
                    3); /* flows 4, 6 and 9 */
    CU_ASSERT_EQUAL(flowstore_clear(store, err, sizeof(err)), 0);
    expect_ids(store, &f, "");
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 0);
    expect_body(store, 4, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 10, FLOWSTORE_RESPONSE, NULL, 0);
    CU_ASSERT_EQUAL(flowstore_newest_id(store, &newest, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(newest, 0);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.stored, 0);
    /* A cursor or a row on someone's screen must never name a new flow. */
    submit_many(store, 1);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    expect_ids(store, &f, "11");
    flowstore_close(store);
}

/* ---- HAR ---- */

static json_t *export_har(struct flowstore *store, const int64_t *ids, size_t count,
                          har_decode_fn decode)
{
    struct har *har = NULL;
    char err[512] = "";
    char *doc = NULL;
    size_t doc_len = 0;
    const char *piece;
    size_t len;
    json_error_t jerr;
    json_t *root = NULL;
    int rc;

    if (har_open(store, ids, count, decode, &har, err, sizeof(err)) != 0) {
        fprintf(stderr, "har_open: %s\n", err);
        return NULL;
    }
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
    else
        root = json_loadb(doc, doc_len, 0, &jerr);
    if (rc == 0 && root == NULL)
        fprintf(stderr, "HAR does not parse: %s at %d\n", jerr.text, jerr.position);
    har_close(har);
    free(doc);
    return root;
}

/* The value at "a.b.0.c": objects by key, arrays by index; NULL if absent. */
static json_t *jget(json_t *root, const char *path)
{
    json_t *v = root;
    char key[64];
    const char *p = path;

    while (v != NULL && *p != '\0') {
        size_t n = strcspn(p, ".");

        snprintf(key, sizeof(key), "%.*s", (int)n, p);
        v = json_is_array(v) ? json_array_get(v, strtoul(key, NULL, 10)) : json_object_get(v, key);
        p += n + (p[n] == '.');
    }
    return v;
}

static const char *jstr(json_t *root, const char *path)
{
    json_t *v = jget(root, path);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void assert_str(json_t *root, const char *path, const char *want)
{
    const char *got = jstr(root, path);

    CU_ASSERT_PTR_NOT_NULL(got);
    if (got != NULL) {
        CU_ASSERT_STRING_EQUAL(got, want);
        if (strcmp(got, want) != 0)
            fprintf(stderr, "%s: \"%s\", expected \"%s\"\n", path, got, want);
    } else {
        fprintf(stderr, "%s: missing, expected \"%s\"\n", path, want);
    }
}

static void test_har_export_of_known_flow(void)
{
    struct flowstore *store = open_store(100);
    struct flow *f = simple_flow("POST", "shop.test", "/cart?item=42&qty=2", 200);
    const int64_t id = 1;
    json_t *har;

    CU_ASSERT_FATAL(store != NULL);
    f->port = 8080;
    free(f->request_headers);
    f->request_headers = xstrdup("Host: shop.test:8080\r\nContent-Type: application/json\r\n"
                                 "X-Trace: abc\r\n");
    free(f->response_headers);
    f->response_headers = xstrdup("Content-Type: text/plain\r\nLocation: /done\r\n");
    snprintf(f->reason, sizeof(f->reason), "OK");
    flow_body_append(&f->request_body, "{\"qty\":2}", 9);
    flow_body_append(&f->response_body, "added \xc3\xa9", 8);
    f->timings.start = T0_US + 123000;
    f->timings.request_sent = T0_US + 125000;
    f->timings.first_byte = T0_US + 130000;
    f->timings.done = T0_US + 131500;
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);

    har = export_har(store, &id, 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    assert_str(har, "log.version", "1.2");
    assert_str(har, "log.creator.name", "tapwire");
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries")), 1);
    assert_str(har, "log.entries.0.startedDateTime", "2023-11-14T22:13:20.123Z");
    assert_str(har, "log.entries.0.request.method", "POST");
    assert_str(har, "log.entries.0.request.url", "http://shop.test:8080/cart?item=42&qty=2");
    assert_str(har, "log.entries.0.request.httpVersion", "HTTP/1.1");
    assert_str(har, "log.entries.0.request.headers.0.name", "Host");
    assert_str(har, "log.entries.0.request.headers.0.value", "shop.test:8080");
    assert_str(har, "log.entries.0.request.headers.2.name", "X-Trace");
    assert_str(har, "log.entries.0.request.headers.2.value", "abc");
    assert_str(har, "log.entries.0.request.queryString.1.name", "qty");
    assert_str(har, "log.entries.0.request.queryString.1.value", "2");
    assert_str(har, "log.entries.0.request.postData.mimeType", "application/json");
    assert_str(har, "log.entries.0.request.postData.text", "{\"qty\":2}");
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.request.bodySize")), 9);
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.response.status")), 200);
    assert_str(har, "log.entries.0.response.statusText", "OK");
    assert_str(har, "log.entries.0.response.headers.1.name", "Location");
    assert_str(har, "log.entries.0.response.redirectURL", "/done");
    assert_str(har, "log.entries.0.response.content.mimeType", "text/plain");
    assert_str(har, "log.entries.0.response.content.text", "added \xc3\xa9");
    CU_ASSERT_PTR_NULL(jget(har, "log.entries.0.response.content.encoding"));
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.response.content.size")), 8);
    CU_ASSERT_PTR_NOT_NULL(jget(har, "log.entries.0.cache"));
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.timings.dns")), -1);
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.timings.connect")), -1);
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(jget(har, "log.entries.0.timings.send")), 2.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(jget(har, "log.entries.0.timings.wait")), 5.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(jget(har, "log.entries.0.timings.receive")), 1.5,
                           1e-9);
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(jget(har, "log.entries.0.time")), 8.5, 1e-9);
    json_decref(har);
    flowstore_close(store);
}

/* Stands in for codec_decode_content(): "rot1" subtracts 1 from each byte. */
static int fake_decode(const char *encoding, const unsigned char *in, size_t in_len, size_t max_out,
                       unsigned char **out, size_t *out_len, char *err, size_t err_len)
{
    size_t i;

    if (strcmp(encoding, "rot1") != 0) {
        snprintf(err, err_len, "unsupported encoding %s", encoding);
        return -1;
    }
    *out = malloc(in_len + 1);
    if (*out == NULL)
        return -1;
    for (i = 0; i < in_len; i++)
        (*out)[i] = (unsigned char)(in[i] - 1);
    *out_len = in_len;
    return 0;
}

static void test_har_decodes_bodies_and_base64s_binary(void)
{
    struct flowstore *store = open_store(100);
    struct flow *f;
    json_t *har;

    CU_ASSERT_FATAL(store != NULL);
    f = simple_flow("GET", "enc.test", "/", 200); /* 1: decodable */
    free(f->response_headers);
    f->response_headers = xstrdup("Content-Encoding: rot1\r\n");
    flow_body_append(&f->response_body, "ifmmp", 5);
    submit(store, f);
    f = simple_flow("GET", "enc.test", "/bin", 200); /* 2: binary */
    flow_body_append(&f->response_body, "\x00\x01\xff", 3);
    submit(store, f);
    f = simple_flow("GET", "enc.test", "/unknown", 200); /* 3: cannot decode */
    free(f->response_headers);
    f->response_headers = xstrdup("Content-Encoding: zz\r\n");
    flow_body_append(&f->response_body, "abc", 3);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);

    /* ids NULL: every flow, newest first. */
    har = export_har(store, NULL, 0, fake_decode);
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries")), 3);
    assert_str(har, "log.entries.0.request.url", "http://enc.test/unknown");
    assert_str(har, "log.entries.0.response.content.text", "abc");
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr(har, "log.entries.0.response.content.comment") != NULL
                                      ? jstr(har, "log.entries.0.response.content.comment")
                                      : "",
                                  "unsupported encoding zz"));
    assert_str(har, "log.entries.1.response.content.text", "AAH/");
    assert_str(har, "log.entries.1.response.content.encoding", "base64");
    assert_str(har, "log.entries.2.response.content.text", "hello");
    CU_ASSERT_PTR_NULL(jget(har, "log.entries.2.response.content.encoding"));
    json_decref(har);
    flowstore_close(store);
}

static void test_har_skips_unknown_ids_and_keeps_asked_order(void)
{
    struct flowstore *store = open_store(100);
    const int64_t ids[] = {2, 77, 1};
    json_t *har;

    CU_ASSERT_FATAL(store != NULL);
    submit(store, simple_flow("GET", "one.test", "/", 200));
    submit(store, simple_flow("GET", "two.test", "/", 200));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    har = export_har(store, ids, 3, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries")), 2);
    assert_str(har, "log.entries.0.request.url", "http://two.test/");
    assert_str(har, "log.entries.1.request.url", "http://one.test/");
    json_decref(har);
    har = export_har(store, ids, 0, NULL); /* an empty selection is an empty log */
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries")), 0);
    json_decref(har);
    flowstore_close(store);
}

/* ---- what rules changed ---- */

/* A flow two rules rewrote: the request-target and the request headers, and
 * the response body (whose original was longer than the capture limit). */
static struct flow *rewritten_flow(void)
{
    struct flow *f = simple_flow("GET", "rewrite.test", "/search?q=two", 200);

    f->request_body.limit = 16;
    f->response_body.limit = 16;
    f->request_body_original.limit = 16;
    f->response_body_original.limit = 16;
    f->rules = xstrdup("#1, #2");
    f->target_original = xstrdup("/search?q=one");
    f->request_headers_original = xstrdup("Host: x\r\nX-Gone: 1\r\n");
    flow_body_append(&f->response_body, "Tapwire Domain", 14);
    f->has_response_body_original = true;
    flow_body_append(&f->response_body_original, "<h1>Example Domain</h1>", 23);
    f->rules_notes = xstrdup("#3: the body is over --rewrite-limit");
    return f;
}

static void test_flow_with_originals_reads_back(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    unsigned char *body = NULL;
    size_t len = 0;
    char err[512] = "";
    const struct flow *f;

    CU_ASSERT_FATAL(store != NULL);
    submit(store, rewritten_flow());
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    f = &rec->flow;
    /* What was sent on, and what arrived. */
    CU_ASSERT_STRING_EQUAL(f->target, "/search?q=two");
    CU_ASSERT_STRING_EQUAL(f->target_original, "/search?q=one");
    CU_ASSERT_STRING_EQUAL(f->request_headers, "Host: x\r\n");
    CU_ASSERT_STRING_EQUAL(f->request_headers_original, "Host: x\r\nX-Gone: 1\r\n");
    CU_ASSERT_PTR_NULL(f->response_headers_original); /* no rule changed them */
    CU_ASSERT_STRING_EQUAL(f->rules, "#1, #2");
    CU_ASSERT_STRING_EQUAL(f->rules_notes, "#3: the body is over --rewrite-limit");
    CU_ASSERT_FALSE(f->has_request_body_original);
    CU_ASSERT_EQUAL(f->request_body_original.size, 0);
    CU_ASSERT_EQUAL(rec->request_original_captured, 0);
    CU_ASSERT_TRUE(f->has_response_body_original);
    CU_ASSERT_EQUAL(f->response_body_original.size, 23);
    CU_ASSERT_TRUE(f->response_body_original.truncated);
    CU_ASSERT_EQUAL(rec->response_original_captured, 16);
    CU_ASSERT_EQUAL(f->response_body.size, 14);
    CU_ASSERT_FALSE(f->response_body.truncated);
    CU_ASSERT_EQUAL(rec->response_captured, 14);

    CU_ASSERT_EQUAL(
        flowstore_get_body(store, 1, FLOWSTORE_RESPONSE_ORIGINAL, &body, &len, err, sizeof(err)),
        0);
    CU_ASSERT_EQUAL(len, 16);
    CU_ASSERT(body != NULL && memcmp(body, "<h1>Example Doma", 16) == 0);
    free(body);
    CU_ASSERT_EQUAL(flowstore_get_body(store, 1, FLOWSTORE_RESPONSE, &body, &len, err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(len, 14);
    CU_ASSERT(body != NULL && memcmp(body, "Tapwire Domain", 14) == 0);
    free(body);
    CU_ASSERT_EQUAL(
        flowstore_get_body(store, 1, FLOWSTORE_REQUEST_ORIGINAL, &body, &len, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NULL(body);
    CU_ASSERT_EQUAL(len, 0);
    flowstore_record_free(rec);
    flowstore_close(store);
}

static void test_flow_without_rules_has_no_originals(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL);
    submit(store, full_flow());
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_PTR_NULL(rec->flow.target_original);
    CU_ASSERT_PTR_NULL(rec->flow.request_headers_original);
    CU_ASSERT_PTR_NULL(rec->flow.response_headers_original);
    CU_ASSERT_FALSE(rec->flow.has_request_body_original);
    CU_ASSERT_FALSE(rec->flow.has_response_body_original);
    CU_ASSERT_PTR_NULL(rec->flow.rules_notes);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key % 4 > 1"), 0);
    flowstore_record_free(rec);
    flowstore_close(store);
}

static void test_originals_are_listed_out_searched_out_and_deleted_with_the_flow(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter filter = {0};
    struct flowstore_record **records;
    size_t count;
    bool found = false;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL);
    submit(store, rewritten_flow());
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    filter.limit = 10;
    records = list(store, &filter, &count);
    CU_ASSERT_EQUAL_FATAL(count, 1);
    CU_ASSERT_STRING_EQUAL(records[0]->flow.rules, "#1, #2"); /* the list marks it */
    CU_ASSERT_PTR_NULL(records[0]->flow.target_original);
    CU_ASSERT_PTR_NULL(records[0]->flow.request_headers_original);
    CU_ASSERT_PTR_NULL(records[0]->flow.rules_notes);
    flowstore_records_free(records, count);
    /* A body search finds what was sent, not what a rule replaced. */
    filter.body_bytes = "Tapwire";
    filter.body_len = 7;
    expect_ids(store, &filter, "1");
    filter.body_bytes = "Example";
    expect_ids(store, &filter, "");
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key = 1 * 4 + 3"), 1);
    CU_ASSERT_EQUAL(flowstore_delete(store, 1, &found, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(found);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 0);
    flowstore_close(store);
}

/* Bodies are deleted by flowstore_clear() itself, not by a cascade: none
 * of any direction, in flow_bodies or in a flow's row, may outlive their
 * flows. */
static void test_clear_leaves_no_body_of_any_direction(void)
{
    struct flowstore *store = open_store(100);
    struct flow *f;
    char err[512] = "";
    int i;

    CU_ASSERT_FATAL(store != NULL);
    for (i = 1; i <= 2; i++) {
        f = rewritten_flow();
        flow_body_append(&f->request_body, "sent", 4);
        /* Flow 1's bodies as sent are large, flow 2's stay small. */
        if (i == 1) {
            append_patterned(&f->request_body, LARGE_BODY_BYTES, 1);
            append_patterned(&f->response_body, LARGE_BODY_BYTES, 2);
        }
        f->has_request_body_original = true;
        flow_body_append(&f->request_body_original, "received", 8);
        submit(store, f);
    }
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    /* Flow 1's four bodies and flow 2's two originals; flow 2's request
     * and response in its row. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 6);
    CU_ASSERT_EQUAL(query_int("SELECT count(DISTINCT body_key % 4) FROM flow_bodies"), 4);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE req_body IS NOT NULL AND "
                              "resp_body IS NOT NULL"),
                    1);
    CU_ASSERT_EQUAL(flowstore_clear(store, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 0);
    expect_body(store, 1, FLOWSTORE_RESPONSE, NULL, 0);
    expect_body(store, 2, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 2, FLOWSTORE_REQUEST_ORIGINAL, NULL, 0);

    /* The next flow's bodies are the only ones: the large one under its
     * own key, the small one in its row. */
    f = simple_flow("POST", "after.clear", "/", 200);
    append_patterned(&f->request_body, LARGE_BODY_BYTES, 3);
    flow_body_append(&f->response_body, "fresh", 5);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT body_key FROM flow_bodies"), 3 * 4 + FLOWSTORE_REQUEST);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE resp_body IS NOT NULL"), 1);
    expect_patterned_body(store, 3, FLOWSTORE_REQUEST, LARGE_BODY_BYTES, 3);
    expect_body(store, 3, FLOWSTORE_RESPONSE, "fresh", 5);
    flowstore_close(store);
}

/* ---- where a body is stored ---- */

static void test_small_body_is_stored_in_the_flow_row(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    struct flow *f;
    unsigned char *request, *response;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL);
    f = simple_flow("POST", "small.test", "/", 200);
    append_patterned(&f->request_body, 100, 1);
    append_patterned(&f->response_body, 1000, 2);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 0);
    request = patterned_bytes(100, 1);
    response = patterned_bytes(1000, 2);
    CU_ASSERT(query_blob_is("SELECT req_body FROM flows WHERE id = 1", request, 100));
    CU_ASSERT(query_blob_is("SELECT resp_body FROM flows WHERE id = 1", response, 1000));
    expect_body(store, 1, FLOWSTORE_REQUEST, request, 100);
    expect_body(store, 1, FLOWSTORE_RESPONSE, response, 1000);
    free(request);
    free(response);
    /* The record's sizes do not depend on where the bytes are. */
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL(rec);
    if (rec != NULL) {
        CU_ASSERT_EQUAL(rec->request_captured, 100);
        CU_ASSERT_EQUAL(rec->response_captured, 1000);
        CU_ASSERT_EQUAL(rec->flow.response_body.size, 1000);
    }
    flowstore_record_free(rec);
    flowstore_close(store);
}

/* Facts a proxy thread noted about a header section are what the writer
 * stores, but only for that very section: a section replaced since (a body
 * rule reframing it) or several Content-Encoding fields (to be joined) are
 * walked instead. The noted offsets here deliberately name other bytes than
 * a walk would find, so each assertion tells which way the writer went. */
static void test_noted_header_facts_apply_to_their_own_section_only(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    struct flow *f;
    char err[512] = "";
    const char *text = "Content-Type: text/plain\r\nX-Other: application/json\r\n"
                       "Content-Encoding: gzip\r\nX-Enc: br\r\n";
    const char *json = strstr(text, "application/json");
    const char *br = strstr(text, "br\r\n");

    CU_ASSERT_FATAL(store != NULL);
    /* 1: noted, about this section. */
    f = simple_flow("GET", "facts.test", "/1", 200);
    free(f->response_headers);
    f->response_headers = xstrdup(text);
    f->response_facts.text = f->response_headers;
    f->response_facts.has_content_type = true;
    f->response_facts.content_type_at = (uint32_t)(json - text);
    f->response_facts.content_type_len = 16;
    f->response_facts.has_content_encoding = true;
    f->response_facts.content_encoding_at = (uint32_t)(br - text);
    f->response_facts.content_encoding_len = 2;
    submit(store, f);
    /* 2: noted about a section that is no longer the recorded one. */
    f = simple_flow("GET", "facts.test", "/2", 200);
    free(f->response_headers);
    f->response_headers = xstrdup(text);
    f->response_facts.text = text; /* another allocation than response_headers */
    f->response_facts.has_content_type = true;
    f->response_facts.content_type_at = (uint32_t)(json - text);
    f->response_facts.content_type_len = 16;
    submit(store, f);
    /* 3: noted, but with several encodings: joined from the text. */
    f = simple_flow("GET", "facts.test", "/3", 200);
    free(f->response_headers);
    f->response_headers = xstrdup("Content-Encoding: gzip\r\nContent-Encoding: br\r\n");
    f->response_facts.text = f->response_headers;
    f->response_facts.has_content_encoding = true;
    f->response_facts.content_encoding_at = 42; /* "br" of the second field */
    f->response_facts.content_encoding_len = 2;
    f->response_facts.has_more_encodings = true;
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);

    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->response_content_type, "application/json");
    CU_ASSERT_STRING_EQUAL(rec->response_content_encoding, "br");
    flowstore_record_free(rec);
    rec = NULL;
    CU_ASSERT_EQUAL(flowstore_get(store, 2, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->response_content_type, "text/plain");
    CU_ASSERT_STRING_EQUAL(rec->response_content_encoding, "gzip");
    flowstore_record_free(rec);
    rec = NULL;
    CU_ASSERT_EQUAL(flowstore_get(store, 3, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_PTR_NULL(rec->response_content_type);
    CU_ASSERT_STRING_EQUAL(rec->response_content_encoding, "gzip, br");
    flowstore_record_free(rec);
    flowstore_close(store);
}

/* A flow's TLS facts are copied from its connection's in one allocation:
 * equal strings, NULL kept NULL, nothing shared with the source (freed
 * first here; ASan and valgrind in CI see a use after free or a leak), and
 * a flow carrying such a copy is stored and freed like any other. */
static void test_tls_copy_is_one_allocation_of_its_own(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_record *rec = NULL;
    struct flow_tls src = {0};
    struct flow *f;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL);
    snprintf(src.client_sni, sizeof(src.client_sni), "copy.test");
    src.cert_subject = xstrdup("CN=copy.test");
    src.cert_issuer = NULL;
    src.cert_sans = xstrdup("DNS:copy.test, IP:127.0.0.1");
    src.verification = xstrdup("ok");
    src.cert_not_after = 1900000000;
    f = simple_flow("GET", "copy.test", "/", 200);
    f->is_tls = true;
    flow_tls_copy(&f->tls, &src);
    free(src.cert_subject);
    free(src.cert_sans);
    free(src.verification);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->tls.strings);
    CU_ASSERT_PTR_EQUAL(f->tls.cert_subject, f->tls.strings);
    CU_ASSERT_STRING_EQUAL(f->tls.cert_subject, "CN=copy.test");
    CU_ASSERT_PTR_NULL(f->tls.cert_issuer);
    CU_ASSERT_STRING_EQUAL(f->tls.cert_sans, "DNS:copy.test, IP:127.0.0.1");
    CU_ASSERT_STRING_EQUAL(f->tls.verification, "ok");
    CU_ASSERT_STRING_EQUAL(f->tls.client_sni, "copy.test");
    CU_ASSERT_EQUAL(f->tls.cert_not_after, 1900000000);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->flow.tls.cert_subject, "CN=copy.test");
    CU_ASSERT_PTR_NULL(rec->flow.tls.cert_issuer);
    CU_ASSERT_STRING_EQUAL(rec->flow.tls.cert_sans, "DNS:copy.test, IP:127.0.0.1");
    CU_ASSERT_STRING_EQUAL(rec->flow.tls.verification, "ok");
    flowstore_record_free(rec);

    /* Nothing to copy: no allocation at all. */
    memset(&src, 0, sizeof(src));
    f = simple_flow("GET", "copy.test", "/2", 200);
    flow_tls_copy(&f->tls, &src);
    CU_ASSERT_PTR_NULL(f->tls.strings);
    CU_ASSERT_PTR_NULL(f->tls.cert_subject);
    flow_free(f);
    flowstore_close(store);
}

/* Whether p points into the block that starts at base (size bytes). */
static bool is_within(const void *p, const void *base, size_t size)
{
    return (const char *)p >= (const char *)base && (const char *)p < (const char *)base + size;
}

/* flow_pack() moves every string and body into the flow's block, keeps
 * each byte, points noted header facts at the copied section, moves the
 * live reference, packs a packed flow again, and leaves alone a flow whose
 * bodies are too large or which carries WebSocket messages. */
static void test_packed_flow_keeps_every_field_in_one_block(void)
{
    struct flow_tls src = {0};
    struct flow_ws_message m = {0};
    struct flow *f = simple_flow("POST", "pack.test", "/p?q=1", 201);
    struct flow_live *live = flow_live_new();
    struct flow *p, *again, *big, *ws;
    size_t block = sizeof(struct flow) + 4096;

    CU_ASSERT_FATAL(live != NULL);
    free(f->response_headers);
    f->response_headers = xstrdup("Content-Type: text/plain\r\nServer: pack\r\n");
    f->response_facts.text = f->response_headers;
    f->response_facts.content_type_at = 14;
    f->response_facts.content_type_len = 10;
    f->response_facts.has_content_type = true;
    f->request_facts.text = "not this section";
    flow_body_append(&f->request_body, "request body", 12);
    flow_body_append(&f->response_body, "\0binary\xff", 8);
    f->has_response_body_original = true;
    flow_body_append(&f->response_body_original, "original", 8);
    f->error = xstrdup("an error");
    f->rules = xstrdup("rule 1");
    f->target_original = xstrdup("/was");
    f->request_headers_original = xstrdup("Host: was\r\n");
    f->rules_notes = xstrdup("a note");
    src.cert_subject = "CN=pack.test";
    src.cert_sans = "DNS:pack.test";
    src.verification = "ok";
    flow_tls_copy(&f->tls, &src);
    f->live = live;

    p = flow_pack(f);
    CU_ASSERT_FATAL(p != NULL && p->is_packed);
    CU_ASSERT_STRING_EQUAL(p->host, "pack.test");
    CU_ASSERT_EQUAL(p->status, 201);
    CU_ASSERT_STRING_EQUAL(p->target, "/p?q=1");
    CU_ASSERT_STRING_EQUAL(p->request_headers, "Host: x\r\n");
    CU_ASSERT_STRING_EQUAL(p->response_headers, "Content-Type: text/plain\r\nServer: pack\r\n");
    CU_ASSERT_PTR_EQUAL(p->response_facts.text, p->response_headers);
    CU_ASSERT_EQUAL(p->response_facts.content_type_at, 14);
    CU_ASSERT_TRUE(p->response_facts.has_content_type);
    CU_ASSERT_PTR_NULL(p->request_facts.text); /* it described another section */
    CU_ASSERT_EQUAL(p->request_body.len, 12);
    CU_ASSERT_EQUAL(p->request_body.size, 12);
    CU_ASSERT_EQUAL(memcmp(p->request_body.data, "request body", 12), 0);
    CU_ASSERT_EQUAL(p->response_body.len, 8);
    CU_ASSERT_EQUAL(memcmp(p->response_body.data, "\0binary\xff", 8), 0);
    CU_ASSERT_EQUAL(p->response_body.capacity, 8);
    CU_ASSERT_TRUE(p->has_response_body_original);
    CU_ASSERT_EQUAL(memcmp(p->response_body_original.data, "original", 8), 0);
    CU_ASSERT_PTR_NULL(p->request_body_original.data);
    CU_ASSERT_STRING_EQUAL(p->error, "an error");
    CU_ASSERT_STRING_EQUAL(p->rules, "rule 1");
    CU_ASSERT_STRING_EQUAL(p->target_original, "/was");
    CU_ASSERT_STRING_EQUAL(p->request_headers_original, "Host: was\r\n");
    CU_ASSERT_PTR_NULL(p->response_headers_original);
    CU_ASSERT_STRING_EQUAL(p->rules_notes, "a note");
    CU_ASSERT_STRING_EQUAL(p->tls.cert_subject, "CN=pack.test");
    CU_ASSERT_PTR_NULL(p->tls.cert_issuer);
    CU_ASSERT_STRING_EQUAL(p->tls.cert_sans, "DNS:pack.test");
    CU_ASSERT_STRING_EQUAL(p->tls.verification, "ok");
    CU_ASSERT_PTR_NULL(p->tls.strings);
    CU_ASSERT_PTR_EQUAL(p->live, live);
    CU_ASSERT_TRUE(is_within(p->target, p, block));
    CU_ASSERT_TRUE(is_within(p->request_body.data, p, block));
    CU_ASSERT_TRUE(is_within(p->response_body.data, p, block));
    CU_ASSERT_TRUE(is_within(p->response_body_original.data, p, block));
    CU_ASSERT_TRUE(is_within(p->tls.verification, p, block));

    again = flow_pack(p);
    CU_ASSERT_FATAL(again != NULL && again->is_packed);
    CU_ASSERT_STRING_EQUAL(again->rules_notes, "a note");
    CU_ASSERT_EQUAL(memcmp(again->request_body.data, "request body", 12), 0);
    CU_ASSERT_PTR_EQUAL(again->response_facts.text, again->response_headers);
    CU_ASSERT_TRUE(is_within(again->tls.cert_sans, again, block));

    /* Its bodies given up (the queue's byte bound): the record stays,
     * packed anew without them, sizes kept. */
    p = flow_drop_bodies(again);
    CU_ASSERT_FATAL(p != NULL && p->is_packed);
    CU_ASSERT_TRUE(p->are_bodies_dropped);
    CU_ASSERT_PTR_NULL(p->request_body.data);
    CU_ASSERT_PTR_NULL(p->response_body_original.data);
    CU_ASSERT_EQUAL(p->response_body.len, 0);
    CU_ASSERT_EQUAL(p->response_body.size, 8);
    CU_ASSERT_TRUE(p->response_body.truncated);
    CU_ASSERT_STRING_EQUAL(p->target, "/p?q=1");
    CU_ASSERT_STRING_EQUAL(p->tls.cert_subject, "CN=pack.test");
    CU_ASSERT_PTR_EQUAL(p->response_facts.text, p->response_headers);
    CU_ASSERT_PTR_EQUAL(p->live, live);
    flow_free(p); /* releases live's last reference */

    big = simple_flow("GET", "pack.test", "/big", 200);
    big->response_body.limit = FLOW_PACK_BODY_MAX_BYTES + 1;
    for (size_t i = 0; i <= FLOW_PACK_BODY_MAX_BYTES; i++)
        flow_body_append(&big->response_body, "x", 1);
    CU_ASSERT_PTR_EQUAL(flow_pack(big), big);
    CU_ASSERT_FALSE(big->is_packed);
    flow_free(big);

    ws = simple_flow("GET", "pack.test", "/ws", 101);
    m.data = (unsigned char *)"hi";
    m.len = 2;
    m.size = 2;
    m.opcode = 1;
    CU_ASSERT_EQUAL(flow_ws_append(&ws->ws, &m), 0);
    CU_ASSERT_PTR_EQUAL(flow_pack(ws), ws);
    CU_ASSERT_FALSE(ws->is_packed);
    flow_free(ws);
}

/* The limit is inclusive, and each body of a flow is placed on its own. */
static void test_body_over_the_inline_limit_goes_to_flow_bodies(void)
{
    struct flowstore *store = open_store(100);
    struct flow *f;

    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("PRAGMA page_size"), DB_PAGE_SIZE); /* a new file */
    f = simple_flow("POST", "limit.test", "/1", 200);
    append_patterned(&f->request_body, INLINE_BODY_MAX_BYTES, 1);
    append_patterned(&f->response_body, INLINE_BODY_MAX_BYTES + 1, 2);
    submit(store, f);
    f = simple_flow("POST", "limit.test", "/2", 200);
    append_patterned(&f->request_body, INLINE_BODY_MAX_BYTES + 1, 3);
    append_patterned(&f->response_body, INLINE_BODY_MAX_BYTES, 4);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);

    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key IN (1 * 4 + 1, "
                              "2 * 4 + 0)"),
                    2);
    CU_ASSERT_EQUAL(query_int("SELECT length(req_body) FROM flows WHERE id = 1"),
                    INLINE_BODY_MAX_BYTES);
    CU_ASSERT(query_blob_is("SELECT resp_body FROM flows WHERE id = 1", NULL, 0));
    CU_ASSERT(query_blob_is("SELECT req_body FROM flows WHERE id = 2", NULL, 0));
    CU_ASSERT_EQUAL(query_int("SELECT length(resp_body) FROM flows WHERE id = 2"),
                    INLINE_BODY_MAX_BYTES);
    expect_patterned_body(store, 1, FLOWSTORE_REQUEST, INLINE_BODY_MAX_BYTES, 1);
    expect_patterned_body(store, 1, FLOWSTORE_RESPONSE, INLINE_BODY_MAX_BYTES + 1, 2);
    expect_patterned_body(store, 2, FLOWSTORE_REQUEST, INLINE_BODY_MAX_BYTES + 1, 3);
    expect_patterned_body(store, 2, FLOWSTORE_RESPONSE, INLINE_BODY_MAX_BYTES, 4);
    flowstore_close(store);
}

/* A file made with 4 KiB pages keeps them (db_open), so its rows have room
 * for a quarter of what a new file's have: 512 bytes of body. 513 bytes,
 * which a new file keeps in the row, go to flow_bodies here. */
static void test_inline_limit_follows_an_existing_files_page_size(void)
{
    const size_t inline_max = 4096 / 8;
    struct flowstore *store;
    struct flow *f;

    CU_ASSERT_EQUAL_FATAL(exec_sql("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; "
                                   "CREATE TABLE before_us (x INTEGER);"),
                          0);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("PRAGMA page_size"), 4096);
    f = simple_flow("POST", "old-pages.test", "/", 200);
    append_patterned(&f->request_body, inline_max + 1, 1);
    append_patterned(&f->response_body, inline_max, 2);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT body_key FROM flow_bodies"), 1 * 4 + FLOWSTORE_REQUEST);
    CU_ASSERT(query_blob_is("SELECT req_body FROM flows WHERE id = 1", NULL, 0));
    CU_ASSERT_EQUAL(query_int("SELECT length(resp_body) FROM flows WHERE id = 1"),
                    (int64_t)inline_max);
    expect_patterned_body(store, 1, FLOWSTORE_REQUEST, inline_max + 1, 1);
    expect_patterned_body(store, 1, FLOWSTORE_RESPONSE, inline_max, 2);
    flowstore_close(store);
}

/* Each needle is in a request of one flow and a response of another, once
 * in a flow's row and once, at the very end of a large body, in
 * flow_bodies. */
static void test_body_search_finds_inline_and_stored_bodies(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter filter = {0};
    unsigned char large[LARGE_BODY_BYTES];
    struct flow *f;

    CU_ASSERT_FATAL(store != NULL);
    memset(large, '.', sizeof(large));
    memcpy(large + sizeof(large) - 12, "needle-large", 12);
    f = simple_flow("POST", "search.test", "/1", 200); /* 1 */
    flow_body_append(&f->request_body, "a needle-small here", 19);
    submit(store, f);
    f = simple_flow("GET", "search.test", "/2", 200); /* 2 */
    f->response_body.limit = sizeof(large);
    flow_body_append(&f->response_body, large, sizeof(large));
    submit(store, f);
    f = simple_flow("POST", "search.test", "/3", 200); /* 3 */
    f->request_body.limit = sizeof(large);
    flow_body_append(&f->request_body, large, sizeof(large));
    flow_body_append(&f->response_body, "needle-small", 12);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key IN (2 * 4 + 1, "
                              "3 * 4 + 0)"),
                    2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE (id = 1 AND req_body IS NOT NULL) "
                              "OR (id = 3 AND resp_body IS NOT NULL)"),
                    2);

    filter.body_bytes = "needle-small";
    filter.body_len = 12;
    expect_ids(store, &filter, "3,1");
    filter.body_bytes = "needle-large";
    expect_ids(store, &filter, "3,2");
    filter.body_bytes = "needle-";
    filter.body_len = 7;
    expect_ids(store, &filter, "3,2,1");
    filter.body_bytes = "needle-absent";
    filter.body_len = 13;
    expect_ids(store, &filter, "");
    flowstore_close(store);
}

/* ---- migration ---- */

/* Version 1 as released: a database in the wild looks exactly like this. */
static const char schema_v1[] = "CREATE TABLE certs ("
                                "    names_key TEXT PRIMARY KEY,"
                                "    ca_fingerprint TEXT NOT NULL,"
                                "    not_after INTEGER NOT NULL,"
                                "    cert_pem TEXT NOT NULL,"
                                "    created_at INTEGER NOT NULL"
                                ");"
                                "INSERT INTO certs VALUES ('a.test', 'ff00', 1900000000, "
                                "'-----BEGIN CERTIFICATE-----', 1700000000);"
                                "PRAGMA user_version = 1;";

static void test_version_1_database_migrates_and_keeps_certs(void)
{
    struct flowstore *store;
    struct flowstore_record *rec = NULL;
    char err[512] = "";

    CU_ASSERT_EQUAL_FATAL(exec_sql(schema_v1), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 1);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT(db_schema_version() >= 2);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs WHERE names_key = 'a.test' AND "
                              "not_after = 1900000000"),
                    1);
    submit(store, simple_flow("GET", "after.migration", "/", 200));
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 1, &rec, err, sizeof(err)), 0);
    CU_ASSERT(rec != NULL && strcmp(rec->flow.host, "after.migration") == 0);
    flowstore_record_free(rec);
    flowstore_close(store);
}

/* The embedded schema up to (not including) "-- version: N": migrations
 * never change once released, so this is a database of version N-1 as
 * databases in the wild have it. Caller frees. */
static char *schema_before(int version)
{
    char marker[32];
    const char *text = (const char *)embedded_schema_sql;
    const char *at;
    char *sql;

    snprintf(marker, sizeof(marker), "\n-- version: %d\n", version);
    at = strstr(text, marker);
    if (at == NULL)
        return NULL;
    sql = malloc((size_t)(at - text) + 64);
    if (sql == NULL)
        abort();
    memcpy(sql, text, (size_t)(at - text));
    snprintf(sql + (at - text), 64, "\nPRAGMA user_version = %d;", version - 1);
    return sql;
}

/* A flow and its response body as a version-3 database holds them. */
static const char v3_flow[] =
    "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, target, "
    "req_version, resp_version, req_headers, resp_headers, status, reason, req_body_size, "
    "resp_body_size, req_body_captured, resp_body_captured, req_truncated, resp_truncated, "
    "is_tls, rules, bytes_up, bytes_down) VALUES (7, 0, 1700000000000000, '127.0.0.1:1', "
    "'http', 'GET', 'old.test', 80, '/old', 'HTTP/1.1', 'HTTP/1.1', 'Host: old.test\r\n', "
    "'Content-Type: text/plain\r\n', 200, 'OK', 0, 5, 0, 5, 0, 0, 0, '#1', 0, 0);"
    "INSERT INTO flow_bodies VALUES (7, 1, X'68656c6c6f');";

static void test_version_3_database_migrates_and_keeps_flows(void)
{
    char *v3 = schema_before(4);
    struct flowstore *store;
    struct flowstore_record *rec = NULL;
    unsigned char *body = NULL;
    size_t len = 0;
    char err[512] = "";

    CU_ASSERT_PTR_NOT_NULL_FATAL(v3);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v3), 0);
    free(v3);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v3_flow), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 3);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT(db_schema_version() >= 4);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());

    /* The old flow reads back whole, with nothing rewritten. */
    CU_ASSERT_EQUAL(flowstore_get(store, 7, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->flow.target, "/old");
    CU_ASSERT_STRING_EQUAL(rec->flow.rules, "#1");
    CU_ASSERT_PTR_NULL(rec->flow.target_original);
    CU_ASSERT_PTR_NULL(rec->flow.request_headers_original);
    CU_ASSERT_PTR_NULL(rec->flow.rules_notes);
    CU_ASSERT_FALSE(rec->flow.has_request_body_original);
    CU_ASSERT_FALSE(rec->flow.has_response_body_original);
    flowstore_record_free(rec);
    rec = NULL;
    CU_ASSERT_EQUAL(flowstore_get_body(store, 7, FLOWSTORE_RESPONSE, &body, &len, err, sizeof(err)),
                    0);
    CU_ASSERT(len == 5 && body != NULL && memcmp(body, "hello", 5) == 0);
    free(body);

    /* New flows get the next id and keep their originals. */
    submit(store, rewritten_flow());
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_get(store, 8, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->flow.target_original, "/search?q=one");
    CU_ASSERT_TRUE(rec->flow.has_response_body_original);
    flowstore_record_free(rec);
    flowstore_close(store);
}

/* Flows 5, 6 and 7 with bodies as a version-4 database holds them: one
 * row per (flow_id, direction). Each has a response original (direction 3,
 * the last key of a flow), so a key range cut one short leaves it behind;
 * flow 6 has binary bytes and no request body, flow 7 all four bodies. */
static const char v4_flows[] =
    "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, target, "
    "req_version, resp_version, req_headers, resp_headers, status, reason, req_body_size, "
    "resp_body_size, req_body_captured, resp_body_captured, req_truncated, resp_truncated, "
    "is_tls, bytes_up, bytes_down, resp_body_original_size, resp_body_original_captured, "
    "resp_original_truncated) VALUES "
    "(5, 0, 1700000000000000, '127.0.0.1:1', 'http', 'POST', 'five.test', 80, '/5', "
    "'HTTP/1.1', 'HTTP/1.1', 'Host: five.test\r\n', NULL, 200, 'OK', 4, 5, 4, 5, 0, 0, 0, 0, 0, "
    "5, 5, 0),"
    "(6, 0, 1700000000000001, '127.0.0.1:1', 'http', 'GET', 'six.test', 80, '/6', "
    "'HTTP/1.1', 'HTTP/1.1', 'Host: six.test\r\n', NULL, 200, 'OK', 0, 4, 0, 4, 0, 0, 0, 0, 0, "
    "2, 2, 0),"
    "(7, 0, 1700000000000002, '127.0.0.1:1', 'http', 'POST', 'seven.test', 80, '/7', "
    "'HTTP/1.1', 'HTTP/1.1', 'Host: seven.test\r\n', NULL, 200, 'OK', 9, 9, 9, 9, 0, 0, 0, 0, 0, "
    "17, 17, 0);"
    "UPDATE flows SET req_body_original_size = 13, req_body_original_captured = 13, "
    "req_original_truncated = 0 WHERE id = 7;"
    "INSERT INTO flow_bodies (flow_id, direction, data) VALUES "
    "(5, 0, CAST('req5' AS BLOB)), (5, 1, CAST('resp5' AS BLOB)), (5, 3, CAST('orig5' AS BLOB)), "
    "(6, 1, X'00ff0a00'), (6, 3, X'ff00'), "
    "(7, 0, CAST('post body' AS BLOB)), (7, 1, CAST('rewritten' AS BLOB)), "
    "(7, 2, CAST('post original' AS BLOB)), (7, 3, CAST('original response' AS BLOB));";

/* A version-6 database whose newest flow (12) was deleted: AUTOINCREMENT
 * remembered 12 in sqlite_sequence, max(id) is 7. */
static const char v6_flows[] =
    "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, target, "
    "req_version, resp_version, req_headers, resp_headers, status, reason, req_body_size, "
    "resp_body_size, req_body_captured, resp_body_captured, req_truncated, resp_truncated, "
    "is_tls, rules, bytes_up, bytes_down) VALUES (7, 0, 1700000000000000, '127.0.0.1:1', "
    "'http', 'GET', 'old.test', 80, '/old', 'HTTP/1.1', 'HTTP/1.1', 'Host: old.test\r\n', "
    "'Content-Type: text/plain\r\n', 404, 'Not Found', 0, 5, 0, 5, 0, 0, 0, NULL, 0, 0);"
    "INSERT INTO flow_bodies (body_key, data) VALUES (29, X'68656c6c6f');"
    "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, target, "
    "req_version, req_headers, status, req_body_size, resp_body_size, req_body_captured, "
    "resp_body_captured, req_truncated, resp_truncated, is_tls, bytes_up, bytes_down) VALUES "
    "(12, 0, 1700000000000001, '127.0.0.1:1', 'http', 'GET', 'old.test', 80, '/gone', "
    "'HTTP/1.1', 'Host: old.test\r\n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);"
    "DELETE FROM flows WHERE id = 12;";

/* Version 7 drops AUTOINCREMENT: the writer assigns ids, and they must still
 * never repeat, across the migration, deletions of the newest flows and
 * restarts. */
static void test_version_6_database_keeps_ids_unique_without_autoincrement(void)
{
    char *v6 = schema_before(7);
    struct flowstore *store;
    struct flowstore_filter f = {0};
    unsigned char *body = NULL;
    size_t len = 0;
    bool found = false;
    char err[512] = "";

    CU_ASSERT_PTR_NOT_NULL_FATAL(v6);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v6), 0);
    free(v6);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v6_flows), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 6);
    CU_ASSERT_EQUAL_FATAL(query_int("SELECT seq FROM sqlite_sequence WHERE name = 'flows'"), 12);

    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT(db_schema_version() >= 7);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'flows' AND "
                              "sql LIKE '%AUTOINCREMENT%'"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                              "('flows_1_host', 'flows_1_status_class', 'flows_1_error')"),
                    3);
    CU_ASSERT_EQUAL(query_int("SELECT next_id FROM flow_ids"), 13);
    /* The old flow and its body came along. */
    f.limit = 100;
    expect_ids(store, &f, "7");
    CU_ASSERT_EQUAL(flowstore_get_body(store, 7, FLOWSTORE_RESPONSE, &body, &len, err, sizeof(err)),
                    0);
    CU_ASSERT(len == 5 && body != NULL && memcmp(body, "hello", 5) == 0);
    free(body);
    f.status_class = 4; /* through the partial index, recreated */
    expect_ids(store, &f, "7");
    f.status_class = 0;

    /* 12 was given out once: the next flow is 13, not 8. */
    submit_many(store, 1);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    expect_ids(store, &f, "13,7");
    CU_ASSERT_EQUAL(query_int("SELECT next_id FROM flow_ids"), 14);
    /* Delete the newest, restart: still not reused. */
    CU_ASSERT_EQUAL(flowstore_delete(store, 13, &found, err, sizeof(err)), 0);
    CU_ASSERT(found);
    flowstore_close(store);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    submit_many(store, 2);
    CU_ASSERT_EQUAL(flowstore_sync(store, SYNC_MS), 0);
    expect_ids(store, &f, "15,14,7");
    flowstore_close(store);
}

static void test_version_4_database_migrates_bodies_to_one_key_each(void)
{
    char *v4 = schema_before(5);
    struct flowstore *store;
    struct flowstore_filter filter = {0};
    struct flow *f;
    bool found = false;
    char err[512] = "";

    CU_ASSERT_PTR_NOT_NULL_FATAL(v4);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v4), 0);
    free(v4);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v4_flows), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 4);
    CU_ASSERT_EQUAL_FATAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'flows_time'"),
                          1);
    /* Three flows at most: segments of one flow. */
    store = open_store(3);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT(db_schema_version() >= 5);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'flows_time'"), 0);
    /* One row per body, under flow id * 4 + direction; the old table and
     * its autoindex are gone. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key IN "
                              "(20, 21, 23, 25, 27, 28, 29, 30, 31)"),
                    9);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 9);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE tbl_name = 'flow_bodies'"),
                    1);
    /* Later migrations leave them there: none moved into the flows' rows. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE req_body IS NOT NULL OR "
                              "resp_body IS NOT NULL"),
                    0);

    /* Every body reads back byte for byte; absent ones stay absent. */
    expect_body(store, 5, FLOWSTORE_REQUEST, "req5", 4);
    expect_body(store, 5, FLOWSTORE_RESPONSE, "resp5", 5);
    expect_body(store, 5, FLOWSTORE_REQUEST_ORIGINAL, NULL, 0);
    expect_body(store, 5, FLOWSTORE_RESPONSE_ORIGINAL, "orig5", 5);
    expect_body(store, 6, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 6, FLOWSTORE_RESPONSE, "\0\xff\n\0", 4);
    expect_body(store, 6, FLOWSTORE_RESPONSE_ORIGINAL, "\xff\0", 2);
    expect_body(store, 7, FLOWSTORE_REQUEST, "post body", 9);
    expect_body(store, 7, FLOWSTORE_RESPONSE, "rewritten", 9);
    expect_body(store, 7, FLOWSTORE_REQUEST_ORIGINAL, "post original", 13);
    expect_body(store, 7, FLOWSTORE_RESPONSE_ORIGINAL, "original response", 17);
    /* The body search sees requests and responses as sent, not originals. */
    filter.body_bytes = "req5";
    filter.body_len = 4;
    expect_ids(store, &filter, "5");
    filter.body_bytes = "rewritten";
    filter.body_len = 9;
    expect_ids(store, &filter, "7");
    filter.body_bytes = "original";
    filter.body_len = 8;
    expect_ids(store, &filter, "");

    /* Deleting flow 6 takes its body and nothing of its neighbours. */
    CU_ASSERT_EQUAL(flowstore_delete(store, 6, &found, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(found);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies WHERE body_key BETWEEN 24 AND 27"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 7);
    expect_body(store, 6, FLOWSTORE_RESPONSE, NULL, 0);
    expect_body(store, 6, FLOWSTORE_RESPONSE_ORIGINAL, NULL, 0);
    expect_body(store, 5, FLOWSTORE_RESPONSE_ORIGINAL, "orig5", 5);
    expect_body(store, 7, FLOWSTORE_REQUEST, "post body", 9);

    /* Flow 8 starts segment 2 (the old flows' segment is full): three
     * flows, within max_flows. Flow 9 starts segment 3 and, beyond
     * max_flows, the old flows' segment (5 and 7: no bigger than two new
     * segments) goes whole with its bodies. Small bodies go into rows. */
    f = simple_flow("POST", "eight.test", "/8", 200);
    flow_body_append(&f->request_body, "req8", 4);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows"), 5);
    expect_body(store, 5, FLOWSTORE_RESPONSE_ORIGINAL, "orig5", 5);
    submit_many(store, 1);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows"), 8);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 0);
    CU_ASSERT(query_blob_is("SELECT req_body FROM flows WHERE id = 8", "req8", 4));
    expect_body(store, 5, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 5, FLOWSTORE_RESPONSE_ORIGINAL, NULL, 0);
    expect_body(store, 7, FLOWSTORE_REQUEST, NULL, 0);
    expect_body(store, 7, FLOWSTORE_RESPONSE_ORIGINAL, NULL, 0);
    expect_body(store, 8, FLOWSTORE_REQUEST, "req8", 4);
    flowstore_close(store);
}

/* A flow as a version-7 database holds it: both bodies in flow_bodies
 * under id * 4 + direction, and flow_ids past the newest id. */
static const char v7_flow[] =
    "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, target, "
    "req_version, resp_version, req_headers, resp_headers, status, reason, req_body_size, "
    "resp_body_size, req_body_captured, resp_body_captured, req_truncated, resp_truncated, "
    "is_tls, bytes_up, bytes_down) VALUES (3, 0, 1700000000000000, '127.0.0.1:1', 'http', "
    "'POST', 'old.test', 80, '/old', 'HTTP/1.1', 'HTTP/1.1', 'Host: old.test\r\n', "
    "'Content-Type: text/plain\r\n', 200, 'OK', 3, 5, 3, 5, 0, 0, 0, 0, 0);"
    "INSERT INTO flow_bodies (body_key, data) VALUES (12, CAST('old' AS BLOB)), "
    "(13, X'68656c6c6f');"
    "UPDATE flow_ids SET next_id = 4;";

/* Version 8 adds the columns for small bodies and moves nothing into them:
 * the bodies stored before stay in flow_bodies and must still be found. */
static void test_version_7_database_keeps_its_bodies_readable(void)
{
    char *v7 = schema_before(8);
    struct flowstore *store;
    struct flowstore_filter filter = {0};
    struct flow *f;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v7);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v7), 0);
    free(v7);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v7_flow), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 7);

    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT(db_schema_version() >= 8);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM pragma_table_info('flows') WHERE name IN "
                              "('req_body', 'resp_body')"),
                    2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE req_body IS NOT NULL OR "
                              "resp_body IS NOT NULL"),
                    0);
    expect_body(store, 3, FLOWSTORE_REQUEST, "old", 3);
    expect_body(store, 3, FLOWSTORE_RESPONSE, "hello", 5);
    filter.body_bytes = "hello";
    filter.body_len = 5;
    expect_ids(store, &filter, "3");

    /* A flow written after the migration keeps its small body in its row. */
    f = simple_flow("POST", "new.test", "/new", 200);
    flow_body_append(&f->request_body, "new body", 8);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT(query_blob_is("SELECT req_body FROM flows WHERE id = 4", "new body", 8));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies"), 2);
    expect_body(store, 4, FLOWSTORE_REQUEST, "new body", 8);
    expect_body(store, 3, FLOWSTORE_RESPONSE, "hello", 5);
    flowstore_close(store);
}

/* ---- segments, retention and the search index (schema version 12) ---- */

/* Flows as a version-9 database holds them: ids 1..count, a URL /v9-N,
 * and for flow 2 an inline response body and for flow 3 one in
 * flow_bodies. */
static void make_v9_database(int count)
{
    char *v9 = schema_before(10);
    char sql[1024];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v9);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v9), 0);
    free(v9);
    for (i = 1; i <= count; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, "
                 "target, req_version, resp_version, req_headers, resp_headers, status, reason, "
                 "req_body_size, resp_body_size, req_body_captured, resp_body_captured, "
                 "req_truncated, resp_truncated, is_tls, bytes_up, bytes_down, resp_body) "
                 "VALUES (%d, 0, %" PRId64 ", '127.0.0.1:1', 'http', 'GET', 'old.test', 80, "
                 "'/v9-%d', 'HTTP/1.1', 'HTTP/1.1', 'Host: old.test\r\nX-Old: ancient-%d\r\n', "
                 "'Content-Type: text/plain\r\n', 200, 'OK', 0, %d, 0, %d, 0, 0, 0, 0, 0, %s)",
                 i, T0_US + i, i, i,
                 i == 2   ? 9
                 : i == 3 ? 8
                          : 0,
                 i == 2   ? 9
                 : i == 3 ? 8
                          : 0,
                 i == 2 ? "CAST('old-inline' AS BLOB)" : "NULL");
        CU_ASSERT_EQUAL_FATAL(exec_sql(sql), 0);
    }
    if (count >= 3)
        CU_ASSERT_EQUAL_FATAL(
            exec_sql("INSERT INTO flow_bodies (body_key, data) VALUES (13, CAST('old-kept' AS "
                     "BLOB))"),
            0);
    snprintf(sql, sizeof(sql), "UPDATE flow_ids SET next_id = %d", count + 1);
    CU_ASSERT_EQUAL_FATAL(exec_sql(sql), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 9);
}

static void test_version_9_database_becomes_segment_1_and_is_searchable(void)
{
    struct flowstore *store;
    struct flowstore_filter f = {0};

    make_v9_database(3);
    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_1"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT flows FROM flow_segments WHERE seg = 1"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name IN "
                              "('flows', 'flow_bodies')"),
                    2);
    /* The columns of the old table and of a new segment are the same, in
     * the same order: the views are UNION ALL of SELECT *. */
    CU_ASSERT_EQUAL(query_int("SELECT max(cid) FROM pragma_table_info('flows_1') WHERE name = "
                              "'bodies_dropped'"),
                    query_int("SELECT max(cid) FROM pragma_table_info('flows_1')"));
    /* URLs and headers went into the index; the bodies are searched from
     * the flows themselves. */
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH '\"9-2\"'"),
                    2);
    /* Header sections by word in flows_hdr_1. */
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'ancient "
                              "AND 3'"),
                    3);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_unindexed_1"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_unindexed_1 WHERE id IN (2, 3)"), 2);
    f.url_text = "V9-3";
    expect_ids(store, &f, "3");
    f.url_text = NULL;
    f.body_bytes = "old-";
    f.body_len = 4;
    expect_ids(store, &f, "3,2");
    expect_body(store, 3, FLOWSTORE_RESPONSE, "old-kept", 8);

    /* New flows go into the same segment until it is full. */
    submit(store, simple_flow("GET", "new.test", "/after", 200));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    f.body_bytes = NULL;
    f.body_len = 0;
    f.url_text = "/after";
    expect_ids(store, &f, "4");
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_1"), 4);
    flowstore_close(store);
}

/* What the writer puts into the index, and what a search then finds with
 * it: URL, header sections, bodies decoded as UTF-8 text; a flow whose
 * bodies the index does not hold whole is listed in flows_unindexed_N. */
static void test_search_index_holds_url_headers_and_text_bodies(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter f = {0};
    struct flow *fl;
    char *big;
    size_t big_len = SEARCHTEXT_BODY_MAX_BYTES + 4096;

    CU_ASSERT_FATAL(store != NULL);
    flowstore_set_body_decoder(store, codec_decode_content);
    fl = encoded_flow("/alpha-path", "gzip", "<p>decoded treasure</p>"); /* 1 */
    free(fl->request_headers);
    fl->request_headers = xstrdup("Host: enc.test\r\nX-Marker: zebra-stripes\r\n");
    flow_body_append(&fl->request_body, "hello kettle", 12);
    submit(store, fl);
    fl = simple_flow("GET", "img.test", "/logo.png", 200); /* 2: binary */
    flow_body_append(&fl->response_body, "\x89PNG\r\n\x1a\n\0binary-marker", 22);
    submit(store, fl);
    fl = simple_flow("GET", "big.test", "/big.txt", 200); /* 3: longer than the index keeps */
    fl->response_body.limit = big_len;
    big = malloc(big_len);
    CU_ASSERT_FATAL(big != NULL);
    memset(big, 'x', big_len);
    memcpy(big, "early-marker", 12);
    memcpy(big + big_len - 20, "late-marker", 11);
    flow_body_append(&fl->response_body, big, big_len);
    free(big);
    submit(store, fl);
    submit(store, simple_flow("GET", "plain.test", "/nothing", 200)); /* 4 */
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);

    /* Trigrams (detail=none: which flows hold them, not where), any case. */
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"ALP\" AND \"HA-\" AND \"ATH\"'"),
                    1);
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"enc\" AND \"t/a\"'"),
                    1);
    /* Header values by word, not their names, in flows_hdr_1; not in the
     * trigram index of URLs and bodies. */
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'ZEBRA'"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'stri*'"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_hdr_1 WHERE flows_hdr_1 MATCH 'marker'"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"zeb\"'"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"dec\" AND \"tre\" AND \"ure\"'"),
                    1);
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"hel\" AND \"ket\"'"),
                    1);
    CU_ASSERT_EQUAL(query_int("SELECT rowid FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"ear\" AND \"-ma\"'"),
                    3);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"lat\" OR \"bin\"'"),
                    0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_fts_1 WHERE flows_fts_1 MATCH "
                              "'\"tes\"'"),
                    4);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_unindexed_1"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_unindexed_1 WHERE id IN (2, 3)"), 2);

    /* The dashboard's filters find the same with the index as without. */
    f.url_text = "ALPHA-PATH";
    expect_ids(store, &f, "1");
    f.url_text = "al"; /* too short for the index: the scan */
    expect_ids(store, &f, "1");
    f.url_text = NULL;
    f.body_bytes = "treasure";
    f.body_len = 8;
    expect_ids(store, &f, "1");
    f.body_bytes = "late-marker"; /* beyond the index: read from the body */
    f.body_len = 11;
    expect_ids(store, &f, "3");
    f.body_bytes = "binary-marker";
    f.body_len = 13;
    expect_ids(store, &f, "2");
    f.body_bytes = "\x89PNG";
    f.body_len = 4;
    expect_ids(store, &f, "2");
    f.body_bytes = "HELLO KETTLE"; /* the index ignores case; the check does not */
    f.body_len = 12;
    expect_ids(store, &f, "");
    f.is_body_nocase = true;
    expect_ids(store, &f, "1");
    f.body_bytes = "say \"hi\""; /* quotes in a phrase */
    f.body_len = 8;
    expect_ids(store, &f, "");
    flowstore_close(store);
}

/* Deleting a flow leaves its index entry (contentless FTS5 rows cannot be
 * deleted) but a search never lists it; clearing drops every segment. */
static void test_deleted_flow_is_not_found_through_its_index_entry(void)
{
    struct flowstore *store = open_store(100);
    struct flowstore_filter f = {0};
    bool found = false;
    char err[256];

    CU_ASSERT_FATAL(store != NULL);
    submit(store, simple_flow("GET", "a.test", "/gone-soon", 200));
    submit(store, simple_flow("GET", "a.test", "/gone-later", 200));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(flowstore_delete(store, 1, &found, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(found);
    f.url_text = "gone-";
    expect_ids(store, &f, "2");
    CU_ASSERT_EQUAL(query_int("SELECT flows FROM flow_segments"), 1);
    CU_ASSERT_EQUAL(flowstore_clear(store, err, sizeof(err)), 0);
    expect_ids(store, &f, "");
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_segments"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT first_id FROM flow_segments"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'flows_fts_1'"), 0);
    submit(store, simple_flow("GET", "a.test", "/gone-never", 200));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    expect_ids(store, &f, "3");
    flowstore_close(store);
}

static struct flow *flow_at(int64_t start_us)
{
    struct flow *f = simple_flow("GET", "age.test", "/", 200);

    f->timings.start = start_us;
    return f;
}

/* --retain: a segment goes once its newest flow is older; the newest
 * segment always stays. */
static void test_retention_by_age_drops_old_segments_whole(void)
{
    struct flowstore *store = open_store(8); /* segments of one flow */
    int64_t now = (int64_t)time(NULL) * 1000000;
    struct flowstore_stats st;

    CU_ASSERT_FATAL(store != NULL);
    flowstore_set_retention(store, 0, INT64_C(3600) * 1000000);
    submit(store, flow_at(now - INT64_C(7200) * 1000000));
    submit(store, flow_at(now - INT64_C(7100) * 1000000));
    submit(store, flow_at(now - INT64_C(7000) * 1000000));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows"), 3);
    submit(store, flow_at(now - INT64_C(60) * 1000000));
    submit(store, flow_at(now));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 2);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows"), 4);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_segments"), 2);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.stored, 2);
    flowstore_close(store);
}

/* --max-db-size: segments go while the pages in use exceed the size, and
 * the pages they free are used again, so the file stops growing. */
static void test_retention_by_size_bounds_the_database(void)
{
    const int64_t max_bytes = 1024 * 1024;
    struct flowstore *store = open_store(0);
    struct flowstore_stats st;
    int64_t page_size;
    int batch, i;

    CU_ASSERT_FATAL(store != NULL);
    flowstore_set_retention(store, max_bytes, 0);
    for (batch = 0; batch < 6; batch++) {
        for (i = 0; i < 20; i++) {
            struct flow *f = simple_flow("GET", "size.test", "/", 200);

            f->response_body.limit = 32 * 1024;
            append_patterned(&f->response_body, 32 * 1024, (unsigned)i);
            submit(store, f);
        }
        CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    }
    page_size = query_int("PRAGMA page_size");
    CU_ASSERT(query_int("SELECT (SELECT page_count FROM pragma_page_count) - (SELECT "
                        "freelist_count FROM pragma_freelist_count)") *
                  page_size <=
              max_bytes);
    /* 120 flows of 32 KiB (3.75 MiB) were written; the file holds about
     * the limit plus one batch. */
    CU_ASSERT(query_int("PRAGMA page_count") * page_size < 3 * max_bytes);
    CU_ASSERT(query_int("SELECT count(*) FROM flows") < 40);
    CU_ASSERT(query_int("SELECT count(*) FROM flows") > 5);
    CU_ASSERT_EQUAL(query_int("SELECT max(id) FROM flows"), 120);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.written, 120);
    CU_ASSERT_EQUAL((int64_t)st.stored, query_int("SELECT count(*) FROM flows"));
    flowstore_close(store);
}

/* A segment far larger than --max-flows now makes (a database from before
 * segments) loses its oldest flows a segment's worth at a time, not all at
 * once. */
static void test_oversized_old_segment_is_trimmed_not_dropped_whole(void)
{
    struct flowstore *store;

    make_v9_database(20);
    store = open_store(8); /* segments of one flow */
    CU_ASSERT_FATAL(store != NULL);
    submit(store, simple_flow("GET", "new.test", "/", 200));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 8);
    CU_ASSERT_EQUAL(query_int("SELECT min(id) FROM flows"), 14);
    CU_ASSERT_EQUAL(query_int("SELECT first_id FROM flow_segments WHERE seg = 1"), 14);
    CU_ASSERT_EQUAL(query_int("SELECT flows FROM flow_segments WHERE seg = 1"), 7);
    /* Flow 3's body went with it. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_bodies_1"), 0);
    /* The migrated table and a segment made since have the same columns
     * in the same order (the views are UNION ALL of SELECT *). */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM pragma_table_info('flows_2')"),
                    query_int("SELECT count(*) FROM pragma_table_info('flows_1')"));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM pragma_table_info('flows_1') a LEFT JOIN "
                              "pragma_table_info('flows_2') b ON a.cid = b.cid AND a.name = "
                              "b.name AND a.type = b.type AND a.\"notnull\" = b.\"notnull\" AND "
                              "a.pk = b.pk WHERE b.cid IS NULL"),
                    0);
    flowstore_close(store);
}

/* ---- WebSocket messages and replays in segments (schema versions 10-12) ---- */

static void append_ws(struct flow *f, const char *text, bool is_from_client)
{
    struct flow_ws_message m;

    memset(&m, 0, sizeof(m));
    m.time_us = T0_US;
    m.size = strlen(text);
    m.data = (unsigned char *)text;
    m.len = strlen(text);
    m.opcode = 1;
    m.is_from_client = is_from_client;
    CU_ASSERT_EQUAL(flow_ws_append(&f->ws, &m), 0);
}

/* One part of a live WebSocket flow (struct flow_live), as capture.c
 * submits them. */
static struct flow *live_part(struct flow_live *live, enum flow_live_part part)
{
    struct flow *f = simple_flow("GET", "live.test", "/ws-live", 101);

    f->kind = FLOW_WEBSOCKET;
    f->live = flow_live_ref(live);
    f->live_part = part;
    return f;
}

static size_t ws_count(struct flowstore *store, int64_t id)
{
    struct flow_ws ws;
    char err[512] = "";
    size_t n;

    memset(&ws, 0, sizeof(ws));
    CU_ASSERT_EQUAL(flowstore_get_ws_messages(store, id, 0, &ws, err, sizeof(err)), 0);
    n = ws.count;
    flow_ws_clear(&ws);
    return n;
}

/* A version-11 database: two WebSocket flows with their messages (and
 * the trigger of version 10 on flows) and a replay. Version 12 makes them
 * segment 1: the messages and replay_of read back, the trigger is gone,
 * and deleting a flow or dropping the segment takes its messages. */
static void test_version_11_database_keeps_ws_messages_and_replay_of(void)
{
    char *v11 = schema_before(12);
    struct flowstore *store;
    struct flowstore_record *rec = NULL;
    struct flow_ws ws;
    struct flow *f;
    char sql[2048];
    char err[512] = "";
    bool found = false;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v11);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v11), 0);
    free(v11);
    snprintf(sql, sizeof(sql),
             "INSERT INTO flows (id, kind, time_start_us, client, scheme, method, host, port, "
             "target, req_version, resp_version, status, req_body_size, resp_body_size, "
             "req_body_captured, resp_body_captured, req_truncated, resp_truncated, is_tls, "
             "bytes_up, bytes_down, replay_of) VALUES "
             "(1, 2, %1$" PRId64 ", 'c', 'http', 'GET', 'v11.test', 80, '/ws1', 'HTTP/1.1', "
             "'HTTP/1.1', 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL), "
             "(2, 2, %1$" PRId64 ", 'c', 'http', 'GET', 'v11.test', 80, '/ws2', 'HTTP/1.1', "
             "'HTTP/1.1', 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL), "
             "(3, 0, %1$" PRId64 ", 'replay of #1', 'http', 'GET', 'v11.test', 80, '/again', "
             "'HTTP/2', 'HTTP/2', 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);"
             "INSERT INTO ws_messages VALUES (1, 0, 0, %1$" PRId64 ", 1, 0, 2, CAST('hi' AS "
             "BLOB)), (2, 0, 0, %1$" PRId64 ", 1, 0, 5, CAST('hello' AS BLOB)), "
             "(2, 1, 1, %1$" PRId64 ", 1, 0, 5, CAST('world' AS BLOB)), "
             "(2, 2, 0, %1$" PRId64 ", 8, 0, 2, X'03e8');"
             "UPDATE flow_ids SET next_id = 4;",
             T0_US);
    CU_ASSERT_EQUAL_FATAL(exec_sql(sql), 0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 11);

    store = open_store(8); /* segments of one flow from here on */
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT replay_of FROM flows_1 WHERE id = 3"), 1);
    CU_ASSERT_EQUAL(flowstore_get(store, 3, &rec, err, sizeof(err)), 0);
    CU_ASSERT_FATAL(rec != NULL);
    CU_ASSERT_EQUAL(rec->flow.replay_of, 1);
    CU_ASSERT_EQUAL(rec->flow.request_version, 20);
    flowstore_record_free(rec);
    rec = NULL;
    memset(&ws, 0, sizeof(ws));
    CU_ASSERT_EQUAL(flowstore_get_ws_messages(store, 2, 0, &ws, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(ws.count, 3);
    CU_ASSERT(ws.items[0].len == 5 && memcmp(ws.items[0].data, "hello", 5) == 0);
    CU_ASSERT_TRUE(ws.items[0].is_from_client);
    CU_ASSERT(ws.items[1].len == 5 && memcmp(ws.items[1].data, "world", 5) == 0);
    CU_ASSERT_EQUAL(ws.items[2].opcode, 8);
    flow_ws_clear(&ws);

    /* A replay written now goes to a new segment with its link. */
    f = simple_flow("GET", "v11.test", "/again", 200);
    f->replay_of = 3;
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT replay_of FROM flows_2 WHERE id = 4"), 3);
    CU_ASSERT_EQUAL(flowstore_get(store, 4, &rec, err, sizeof(err)), 0);
    CU_ASSERT(rec != NULL && rec->flow.replay_of == 3);
    flowstore_record_free(rec);

    /* Deleting flow 2 takes its messages, not flow 1's. */
    CU_ASSERT_EQUAL(flowstore_delete(store, 2, &found, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(found);
    CU_ASSERT_EQUAL(ws_count(store, 2), 0);
    CU_ASSERT_EQUAL(ws_count(store, 1), 1);
    /* Pruning drops segment 1 whole, and flow 1's messages with it. */
    submit_many(store, 8);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flow_segments WHERE seg = 1"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE id <= 3"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM ws_messages"), 0);
    flowstore_close(store);
}

/* A live flow's messages and finished row go where its first row went,
 * however many segments started since; a live flow whose segment is gone
 * (clear, pruning) leaves nothing behind, no row and no messages. */
static void test_live_flow_is_finished_in_its_own_segment_and_goes_with_it(void)
{
    struct flowstore *store = open_store(8); /* segments of one flow */
    struct flowstore_filter filter = {0};
    struct flow_live *live = flow_live_new();
    struct flow *f;
    char err[512] = "";

    CU_ASSERT_FATAL(store != NULL && live != NULL);
    submit(store, live_part(live, FLOW_LIVE_OPEN));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(live->id, 1);
    submit_many(store, 2); /* ids 2 and 3, segments 2 and 3 */
    f = live_part(live, FLOW_LIVE_MESSAGES);
    append_ws(f, "one", true);
    append_ws(f, "two", false);
    submit(store, f);
    f = live_part(live, FLOW_LIVE_FINAL);
    append_ws(f, "three", true);
    f->timings.done = T0_US + 5000;
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows_1 WHERE id = 1 AND done_us IS NOT NULL"),
                    1);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE id = 1"), 1);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT sum(flows) FROM flow_segments"), 3);
    CU_ASSERT_EQUAL(query_int("SELECT group_concat(seq, '') FROM ws_messages WHERE flow_id = 1"),
                    12); /* 0, 1, 2 */
    CU_ASSERT_EQUAL(ws_count(store, 1), 3);
    filter.url_text = "/ws-live";
    expect_ids(store, &filter, "1");
    flow_live_release(live);

    /* Cleared while it lives: its later parts write nothing. */
    live = flow_live_new();
    CU_ASSERT_FATAL(live != NULL);
    submit(store, live_part(live, FLOW_LIVE_OPEN));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(live->id, 4);
    CU_ASSERT_EQUAL(flowstore_clear(store, err, sizeof(err)), 0);
    f = live_part(live, FLOW_LIVE_MESSAGES);
    append_ws(f, "late", true);
    submit(store, f);
    submit(store, live_part(live, FLOW_LIVE_FINAL));
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM ws_messages"), 0);
    flow_live_release(live);

    /* Pruned while it lives: the drop takes the messages written so far. */
    live = flow_live_new();
    CU_ASSERT_FATAL(live != NULL);
    submit(store, live_part(live, FLOW_LIVE_OPEN));
    f = live_part(live, FLOW_LIVE_MESSAGES);
    append_ws(f, "early", true);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(ws_count(store, live->id), 1);
    submit_many(store, 9);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(ws_count(store, live->id), 0);
    f = live_part(live, FLOW_LIVE_FINAL);
    append_ws(f, "last", false);
    submit(store, f);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE kind = 2"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM ws_messages"), 0);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows"), 8);
    flow_live_release(live);
    flowstore_close(store);
}

/* ---- the listener and dropped bodies (schema version 13) ---- */

/* A version-12 database with two segments (as a tapwire of version 12 made
 * them: flows_2 without the columns of version 13): flows 1 and 2 in
 * segment 1, flow 3 in segment 2. Version 13 adds listener and
 * bodies_dropped to both, last, so the views stay aligned. */
static void test_version_12_database_gains_listener_in_every_segment(void)
{
    static const char new_columns[] = ", listener TEXT, bodies_dropped INTEGER";
    static const char pairs_column[] = ", pairs BLOB";
    char *v12 = schema_before(13);
    char sql[FLOWSEG_SQL_MAX_BYTES];
    struct flowstore *store;
    struct flowstore_record *rec = NULL;
    struct flowstore_filter f = {0};
    struct flowseg segs[2] = {{.seg = 1}, {.seg = 2}};
    struct flow *fl;
    char err[256] = "";
    char *at;
    char *views;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v12);
    CU_ASSERT_EQUAL_FATAL(exec_sql(v12), 0);
    free(v12);
    CU_ASSERT_EQUAL_FATAL(flowseg_create_sql(2, sql, sizeof(sql)), 0);
    at = strstr(sql, new_columns);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    memmove(at, at + strlen(new_columns), strlen(at + strlen(new_columns)) + 1);
    /* Nor the pairs filter of version 14. */
    at = strstr(sql, pairs_column);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    memmove(at, at + strlen(pairs_column), strlen(at + strlen(pairs_column)) + 1);
    CU_ASSERT_EQUAL_FATAL(exec_sql(sql), 0);
    views = flowseg_views_sql(segs, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(views);
    CU_ASSERT_EQUAL_FATAL(exec_sql(views), 0);
    free(views);
    for (i = 1; i <= 3; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO flows_%d (id, kind, time_start_us, client, scheme, method, host, "
                 "port, target, req_version, resp_version, req_headers, resp_headers, status, "
                 "reason, req_body_size, resp_body_size, req_body_captured, resp_body_captured, "
                 "req_truncated, resp_truncated, is_tls, bytes_up, bytes_down) VALUES (%d, 0, "
                 "%" PRId64 ", '127.0.0.1:1', 'http', 'GET', 'v12.test', 80, '/v12-%d', "
                 "'HTTP/1.1', 'HTTP/1.1', 'Host: v12.test\r\n', 'Content-Type: text/plain\r\n', "
                 "200, 'OK', 0, 0, 0, 0, 0, 0, 0, 0, 0)",
                 i < 3 ? 1 : 2, i, T0_US + i, i);
        CU_ASSERT_EQUAL_FATAL(exec_sql(sql), 0);
    }
    CU_ASSERT_EQUAL_FATAL(
        exec_sql("INSERT INTO flow_segments (seg, first_id, created_us, last_us, flows, written) "
                 "VALUES (2, 3, 0, 0, 1, 1); UPDATE flow_segments SET flows = 2, written = 2 "
                 "WHERE seg = 1; UPDATE flow_ids SET next_id = 4"),
        0);
    CU_ASSERT_EQUAL_FATAL(query_int("PRAGMA user_version"), 12);

    store = open_store(100);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    for (i = 1; i <= 2; i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT (SELECT cid FROM pragma_table_info('flows_%1$d') WHERE name = "
                 "'bodies_dropped') = (SELECT max(cid) FROM pragma_table_info('flows_%1$d')) AND "
                 "(SELECT cid FROM pragma_table_info('flows_%1$d') WHERE name = 'listener') = "
                 "(SELECT max(cid) - 1 FROM pragma_table_info('flows_%1$d'))",
                 i);
        CU_ASSERT_EQUAL(query_int(sql), 1);
        /* Version 14: the byte-pair filter's column in every segment. */
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM pragma_table_info('flows_unindexed_%d') WHERE name = "
                 "'pairs'",
                 i);
        CU_ASSERT_EQUAL(query_int(sql), 1);
    }
    /* Through the views, and as records: unknown listener, bodies kept. */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE listener IS NULL AND "
                              "bodies_dropped IS NULL"),
                    3);
    CU_ASSERT_EQUAL(flowstore_get(store, 3, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->flow.target, "/v12-3");
    CU_ASSERT_STRING_EQUAL(rec->flow.listener, "");
    CU_ASSERT_FALSE(rec->flow.are_bodies_dropped);
    flowstore_record_free(rec);
    f.host_glob = "v12.test";
    expect_ids(store, &f, "3,2,1");

    /* A new flow keeps its listener, in the segment written now. */
    fl = simple_flow("GET", "new.test", "/socks", 200);
    snprintf(fl->listener, sizeof(fl->listener), "socks5");
    submit(store, fl);
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    CU_ASSERT_EQUAL(query_int("SELECT id FROM flows_2 WHERE listener = 'socks5'"), 4);
    rec = NULL;
    CU_ASSERT_EQUAL(flowstore_get(store, 4, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(rec->flow.listener, "socks5");
    flowstore_record_free(rec);
    flowstore_close(store);
}

/* A flow whose body buffer grew to this (doubling, as flow_body_append()
 * grows it) though it holds BIG_BODY_LEN bytes: the queue counts the
 * allocation, and the pages of a large malloc() that nothing touched cost
 * no memory. BIG_BODY_LEN is past what flow_pack() copies, so the body
 * stays in its own buffer. */
#define QUEUED_BODY_BYTES ((size_t)16 * 1024 * 1024)
#define BIG_BODY_LEN (FLOW_PACK_BODY_MAX_BYTES + 1)

static struct flow *big_buffer_flow(int n)
{
    char path[32];
    struct flow *f;

    snprintf(path, sizeof(path), "/big/%d", n);
    f = simple_flow("POST", "bytes.test", path, 201);
    free(f->response_body.data);
    f->response_body.data = malloc(QUEUED_BODY_BYTES);
    if (f->response_body.data == NULL)
        abort();
    memset(f->response_body.data, 'b', BIG_BODY_LEN);
    f->response_body.len = BIG_BODY_LEN;
    f->response_body.size = BIG_BODY_LEN;
    f->response_body.capacity = QUEUED_BODY_BYTES;
    f->response_body.limit = QUEUED_BODY_BYTES;
    snprintf(f->listener, sizeof(f->listener), "proxy");
    return f;
}

/* Past FLOWSTORE_QUEUE_MAX_BYTES a flow is queued without its bodies: its
 * record (method, URL, headers, status, listener) is written and says so,
 * its body's size stays, its bytes are gone, and it is counted apart from
 * the whole flows dropped with the queue full (none here). */
static void test_queue_byte_bound_keeps_the_record_and_drops_the_body(void)
{
    struct flowstore *store = open_store(0);
    struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    size_t fitting = FLOWSTORE_QUEUE_MAX_BYTES / QUEUED_BODY_BYTES - 1;
    struct flowstore_record *rec = NULL;
    struct flowstore_stats st;
    unsigned char *data = NULL;
    unsigned char want[BIG_BODY_LEN];
    size_t len = 0;
    char err[256] = "";
    char sql[256];
    size_t i;

    CU_ASSERT_FATAL(store != NULL);
    flowstore_set_written_callback(store, hold_writer, &gate);
    submit_many(store, 1);
    pthread_mutex_lock(&gate.lock);
    while (!gate.is_entered)
        pthread_cond_wait(&gate.cond, &gate.lock);
    pthread_mutex_unlock(&gate.lock);

    /* The writer is held: the bodies of the first ones fit, the rest go. */
    for (i = 0; i < fitting + 3; i++)
        submit(store, big_buffer_flow((int)i));
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.bodies_dropped, 3);
    CU_ASSERT_EQUAL(st.dropped, 0);

    pthread_mutex_lock(&gate.lock);
    gate.is_open = true;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.lock);
    CU_ASSERT_EQUAL(flowstore_sync(store, 30000), 0);
    flowstore_set_written_callback(store, NULL, NULL);
    flowstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.written, fitting + 4);
    CU_ASSERT_EQUAL(st.dropped, 0);
    CU_ASSERT_EQUAL(st.bodies_dropped, 3);
    /* Flow 1 is submit_many()'s; 2.. are big_buffer_flow(0..). */
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM flows WHERE bodies_dropped = 1"), 3);
    snprintf(sql, sizeof(sql),
             "SELECT min(id) FROM flows WHERE bodies_dropped = 1 AND resp_body_size = %d AND "
             "resp_body_captured = 0 AND resp_truncated = 1 AND method = 'POST' AND status = 201 "
             "AND listener = 'proxy' AND req_headers = 'Host: x\r\n'",
             BIG_BODY_LEN);
    CU_ASSERT_EQUAL(query_int(sql), (int64_t)fitting + 2);
    CU_ASSERT_EQUAL(flowstore_get(store, (int64_t)fitting + 2, &rec, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_TRUE(rec->flow.are_bodies_dropped);
    CU_ASSERT_EQUAL(rec->flow.response_body.size, BIG_BODY_LEN);
    CU_ASSERT_EQUAL(rec->response_captured, 0);
    snprintf(sql, sizeof(sql), "/big/%zu", fitting);
    CU_ASSERT_STRING_EQUAL(rec->flow.target, sql);
    flowstore_record_free(rec);
    CU_ASSERT_EQUAL(flowstore_get_body(store, (int64_t)fitting + 2, FLOWSTORE_RESPONSE, &data, &len,
                                       err, sizeof(err)),
                    0);
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_EQUAL(len, 0);
    free(data);
    /* The ones that fitted kept theirs. */
    memset(want, 'b', sizeof(want));
    expect_body(store, 2, FLOWSTORE_RESPONSE, want, sizeof(want));
    CU_ASSERT_EQUAL(count_lines_containing(log_path, "kept without their bodies"), 2);
    flowstore_close(store);
}

static void test_in_memory_database_is_refused(void)
{
    struct flowstore *store = NULL;
    char err[512] = "";

    CU_ASSERT_EQUAL(flowstore_open(":memory:", 10, &store, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(store);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "database file"));
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("flowstore", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "body_append_holds_at_most_limit_and_counts_every_byte",
                     test_body_append_holds_at_most_limit_and_counts_every_byte) ||
        !CU_add_test(suite, "body_with_zero_limit_counts_without_holding",
                     test_body_with_zero_limit_counts_without_holding) ||
        !CU_add_test(suite, "headers_next_walks_fields_in_order_trimming_blanks",
                     test_headers_next_walks_fields_in_order_trimming_blanks) ||
        !CU_add_test(suite, "submitted_flow_reads_back_field_by_field",
                     test_submitted_flow_reads_back_field_by_field) ||
        !CU_add_test(suite, "flow_without_response_or_tls_reads_back_as_absent",
                     test_flow_without_response_or_tls_reads_back_as_absent) ||
        !CU_add_test(suite, "flows_survive_close_and_reopen",
                     test_flows_survive_close_and_reopen) ||
        !CU_add_test(suite, "written_callback_gets_every_id_ascending",
                     test_written_callback_gets_every_id_ascending) ||
        !CU_add_test(suite, "pruning_drops_whole_segments_keeping_at_most_max_flows",
                     test_pruning_drops_whole_segments_keeping_at_most_max_flows) ||
        !CU_add_test(suite, "pruned_flow_takes_its_bodies", test_pruned_flow_takes_its_bodies) ||
        !CU_add_test(suite, "full_queue_drops_and_counts", test_full_queue_drops_and_counts) ||
        !CU_add_test(suite, "writer_takes_turns_from_an_idle_thread",
                     test_writer_takes_turns_from_an_idle_thread) ||
        !CU_add_test(suite, "burst_waits_in_the_queue_until_the_proxy_is_quiet",
                     test_burst_waits_in_the_queue_until_the_proxy_is_quiet) ||
        !CU_add_test(suite, "long_burst_goes_on_in_the_spool_and_comes_out_in_order",
                     test_long_burst_goes_on_in_the_spool_and_comes_out_in_order) ||
        !CU_add_test(suite, "killed_in_a_burst_leaves_the_spool_to_the_next_start",
                     test_killed_in_a_burst_leaves_the_spool_to_the_next_start) ||
        !CU_add_test(suite, "database_error_counts_losses_and_writer_recovers",
                     test_database_error_counts_losses_and_writer_recovers) ||
        !CU_add_test(suite, "locked_database_is_reported_once_and_close_is_bounded",
                     test_locked_database_is_reported_once_and_close_is_bounded) ||
        !CU_add_test(suite, "cursor_pages_list_every_id_once_newest_first",
                     test_cursor_pages_list_every_id_once_newest_first) ||
        !CU_add_test(suite, "listing_leaves_out_headers_and_tls_details",
                     test_listing_leaves_out_headers_and_tls_details) ||
        !CU_add_test(suite, "oldest_first_after_id_lists_newer_flows_ascending",
                     test_oldest_first_after_id_lists_newer_flows_ascending) ||
        !CU_add_test(suite, "host_filter_finds_substrings_and_can_hide",
                     test_host_filter_finds_substrings_and_can_hide) ||
        !CU_add_test(suite, "host_filter_globs_and_ignores_case",
                     test_host_filter_globs_and_ignores_case) ||
        !CU_add_test(suite, "method_and_status_filters", test_method_and_status_filters) ||
        !CU_add_test(suite, "status_index_leaves_out_2xx", test_status_index_leaves_out_2xx) ||
        !CU_add_test(suite, "content_type_url_and_body_filters",
                     test_content_type_url_and_body_filters) ||
        !CU_add_test(suite, "filter_pages_with_cursor", test_filter_pages_with_cursor) ||
        !CU_add_test(suite, "delete_removes_flow_and_bodies",
                     test_delete_removes_flow_and_bodies) ||
        !CU_add_test(suite, "clear_removes_everything_and_ids_are_not_reused",
                     test_clear_removes_everything_and_ids_are_not_reused) ||
        !CU_add_test(suite, "har_export_of_known_flow", test_har_export_of_known_flow) ||
        !CU_add_test(suite, "har_decodes_bodies_and_base64s_binary",
                     test_har_decodes_bodies_and_base64s_binary) ||
        !CU_add_test(suite, "har_skips_unknown_ids_and_keeps_asked_order",
                     test_har_skips_unknown_ids_and_keeps_asked_order) ||
        !CU_add_test(suite, "version_1_database_migrates_and_keeps_certs",
                     test_version_1_database_migrates_and_keeps_certs) ||
        !CU_add_test(suite, "flow_with_originals_reads_back",
                     test_flow_with_originals_reads_back) ||
        !CU_add_test(suite, "flow_without_rules_has_no_originals",
                     test_flow_without_rules_has_no_originals) ||
        !CU_add_test(suite, "originals_are_listed_out_searched_out_and_deleted_with_the_flow",
                     test_originals_are_listed_out_searched_out_and_deleted_with_the_flow) ||
        !CU_add_test(suite, "version_3_database_migrates_and_keeps_flows",
                     test_version_3_database_migrates_and_keeps_flows) ||
        !CU_add_test(suite, "clear_leaves_no_body_of_any_direction",
                     test_clear_leaves_no_body_of_any_direction) ||
        !CU_add_test(suite, "version_4_database_migrates_bodies_to_one_key_each",
                     test_version_4_database_migrates_bodies_to_one_key_each) ||
        !CU_add_test(suite, "version_6_database_keeps_ids_unique_without_autoincrement",
                     test_version_6_database_keeps_ids_unique_without_autoincrement) ||
        !CU_add_test(suite, "noted_header_facts_apply_to_their_own_section_only",
                     test_noted_header_facts_apply_to_their_own_section_only) ||
        !CU_add_test(suite, "tls_copy_is_one_allocation_of_its_own",
                     test_tls_copy_is_one_allocation_of_its_own) ||
        !CU_add_test(suite, "packed_flow_keeps_every_field_in_one_block",
                     test_packed_flow_keeps_every_field_in_one_block) ||
        !CU_add_test(suite, "small_body_is_stored_in_the_flow_row",
                     test_small_body_is_stored_in_the_flow_row) ||
        !CU_add_test(suite, "body_over_the_inline_limit_goes_to_flow_bodies",
                     test_body_over_the_inline_limit_goes_to_flow_bodies) ||
        !CU_add_test(suite, "inline_limit_follows_an_existing_files_page_size",
                     test_inline_limit_follows_an_existing_files_page_size) ||
        !CU_add_test(suite, "body_search_looks_into_compressed_bodies_and_can_ignore_case",
                     test_body_search_looks_into_compressed_bodies_and_can_ignore_case) ||
        !CU_add_test(suite, "search indexes merge sixteen segments at a time",
                     test_search_indexes_merge_sixteen_segments_at_a_time) ||
        !CU_add_test(suite, "body pairs filter skips only what cannot match",
                     test_body_pairs_filter_skips_only_what_cannot_match) ||
        !CU_add_test(suite, "header words follow the rows and survive a restart",
                     test_header_words_follow_the_rows_and_survive_a_restart) ||
        !CU_add_test(suite, "folded body search finds matches across chunks",
                     test_folded_body_search_finds_matches_across_chunks) ||
        !CU_add_test(suite, "body_search_finds_inline_and_stored_bodies",
                     test_body_search_finds_inline_and_stored_bodies) ||
        !CU_add_test(suite, "version_7_database_keeps_its_bodies_readable",
                     test_version_7_database_keeps_its_bodies_readable) ||
        !CU_add_test(suite, "version_9_database_becomes_segment_1_and_is_searchable",
                     test_version_9_database_becomes_segment_1_and_is_searchable) ||
        !CU_add_test(suite, "search_index_holds_url_headers_and_text_bodies",
                     test_search_index_holds_url_headers_and_text_bodies) ||
        !CU_add_test(suite, "deleted_flow_is_not_found_through_its_index_entry",
                     test_deleted_flow_is_not_found_through_its_index_entry) ||
        !CU_add_test(suite, "retention_by_age_drops_old_segments_whole",
                     test_retention_by_age_drops_old_segments_whole) ||
        !CU_add_test(suite, "retention_by_size_bounds_the_database",
                     test_retention_by_size_bounds_the_database) ||
        !CU_add_test(suite, "oversized_old_segment_is_trimmed_not_dropped_whole",
                     test_oversized_old_segment_is_trimmed_not_dropped_whole) ||
        !CU_add_test(suite, "version_11_database_keeps_ws_messages_and_replay_of",
                     test_version_11_database_keeps_ws_messages_and_replay_of) ||
        !CU_add_test(suite, "live_flow_is_finished_in_its_own_segment_and_goes_with_it",
                     test_live_flow_is_finished_in_its_own_segment_and_goes_with_it) ||
        !CU_add_test(suite, "version_12_database_gains_listener_in_every_segment",
                     test_version_12_database_gains_listener_in_every_segment) ||
        !CU_add_test(suite, "queue_byte_bound_keeps_the_record_and_drops_the_body",
                     test_queue_byte_bound_keeps_the_record_and_drops_the_body) ||
        !CU_add_test(suite, "in_memory_database_is_refused", test_in_memory_database_is_refused))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
