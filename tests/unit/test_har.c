/*
 * Unit tests for har: the HAR 1.2 fields a viewer computes with, against
 * known flows written through a real flow store: content.compression as
 * the bytes saved, connect and ssl timings that agree with each other
 * (also for the first request of a CONNECT tunnel, whose connection was
 * opened before its request), and cookies read from Cookie and Set-Cookie.
 * (test_flowstore.c covers the rest of the document.)
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "db.h"
#include "flowstore.h"
#include "har.h"
#include "log.h"
#include "testutil.h"

#define SYNC_MS 10000
#define T0_US INT64_C(1700000000000000) /* 2023-11-14T22:13:20Z */

static char dir[64];
static char db_path[128];
static char log_path[160];
static int log_fd = -1;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-har-XXXXXX");
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

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);

    if (copy == NULL)
        abort();
    return copy;
}

/* A GET of http://har.test/ answered 200, with the given header sections. */
static struct flow *known_flow(const char *request_headers, const char *response_headers)
{
    struct flow *f = flow_new(1024);

    if (f == NULL)
        abort();
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:50000");
    snprintf(f->scheme, sizeof(f->scheme), "http");
    snprintf(f->method, sizeof(f->method), "GET");
    snprintf(f->host, sizeof(f->host), "har.test");
    f->port = 80;
    f->target = xstrdup("/");
    f->request_version = 11;
    f->request_headers = xstrdup(request_headers);
    f->status = 200;
    f->response_version = 11;
    snprintf(f->reason, sizeof(f->reason), "OK");
    f->response_headers = xstrdup(response_headers);
    f->timings.start = T0_US + 123000;
    f->timings.request_sent = T0_US + 125000;
    f->timings.first_byte = T0_US + 130000;
    f->timings.done = T0_US + 131500;
    return f;
}

/* Stands in for codec_decode_content(): "twice" writes each byte twice. */
static int twice_decode(const char *encoding, const unsigned char *in, size_t in_len,
                        size_t max_out, unsigned char **out, size_t *out_len, char *err,
                        size_t err_len)
{
    size_t i;

    (void)max_out;
    if (strcmp(encoding, "twice") != 0) {
        snprintf(err, err_len, "unsupported encoding %s", encoding);
        return -1;
    }
    *out = malloc(2 * in_len + 1);
    if (*out == NULL)
        return -1;
    for (i = 0; i < in_len; i++)
        (*out)[2 * i] = (*out)[2 * i + 1] = in[i];
    *out_len = 2 * in_len;
    return 0;
}

