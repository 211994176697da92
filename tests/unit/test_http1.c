/*
 * Unit tests for http1: every framing rule that stands between a client and
 * request smuggling gets its own case, and every case checks the values the
 * proxy acts on (status to answer with, framing, lengths, parsed strings).
 */
#include "http1.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_SPAN(p, n, s)                                                                       \
    CU_ASSERT((p) != NULL && (n) == strlen(s) && memcmp((p), (s), (n)) == 0)

/* Outcome of parsing a whole string: the HTTP status of the error, or one of
 * these two for the non-error results. */
#define PARSED_OK 0
#define PARSED_INCOMPLETE (-1)

static struct http1_head head;
static struct http1_error err;

static int parse_req_len(const char *s, size_t len)
{
    int r;

    memset(&err, 0, sizeof(err));
    r = http1_parse_request(s, len, &head, &err);
    if (r == HTTP1_ERROR) {
        CU_ASSERT_PTR_NOT_NULL(err.message);
        return err.status;
    }
    if (r == HTTP1_INCOMPLETE)
        return PARSED_INCOMPLETE;
    CU_ASSERT(r > 0 && (size_t)r <= len);
    CU_ASSERT_EQUAL((size_t)r, head.head_len);
    return PARSED_OK;
}

static int parse_req(const char *s)
{
    return parse_req_len(s, strlen(s));
}

static int parse_resp_len(const char *s, size_t len, const char *method)
{
    int r;

    memset(&err, 0, sizeof(err));
    r = http1_parse_response(s, len, method, method ? strlen(method) : 0, &head, &err);
    if (r == HTTP1_ERROR) {
        CU_ASSERT_PTR_NOT_NULL(err.message);
        return err.status;
    }
    if (r == HTTP1_INCOMPLETE)
        return PARSED_INCOMPLETE;
    CU_ASSERT(r > 0 && (size_t)r <= len);
    CU_ASSERT_EQUAL((size_t)r, head.head_len);
    return PARSED_OK;
}

static int parse_resp(const char *s, const char *method)
{
    return parse_resp_len(s, strlen(s), method);
}

/* ---- request line and fields ---- */

static void test_parses_simple_get(void)
{
    const char *s = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
                    "User-Agent: test/1.0\r\n\r\n";

    CU_ASSERT_EQUAL(http1_parse_request(s, strlen(s), &head, &err), (int)strlen(s));
    ASSERT_SPAN(head.method, head.method_len, "GET");
    ASSERT_SPAN(head.target, head.target_len, "/index.html?q=1");
    CU_ASSERT_EQUAL(head.version_minor, 1);
    CU_ASSERT_EQUAL(head.num_headers, 2);
    ASSERT_SPAN(head.headers[0].name, head.headers[0].name_len, "Host");
    ASSERT_SPAN(head.headers[0].value, head.headers[0].value_len, "example.com");
    ASSERT_SPAN(head.headers[1].name, head.headers[1].name_len, "User-Agent");
    ASSERT_SPAN(head.headers[1].value, head.headers[1].value_len, "test/1.0");
    CU_ASSERT_EQUAL(head.head_len, strlen(s));
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_FALSE(head.expect_continue);
    CU_ASSERT_FALSE(head.is_upgrade);
}

static void test_parses_absolute_form_target(void)
{
    CU_ASSERT_EQUAL(parse_req("GET http://example.com:8080/a/b?c HTTP/1.1\r\n"
                              "Host: example.com:8080\r\n\r\n"),
                    PARSED_OK);
    ASSERT_SPAN(head.target, head.target_len, "http://example.com:8080/a/b?c");
}

static void test_parses_connect_authority_form(void)
{
    CU_ASSERT_EQUAL(parse_req("CONNECT example.com:443 HTTP/1.1\r\n"
                              "Host: example.com:443\r\nProxy-Connection: keep-alive\r\n\r\n"),
                    PARSED_OK);
    ASSERT_SPAN(head.method, head.method_len, "CONNECT");
    ASSERT_SPAN(head.target, head.target_len, "example.com:443");
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_EQUAL(head.num_headers, 2);
}

static void test_parses_asterisk_form_options(void)
{
    CU_ASSERT_EQUAL(parse_req("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n"), PARSED_OK);
    ASSERT_SPAN(head.method, head.method_len, "OPTIONS");
    ASSERT_SPAN(head.target, head.target_len, "*");
}

static void test_parses_post_with_content_length(void)
{
    const char *s = "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";

    CU_ASSERT_EQUAL(http1_parse_request(s, strlen(s), &head, &err), (int)(strlen(s) - 11));
    ASSERT_SPAN(head.method, head.method_len, "POST");
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_LENGTH);
    CU_ASSERT_EQUAL(head.content_length, 11);
}

static void test_parses_zero_content_length_as_length_framing(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_LENGTH);
    CU_ASSERT_EQUAL(head.content_length, 0);
}

static void test_parses_chunked_request(void)
{
    CU_ASSERT_EQUAL(parse_req("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_CHUNKED);
    CU_ASSERT_EQUAL(head.head_len, strlen("POST /up HTTP/1.1\r\nHost: h\r\n"
                                          "Transfer-Encoding: chunked\r\n\r\n"));
}

static void test_accepts_transfer_coding_names_case_insensitively(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_CHUNKED);
}

static void test_accepts_gzip_before_chunked_in_request(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: gzip, chunked\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_CHUNKED);
}

static void test_joins_transfer_encoding_fields_into_one_list(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_CHUNKED);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                              "Transfer-Encoding: gzip\r\n\r\n"),
                    400);
}

static void test_trims_ows_around_field_values(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost:example.com\r\nX-A: \t a b \t \r\n"
                              "X-B:\t\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.num_headers, 3);
    ASSERT_SPAN(head.headers[0].value, head.headers[0].value_len, "example.com");
    ASSERT_SPAN(head.headers[1].value, head.headers[1].value_len, "a b");
    CU_ASSERT_EQUAL(head.headers[2].value_len, 0);
    CU_ASSERT_PTR_NOT_NULL(head.headers[2].value);
}

static void test_accepts_obs_text_in_field_value(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n"),
                    PARSED_OK);
    ASSERT_SPAN(head.headers[1].value, head.headers[1].value_len, "caf\xc3\xa9");
}

static void test_head_len_excludes_following_bytes(void)
{
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\n";

    CU_ASSERT_EQUAL(http1_parse_request(s, strlen(s), &head, &err),
                    (int)strlen("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
}

static void test_incremental_request_is_incomplete_until_last_byte(void)
{
    const char *s = "POST http://example.com/x HTTP/1.1\r\nHost: example.com\r\n"
                    "Content-Length: 3\r\nConnection: keep-alive, Upgrade\r\n"
                    "Upgrade: websocket\r\n\r\n";
    size_t len = strlen(s);
    size_t i;
    int incomplete = 0;

    for (i = 0; i < len; i++) {
        if (http1_parse_request(s, i, &head, &err) == HTTP1_INCOMPLETE)
            incomplete++;
    }
    CU_ASSERT_EQUAL((size_t)incomplete, len);
    CU_ASSERT_EQUAL(http1_parse_request(s, len, &head, &err), (int)len);
    CU_ASSERT_EQUAL(head.content_length, 3);
    CU_ASSERT_TRUE(head.is_upgrade);
}

static void test_incremental_response_is_incomplete_until_last_byte(void)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n";
    size_t len = strlen(s);
    size_t i;
    int incomplete = 0;

    for (i = 0; i < len; i++) {
        if (http1_parse_response(s, i, "GET", 3, &head, &err) == HTTP1_INCOMPLETE)
            incomplete++;
    }
    CU_ASSERT_EQUAL((size_t)incomplete, len);
    CU_ASSERT_EQUAL(http1_parse_response(s, len, "GET", 3, &head, &err), (int)len);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_CHUNKED);
}

