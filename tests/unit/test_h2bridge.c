/*
 * Unit tests for h2bridge: the gate that refuses what HTTP/1.1 would read
 * differently, and the translation driven over a socket pair standing for
 * the origin's connection (the head and framing it gets, the response
 * handed back without HTTP/1.1's connection fields, its trailers, and a
 * body longer than its content-length never passed on).
 */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h2bridge.h"
#include "log.h"
#include "testutil.h"

static struct message request(const char *method, const char *target, const char *authority,
                              const struct message_field *fields, size_t count)
{
    struct message m = {0};

    m.method = method;
    m.method_len = strlen(method);
    m.scheme = "https";
    m.target = target;
    m.target_len = strlen(target);
    m.authority = authority;
    m.authority_len = authority != NULL ? strlen(authority) : 0;
    m.version = 20;
    m.fields = (struct message_fields){fields, count};
    return m;
}

static bool passes(const struct message *m)
{
    const char *why = NULL;
    int rc = h2bridge_check_request(m, &why);

    CU_ASSERT(rc == 0 || why != NULL);
    return rc == 0;
}

static void test_passes_a_plain_request(void)
{
    struct message_field f[] = {{"accept", 6, "*/*", 3},
                                {"content-length", 14, "5", 1},
                                {"content-length", 14, "5", 1},
                                {"x-tab", 5, "a\tb", 3}};
    struct message m = request("GET", "/a?b=c", "example.test:8443", f, 4);

    CU_ASSERT_TRUE(passes(&m));
    m = request("OPTIONS", "*", "example.test", NULL, 0);
    CU_ASSERT_TRUE(passes(&m));
    /* No :authority: a host field stands for it. */
    struct message_field host[] = {{"host", 4, "example.test", 12}};
    m = request("GET", "/", NULL, host, 1);
    CU_ASSERT_TRUE(passes(&m));
}