/* Stores the flows, exports them oldest first and parses the document. */
static json_t *export_flows(struct flow **flows, size_t count)
{
    struct flowstore *store = NULL;
    struct har *har = NULL;
    int64_t ids[8];
    char err[512] = "";
    char *doc = NULL;
    size_t doc_len = 0;
    const char *piece;
    size_t len, i;
    json_error_t jerr;
    json_t *root = NULL;
    int rc;

    if (count > sizeof(ids) / sizeof(ids[0]) ||
        flowstore_open(db_path, 100, &store, err, sizeof(err)) != 0) {
        fprintf(stderr, "flowstore_open: %s\n", err);
        abort();
    }
    for (i = 0; i < count; i++) {
        CU_ASSERT_EQUAL(flowstore_submit(store, flows[i]), 0);
        ids[i] = (int64_t)i + 1;
    }
    CU_ASSERT_EQUAL_FATAL(flowstore_sync(store, SYNC_MS), 0);
    if (har_open(store, ids, count, twice_decode, &har, err, sizeof(err)) != 0) {
        fprintf(stderr, "har_open: %s\n", err);
        goto out;
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
    else if ((root = json_loadb(doc, doc_len, 0, &jerr)) == NULL)
        fprintf(stderr, "HAR does not parse: %s at %d\n", jerr.text, jerr.position);
out:
    har_close(har);
    flowstore_close(store);
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

static void assert_str(json_t *root, const char *path, const char *want)
{
    json_t *v = jget(root, path);
    const char *got = json_is_string(v) ? json_string_value(v) : NULL;

    CU_ASSERT_PTR_NOT_NULL(got);
    if (got == NULL) {
        fprintf(stderr, "%s: missing, expected \"%s\"\n", path, want);
        return;
    }
    CU_ASSERT_STRING_EQUAL(got, want);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "%s: \"%s\", expected \"%s\"\n", path, got, want);
}

static double jnum(json_t *root, const char *path)
{
    json_t *v = jget(root, path);

    CU_ASSERT_TRUE(json_is_number(v));
    return json_is_number(v) ? json_number_value(v) : -12345;
}

static void test_compression_is_the_number_of_bytes_saved(void)
{
    struct flow *f = known_flow("Host: har.test\r\nAccept-Encoding: twice\r\n",
                                "Content-Type: text/plain\r\nContent-Encoding: twice\r\n");
    json_t *har;

    flow_body_append(&f->response_body, "abcd", 4);
    har = export_flows(&f, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    assert_str(har, "log.entries.0.response.content.text", "aabbccdd");
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.response.content.size")), 8);
    /* HAR 1.2: "Number of bytes saved", so size - compression = bytes sent. */
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.response.content.compression")), 4);
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.0.response.bodySize")), 4);
    json_decref(har);
}

static void test_connect_includes_ssl_on_every_kind_of_connection(void)
{
    struct flow *flows[3];
    json_t *har;

    /* 1: connection opened for this request: connect from start. */
    flows[0] = known_flow("Host: har.test\r\n", "Content-Type: text/plain\r\n");
    flows[0]->timings.connected = T0_US + 123500;
    flows[0]->timings.tls_done = T0_US + 124000;
    /* 2: first request of a CONNECT tunnel: the origin was connected and
     * its handshake done during the client's handshake, before start. */
    flows[1] = known_flow("Host: har.test\r\n", "Content-Type: text/plain\r\n");
    flows[1]->timings.connected = T0_US + 100000;
    flows[1]->timings.tls_done = T0_US + 103000;
    /* 3: a reused connection: no connect marks at all. */
    flows[2] = known_flow("Host: har.test\r\n", "Content-Type: text/plain\r\n");
    har = export_flows(flows, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(har);

    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.0.timings.connect"), 1.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.0.timings.ssl"), 0.5, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.0.timings.send"), 1.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.0.time"), 8.5, 1e-9);

    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.1.timings.ssl"), 3.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.1.timings.connect"), 3.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.1.timings.send"), 2.0, 1e-9);
    CU_ASSERT_PTR_NOT_NULL(jget(har, "log.entries.1.timings.comment"));
    /* time is the sum of the phases, ssl counted inside connect. */
    CU_ASSERT_DOUBLE_EQUAL(jnum(har, "log.entries.1.time"), 3.0 + 2.0 + 5.0 + 1.5, 1e-9);

    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.2.timings.connect")), -1);
    CU_ASSERT_EQUAL(json_integer_value(jget(har, "log.entries.2.timings.ssl")), -1);
    CU_ASSERT_PTR_NULL(jget(har, "log.entries.2.timings.comment"));
    json_decref(har);
}

static void test_request_cookies_come_from_every_cookie_field(void)
{
    struct flow *f = known_flow("Host: har.test\r\nCookie: a=1; b = two ;c\r\n"
                                "X-Cookie: no=1\r\ncookie: d=x=y\r\n",
                                "Content-Type: text/plain\r\n");
    json_t *har = export_flows(&f, 1);

    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries.0.request.cookies")), 4);
    assert_str(har, "log.entries.0.request.cookies.0.name", "a");
    assert_str(har, "log.entries.0.request.cookies.0.value", "1");
    assert_str(har, "log.entries.0.request.cookies.1.name", "b");
    assert_str(har, "log.entries.0.request.cookies.1.value", "two");
    /* RFC 6265bis 5.6: no "=" means an empty name. */
    assert_str(har, "log.entries.0.request.cookies.2.name", "");
    assert_str(har, "log.entries.0.request.cookies.2.value", "c");
    assert_str(har, "log.entries.0.request.cookies.3.name", "d");
    assert_str(har, "log.entries.0.request.cookies.3.value", "x=y");
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries.0.response.cookies")), 0);
    json_decref(har);
}

