/* Unit tests for the WebSocket relay (src/wsrelay.c) over socket pairs: the
 * bytes go on unchanged in whatever pieces they come, each message is
 * reported once with its direction, and a peer that breaks the protocol
 * gets the RFC's close code while the other gets 1001. */
#include <CUnit/Basic.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"
#include "wsframe.h"
#include "wsrelay.h"

struct seen {
    int count;
    bool from_client[16];
    int opcode[16];
    char text[16][32];
};

struct relay_run {
    int client_end, server_end; /* the test's ends */
    struct stream client, server;
    struct wsinflate_params params;
    struct wsrelay_config cfg;
    struct wsrelay_result res;
    int rc;
    struct seen seen;
    pthread_t thread;
};

static void on_message(void *arg, const struct wsrelay_message *m)
{
    struct seen *s = arg;

    if (s->count >= 16)
        return;
    s->from_client[s->count] = m->is_from_client;
    s->opcode[s->count] = m->opcode;
    memcpy(s->text[s->count], m->data, m->len < 31 ? m->len : 31);
    s->count++;
}

static void *run_relay(void *arg)
{
    struct relay_run *r = arg;

    r->rc = wsrelay_run(&r->client, &r->server, &r->params, &r->cfg, &r->res);
    stream_close(&r->client);
    stream_close(&r->server);
    return NULL;
}

static void start(struct relay_run *r)
{
    int c[2], u[2];

    memset(r, 0, sizeof(*r));
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0);
    CU_ASSERT_FATAL(stream_init(&r->client, c[1], 65536, -1) == 0);
    CU_ASSERT_FATAL(stream_init(&r->server, u[0], 65536, -1) == 0);
    r->client_end = c[0];
    r->server_end = u[1];
    r->cfg.idle_timeout_ms = 5000;
    r->cfg.limit = 1024;
    r->cfg.message = on_message;
    r->cfg.arg = &r->seen;
    CU_ASSERT_FATAL(pthread_create(&r->thread, NULL, run_relay, r) == 0);
}

static void finish(struct relay_run *r)
{
    close(r->client_end);
    close(r->server_end);
    pthread_join(r->thread, NULL);
}

/* Reads exactly n bytes from fd (5 s at most); returns how many came. */
static size_t read_n(int fd, unsigned char *buf, size_t n)
{
    size_t have = 0;

    while (have < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t got = read(fd, buf + have, n - have);
        if (got <= 0)
            break;
        have += (size_t)got;
    }
    return have;
}

/* A masked client frame. */
static size_t client_frame(unsigned char *out, uint8_t b0, const char *payload)
{
    static const unsigned char key[4] = {0xa1, 0xb2, 0xc3, 0xd4};
    size_t len = strlen(payload);

    out[0] = b0;
    out[1] = (unsigned char)(0x80 | len);
    memcpy(out + 2, key, 4);
    for (size_t i = 0; i < len; i++)
        out[6 + i] = (unsigned char)payload[i] ^ key[i & 3];
    return 6 + len;
}

static void test_bytes_pass_unchanged_in_any_pieces(void)
{
    struct relay_run r;
    unsigned char wire[128], got[128];
    size_t n = 0;

    start(&r);
    n += client_frame(wire + n, 0x01, "frag-");        /* text, not final */
    n += client_frame(wire + n, 0x89, "ping");         /* a ping between fragments */
    n += client_frame(wire + n, 0x80, "mented");       /* final continuation */
    n += client_frame(wire + n, 0x82, "\x01\x02\x03"); /* binary */
    /* One byte at a time: every piece goes on as it is. */
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(write(r.client_end, wire + i, 1), 1);
    CU_ASSERT_EQUAL(read_n(r.server_end, got, n), n);
    CU_ASSERT_EQUAL(memcmp(got, wire, n), 0);
    /* The server's answer, unmasked. */
    CU_ASSERT_EQUAL(write(r.server_end, "\x81\x02ok", 4), 4);
    CU_ASSERT_EQUAL(read_n(r.client_end, got, 4), 4);
    CU_ASSERT_EQUAL(memcmp(got, "\x81\x02ok", 4), 0);
    finish(&r);
    CU_ASSERT_EQUAL(r.rc, 0);
    CU_ASSERT_EQUAL(r.res.close_code, 0);
    CU_ASSERT_EQUAL(r.res.bytes_up, n);
    CU_ASSERT_EQUAL(r.res.bytes_down, 4);
    CU_ASSERT_EQUAL(r.seen.count, 4);
    CU_ASSERT_EQUAL(r.seen.opcode[0], WSFRAME_PING);
    CU_ASSERT_STRING_EQUAL(r.seen.text[0], "ping");
    CU_ASSERT_EQUAL(r.seen.opcode[1], WSFRAME_TEXT);
    CU_ASSERT_STRING_EQUAL(r.seen.text[1], "frag-mented");
    CU_ASSERT_TRUE(r.seen.from_client[1]);
    CU_ASSERT_EQUAL(r.seen.opcode[2], WSFRAME_BINARY);
    CU_ASSERT_EQUAL(r.seen.opcode[3], WSFRAME_TEXT);
    CU_ASSERT_FALSE(r.seen.from_client[3]);
    CU_ASSERT_STRING_EQUAL(r.seen.text[3], "ok");
}