static void test_skips_a_few_leading_empty_lines(void)
{
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";

    CU_ASSERT_EQUAL(http1_parse_request(s, strlen(s), &head, &err), (int)strlen(s));
    ASSERT_SPAN(head.method, head.method_len, "GET");
    CU_ASSERT_EQUAL(parse_req("\r\n"), PARSED_INCOMPLETE);
    CU_ASSERT_EQUAL(parse_req("\r"), PARSED_INCOMPLETE);
}

static void test_rejects_many_leading_empty_lines(void)
{
    CU_ASSERT_EQUAL(parse_req("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("\r\n\r\n\r\n\r\n\r\n"), 400);
}

static void test_rejects_bare_lf_line_endings(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\nHost: h\n\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\n\n"), 400);
    CU_ASSERT_EQUAL(parse_req("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

static void test_rejects_bare_cr_in_request_line(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\rHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

static void test_rejects_invalid_method(void)
{
    CU_ASSERT_EQUAL(parse_req("G(ET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GE\x7fT / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

static void test_rejects_extra_spaces_in_request_line(void)
{
    CU_ASSERT_EQUAL(parse_req("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

static void test_rejects_invalid_request_target(void)
{
    CU_ASSERT_EQUAL(parse_req("GET /a\x01z HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

static void test_rejects_http09_request_line(void)
{
    CU_ASSERT_EQUAL(parse_req("GET /\r\n\r\n"), 400);
}

static void test_rejects_malformed_version(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / http/1.1\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/11\r\nHost: h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.x\r\nHost: h\r\n\r\n"), 400);
}

static void test_answers_505_for_unsupported_versions(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), 505);
}

static void test_refuses_garbage_before_the_line_ends(void)
{
    /* A TLS ClientHello sent to the plain port is refused at once. */
    static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

    CU_ASSERT_EQUAL(parse_req_len(hello, sizeof(hello) - 1), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nBad Name"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / XTTP"), 400);
}

/* ---- smuggling defences ---- */

static void test_rejects_cl_and_te_together(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                              "Content-Length: 0\r\n\r\n"),
                    400);
}

static void test_rejects_differing_content_lengths(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                              "Content-Length: 6\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n"), 400);
}

static void test_accepts_identical_repeated_content_lengths(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                              "Content-Length: 5\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_LENGTH);
    CU_ASSERT_EQUAL(head.content_length, 5);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42 ,42\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.content_length, 42);
}

static void test_rejects_signed_content_length(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n"), 400);
}

static void test_rejects_content_length_with_inner_space(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:  5 5\r\n\r\n"), 400);
}

static void test_rejects_malformed_content_length(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5.0\r\n\r\n"), 400);
}

static void test_rejects_content_length_overflow(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Content-Length: 18446744073709551616\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Content-Length: 99999999999999999999999\r\n\r\n"),
                    400);
    /* 2^63 is refused too: lengths must fit an off_t. */
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Content-Length: 9223372036854775808\r\n\r\n"),
                    400);
}

static void test_accepts_largest_content_length(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Content-Length: 9223372036854775807\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.content_length, (uint64_t)INT64_MAX);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.content_length, 7);
}

static void test_rejects_te_chunked_not_last_in_request(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: chunked, gzip\r\n\r\n"),
                    400);
}

static void test_rejects_te_without_chunked_in_request(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
                    400);
}

/* ---- request targets ---- */

static void expect_absolute(const char *target, bool is_https, const char *host, uint16_t port,
                            const char *authority, const char *path)
{
    struct http1_absolute_target t;

    CU_ASSERT_EQUAL_FATAL(http1_parse_absolute_target(target, strlen(target), &t), 0);
    CU_ASSERT_EQUAL(t.is_https, is_https);
    CU_ASSERT_STRING_EQUAL(t.host, host);
    CU_ASSERT_EQUAL(t.port, port);
    CU_ASSERT_EQUAL(t.authority_len, strlen(authority));
    CU_ASSERT_EQUAL(strncmp(t.authority, authority, t.authority_len), 0);
    CU_ASSERT_EQUAL(t.path_len, strlen(path));
    CU_ASSERT_EQUAL(strncmp(t.path, path, t.path_len), 0);
}

static void test_splits_absolute_form_targets(void)
{
    expect_absolute("http://example.com/a?b=1", false, "example.com", 80, "example.com", "/a?b=1");
    expect_absolute("HTTPS://Example.com:8443", true, "Example.com", 8443, "Example.com:8443", "");
    expect_absolute("http://[::1]:8080/x", false, "::1", 8080, "[::1]:8080", "/x");
    expect_absolute("https://[2001:db8::1]/", true, "2001:db8::1", 443, "[2001:db8::1]", "/");
    expect_absolute("http://h?q", false, "h", 80, "h", "?q");
    /* A fragment is never sent. */
    expect_absolute("http://h/p#frag", false, "h", 80, "h", "/p#frag");
    expect_absolute("http://h#frag", false, "h", 80, "h", "");
}

static void test_refuses_bad_absolute_form_targets(void)
{
    static const char *const bad[] = {
        "/origin/form",   "ftp://h/",       "http://",           "http:///path",
        "http://user@h/", "http://h:/",     "http://h:0/",       "http://h:65536/",
        "http://h:8o/",   "http://a:b:80/", "http://[::1/",      "http://[h]:80/",
        "http://h h/",    "http://h\r/",    "http://[::1]x:80/", "https://" /* nothing */,
    };
    struct http1_absolute_target t;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(http1_parse_absolute_target(bad[i], strlen(bad[i]), &t), -1);
    /* A host longer than 253 characters. */
    char long_target[400];
    memset(long_target, 'a', sizeof(long_target));
    memcpy(long_target, "http://", 7);
    long_target[300] = '/';
    CU_ASSERT_EQUAL(http1_parse_absolute_target(long_target, 301, &t), -1);
}

static void test_parses_connect_authorities(void)
{
    char host[HTTP1_MAX_HOST_BYTES];
    uint16_t port = 0;

    CU_ASSERT_EQUAL(http1_parse_authority("example.com:443", 15, 0, host, &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "example.com");
    CU_ASSERT_EQUAL(port, 443);
    CU_ASSERT_EQUAL(http1_parse_authority("[::ffff:127.0.0.1]:8081", 23, 0, host, &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "::ffff:127.0.0.1");
    CU_ASSERT_EQUAL(port, 8081);
    /* CONNECT needs the port (RFC 9112 3.2.3); absolute-form may leave it out. */
    CU_ASSERT_EQUAL(http1_parse_authority("example.com", 11, 0, host, &port), -1);
    CU_ASSERT_EQUAL(http1_parse_authority("example.com", 11, 80, host, &port), 0);
    CU_ASSERT_EQUAL(port, 80);
    CU_ASSERT_EQUAL(http1_parse_authority("::1:443", 7, 0, host, &port), -1);
    CU_ASSERT_EQUAL(http1_parse_authority("u@h:443", 7, 0, host, &port), -1);
    CU_ASSERT_EQUAL(http1_parse_authority("h:443x", 6, 0, host, &port), -1);
    CU_ASSERT_EQUAL(http1_parse_authority("", 0, 80, host, &port), -1);
    CU_ASSERT_TRUE(http1_is_valid_host("a-b_c.example"));
    CU_ASSERT_FALSE(http1_is_valid_host("a b"));
    CU_ASSERT_FALSE(http1_is_valid_host("::1::2"));
}

static bool accepts(const char *value)
{
    return http1_accepts_content_coding(value, strlen(value));
}

static void test_tells_whether_accept_encoding_asks_for_a_coding(void)
{
    CU_ASSERT_TRUE(accepts("gzip, deflate, br"));
    CU_ASSERT_TRUE(accepts("identity, gzip;q=0.5"));
    CU_ASSERT_TRUE(accepts(" * "));
    CU_ASSERT_FALSE(accepts(""));
    CU_ASSERT_FALSE(accepts("identity"));
    CU_ASSERT_FALSE(accepts("IDENTITY , gzip;q=0"));
    CU_ASSERT_FALSE(accepts("gzip; q=0.000, br;Q=0"));
    CU_ASSERT_TRUE(accepts("gzip;q=0.001"));
    CU_ASSERT_FALSE(accepts(",,, ;q=1"));
}

static void test_answers_501_for_unknown_transfer_coding(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: br, chunked\r\n\r\n"),
                    501);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: xfoo, chunked\r\n\r\n"),
                    501);
}

/* RFC 9112 6.3 (4) is a MUST: 400 and close when the final coding is not
 * chunked, also when that coding is one the proxy does not know. */
static void test_answers_400_when_the_final_coding_is_unknown_and_not_chunked(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: chunked, identity\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n"),
                    400);
}