static void test_refuses_what_http1_would_read_differently(void)
{
    struct message m;
    struct message_field crlf[] = {{"x", 1, "a\r\nGET /x HTTP/1.1", 18}};
    struct message_field lf[] = {{"x", 1, "a\nb", 3}};
    struct message_field nul[] = {{"x", 1, "a\0b", 3}};
    struct message_field lead[] = {{"x", 1, " a", 2}};
    struct message_field trail[] = {{"x", 1, "a\t", 2}};
    struct message_field bad_name[] = {{"x y", 3, "a", 1}};
    struct message_field colon_name[] = {{"x:y", 3, "a", 1}};
    struct message_field two_lengths[] = {{"content-length", 14, "5", 1},
                                          {"content-length", 14, "6", 1}};
    struct message_field list_length[] = {{"content-length", 14, "5, 5", 4}};
    struct message_field neg_length[] = {{"content-length", 14, "-1", 2}};
    struct message_field te_gzip[] = {{"te", 2, "gzip", 4}};
    struct message_field te_trailers[] = {{"te", 2, "Trailers", 8}};

    m = request("GET", "/", "h", crlf, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", lf, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", nul, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", lead, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", trail, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", bad_name, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", colon_name, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("POST", "/", "h", two_lengths, 2);
    CU_ASSERT_FALSE(passes(&m));
    m = request("POST", "/", "h", list_length, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("POST", "/", "h", neg_length, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", te_gzip, 1);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h", te_trailers, 1);
    CU_ASSERT_TRUE(passes(&m));
    m = request("GET", "/a b", "h", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/a\r\nb", "h", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "http://h/", "h", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "*", "h", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("G T", "/", "h", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "h\r\nx: y", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", "user@h", NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
    m = request("GET", "/", NULL, NULL, 0);
    CU_ASSERT_FALSE(passes(&m));
}

/* ---- the bridge over a socket pair ---- */

struct fake_stream {
    const char *body; /* the request body the client "sent" */
    size_t body_len, taken;
    struct message_field trailers[2];
    size_t trailer_count;
    int status; /* from the head */
    char fields[512];
    char got[512]; /* the response body */
    size_t got_len;
    char response_trailers[128];
    bool has_ended;
    int failed_status; /* -1: not failed */
};

static size_t fake_take_body(void *stream, char *buf, size_t len, bool *is_end)
{
    struct fake_stream *f = stream;
    size_t n = f->body_len - f->taken;

    if (n > len)
        n = len;
    if (n > 0)
        memcpy(buf, f->body + f->taken, n);
    f->taken += n;
    *is_end = f->taken == f->body_len;
    return n;
}

static struct message_fields fake_trailers(void *stream)
{
    struct fake_stream *f = stream;
    return (struct message_fields){f->trailers, f->trailer_count};
}

static bool fake_can_take(void *stream)
{
    (void)stream;
    return true;
}

static int fake_head(void *stream, const struct message *head)
{
    struct fake_stream *f = stream;

    f->status = head->status;
    for (size_t i = 0; i < head->fields.count; i++) {
        const struct message_field *h = &head->fields.items[i];
        size_t at = strlen(f->fields);
        snprintf(f->fields + at, sizeof(f->fields) - at, "%.*s=%.*s;", (int)h->name_len, h->name,
                 (int)h->value_len, h->value);
    }
    return 0;
}

static int fake_body(void *stream, const char *data, size_t len)
{
    struct fake_stream *f = stream;

    if (f->got_len + len <= sizeof(f->got)) {
        memcpy(f->got + f->got_len, data, len);
        f->got_len += len;
    }
    return 0;
}

static void fake_end(void *stream, const struct message_fields *trailers)
{
    struct fake_stream *f = stream;

    for (size_t i = 0; i < trailers->count; i++) {
        const struct message_field *h = &trailers->items[i];
        size_t at = strlen(f->response_trailers);
        snprintf(f->response_trailers + at, sizeof(f->response_trailers) - at, "%.*s=%.*s;",
                 (int)h->name_len, h->name, (int)h->value_len, h->value);
    }
    f->has_ended = true;
}

static void fake_failed(void *stream, int status, const char *why)
{
    struct fake_stream *f = stream;

    (void)why;
    f->failed_status = status;
}

static const struct h2bridge_ops fake_ops = {
    fake_take_body, fake_trailers, fake_can_take, fake_head, fake_body, fake_end, fake_failed};

struct rig {
    struct origin first;
    struct origin_settings settings;
    struct h2bridge *b;
    int peer; /* the origin's end */
};

static void rig_open_to(struct rig *g, const char *host, uint16_t port)
{
    int sv[2];

    memset(g, 0, sizeof(*g));
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    origin_init(&g->first, -1);
    CU_ASSERT_FATAL(stream_init(&g->first.stream, sv[0], 65536, -1) == 0);
    g->peer = sv[1];
    g->settings =
        (struct origin_settings){.cancel_fd = -1, .timeout_ms = 1000, .in_max_bytes = 65536};
    struct h2bridge_env env = {
        .ops = &fake_ops,
        .settings = &g->settings,
        .target = {.host = host, .port = port},
        .first = &g->first,
        .client_name = "test",
        .io_ms = 2000,
    };
    g->b = h2bridge_new(&env);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g->b);
}

static void rig_open(struct rig *g)
{
    rig_open_to(g, "example.test", 80);
}

static void rig_close(struct rig *g)
{
    h2bridge_free(g->b);
    origin_free(&g->first);
    close(g->peer);
}

/* Steps the bridge a few times; returns what the origin's end read. */
static size_t step_and_read(struct rig *g, char *out, size_t cap)
{
    size_t n = 0;

    for (int i = 0; i < 20; i++) {
        h2bridge_step(g->b, NULL, 0);
        struct pollfd p = {.fd = g->peer, .events = POLLIN};
        while (n < cap - 1 && poll(&p, 1, 10) == 1 && (p.revents & POLLIN)) {
            ssize_t got = read(g->peer, out + n, cap - 1 - n);
            if (got <= 0)
                break;
            n += (size_t)got;
        }
    }
    out[n] = '\0';
    return n;
}

static void test_sends_http1_with_chunked_body_and_trailers(void)
{
    struct rig g;
    struct fake_stream f = {.body = "hello", .body_len = 5, .failed_status = -1};
    struct message_field fields[] = {
        {"user-agent", 10, "t", 1}, {"te", 2, "trailers", 8}, {"host", 4, "other.test", 10}};
    struct message m = request("POST", "/up", "example.test", fields, 3);
    const char *why = NULL;
    char wire[2048];

    f.trailers[0] = (struct message_field){"x-sum", 5, "1", 1};
    f.trailer_count = 1;
    m.body = MESSAGE_BODY_STREAM;
    rig_open(&g);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f, &m, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "POST /up HTTP/1.1\r\nHost: example.test\r\n"));
    CU_ASSERT_PTR_NULL(strstr(wire, "other.test"));
    CU_ASSERT_PTR_NULL(strstr(wire, "te: trailers"));
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "Transfer-Encoding: chunked\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n"));

    static const char answer[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                 "Connection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n"
                                 "Trailer: X-T\r\nX-A: b\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
    CU_ASSERT_EQUAL(write(g.peer, answer, sizeof(answer) - 1), (ssize_t)(sizeof(answer) - 1));
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_EQUAL(f.status, 200);
    CU_ASSERT_STRING_EQUAL(f.fields, "X-A=b;");
    CU_ASSERT_EQUAL(f.got_len, 3);
    CU_ASSERT_EQUAL(memcmp(f.got, "abc", 3), 0);
    CU_ASSERT_TRUE(f.has_ended);
    CU_ASSERT_STRING_EQUAL(f.response_trailers, "X-T=1;");
    CU_ASSERT_EQUAL(f.failed_status, -1);
    CU_ASSERT_TRUE(h2bridge_is_idle(g.b));

    /* Kept alive: the next request goes on the same connection. */
    struct fake_stream f2 = {.failed_status = -1};
    struct message get = request("GET", "/again", "example.test", NULL, 0);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f2, &get, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "GET /again HTTP/1.1\r\n"));
    CU_ASSERT_PTR_NULL(strstr(wire, "Transfer-Encoding"));
    rig_close(&g);
}

