/*
 * Unit tests for exchange: one request/response between in-memory peers.
 * The client and the origin are the far ends of two socket pairs, scripted
 * by the test: the client's request and the origin's answer are written
 * before exchange_forward() runs (they fit in the socket buffers), then the
 * test reads what each side got. A recorder implements the capture hooks,
 * so these tests also pin what a recorder is told, in which order.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec.h"
#include "exchange.h"
#include "http1codec.h"
#include "rewrite.h"
#include "rules.h"
#include "stream.h"
#include "testutil.h"

#define IO_MS 2000
#define GOT_MAX (256 * 1024)

struct peers {
    int client_far; /* the test plays the client here */
    int origin_far; /* and the origin here */
    struct stream client;
    struct stream upstream;
    struct exchange_timeouts t;
};

/* What a recorder was told. */
struct recorder {
    int status;
    int received_status; /* of the head as received, 0: not told (no rule changed it) */
    char events[64];     /* one letter a call: h head, q request body, s response body,
                            o original, f reframed, R sent, F first byte, D done, u upgraded */
    char request_body[4096];
    size_t request_len;
    char response_body[4096];
    size_t response_len;
    char original[4096];
    size_t original_len;
    uint64_t reframed_length;
    bool reframed_rewritten;
};

static void note(struct recorder *r, char c)
{
    size_t n = strlen(r->events);
    if (n + 1 < sizeof(r->events)) {
        r->events[n] = c;
        r->events[n + 1] = '\0';
    }
}

static void append(char *buf, size_t *len, size_t cap, const void *data, size_t n)
{
    if (*len + n > cap)
        n = cap - *len;
    memcpy(buf + *len, data, n);
    *len += n;
}

static void on_head(void *arg, const struct message *sent, const struct message *received)
{
    struct recorder *r = arg;
    r->status = sent->status;
    r->received_status = received ? received->status : 0;
    note(r, 'h');
}

static void on_body(void *arg, enum exchange_side side, const void *data, size_t len)
{
    struct recorder *r = arg;
    if (side == EXCHANGE_REQUEST) {
        append(r->request_body, &r->request_len, sizeof(r->request_body), data, len);
        if (r->events[0] == '\0' || r->events[strlen(r->events) - 1] != 'q')
            note(r, 'q');
    } else {
        append(r->response_body, &r->response_len, sizeof(r->response_body), data, len);
        if (r->events[0] == '\0' || r->events[strlen(r->events) - 1] != 's')
            note(r, 's');
    }
}

static void on_original(void *arg, enum exchange_side side, const void *data, size_t len)
{
    struct recorder *r = arg;
    (void)side;
    append(r->original, &r->original_len, sizeof(r->original), data, len);
    note(r, 'o');
}

static void on_reframed(void *arg, enum exchange_side side, uint64_t length, bool is_rewritten)
{
    struct recorder *r = arg;
    (void)side;
    r->reframed_length = length;
    r->reframed_rewritten = is_rewritten;
    note(r, 'f');
}

static void on_moment(void *arg, enum exchange_moment moment, int64_t wall_us)
{
    struct recorder *r = arg;
    CU_ASSERT(wall_us > 0);
    note(r, moment == EXCHANGE_REQUEST_SENT ? 'R' : moment == EXCHANGE_FIRST_BYTE ? 'F' : 'D');
}

static void on_upgraded(void *arg, uint64_t up, uint64_t down)
{
    (void)up;
    (void)down;
    note(arg, 'u');
}

static const struct exchange_capture_ops recorder_ops = {
    .response_head = on_head,
    .body = on_body,
    .body_original = on_original,
    .reframed = on_reframed,
    .moment = on_moment,
    .upgraded = on_upgraded,
};

static void peers_open(struct peers *p)
{
    int c[2], u[2];

    memset(p, 0, sizeof(*p));
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0);
    p->client_far = c[0];
    p->origin_far = u[1];
    CU_ASSERT_FATAL(stream_init(&p->client, c[1], 65536 + 16384, -1) == 0);
    CU_ASSERT_FATAL(stream_init(&p->upstream, u[0], 65536 + 16384, -1) == 0);
    p->t.idle_ms = IO_MS;
    p->t.header_ms = IO_MS;
    p->t.io_ms = IO_MS;
}

static void peers_close(struct peers *p)
{
    stream_close(&p->client);
    stream_close(&p->upstream);
    close(p->client_far);
    close(p->origin_far);
}