static void test_rejects_chunked_applied_twice(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: chunked, chunked\r\n\r\n"),
                    400);
}

static void test_rejects_malformed_transfer_encoding(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: chunked;q=1\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\n"
                              "Transfer-Encoding: \"chunked\"\r\n\r\n"),
                    400);
}

static void test_rejects_te_in_http10_request(void)
{
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

static void test_rejects_obs_fold(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                              " , chunked\r\n\r\n"),
                    400);
}

static void test_rejects_whitespace_before_first_field(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400);
}

static void test_rejects_bare_cr_in_field_value(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\r\n\r\n"), 400);
}

static void test_rejects_whitespace_before_colon(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n"),
                    400);
}

static void test_rejects_invalid_field_name_character(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX(A): b\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: b\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), 400);
}

static void test_rejects_empty_field_name(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\n: value\r\n\r\n"), 400);
}

static void test_rejects_nul_in_field_value(void)
{
    static const char s[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n";

    CU_ASSERT_EQUAL(parse_req_len(s, sizeof(s) - 1), 400);
}

static void test_rejects_control_characters_in_field_value(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01"
                              "b\r\n\r\n"),
                    400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7f\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\nb\r\n\r\n"), 400);
}

static void test_rejects_missing_host_on_http11(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400);
}

static void test_accepts_missing_host_on_http10(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.0\r\n\r\n"), PARSED_OK);
    CU_ASSERT_EQUAL(head.version_minor, 0);
    CU_ASSERT_EQUAL(head.num_headers, 0);
}

static void test_rejects_two_host_headers(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
}

static void test_rejects_invalid_host_value(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"), 400);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), PARSED_OK);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost:\r\n\r\n"), PARSED_OK);
}

/* ---- limits ---- */

/* Builds "GET /aaa... HTTP/1.1\r\nHost: h\r\n\r\n" with a request line of
 * exactly line_len bytes; returns a malloc'd string. */
static char *request_with_line_len(size_t line_len)
{
    size_t target_len = line_len - strlen("GET  HTTP/1.1");
    const char *rest = " HTTP/1.1\r\nHost: h\r\n\r\n";
    char *s = malloc(line_len + strlen(rest) + 1);

    if (s == NULL)
        return NULL;
    memcpy(s, "GET /", 5);
    memset(s + 5, 'a', target_len - 1);
    strcpy(s + 4 + target_len, rest);
    return s;
}

static void test_answers_414_for_long_request_line(void)
{
    char *ok = request_with_line_len(HTTP1_MAX_REQUEST_LINE_BYTES);
    char *tl = request_with_line_len(HTTP1_MAX_REQUEST_LINE_BYTES + 1);

    CU_ASSERT_FATAL(ok != NULL && tl != NULL);
    CU_ASSERT_EQUAL(parse_req(ok), PARSED_OK);
    CU_ASSERT_EQUAL(head.target_len, HTTP1_MAX_REQUEST_LINE_BYTES - strlen("GET  HTTP/1.1"));
    CU_ASSERT_EQUAL(parse_req(tl), 414);
    free(ok);
    free(tl);
}

static void test_answers_414_for_long_incomplete_request_line(void)
{
    char *s = request_with_line_len(HTTP1_MAX_REQUEST_LINE_BYTES + 100);

    CU_ASSERT_FATAL(s != NULL);
    /* The limit is reached as soon as the line holds one byte too many... */
    CU_ASSERT_EQUAL(parse_req_len(s, HTTP1_MAX_REQUEST_LINE_BYTES), PARSED_INCOMPLETE);
    CU_ASSERT_EQUAL(parse_req_len(s, HTTP1_MAX_REQUEST_LINE_BYTES + 1), 414);
    free(s);
    /* ...while a line of exactly the limit waits for its LF. */
    s = request_with_line_len(HTTP1_MAX_REQUEST_LINE_BYTES);
    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT_EQUAL(parse_req_len(s, HTTP1_MAX_REQUEST_LINE_BYTES + 1), PARSED_INCOMPLETE);
    CU_ASSERT_EQUAL(parse_req_len(s, HTTP1_MAX_REQUEST_LINE_BYTES + 2), PARSED_INCOMPLETE);
    free(s);
}

/* "GET / HTTP/1.1\r\nHost: h\r\n" plus n-1 more fields "X-N: v\r\n", then
 * the final CRLF when complete; returns a malloc'd string. */