static void test_response_cookies_come_from_each_set_cookie_with_attributes(void)
{
    struct flow *f =
        known_flow("Host: har.test\r\n",
                   "Content-Type: text/plain\r\n"
                   "Set-Cookie: sid=xyz; Path=/app; Domain=har.test; "
                   "Expires=Wed, 09 Jun 2021 10:18:14 GMT; HttpOnly; Secure\r\n"
                   "Set-Cookie: theme=dark; expires=Wed, 09-Jun-21 10:18:14 GMT; Max-Age=60\r\n"
                   "set-cookie: old=1; expires=Thu, 01-Jan-1970 00:00:01 GMT; max-age=soon\r\n"
                   "Set-Cookie: gone=; Max-Age=0\r\n");
    json_t *har = export_flows(&f, 1);

    CU_ASSERT_PTR_NOT_NULL_FATAL(har);
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries.0.response.cookies")), 4);
    assert_str(har, "log.entries.0.response.cookies.0.name", "sid");
    assert_str(har, "log.entries.0.response.cookies.0.value", "xyz");
    assert_str(har, "log.entries.0.response.cookies.0.path", "/app");
    assert_str(har, "log.entries.0.response.cookies.0.domain", "har.test");
    assert_str(har, "log.entries.0.response.cookies.0.expires", "2021-06-09T10:18:14.000Z");
    CU_ASSERT_TRUE(json_is_true(jget(har, "log.entries.0.response.cookies.0.httpOnly")));
    CU_ASSERT_TRUE(json_is_true(jget(har, "log.entries.0.response.cookies.0.secure")));

    /* Max-Age wins over Expires and counts from the response (first byte). */
    assert_str(har, "log.entries.0.response.cookies.1.name", "theme");
    assert_str(har, "log.entries.0.response.cookies.1.expires", "2023-11-14T22:14:20.130Z");
    CU_ASSERT_PTR_NULL(jget(har, "log.entries.0.response.cookies.1.path"));
    CU_ASSERT_PTR_NULL(jget(har, "log.entries.0.response.cookies.1.httpOnly"));
    CU_ASSERT_PTR_NULL(jget(har, "log.entries.0.response.cookies.1.secure"));

    /* A Max-Age that is not a number is ignored; a two-digit year read. */
    assert_str(har, "log.entries.0.response.cookies.2.name", "old");
    assert_str(har, "log.entries.0.response.cookies.2.expires", "1970-01-01T00:00:01.000Z");

    assert_str(har, "log.entries.0.response.cookies.3.name", "gone");
    assert_str(har, "log.entries.0.response.cookies.3.value", "");
    assert_str(har, "log.entries.0.response.cookies.3.expires", "1970-01-01T00:00:00.000Z");
    CU_ASSERT_EQUAL(json_array_size(jget(har, "log.entries.0.request.cookies")), 0);
    json_decref(har);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("har", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "compression_is_the_number_of_bytes_saved",
                     test_compression_is_the_number_of_bytes_saved) ||
        !CU_add_test(suite, "connect_includes_ssl_on_every_kind_of_connection",
                     test_connect_includes_ssl_on_every_kind_of_connection) ||
        !CU_add_test(suite, "request_cookies_come_from_every_cookie_field",
                     test_request_cookies_come_from_every_cookie_field) ||
        !CU_add_test(suite, "response_cookies_come_from_each_set_cookie_with_attributes",
                     test_response_cookies_come_from_each_set_cookie_with_attributes)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
