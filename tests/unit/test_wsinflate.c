/* Unit tests for permessage-deflate decoding (src/wsinflate.c) and the
 * terms read from a 101 response. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "testutil.h"
#include "wsinflate.h"
#include "wsrelay.h"

/* One sender's deflate stream (RFC 7692 7.2.1): each message flushed and
 * its 00 00 ff ff tail removed; is_fresh starts a new window. */
struct sender {
    z_stream z;
};

static void sender_init(struct sender *s)
{
    memset(s, 0, sizeof(*s));
    CU_ASSERT_FATAL(deflateInit2(&s->z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
}

static size_t sender_message(struct sender *s, const void *in, size_t len, bool is_fresh,
                             unsigned char *out, size_t cap)
{
    if (is_fresh)
        deflateReset(&s->z);
    s->z.next_in = (unsigned char *)in;
    s->z.avail_in = (uInt)len;
    s->z.next_out = out;
    s->z.avail_out = (uInt)cap;
    CU_ASSERT_FATAL(deflate(&s->z, Z_SYNC_FLUSH) == Z_OK);
    CU_ASSERT_FATAL(s->z.avail_in == 0);
    size_t n = cap - s->z.avail_out;
    CU_ASSERT_FATAL(n >= 4 && memcmp(out + n - 4, "\x00\x00\xff\xff", 4) == 0);
    return n - 4;
}

static void test_messages_share_the_window(void)
{
    struct sender s;
    struct wsinflate w;
    unsigned char buf[256];
    const unsigned char *out;
    size_t out_len, n;
    bool is_truncated;
    const char *text = "the same words, the same words, again";

    sender_init(&s);
    wsinflate_init(&w, false, 1024);
    for (int i = 0; i < 3; i++) {
        n = sender_message(&s, text, strlen(text), false, buf, sizeof(buf));
        CU_ASSERT_EQUAL(wsinflate_message(&w, buf, n, true, &out, &out_len, &is_truncated), 0);
        CU_ASSERT_EQUAL(out_len, strlen(text));
        CU_ASSERT_FALSE(is_truncated);
        CU_ASSERT_EQUAL(memcmp(out, text, out_len), 0);
    }
    /* Later messages lean on the window: they are short. */
    CU_ASSERT_TRUE(n < strlen(text) / 2);
    wsinflate_free(&w);
    deflateEnd(&s.z);
}

static void test_no_context_takeover_resets_each_message(void)
{
    struct sender s;
    struct wsinflate w;
    unsigned char buf[256];
    const unsigned char *out;
    size_t out_len, n;
    bool is_truncated;

    sender_init(&s);
    wsinflate_init(&w, true, 1024);
    for (int i = 0; i < 3; i++) {
        n = sender_message(&s, "hello hello hello", 17, true, buf, sizeof(buf));
        CU_ASSERT_EQUAL(wsinflate_message(&w, buf, n, true, &out, &out_len, &is_truncated), 0);
        CU_ASSERT_EQUAL(out_len, 17);
        CU_ASSERT_EQUAL(memcmp(out, "hello hello hello", 17), 0);
    }
    wsinflate_free(&w);
    deflateEnd(&s.z);
}

static void test_a_bomb_stops_at_the_limit(void)
{
    struct sender s;
    struct wsinflate w;
    size_t big = 8 * 1024 * 1024;
    unsigned char *zeros = calloc(1, big);
    unsigned char *buf = malloc(64 * 1024);
    const unsigned char *out;
    size_t out_len, n;
    bool is_truncated;

    CU_ASSERT_FATAL(zeros != NULL && buf != NULL);
    sender_init(&s);
    n = sender_message(&s, zeros, big, true, buf, 64 * 1024);
    CU_ASSERT_TRUE(n < 16 * 1024);
    wsinflate_init(&w, false, 4096);
    CU_ASSERT_EQUAL(wsinflate_message(&w, buf, n, true, &out, &out_len, &is_truncated), 0);
    CU_ASSERT_EQUAL(out_len, 4096);
    CU_ASSERT_TRUE(is_truncated);
    CU_ASSERT_TRUE(w.out_cap <= 4096);
    /* The window is behind the sender's now: no more guesses. */
    CU_ASSERT_EQUAL(wsinflate_message(&w, buf, n, true, &out, &out_len, &is_truncated), -1);
    wsinflate_free(&w);
    /* Without context takeover the next message decodes again. */
    wsinflate_init(&w, true, 4096);
    CU_ASSERT_EQUAL(wsinflate_message(&w, buf, n, true, &out, &out_len, &is_truncated), 0);
    CU_ASSERT_TRUE(is_truncated);
    CU_ASSERT_EQUAL(wsinflate_message(&w, buf, n, true, &out, &out_len, &is_truncated), 0);
    CU_ASSERT_EQUAL(out_len, 4096);
    wsinflate_free(&w);
    deflateEnd(&s.z);
    free(zeros);
    free(buf);
}

static void test_garbage_is_refused(void)
{
    struct wsinflate w;
    const unsigned char *out;
    size_t out_len;
    bool is_truncated;

    wsinflate_init(&w, false, 1024);
    CU_ASSERT_EQUAL(wsinflate_message(&w, (const unsigned char *)"\xff\xff\xff\xff", 4, true, &out,
                                      &out_len, &is_truncated),
                    -1);
    wsinflate_free(&w);
}

/* A 101 response with the given fields ("Name", "value" pairs). */
static void response(struct message *m, struct message_field *items, const char *const *pairs,
                     size_t count)
{
    memset(m, 0, sizeof(*m));
    memset(items, 0, count * sizeof(*items));
    m->status = 101;
    for (size_t i = 0; i < count; i++) {
        items[i].name = pairs[2 * i];
        items[i].name_len = strlen(pairs[2 * i]);
        items[i].value = pairs[2 * i + 1];
        items[i].value_len = strlen(pairs[2 * i + 1]);
    }
    m->fields.items = items;
    m->fields.count = count;
}

static void test_terms_are_read_from_the_101(void)
{
    struct message m;
    struct message_field items[4];
    struct wsinflate_params p;
    const char *deflate[] = {"Upgrade", "WebSocket", "Sec-WebSocket-Extensions",
                             "permessage-deflate; server_no_context_takeover; "
                             "client_max_window_bits=10"};
    const char *both[] = {"Upgrade", "websocket", "sec-websocket-extensions",
                          "x-other; client_no_context_takeover, permessage-deflate; "
                          "client_no_context_takeover"};
    const char *other[] = {"Upgrade", "h2c", "Sec-WebSocket-Extensions", "permessage-deflate"};
    const char *none[] = {"Upgrade", "foo, websocket"};

    response(&m, items, deflate, 2);
    CU_ASSERT_TRUE(wsrelay_is_websocket(&m, &p));
    CU_ASSERT_TRUE(p.is_deflate);
    CU_ASSERT_TRUE(p.server_no_context_takeover);
    CU_ASSERT_FALSE(p.client_no_context_takeover);

    response(&m, items, both, 2);
    CU_ASSERT_TRUE(wsrelay_is_websocket(&m, &p));
    CU_ASSERT_TRUE(p.is_deflate);
    CU_ASSERT_TRUE(p.client_no_context_takeover);
    CU_ASSERT_FALSE(p.server_no_context_takeover);

    response(&m, items, other, 2);
    CU_ASSERT_FALSE(wsrelay_is_websocket(&m, &p));

    response(&m, items, none, 1);
    CU_ASSERT_TRUE(wsrelay_is_websocket(&m, &p));
    CU_ASSERT_FALSE(p.is_deflate);
    m.status = 200;
    CU_ASSERT_FALSE(wsrelay_is_websocket(&m, &p));
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("wsinflate", NULL, NULL);
    CU_add_test(s, "messages share the window", test_messages_share_the_window);
    CU_add_test(s, "no context takeover resets each message",
                test_no_context_takeover_resets_each_message);
    CU_add_test(s, "a bomb stops at the limit", test_a_bomb_stops_at_the_limit);
    CU_add_test(s, "garbage is refused", test_garbage_is_refused);
    CU_add_test(s, "terms are read from the 101", test_terms_are_read_from_the_101);
    return testutil_run();
}