static char *request_with_fields(size_t n, bool complete)
{
    size_t cap = 64 + n * 32;
    char *s = malloc(cap);
    size_t len;
    size_t i;

    if (s == NULL)
        return NULL;
    len = (size_t)snprintf(s, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (i = 1; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "X-%zu: v\r\n", i);
    if (complete)
        snprintf(s + len, cap - len, "\r\n");
    return s;
}

static void test_answers_431_for_too_many_fields(void)
{
    char *ok = request_with_fields(HTTP1_MAX_HEADERS, true);
    char *tm = request_with_fields(HTTP1_MAX_HEADERS + 1, true);

    CU_ASSERT_FATAL(ok != NULL && tm != NULL);
    CU_ASSERT_EQUAL(parse_req(ok), PARSED_OK);
    CU_ASSERT_EQUAL(head.num_headers, HTTP1_MAX_HEADERS);
    CU_ASSERT_EQUAL(parse_req(tm), 431);
    free(ok);
    free(tm);
}

static void test_answers_431_for_too_many_fields_while_incomplete(void)
{
    char *s = request_with_fields(HTTP1_MAX_HEADERS, false);
    size_t len;

    CU_ASSERT_FATAL(s != NULL);
    len = strlen(s);
    CU_ASSERT_EQUAL(parse_req(s), PARSED_INCOMPLETE);
    /* A CR could still be the end of the head; any other byte starts one
     * field too many. */
    s[len] = '\r';
    CU_ASSERT_EQUAL(parse_req_len(s, len + 1), PARSED_INCOMPLETE);
    s[len] = 'X';
    CU_ASSERT_EQUAL(parse_req_len(s, len + 1), 431);
    free(s);
}

/* A request whose head is exactly head_len bytes (one big field pads it). */
static char *request_with_head_len(size_t head_len, size_t *len)
{
    const char *start = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
    size_t pad = head_len - strlen(start) - 4;
    char *s = malloc(head_len + 1);

    if (s == NULL)
        return NULL;
    strcpy(s, start);
    memset(s + strlen(start), 'p', pad);
    memcpy(s + strlen(start) + pad, "\r\n\r\n", 5);
    *len = head_len;
    return s;
}

static void test_answers_431_for_too_large_head(void)
{
    size_t len;
    char *ok = request_with_head_len(HTTP1_MAX_HEAD_BYTES, &len);
    char *big;

    CU_ASSERT_FATAL(ok != NULL);
    CU_ASSERT_EQUAL(parse_req(ok), PARSED_OK);
    CU_ASSERT_EQUAL(head.head_len, HTTP1_MAX_HEAD_BYTES);
    big = request_with_head_len(HTTP1_MAX_HEAD_BYTES + 1, &len);
    CU_ASSERT_FATAL(big != NULL);
    CU_ASSERT_EQUAL(parse_req(big), 431);
    CU_ASSERT_EQUAL(parse_req_len(big, HTTP1_MAX_HEAD_BYTES - 1), PARSED_INCOMPLETE);
    /* Incomplete at the limit: no need to wait for the rest. */
    CU_ASSERT_EQUAL(parse_req_len(big, HTTP1_MAX_HEAD_BYTES), 431);
    free(ok);
    free(big);
}

/* ---- connection semantics ---- */

static void test_keep_alive_follows_version_and_connection(void)
{
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), PARSED_OK);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"), PARSED_OK);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: te, close\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.0\r\n\r\n"), PARSED_OK);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), PARSED_OK);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n"
                              "Connection: close\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_TRUE(head.keep_alive);
}

static void test_detects_expect_100_continue(void)
{
    CU_ASSERT_EQUAL(parse_req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                              "Content-Length: 1\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_TRUE(head.expect_continue);
    CU_ASSERT_EQUAL(parse_req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue-x\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_FALSE(head.expect_continue);
    /* RFC 9110 10.1.1: ignored in HTTP/1.0. */
    CU_ASSERT_EQUAL(parse_req("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), PARSED_OK);
    CU_ASSERT_FALSE(head.expect_continue);
}

static void test_detects_upgrade_only_with_both_fields(void)
{
    CU_ASSERT_EQUAL(parse_req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
                              "Upgrade: websocket\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_TRUE(head.is_upgrade);
    CU_ASSERT_EQUAL(parse_req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_FALSE(head.is_upgrade);
    CU_ASSERT_EQUAL(parse_req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_FALSE(head.is_upgrade);
}

/* ---- responses ---- */

static void test_parses_simple_response(void)
{
    const char *s = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
                    "Content-Type: text/plain\r\n\r\nnot found";

    CU_ASSERT_EQUAL(http1_parse_response(s, strlen(s), "GET", 3, &head, &err),
                    (int)(strlen(s) - 9));
    CU_ASSERT_EQUAL(head.status, 404);
    ASSERT_SPAN(head.reason, head.reason_len, "Not Found");
    CU_ASSERT_EQUAL(head.version_minor, 1);
    CU_ASSERT_EQUAL(head.num_headers, 2);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_LENGTH);
    CU_ASSERT_EQUAL(head.content_length, 9);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_PTR_NULL(head.method);
}

static void test_accepts_status_line_without_reason(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET"), PARSED_OK);
    CU_ASSERT_EQUAL(head.status, 200);
    CU_ASSERT_EQUAL(head.reason_len, 0);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "GET"), PARSED_OK);
    CU_ASSERT_EQUAL(head.reason_len, 0);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.0 302 Moved\tTemporarily now\r\n\r\n", "GET"), PARSED_OK);
    ASSERT_SPAN(head.reason, head.reason_len, "Moved\tTemporarily now");
}

static void test_rejects_malformed_status_line(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 20 OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 2000 OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 abc OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 099 Low\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 600 High\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1  200 OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/2 200 OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/2.0 200 OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("ICY 200 OK\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 O\x01K\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\n\n", "GET"), 502);
}

static void test_response_errors_answer_502(void)
{
    CU_ASSERT_EQUAL(
        parse_resp("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                               "Content-Length: 2\r\n\r\n",
                               "GET"),
                    502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "GET"), 502);
}

static void test_rejects_cl_and_te_together_in_response(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n",
                               "GET"),
                    502);
}

static void test_response_to_head_has_no_body(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", "HEAD"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
}

static void test_204_and_304_responses_have_no_body(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 204 No Content\r\n\r\n", "DELETE"), PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\n\r\n", "GET"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_TRUE(head.keep_alive);
}

static void test_1xx_responses_have_no_body(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 100 Continue\r\n\r\n", "POST"), PARSED_OK);
    CU_ASSERT_EQUAL(head.status, 100);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_EQUAL(
        parse_resp("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", "GET"),
        PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                               "Upgrade: websocket\r\n\r\n",
                               "GET"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_TRUE(head.is_upgrade);
}

static void test_2xx_to_connect_has_no_body(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_NONE);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 407 Proxy Authentication Required\r\n"
                               "Content-Length: 4\r\n\r\n",
                               "CONNECT"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_LENGTH);
    CU_ASSERT_EQUAL(head.content_length, 4);
}

static void test_response_without_length_reads_until_close(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", "GET"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_UNTIL_CLOSE);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", "GET"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_UNTIL_CLOSE);
    CU_ASSERT_FALSE(head.keep_alive);
}

static void test_response_te_without_final_chunked_reads_until_close(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_UNTIL_CLOSE);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(
        parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "GET"),
        PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_UNTIL_CLOSE);
    CU_ASSERT_EQUAL(
        parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "GET"),
        PARSED_OK);
    CU_ASSERT_EQUAL(head.framing, HTTP1_BODY_CHUNKED);
    CU_ASSERT_TRUE(head.keep_alive);
}

static void test_rejects_invalid_transfer_encoding_in_response(void)
{
    CU_ASSERT_EQUAL(
        parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n", "GET"), 502);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET"),
                    502);
}