static void test_joins_cookie_fields_into_one(void)
{
    struct rig g;
    struct fake_stream f = {.failed_status = -1};
    struct message_field fields[] = {{"cookie", 6, "a=1", 3},
                                     {"accept", 6, "*/*", 3},
                                     {"cookie", 6, "b=2", 3},
                                     {"cookie", 6, "c=3", 3}};
    struct message m = request("GET", "/", "example.test", fields, 4);
    const char *why = NULL;
    char wire[2048];

    rig_open(&g);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f, &m, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    /* RFC 9113 8.2.3: one field, where the first was, joined by "; ". */
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "\r\ncookie: a=1; b=2; c=3\r\naccept: */*\r\n"));
    CU_ASSERT_PTR_NULL(strstr(wire, "cookie: b=2"));
    rig_close(&g);
}

static void test_a_body_longer_than_its_content_length_never_goes_on(void)
{
    struct rig g;
    struct fake_stream f = {.body = "abcGET /smuggled HTTP/1.1\r\n\r\n", .failed_status = -1};
    struct message_field fields[] = {{"content-length", 14, "3", 1}};
    struct message m = request("POST", "/up", "example.test", fields, 1);
    const char *why = NULL;
    char wire[2048];

    f.body_len = strlen(f.body);
    m.body = MESSAGE_BODY_STREAM;
    rig_open(&g);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f, &m, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "Content-Length: 3\r\n"));
    CU_ASSERT_PTR_NULL(strstr(wire, "Transfer-Encoding"));
    CU_ASSERT_PTR_NULL(strstr(wire, "smuggled"));
    CU_ASSERT_EQUAL(f.failed_status, 0); /* the client's framing: a stream error */
    /* The connection is closed, never reused. */
    char rest[16];
    CU_ASSERT_EQUAL(read(g.peer, rest, sizeof(rest)), 0);
    CU_ASSERT_TRUE(h2bridge_is_idle(g.b));
    rig_close(&g);
}