/* A Close frame as read by the side it went to: its code, and whether it
 * was masked (only frames to the server are). */
static int read_close(int fd, bool *is_masked)
{
    unsigned char b[64];

    if (read_n(fd, b, 2) != 2 || (b[0] & 0x0f) != WSFRAME_CLOSE)
        return -1;
    size_t len = b[1] & 0x7f;
    *is_masked = (b[1] & 0x80) != 0;
    size_t rest = len + (*is_masked ? 4 : 0);
    if (len < 2 || read_n(fd, b + 2, rest) != rest)
        return -1;
    unsigned char *p = b + 2 + (*is_masked ? 4 : 0);
    if (*is_masked)
        for (size_t i = 0; i < len; i++)
            p[i] ^= b[2 + (i & 3)];
    return p[0] << 8 | p[1];
}

static void test_a_masked_server_frame_ends_both_sides(void)
{
    struct relay_run r;
    unsigned char got[16];
    bool is_masked = false;

    start(&r);
    /* A good frame, then a masked one in the same write. */
    CU_ASSERT_EQUAL(write(r.server_end, "\x81\x02hi\x81\x82\x01\x02\x03\x04zz", 12), 12);
    CU_ASSERT_EQUAL(read_n(r.client_end, got, 4), 4);
    CU_ASSERT_EQUAL(memcmp(got, "\x81\x02hi", 4), 0);
    CU_ASSERT_EQUAL(read_close(r.client_end, &is_masked), WSFRAME_CLOSE_GOING_AWAY);
    CU_ASSERT_FALSE(is_masked);
    CU_ASSERT_EQUAL(read_close(r.server_end, &is_masked), WSFRAME_CLOSE_PROTOCOL_ERROR);
    CU_ASSERT_TRUE(is_masked);
    finish(&r);
    CU_ASSERT_EQUAL(r.rc, -1);
    CU_ASSERT_EQUAL(r.res.close_code, WSFRAME_CLOSE_PROTOCOL_ERROR);
    CU_ASSERT_FALSE(r.res.is_client_at_fault);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.res.error, "masked frame from the server"));
    CU_ASSERT_EQUAL(r.seen.count, 1);
}

static void test_no_close_lands_inside_a_frame(void)
{
    struct relay_run r;
    unsigned char got[64];
    bool is_masked;

    start(&r);
    /* The server is half-way through a frame to the client when the client
     * breaks the rules: the client gets no Close (it would land inside the
     * frame), the server gets 1001 after the client's good frame. */
    CU_ASSERT_EQUAL(write(r.server_end, "\x81\x10half", 6), 6);
    CU_ASSERT_EQUAL(read_n(r.client_end, got, 6), 6);
    unsigned char wire[32];
    size_t n = client_frame(wire, 0x81, "ok");
    memcpy(wire + n, "\x81\x02no", 4); /* unmasked */
    CU_ASSERT_EQUAL(write(r.client_end, wire, n + 4), (ssize_t)(n + 4));
    CU_ASSERT_EQUAL(read_n(r.server_end, got, n), n);
    CU_ASSERT_EQUAL(read_close(r.server_end, &is_masked), WSFRAME_CLOSE_GOING_AWAY);
    /* The relay ends by itself and closes both; the client read nothing
     * more than the half frame. */
    pthread_join(r.thread, NULL);
    CU_ASSERT_EQUAL(read(r.client_end, got, sizeof(got)), 0);
    close(r.client_end);
    close(r.server_end);
    CU_ASSERT_EQUAL(r.res.close_code, WSFRAME_CLOSE_PROTOCOL_ERROR);
    CU_ASSERT_TRUE(r.res.is_client_at_fault);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("wsrelay", NULL, NULL);
    CU_add_test(s, "bytes pass unchanged in any pieces", test_bytes_pass_unchanged_in_any_pieces);
    CU_add_test(s, "a masked server frame ends both sides",
                test_a_masked_server_frame_ends_both_sides);
    CU_add_test(s, "no close lands inside a frame", test_no_close_lands_inside_a_frame);
    return testutil_run();
}