static void test_response_keep_alive_follows_version_and_connection(void)
{
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET"), PARSED_OK);
    CU_ASSERT_TRUE(head.keep_alive);
    CU_ASSERT_EQUAL(
        parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "GET"),
        PARSED_OK);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET"), PARSED_OK);
    CU_ASSERT_EQUAL(head.version_minor, 0);
    CU_ASSERT_FALSE(head.keep_alive);
    CU_ASSERT_EQUAL(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n"
                               "Connection: keep-alive\r\n\r\n",
                               "GET"),
                    PARSED_OK);
    CU_ASSERT_TRUE(head.keep_alive);
}

static void test_response_limits_answer_502(void)
{
    char *s = malloc(HTTP1_MAX_HEAD_BYTES + 1);

    CU_ASSERT_FATAL(s != NULL);
    memcpy(s, "HTTP/1.1 200 ", 13);
    memset(s + 13, 'r', HTTP1_MAX_HEAD_BYTES - 13);
    CU_ASSERT_EQUAL(parse_resp_len(s, HTTP1_MAX_REQUEST_LINE_BYTES + 1, "GET"), 502);
    memcpy(s, "HTTP/1.1 200 OK\r\nX: ", 20);
    CU_ASSERT_EQUAL(parse_resp_len(s, HTTP1_MAX_HEAD_BYTES - 1, "GET"), PARSED_INCOMPLETE);
    CU_ASSERT_EQUAL(parse_resp_len(s, HTTP1_MAX_HEAD_BYTES, "GET"), 502);
    free(s);
}

/* ---- lists and hop-by-hop fields ---- */

static void test_list_has_token_is_ows_tolerant_and_case_insensitive(void)
{
    const char *v = " keep-alive ,\tUpgrade,, ,close ";

    CU_ASSERT_TRUE(http1_list_has_token(v, strlen(v), "upgrade"));
    CU_ASSERT_TRUE(http1_list_has_token(v, strlen(v), "KEEP-ALIVE"));
    CU_ASSERT_TRUE(http1_list_has_token(v, strlen(v), "close"));
    CU_ASSERT_FALSE(http1_list_has_token(v, strlen(v), "clos"));
    CU_ASSERT_FALSE(http1_list_has_token(v, strlen(v), "keep"));
    CU_ASSERT_FALSE(http1_list_has_token(v, strlen(v), ""));
    CU_ASSERT_FALSE(http1_list_has_token("", 0, "close"));
    CU_ASSERT_FALSE(http1_list_has_token(",,,", 3, "close"));
    /* value_len bounds the search: the "close" after it is not seen. */
    CU_ASSERT_FALSE(http1_list_has_token("a, close", 3, "close"));
    CU_ASSERT_TRUE(http1_list_has_token("close", 5, "close"));
}

static void test_find_header_is_case_insensitive(void)
{
    const struct message_field *h;

    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Test: one\r\nx-test: two\r\n\r\n"),
                    PARSED_OK);
    h = http1_find_header(&head, "X-TEST");
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    ASSERT_SPAN(h->value, h->value_len, "one");
    CU_ASSERT_PTR_NULL(http1_find_header(&head, "X-Tes"));
    CU_ASSERT_PTR_NULL(http1_find_header(&head, "Content-Length"));
}

static void test_hop_by_hop_covers_fixed_names(void)
{
    static const char *const names[] = {
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    };
    static const char *const end_to_end[] = {
        "Host", "Content-Length", "Content-Type", "Cookie", "Trailers", "Upgrade-Insecure-Requests",
    };
    size_t i;

    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), PARSED_OK);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct message_field h = {names[i], strlen(names[i]), "", 0};

        CU_ASSERT_TRUE(http1_is_hop_by_hop(&head, &h));
    }
    for (i = 0; i < sizeof(end_to_end) / sizeof(end_to_end[0]); i++) {
        struct message_field h = {end_to_end[i], strlen(end_to_end[i]), "", 0};

        CU_ASSERT_FALSE(http1_is_hop_by_hop(&head, &h));
    }
}

static void test_hop_by_hop_includes_fields_named_in_connection(void)
{
    size_t i;
    bool hop[5];

    CU_ASSERT_EQUAL(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret , keep-alive\r\n"
                              "Connection: x-other\r\nX-Secret: 1\r\nX-Other: 2\r\n"
                              "X-Kept: 3\r\n\r\n"),
                    PARSED_OK);
    CU_ASSERT_EQUAL(head.num_headers, 6);
    for (i = 1; i < 6; i++)
        hop[i - 1] = http1_is_hop_by_hop(&head, &head.headers[i]);
    CU_ASSERT_TRUE(hop[0]);  /* Connection */
    CU_ASSERT_TRUE(hop[1]);  /* Connection */
    CU_ASSERT_TRUE(hop[2]);  /* X-Secret */
    CU_ASSERT_TRUE(hop[3]);  /* X-Other */
    CU_ASSERT_FALSE(hop[4]); /* X-Kept */
    CU_ASSERT_FALSE(http1_is_hop_by_hop(&head, &head.headers[0]));
}

/* ---- chunked decoder ---- */

struct decoded {
    enum http1_chunk_result result; /* DONE, ERROR, or NEED_MORE if input ran out */
    char data[4096];
    size_t data_len;
    size_t consumed; /* bytes of the input the decoder took, in total */
    char trailers[HTTP1_MAX_TRAILER_BYTES];
    size_t trailers_len;
};

/* Tiny deterministic generator for split sizes; state lives in the caller. */
static unsigned next_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) & 0x7fff;
}

/*
 * Feeds in[0..len) to a fresh decoder the way a connection would: bytes
 * arrive in pieces (of piece bytes each, or of random sizes 1..9 when piece
 * is 0) and are appended to a pending buffer; the decoder is called until it
 * needs more, and consumed bytes are dropped from the front.
 */
static void decode_in_pieces(const char *in, size_t len, size_t piece, unsigned seed,
                             struct decoded *out)
{
    static struct http1_chunked st;
    static char pending[1 << 17];
    size_t pending_len = 0;
    size_t fed = 0;

    memset(out, 0, sizeof(*out));
    out->result = HTTP1_CHUNK_NEED_MORE;
    http1_chunked_init(&st);
    for (;;) {
        size_t n = piece > 0 ? piece : 1 + next_rand(&seed) % 9;

        if (n > len - fed)
            n = len - fed;
        CU_ASSERT_FATAL(pending_len + n <= sizeof(pending));
        memcpy(pending + pending_len, in + fed, n);
        pending_len += n;
        fed += n;
        for (;;) {
            const char *data = NULL;
            size_t data_len = 0;
            size_t used = 0;
            enum http1_chunk_result r;

            r = http1_chunked_decode(&st, pending, pending_len, &used, &data, &data_len);
            CU_ASSERT_FATAL(used <= pending_len);
            if (r == HTTP1_CHUNK_DATA) {
                CU_ASSERT_FATAL(data_len > 0 && data >= pending &&
                                data + data_len <= pending + used);
                CU_ASSERT_FATAL(out->data_len + data_len <= sizeof(out->data));
                memcpy(out->data + out->data_len, data, data_len);
                out->data_len += data_len;
            } else {
                CU_ASSERT_PTR_NULL(data);
                CU_ASSERT_EQUAL(data_len, 0);
            }
            if (r == HTTP1_CHUNK_DONE) {
                out->result = r;
                out->consumed = fed - pending_len + used;
                memcpy(out->trailers, st.trailers, st.trailers_len);
                out->trailers_len = st.trailers_len;
                return;
            }
            if (r == HTTP1_CHUNK_ERROR) {
                out->result = r;
                return;
            }
            memmove(pending, pending + used, pending_len - used);
            pending_len -= used;
            if (r == HTTP1_CHUNK_NEED_MORE) {
                /* The decoder keeps what it needs: nothing is left over. */
                CU_ASSERT_EQUAL(pending_len, 0);
                break;
            }
        }
        if (fed == len) {
            out->consumed = fed - pending_len;
            return;
        }
    }
}