static void write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        CU_ASSERT_FATAL(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

static void write_str(int fd, const char *text)
{
    write_all(fd, text, strlen(text));
}

/* Everything readable on fd now (the exchange is over), NUL-terminated. */
static char *read_now(int fd, size_t *len)
{
    char *buf = calloc(1, GOT_MAX + 1);
    int flags = fcntl(fd, F_GETFL);

    CU_ASSERT_FATAL(buf != NULL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    *len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + *len, GOT_MAX - *len);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    fcntl(fd, F_SETFL, flags);
    return buf;
}

/* Reads the client's request from p->client and makes the message that is
 * forwarded, as the session does: a copy of the parsed head. */
static void read_and_build(struct peers *p, const char *request, struct http1_head *head,
                           struct message *req)
{
    struct http1_error err = {0};
    struct message view;
    int n;

    write_str(p->client_far, request);
    n = http1codec_read_request(&p->client, p->t.idle_ms, p->t.header_ms, head, &err);
    CU_ASSERT_FATAL(n > 0);
    http1codec_view(head, &view);
    CU_ASSERT_FATAL(message_copy(req, &view, NULL) == 0);
    stream_consume(&p->client, (size_t)n);
}

static void test_forwards_a_get_and_tells_the_recorder(void)
{
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    struct recorder rec = {0};
    struct exchange_capture cap = {.ops = &recorder_ops, .arg = &rec};
    char *to_origin, *to_client;
    size_t origin_len, client_len;

    peers_open(&p);
    read_and_build(&p,
                   "GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Hop\r\n"
                   "X-Hop: 1\r\nAccept: */*\r\n\r\n",
                   &head, &req);
    write_str(p.origin_far, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Origin: yes\r\n\r\nhello");
    CU_ASSERT_EQUAL(exchange_forward(&p.client, &p.upstream, &req, &p.t, NULL, &cap, &res), 0);
    CU_ASSERT_EQUAL(res.status, 200);
    CU_ASSERT_EQUAL(res.response_bytes, 5);
    CU_ASSERT_TRUE(res.client_keep_alive);
    CU_ASSERT_TRUE(res.upstream_reusable);

    to_origin = read_now(p.origin_far, &origin_len);
    CU_ASSERT_PTR_NOT_NULL(strstr(to_origin, "GET /a?b=1 HTTP/1.1\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(to_origin, "\r\nHost: example.test\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(to_origin, "\r\nVia: 1.1 tapwire\r\n"));
    /* Hop-by-hop fields stop here, those Connection names too (RFC 9110 7.6.1). */
    CU_ASSERT_PTR_NULL(strstr(to_origin, "X-Hop"));
    CU_ASSERT_PTR_NULL(strcasestr(to_origin, "\r\nConnection: keep-alive"));
    to_client = read_now(p.client_far, &client_len);
    CU_ASSERT_EQUAL(strncmp(to_client, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(to_client, "\r\nContent-Length: 5\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(to_client, "\r\nVia: 1.1 tapwire\r\n"));
    CU_ASSERT(client_len >= 5 && memcmp(to_client + client_len - 5, "hello", 5) == 0);

    CU_ASSERT_STRING_EQUAL(rec.events, "RFhsD");
    CU_ASSERT_EQUAL(rec.status, 200);
    CU_ASSERT_EQUAL(rec.received_status, 0);
    CU_ASSERT_EQUAL(rec.response_len, 5);
    CU_ASSERT_EQUAL(memcmp(rec.response_body, "hello", 5), 0);
    free(to_origin);
    free(to_client);
    message_free(&req);
    peers_close(&p);
}

static void test_rechunks_a_chunked_response_with_its_trailers(void)
{
    static const char response[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n";
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    struct recorder rec = {0};
    struct exchange_capture cap = {.ops = &recorder_ops, .arg = &rec};
    char *to_client;
    size_t client_len;

    peers_open(&p);
    read_and_build(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &head, &req);
    write_all(p.origin_far, response, sizeof(response) - 1);
    CU_ASSERT_EQUAL(exchange_forward(&p.client, &p.upstream, &req, &p.t, NULL, &cap, &res), 0);
    CU_ASSERT_EQUAL(res.response_bytes, 7);
    to_client = read_now(p.client_far, &client_len);
    CU_ASSERT_PTR_NOT_NULL(strstr(to_client, "\r\nTransfer-Encoding: chunked\r\n"));
    /* A chunk extension belongs to the origin's hop, not to the content:
     * the re-chunked body leaves it behind. */
    CU_ASSERT_PTR_NULL(strstr(to_client, "ext=1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(to_client, "\r\n0\r\nX-Sum: 7\r\n\r\n"));
    CU_ASSERT_EQUAL(rec.response_len, 7);
    CU_ASSERT_EQUAL(memcmp(rec.response_body, "abcdefg", 7), 0);
    free(to_client);
    message_free(&req);
    peers_close(&p);
}

static void test_passes_a_request_body_on_and_records_it(void)
{
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    struct recorder rec = {0};
    struct exchange_capture cap = {.ops = &recorder_ops, .arg = &rec};
    char *to_origin;
    size_t origin_len;

    peers_open(&p);
    read_and_build(&p, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
                   &head, &req);
    write_str(p.origin_far, "HTTP/1.1 204 No Content\r\n\r\n");
    CU_ASSERT_EQUAL(exchange_forward(&p.client, &p.upstream, &req, &p.t, NULL, &cap, &res), 0);
    CU_ASSERT_EQUAL(res.status, 204);
    CU_ASSERT_EQUAL(res.request_bytes, 11);
    to_origin = read_now(p.origin_far, &origin_len);
    CU_ASSERT_PTR_NOT_NULL(strstr(to_origin, "\r\nContent-Length: 11\r\n"));
    CU_ASSERT(origin_len >= 11 && memcmp(to_origin + origin_len - 11, "hello world", 11) == 0);
    CU_ASSERT_STRING_EQUAL(rec.events, "qRFhD");
    CU_ASSERT_EQUAL(rec.request_len, 11);
    CU_ASSERT_EQUAL(memcmp(rec.request_body, "hello world", 11), 0);
    free(to_origin);
    message_free(&req);
    peers_close(&p);
}

static void test_an_origin_that_closes_at_once_is_stale_and_nothing_reaches_the_client(void)
{
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    char *to_client;
    size_t client_len;

    peers_open(&p);
    read_and_build(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &head, &req);
    shutdown(p.origin_far, SHUT_WR);
    CU_ASSERT_EQUAL(exchange_forward(&p.client, &p.upstream, &req, &p.t, NULL, NULL, &res), -1);
    CU_ASSERT_TRUE(res.upstream_stale);
    CU_ASSERT_EQUAL(res.status, 0);
    CU_ASSERT_EQUAL(res.error_status, 502);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.error, "without a response"));
    to_client = read_now(p.client_far, &client_len);
    CU_ASSERT_EQUAL(client_len, 0);
    free(to_client);
    message_free(&req);
    peers_close(&p);
}

static void test_refuses_a_response_with_both_length_and_chunked(void)
{
    static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    char *to_client;
    size_t client_len;

    peers_open(&p);
    read_and_build(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &head, &req);
    write_all(p.origin_far, response, sizeof(response) - 1);
    CU_ASSERT_EQUAL(exchange_forward(&p.client, &p.upstream, &req, &p.t, NULL, NULL, &res), -1);
    CU_ASSERT_EQUAL(res.status, 0);
    CU_ASSERT_EQUAL(res.error_status, 502);
    to_client = read_now(p.client_far, &client_len);
    CU_ASSERT_EQUAL(client_len, 0); /* the caller answers with its error page */
    free(to_client);
    message_free(&req);
    peers_close(&p);
}

/* An upstream proxy's 407 is for tapwire: the client gets the caller's 502,
 * while an origin's 407 (no proxy in between) still goes through. */
static void test_an_upstream_proxys_407_never_reaches_the_client(void)
{
    static const char response[] = "HTTP/1.1 407 Proxy Authentication Required\r\n"
                                   "Proxy-Authenticate: Basic realm=\"corp\"\r\n"
                                   "Content-Length: 0\r\n\r\n";
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    char *to_client;
    size_t client_len;

    for (int is_to_proxy = 1; is_to_proxy >= 0; is_to_proxy--) {
        peers_open(&p);
        read_and_build(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &head, &req);
        req.is_to_proxy = is_to_proxy;
        write_all(p.origin_far, response, sizeof(response) - 1);
        int r = exchange_forward(&p.client, &p.upstream, &req, &p.t, NULL, NULL, &res);
        to_client = read_now(p.client_far, &client_len);
        if (is_to_proxy) {
            CU_ASSERT_EQUAL(r, -1);
            CU_ASSERT_EQUAL(res.status, 0);
            CU_ASSERT_EQUAL(res.error_status, 502);
            CU_ASSERT_FALSE(res.upstream_reusable);
            CU_ASSERT_PTR_NOT_NULL(strstr(res.error, "407"));
            CU_ASSERT_EQUAL(client_len, 0);
        } else {
            CU_ASSERT_EQUAL(r, 0);
            CU_ASSERT_EQUAL(res.status, 407);
            CU_ASSERT_EQUAL(strncmp(to_client, "HTTP/1.1 407 ", 13), 0);
        }
        free(to_client);
        message_free(&req);
        peers_close(&p);
    }
}

static void test_a_rewritten_gzip_body_is_reframed_and_its_original_kept(void)
{
    struct peers p;
    struct http1_head head;
    struct message req = {0};
    struct exchange_result res;
    struct recorder rec = {0};
    struct exchange_capture cap = {.ops = &recorder_ops, .arg = &rec};
    struct rule_set *set = NULL;
    struct rules_current rules;
    struct rewrite rw;
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    char err[256], response[512];
    char *to_client;
    size_t client_len;
    int head_len;

    CU_ASSERT_FATAL(rules_parse_spec("response body \"kettle\" \"teapot\"", 31, "rule 1", &set, err,
                                     sizeof(err)) == 0);
    CU_ASSERT_FATAL(codec_encode_content("gzip", (const unsigned char *)"a kettle boils", 14, &gz,
                                         &gz_len, err, sizeof(err)) == 0);
    peers_open(&p);
    read_and_build(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &head, &req);
    CU_ASSERT_FATAL(rules_current_init(&rules) == 0);
    rules_publish(&rules, set);
    CU_ASSERT_FATAL(rewrite_begin(&rw, &rules, &req, "h", "/", 1 << 20, 1 << 24) == 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rewrite_hooks(&rw));
    head_len = snprintf(response, sizeof(response),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
                        "Content-Length: %zu\r\n\r\n",
                        gz_len);
    write_all(p.origin_far, response, (size_t)head_len);
    write_all(p.origin_far, (const char *)gz, gz_len);
    CU_ASSERT_EQUAL(
        exchange_forward(&p.client, &p.upstream, &req, &p.t, rewrite_hooks(&rw), &cap, &res), 0);
    to_client = read_now(p.client_far, &client_len);
    /* Sent as identity with its new length (tapwire-rules(5)). */
    CU_ASSERT_PTR_NOT_NULL(strstr(to_client, "\r\nContent-Length: 14\r\n"));
    CU_ASSERT_PTR_NULL(strstr(to_client, "Content-Encoding"));
    CU_ASSERT(client_len >= 14 && memcmp(to_client + client_len - 14, "a teapot boils", 14) == 0);
    CU_ASSERT_STRING_EQUAL(rec.events, "RFhofsD");
    CU_ASSERT_EQUAL(rec.reframed_length, 14);
    CU_ASSERT_TRUE(rec.reframed_rewritten);
    CU_ASSERT_EQUAL(rec.original_len, 14);
    CU_ASSERT_EQUAL(memcmp(rec.original, "a kettle boils", 14), 0);
    CU_ASSERT_EQUAL(memcmp(rec.response_body, "a teapot boils", 14), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(rewrite_applied(&rw), "rule 1"));
    free(to_client);
    free(gz);
    rewrite_end(&rw);
    rules_set_unref(set);
    rules_current_destroy(&rules);
    message_free(&req);
    peers_close(&p);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("exchange", NULL, NULL);
    if (suite == NULL ||
        !CU_add_test(suite, "forwards_a_get_and_tells_the_recorder",
                     test_forwards_a_get_and_tells_the_recorder) ||
        !CU_add_test(suite, "rechunks_a_chunked_response_with_its_trailers",
                     test_rechunks_a_chunked_response_with_its_trailers) ||
        !CU_add_test(suite, "passes_a_request_body_on_and_records_it",
                     test_passes_a_request_body_on_and_records_it) ||
        !CU_add_test(suite, "an_origin_that_closes_at_once_is_stale_and_nothing_reaches_the_client",
                     test_an_origin_that_closes_at_once_is_stale_and_nothing_reaches_the_client) ||
        !CU_add_test(suite, "refuses_a_response_with_both_length_and_chunked",
                     test_refuses_a_response_with_both_length_and_chunked) ||
        !CU_add_test(suite, "an_upstream_proxys_407_never_reaches_the_client",
                     test_an_upstream_proxys_407_never_reaches_the_client) ||
        !CU_add_test(suite, "a_rewritten_gzip_body_is_reframed_and_its_original_kept",
                     test_a_rewritten_gzip_body_is_reframed_and_its_original_kept))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