static void test_refuses_a_switch_of_protocols(void)
{
    struct rig g;
    struct fake_stream f = {.failed_status = -1};
    struct message m = request("GET", "/", "example.test", NULL, 0);
    const char *why = NULL;
    char wire[2048];
    static const char answer[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                                 "Upgrade: websocket\r\n\r\n";

    rig_open(&g);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f, &m, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_EQUAL(write(g.peer, answer, sizeof(answer) - 1), (ssize_t)(sizeof(answer) - 1));
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_EQUAL(f.failed_status, 502);
    CU_ASSERT_EQUAL(f.status, 0);
    rig_close(&g);
}

static void test_an_origin_that_closes_without_answering_gives_502(void)
{
    struct rig g;
    struct fake_stream f = {.failed_status = -1};
    struct message m = request("GET", "/", "example.test", NULL, 0);
    const char *why = NULL;
    char wire[2048];

    rig_open(&g);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f, &m, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    shutdown(g.peer, SHUT_WR);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_EQUAL(f.failed_status, 502);
    rig_close(&g);
}

/* A loopback listener standing for the origin's next connection. */
static int listen_loopback(uint16_t *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(listen(fd, 4) == 0);
    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_a_stale_kept_alive_connection_is_retried_on_a_fresh_one(void)
{
    struct rig g;
    struct fake_stream f = {.failed_status = -1}, f2 = {.failed_status = -1};
    struct message m = request("GET", "/one", "example.test", NULL, 0);
    const char *why = NULL;
    char wire[2048];
    uint16_t port;
    int lfd = listen_loopback(&port);
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    rig_open_to(&g, "127.0.0.1", port);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f, &m, &why), 0);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_EQUAL(write(g.peer, answer, sizeof(answer) - 1), (ssize_t)(sizeof(answer) - 1));
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_TRUE(f.has_ended);
    /* The origin drops the kept-alive connection; the next GET goes on. */
    close(g.peer);
    g.peer = -1;
    m = request("GET", "/two", "example.test", NULL, 0);
    CU_ASSERT_EQUAL(h2bridge_submit(g.b, &f2, &m, &why), 0);
    h2bridge_step(g.b, NULL, 0);
    h2bridge_step(g.b, NULL, 0);
    CU_ASSERT_EQUAL(f2.failed_status, -1);
    g.peer = accept(lfd, NULL, NULL);
    CU_ASSERT_FATAL(g.peer >= 0);
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_PTR_NOT_NULL(strstr(wire, "GET /two HTTP/1.1\r\n"));
    CU_ASSERT_EQUAL(write(g.peer, answer, sizeof(answer) - 1), (ssize_t)(sizeof(answer) - 1));
    step_and_read(&g, wire, sizeof(wire));
    CU_ASSERT_TRUE(f2.has_ended);
    CU_ASSERT_EQUAL(f2.status, 200);
    CU_ASSERT_EQUAL(f2.failed_status, -1);
    rig_close(&g);
    close(lfd);
}

#define ADD(s, t) CU_add_test(s, #t, t)

int main(void)
{
    CU_pSuite suite;

    log_init(-1, LOG_ERROR);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("h2bridge", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_passes_a_plain_request) ||
        !ADD(suite, test_refuses_what_http1_would_read_differently) ||
        !ADD(suite, test_sends_http1_with_chunked_body_and_trailers) ||
        !ADD(suite, test_joins_cookie_fields_into_one) ||
        !ADD(suite, test_a_body_longer_than_its_content_length_never_goes_on) ||
        !ADD(suite, test_refuses_a_switch_of_protocols) ||
        !ADD(suite, test_an_origin_that_closes_without_answering_gives_502) ||
        !ADD(suite, test_a_stale_kept_alive_connection_is_retried_on_a_fresh_one))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