struct chunk_case {
    const char *in;
    size_t in_len; /* 0: strlen(in) */
    enum http1_chunk_result result;
    const char *data;
    const char *trailers;
    size_t consumed; /* for DONE: bytes up to the end of the message; 0: in_len */
};

static const struct chunk_case chunk_cases[] = {
    {"5\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_DONE, "hello", "", 0},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, HTTP1_CHUNK_DONE, "hello world", "", 0},
    {"0\r\n\r\n", 0, HTTP1_CHUNK_DONE, "", "", 0},
    {"A\r\n0123456789\r\na\r\nabcdefghij\r\n1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n", 0,
     HTTP1_CHUNK_DONE, "0123456789abcdefghij0123456789abcdef0123456789abcde", "", 0},
    {"005\r\nhello\r\n000\r\n\r\n", 0, HTTP1_CHUNK_DONE, "hello", "", 0},
    {"5;name=value\r\nhello\r\n0;last\r\n\r\n", 0, HTTP1_CHUNK_DONE, "hello", "", 0},
    {"5 ; a = b ;c=\"q \\\" x\";d\r\nhello\r\n0 ;e\r\n\r\n", 0, HTTP1_CHUNK_DONE, "hello", "", 0},
    {"3\r\nabc\r\n0\r\nExpires: never \r\nX-Checksum:\t abc\r\n\r\n", 0, HTTP1_CHUNK_DONE, "abc",
     "Expires: never\r\nX-Checksum: abc\r\n", 0},
    {"0\r\nX-Empty:  \t \r\nX-Obs: caf\xc3\xa9\r\n\r\n", 0, HTTP1_CHUNK_DONE, "",
     "X-Empty:\r\nX-Obs: caf\xc3\xa9\r\n", 0},
    {"2\r\n\r\n\r\n0\r\n\r\n", 0, HTTP1_CHUNK_DONE, "\r\n", "", 0},
    /* Bytes after the message belong to the next one. */
    {"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, HTTP1_CHUNK_DONE, "hello", "", 15},
    {"3\r\nabc\r\n0\r\nA: b\r\n\r\n0\r\n\r\n", 0, HTTP1_CHUNK_DONE, "abc", "A: b\r\n", 19},
    /* Bad sizes. */
    {"g\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"-1\r\nh\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"+1\r\nh\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0x5\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {" 5\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5 \r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5\rhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"8000000000000000\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"ffffffffffffffffff\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"00000000000000001\r\nx\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    /* Bad extensions. */
    {"5;\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5;a=\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5;a=\"x\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5;a b\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5;a=b \r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5;a\x01\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    /* Missing or wrong CRLF after data. */
    {"5\r\nhelloX\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5\r\nhello\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5\r\nhello\r0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"5\r\nhello0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"3\r\nhello\r\n0\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    /* Bad trailers. */
    {"0\r\n Folded: x\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\nA: b\r\n c\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\nName : x\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\n: x\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\nNoColon\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\nName: a\nb\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\nName: a\rb\r\n\r\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\nName: a\0b\r\n\r\n", sizeof("0\r\nName: a\0b\r\n\r\n") - 1, HTTP1_CHUNK_ERROR, NULL,
     NULL, 0},
    {"0\r\n\n", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    {"0\r\n\r\r", 0, HTTP1_CHUNK_ERROR, NULL, NULL, 0},
    /* Truncated: the decoder keeps asking for more. */
    {"5\r\nhel", 0, HTTP1_CHUNK_NEED_MORE, "hel", NULL, 0},
    {"5\r\nhello\r\n0\r\nA: b\r\n", 0, HTTP1_CHUNK_NEED_MORE, "hello", NULL, 0},
};

static void check_chunk_case(const struct chunk_case *c, size_t piece, unsigned seed)
{
    static struct decoded out;
    size_t len = c->in_len ? c->in_len : strlen(c->in);

    decode_in_pieces(c->in, len, piece, seed, &out);
    CU_ASSERT_EQUAL(out.result, c->result);
    if (out.result != c->result) {
        fprintf(stderr, "chunk case \"%s\" (piece %zu): got %d, want %d\n", c->in, piece,
                (int)out.result, (int)c->result);
        return;
    }
    if (c->data != NULL) {
        CU_ASSERT_EQUAL(out.data_len, strlen(c->data));
        CU_ASSERT(memcmp(out.data, c->data, out.data_len) == 0);
    }
    if (c->trailers != NULL) {
        CU_ASSERT_EQUAL(out.trailers_len, strlen(c->trailers));
        CU_ASSERT(memcmp(out.trailers, c->trailers, out.trailers_len) == 0);
    }
    if (c->result == HTTP1_CHUNK_DONE)
        CU_ASSERT_EQUAL(out.consumed, c->consumed ? c->consumed : len);
}

static void test_chunked_decodes_whole_input(void)
{
    size_t i;

    for (i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++)
        check_chunk_case(&chunk_cases[i], 1 << 16, 0);
}

static void test_chunked_decodes_byte_at_a_time(void)
{
    size_t i;

    for (i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++)
        check_chunk_case(&chunk_cases[i], 1, 0);
}

static void test_chunked_decodes_random_splits(void)
{
    size_t i;
    unsigned seed;

    for (seed = 1; seed <= 50; seed++) {
        for (i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++)
            check_chunk_case(&chunk_cases[i], 0, seed * 7919u + (unsigned)i);
    }
}

static void test_chunked_accepts_upper_and_lowercase_hex(void)
{
    static struct decoded out;
    const char *lower = "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    const char *upper = "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";

    decode_in_pieces(lower, strlen(lower), 1, 0, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(out.data_len, 26);
    decode_in_pieces(upper, strlen(upper), 1, 0, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(out.data_len, 26);
}

static void test_chunked_returns_data_as_slices_of_input(void)
{
    static struct http1_chunked st;
    const char *in = "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    const char *data;
    size_t data_len;
    size_t used;
    size_t off = 0;

    http1_chunked_init(&st);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in, strlen(in), &used, &data, &data_len),
                    HTTP1_CHUNK_DATA);
    CU_ASSERT_PTR_EQUAL(data, in + 3);
    CU_ASSERT_EQUAL(data_len, 3);
    CU_ASSERT_EQUAL(used, 6);
    off += used;
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in + off, strlen(in) - off, &used, &data, &data_len),
                    HTTP1_CHUNK_DATA);
    CU_ASSERT_PTR_EQUAL(data, in + 11);
    CU_ASSERT_EQUAL(data_len, 4);
    /* The CRLF after the first chunk and the next size line come first. */
    CU_ASSERT_EQUAL(used, 9);
    off += used;
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in + off, strlen(in) - off, &used, &data, &data_len),
                    HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(off + used, strlen(in));
    CU_ASSERT_EQUAL(st.trailers_len, 0);
}

static void test_chunked_does_not_consume_bytes_after_done(void)
{
    static struct http1_chunked st;
    const char *in = "0\r\n\r\nHTTP/1.1 200 OK\r\n";
    const char *data;
    size_t data_len;
    size_t used;

    http1_chunked_init(&st);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in, strlen(in), &used, &data, &data_len),
                    HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(used, 5);
    /* DONE is final: later calls consume nothing. */
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in + 5, strlen(in) - 5, &used, &data, &data_len),
                    HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(used, 0);
}

static void test_chunked_error_is_final(void)
{
    static struct http1_chunked st;
    const char *data;
    size_t data_len;
    size_t used;

    http1_chunked_init(&st);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, "z", 1, &used, &data, &data_len), HTTP1_CHUNK_ERROR);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, "0\r\n\r\n", 5, &used, &data, &data_len),
                    HTTP1_CHUNK_ERROR);
    CU_ASSERT_EQUAL(used, 0);
}

static void test_chunked_needs_more_on_empty_input(void)
{
    static struct http1_chunked st;
    const char *data = "x";
    size_t data_len = 9;
    size_t used = 9;

    http1_chunked_init(&st);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, "", 0, &used, &data, &data_len),
                    HTTP1_CHUNK_NEED_MORE);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_EQUAL(data_len, 0);
}

static void test_chunked_accepts_largest_chunk_size(void)
{
    static struct http1_chunked st;
    const char *in = "7fffffffffffffff\r\nabc";
    const char *data;
    size_t data_len;
    size_t used;

    http1_chunked_init(&st);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in, strlen(in), &used, &data, &data_len),
                    HTTP1_CHUNK_DATA);
    CU_ASSERT_EQUAL(data_len, 3);
    CU_ASSERT_EQUAL(used, strlen(in));
    CU_ASSERT_EQUAL(st.remaining, (uint64_t)INT64_MAX - 3);
}

static void test_chunked_rejects_size_overflow(void)
{
    static struct decoded out;
    const char *cases[] = {"8000000000000000\r\n", "10000000000000000\r\n", "fffffffffffffffff\r\n",
                           "0000000000000000005\r\nhello\r\n0\r\n\r\n"};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        decode_in_pieces(cases[i], strlen(cases[i]), 1, 0, &out);
        CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_ERROR);
    }
    decode_in_pieces(cases[3] + 4, strlen(cases[3] + 4), 1, 0, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_DONE);
}

static void test_chunked_bounds_the_size_line(void)
{
    static char in[HTTP1_MAX_CHUNK_LINE_BYTES + 64];
    static struct decoded out;
    size_t ext_len;

    /* "1;" + name + CRLF is exactly the limit. */
    ext_len = HTTP1_MAX_CHUNK_LINE_BYTES - 4;
    memcpy(in, "1;", 2);
    memset(in + 2, 'e', ext_len);
    memcpy(in + 2 + ext_len, "\r\nx\r\n0\r\n\r\n", 11);
    decode_in_pieces(in, strlen(in), 0, 3, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(out.data_len, 1);
    ext_len++;
    memset(in + 2, 'e', ext_len);
    memcpy(in + 2 + ext_len, "\r\nx\r\n0\r\n\r\n", 11);
    decode_in_pieces(in, strlen(in), 0, 3, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_ERROR);
}

static void test_chunked_bounds_the_trailer_section(void)
{
    static char in[HTTP1_MAX_TRAILER_BYTES + 64];
    static struct decoded out;
    size_t value_len;

    /* "0\r\n" + "X: " + value + "\r\n" + "\r\n": the section is value + 7. */
    value_len = HTTP1_MAX_TRAILER_BYTES - 7;
    memcpy(in, "0\r\nX: ", 6);
    memset(in + 6, 'v', value_len);
    memcpy(in + 6 + value_len, "\r\n\r\n", 5);
    decode_in_pieces(in, strlen(in), 0, 5, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(out.trailers_len, value_len + 5);
    value_len++;
    memset(in + 6, 'v', value_len);
    memcpy(in + 6 + value_len, "\r\n\r\n", 5);
    decode_in_pieces(in, strlen(in), 0, 5, &out);
    CU_ASSERT_EQUAL(out.result, HTTP1_CHUNK_ERROR);
}

static void test_chunked_streams_a_large_body(void)
{
    static char in[70000];
    static struct http1_chunked st;
    size_t len;
    size_t off = 0;
    size_t total = 0;
    size_t used;
    const char *data;
    size_t data_len;
    enum http1_chunk_result r;

    len = (size_t)snprintf(in, sizeof(in), "%x\r\n", 65536);
    memset(in + len, 'b', 65536);
    len += 65536;
    memcpy(in + len, "\r\n0\r\n\r\n", 8);
    len += 7;
    http1_chunked_init(&st);
    /* Fed in pieces of 1000 bytes: data comes back as it arrives. */
    do {
        size_t n = len - off < 1000 ? len - off : 1000;

        r = http1_chunked_decode(&st, in + off, n, &used, &data, &data_len);
        if (r == HTTP1_CHUNK_DATA)
            total += data_len;
        off += used;
    } while ((r == HTTP1_CHUNK_DATA || r == HTTP1_CHUNK_NEED_MORE) && off < len);
    CU_ASSERT_EQUAL(r, HTTP1_CHUNK_DONE);
    CU_ASSERT_EQUAL(total, 65536);
    CU_ASSERT_EQUAL(off, len);
}

/* ---- writers ---- */

static void test_chunk_header_is_lowercase_hex_with_crlf(void)
{
    char out[20];

    CU_ASSERT_EQUAL(http1_chunk_header(out, 0), 3);
    CU_ASSERT_STRING_EQUAL(out, "0\r\n");
    CU_ASSERT_EQUAL(http1_chunk_header(out, 255), 4);
    CU_ASSERT_STRING_EQUAL(out, "ff\r\n");
    CU_ASSERT_EQUAL(http1_chunk_header(out, 0x1000), 6);
    CU_ASSERT_STRING_EQUAL(out, "1000\r\n");
    CU_ASSERT_EQUAL(http1_chunk_header(out, UINT64_MAX), 18);
    CU_ASSERT_STRING_EQUAL(out, "ffffffffffffffff\r\n");
}

static void test_chunk_header_round_trips_through_decoder(void)
{
    static struct http1_chunked st;
    char hdr[20];
    char in[64];
    size_t n;
    size_t used;
    const char *data;
    size_t data_len;

    n = http1_chunk_header(hdr, 10);
    memcpy(in, hdr, n);
    memcpy(in + n, "0123456789\r\n0\r\n\r\n", 17);
    http1_chunked_init(&st);
    CU_ASSERT_EQUAL(http1_chunked_decode(&st, in, n + 17, &used, &data, &data_len),
                    HTTP1_CHUNK_DATA);
    CU_ASSERT_EQUAL(data_len, 10);
}

static void test_reason_phrases(void)
{
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(100), "Continue");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(101), "Switching Protocols");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(200), "OK");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(204), "No Content");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(304), "Not Modified");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(400), "Bad Request");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(407), "Proxy Authentication Required");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(414), "URI Too Long");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(431), "Request Header Fields Too Large");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(501), "Not Implemented");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(502), "Bad Gateway");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(504), "Gateway Timeout");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(505), "HTTP Version Not Supported");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(508), "Loop Detected");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(511), "Network Authentication Required");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(299), "Unknown");
    CU_ASSERT_STRING_EQUAL(http1_reason_phrase(-1), "Unknown");
}

static void test_every_listed_status_has_a_phrase(void)
{
    static const int codes[] = {100, 101, 103, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302,
                                303, 304, 305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407,
                                408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 425,
                                426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 508, 511};
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        CU_ASSERT_STRING_NOT_EQUAL(http1_reason_phrase(codes[i]), "Unknown");
}

struct test_entry {
    const char *name;
    CU_TestFunc fn;
};

#define TEST(f)                                                                                    \
    {                                                                                              \
#f, f                                                                                      \
    }

static const struct test_entry tests[] = {
    TEST(test_parses_simple_get),
    TEST(test_parses_absolute_form_target),
    TEST(test_parses_connect_authority_form),
    TEST(test_parses_asterisk_form_options),
    TEST(test_parses_post_with_content_length),
    TEST(test_parses_zero_content_length_as_length_framing),
    TEST(test_parses_chunked_request),
    TEST(test_accepts_transfer_coding_names_case_insensitively),
    TEST(test_accepts_gzip_before_chunked_in_request),
    TEST(test_joins_transfer_encoding_fields_into_one_list),
    TEST(test_trims_ows_around_field_values),
    TEST(test_accepts_obs_text_in_field_value),
    TEST(test_head_len_excludes_following_bytes),
    TEST(test_incremental_request_is_incomplete_until_last_byte),
    TEST(test_incremental_response_is_incomplete_until_last_byte),
    TEST(test_skips_a_few_leading_empty_lines),
    TEST(test_rejects_many_leading_empty_lines),
    TEST(test_rejects_bare_lf_line_endings),
    TEST(test_rejects_bare_cr_in_request_line),
    TEST(test_rejects_invalid_method),
    TEST(test_rejects_extra_spaces_in_request_line),
    TEST(test_rejects_invalid_request_target),
    TEST(test_rejects_http09_request_line),
    TEST(test_rejects_malformed_version),
    TEST(test_answers_505_for_unsupported_versions),
    TEST(test_refuses_garbage_before_the_line_ends),
    TEST(test_rejects_cl_and_te_together),
    TEST(test_rejects_differing_content_lengths),
    TEST(test_accepts_identical_repeated_content_lengths),
    TEST(test_rejects_signed_content_length),
    TEST(test_rejects_content_length_with_inner_space),
    TEST(test_rejects_malformed_content_length),
    TEST(test_rejects_content_length_overflow),
    TEST(test_accepts_largest_content_length),
    TEST(test_rejects_te_chunked_not_last_in_request),
    TEST(test_rejects_te_without_chunked_in_request),
    TEST(test_answers_501_for_unknown_transfer_coding),
    TEST(test_tells_whether_accept_encoding_asks_for_a_coding),
    TEST(test_splits_absolute_form_targets),
    TEST(test_refuses_bad_absolute_form_targets),
    TEST(test_parses_connect_authorities),
    TEST(test_answers_400_when_the_final_coding_is_unknown_and_not_chunked),
    TEST(test_rejects_chunked_applied_twice),
    TEST(test_rejects_malformed_transfer_encoding),
    TEST(test_rejects_te_in_http10_request),
    TEST(test_rejects_obs_fold),
    TEST(test_rejects_whitespace_before_first_field),
    TEST(test_rejects_bare_cr_in_field_value),
    TEST(test_rejects_whitespace_before_colon),
    TEST(test_rejects_invalid_field_name_character),
    TEST(test_rejects_empty_field_name),
    TEST(test_rejects_nul_in_field_value),
    TEST(test_rejects_control_characters_in_field_value),
    TEST(test_rejects_missing_host_on_http11),
    TEST(test_accepts_missing_host_on_http10),
    TEST(test_rejects_two_host_headers),
    TEST(test_rejects_invalid_host_value),
    TEST(test_answers_414_for_long_request_line),
    TEST(test_answers_414_for_long_incomplete_request_line),
    TEST(test_answers_431_for_too_many_fields),
    TEST(test_answers_431_for_too_many_fields_while_incomplete),
    TEST(test_answers_431_for_too_large_head),
    TEST(test_keep_alive_follows_version_and_connection),
    TEST(test_detects_expect_100_continue),
    TEST(test_detects_upgrade_only_with_both_fields),
    TEST(test_parses_simple_response),
    TEST(test_accepts_status_line_without_reason),
    TEST(test_rejects_malformed_status_line),
    TEST(test_response_errors_answer_502),
    TEST(test_rejects_cl_and_te_together_in_response),
    TEST(test_response_to_head_has_no_body),
    TEST(test_204_and_304_responses_have_no_body),
    TEST(test_1xx_responses_have_no_body),
    TEST(test_2xx_to_connect_has_no_body),
    TEST(test_response_without_length_reads_until_close),
    TEST(test_response_te_without_final_chunked_reads_until_close),
    TEST(test_rejects_invalid_transfer_encoding_in_response),
    TEST(test_response_keep_alive_follows_version_and_connection),
    TEST(test_response_limits_answer_502),
    TEST(test_list_has_token_is_ows_tolerant_and_case_insensitive),
    TEST(test_find_header_is_case_insensitive),
    TEST(test_hop_by_hop_covers_fixed_names),
    TEST(test_hop_by_hop_includes_fields_named_in_connection),
    TEST(test_chunked_decodes_whole_input),
    TEST(test_chunked_decodes_byte_at_a_time),
    TEST(test_chunked_decodes_random_splits),
    TEST(test_chunked_accepts_upper_and_lowercase_hex),
    TEST(test_chunked_returns_data_as_slices_of_input),
    TEST(test_chunked_does_not_consume_bytes_after_done),
    TEST(test_chunked_error_is_final),
    TEST(test_chunked_needs_more_on_empty_input),
    TEST(test_chunked_accepts_largest_chunk_size),
    TEST(test_chunked_rejects_size_overflow),
    TEST(test_chunked_bounds_the_size_line),
    TEST(test_chunked_bounds_the_trailer_section),
    TEST(test_chunked_streams_a_large_body),
    TEST(test_chunk_header_is_lowercase_hex_with_crlf),
    TEST(test_chunk_header_round_trips_through_decoder),
    TEST(test_reason_phrases),
    TEST(test_every_listed_status_has_a_phrase),
};

int main(void)
{
    CU_pSuite suite;
    unsigned int failures = 0;
    int status = 1;
    size_t i;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 1;
    }
    suite = CU_add_suite("http1", NULL, NULL);
    if (suite == NULL)
        goto out;
    for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (CU_add_test(suite, tests[i].name, tests[i].fn) == NULL)
            goto out;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto out;
    failures = CU_get_number_of_failures();
    status = failures != 0;
out:
    if (CU_get_error() != CUE_SUCCESS)
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
    CU_cleanup_registry();
    return status;
}
