/* Unit tests for the WebSocket frame parser (src/wsframe.c). Every case is
 * fed whole, one byte at a time, and cut in two at every point: the result
 * must be the same. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wsframe.h"

#define MASK "\x01\x02\x03\x04"
#define NO_LIMIT ((uint64_t)0)

struct seen {
    int count;
    int opcode[8];
    bool compressed[8];
    size_t len[8];
    uint64_t total[8];
    unsigned frames[8];
    int close_code[8];
    char data[8][64];
};

static void on_message(void *arg, const struct wsframe_message *m)
{
    struct seen *s = arg;

    if (s->count >= 8)
        return;
    s->opcode[s->count] = m->opcode;
    s->compressed[s->count] = m->is_compressed;
    s->len[s->count] = m->len;
    s->total[s->count] = m->total_len;
    s->frames[s->count] = m->frames;
    s->close_code[s->count] = m->close_code;
    memcpy(s->data[s->count], m->data, m->len < 63 ? m->len : 63);
    s->count++;
}

struct frame_case {
    const char *name;
    bool is_from_client;
    bool allows_rsv1;
    const char *bytes;
    size_t len;
    size_t limit;
    uint64_t max_message;
    int close_code; /* 0: parses */
    int messages;   /* reported before the end or the failure */
    int opcode;     /* of the first message */
    const char *data;
    uint64_t total;
    unsigned frames;
};

#define B(s) s, sizeof(s) - 1

/* Client frames are masked with 01 02 03 04: "Hi" masked is 49 6b. */
static const struct frame_case cases[] = {
    {"server text", false, false, B("\x81\x05hello"), 64, 0, 0, 1, WSFRAME_TEXT, "hello", 5, 1},
    {"client masked text", true, false, B("\x81\x82" MASK "\x49\x6b"), 64, 0, 0, 1, WSFRAME_TEXT,
     "Hi", 2, 1},
    {"binary", false, false, B("\x82\x03\x00\xff\x10"), 64, 0, 0, 1, WSFRAME_BINARY, "\x00\xff\x10",
     3, 1},
    {"empty text", false, false, B("\x81\x00"), 64, 0, 0, 1, WSFRAME_TEXT, "", 0, 1},
    {"fragments join", false, false, B("\x01\x03hel\x00\x01l\x80\x01o"), 64, 0, 0, 1, WSFRAME_TEXT,
     "hello", 5, 3},
    {"ping inside fragments", false, false, B("\x01\x02he\x89\x01p\x80\x03llo"), 64, 0, 0, 2,
     WSFRAME_PING, "p", 1, 1},
    {"16-bit length", false, false,
     B("\x82\x7e\x00\x7e"
       "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
       "89012345678901234567890123456789012345"),
     8, 0, 0, 1, WSFRAME_BINARY, "01234567", 126, 1},
    {"utf-8 split across fragments", false, false, B("\x01\x01\xc3\x80\x01\xa9"), 64, 0, 0, 1,
     WSFRAME_TEXT, "\xc3\xa9", 2, 2},
    {"close with code and reason", false, false,
     B("\x88\x05\x03\xe8"
       "bye"),
     64, 0, 0, 1, WSFRAME_CLOSE,
     "\x03\xe8"
     "bye",
     5, 1},
    {"close without code", false, false, B("\x88\x00"), 64, 0, 0, 1, WSFRAME_CLOSE, "", 0, 1},
    {"pong", true, false, B("\x8a\x80" MASK), 64, 0, 0, 1, WSFRAME_PONG, "", 0, 1},
    {"compressed with rsv1", false, true, B("\xc1\x02\xf2\x00"), 64, 0, 0, 1, WSFRAME_TEXT,
     "\xf2\x00", 2, 1},

    {"unmasked client frame", true, false, B("\x81\x02Hi"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"masked server frame", false, false, B("\x81\x82" MASK "\x49\x6b"), 64, 0, 1002, 0, 0, NULL, 0,
     0},
    {"reserved opcode", false, false, B("\x83\x00"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"reserved control opcode", false, false, B("\x8b\x00"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"rsv2", false, false, B("\xa1\x00"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"rsv1 without deflate", false, false, B("\xc1\x00"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"rsv1 on a continuation", false, true,
     B("\x01\x01"
       "a\xc0\x01"
       "b"),
     64, 0, 1002, 0, 0, NULL, 0, 0},
    {"rsv1 on a ping", false, true, B("\xc9\x00"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"fragmented ping", false, false, B("\x09\x00"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"long ping", false, false, B("\x89\x7e\x00\x7e"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"continuation first", false, false,
     B("\x80\x01"
       "a"),
     64, 0, 1002, 0, 0, NULL, 0, 0},
    {"text inside a fragmented message", false, false,
     B("\x01\x01"
       "a\x81\x01"
       "b"),
     64, 0, 1002, 0, 0, NULL, 0, 0},
    {"64-bit length high bit", false, false, B("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x01"), 64, 0,
     1002, 0, 0, NULL, 0, 0},
    {"16-bit length not minimal", false, false, B("\x82\x7e\x00\x05"), 64, 0, 1002, 0, 0, NULL, 0,
     0},
    {"64-bit length not minimal", false, false, B("\x82\x7f\x00\x00\x00\x00\x00\x00\xff\xff"), 64,
     0, 1002, 0, 0, NULL, 0, 0},
    {"oversized message", false, false, B("\x82\x7f\x40\x00\x00\x00\x00\x00\x00\x00"), 64, 1 << 20,
     1009, 0, 0, NULL, 0, 0},
    {"oversized across fragments", false, false,
     B("\x02\x03"
       "abc\x80\x03"
       "def"),
     64, 5, 1009, 0, 0, NULL, 0, 0},
    {"bad utf-8", false, false, B("\x81\x02\xc3\x28"), 64, 0, 1007, 0, 0, NULL, 0, 0},
    {"surrogate in utf-8", false, false, B("\x81\x03\xed\xa0\x80"), 64, 0, 1007, 0, 0, NULL, 0, 0},
    {"overlong utf-8", false, false, B("\x81\x02\xc0\xaf"), 64, 0, 1007, 0, 0, NULL, 0, 0},
    {"text ends inside a sequence", false, false, B("\x81\x01\xc3"), 64, 0, 1007, 0, 0, NULL, 0, 0},
    {"close with one byte", false, false, B("\x88\x01\x03"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"close code 1005 sent", false, false, B("\x88\x02\x03\xed"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"close code 999", false, false, B("\x88\x02\x03\xe7"), 64, 0, 1002, 0, 0, NULL, 0, 0},
    {"close reason bad utf-8", false, false, B("\x88\x03\x03\xe8\xff"), 64, 0, 1007, 0, 0, NULL, 0,
     0},
    {"frame after close", false, false, B("\x88\x00\x81\x00"), 64, 0, 1002, 1, WSFRAME_CLOSE, "", 0,
     1},
};

/* Feeds c in pieces cut at cut1 and cut2 (each <= len); checks the result. */
static void run_case(const struct frame_case *c, size_t cut1, size_t cut2, bool bytewise)
{
    struct wsframe_parser p;
    struct seen s;
    int rc = 0;
    size_t at = 0, safe = 0, safe_total = 0;

    memset(&s, 0, sizeof(s));
    wsframe_init(&p, c->is_from_client, c->allows_rsv1, c->limit, c->max_message, on_message, &s);
    while (at < c->len && rc == 0) {
        size_t n = bytewise ? 1 : at < cut1 ? cut1 - at : at < cut2 ? cut2 - at : c->len - at;
        rc = wsframe_feed(&p, c->bytes + at, n, &safe);
        safe_total = at + safe;
        at += n;
    }
    if (c->close_code == 0) {
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_TRUE(wsframe_at_boundary(&p));
    } else {
        CU_ASSERT_EQUAL(rc, -1);
        CU_ASSERT_EQUAL(p.close_code, c->close_code);
        CU_ASSERT_TRUE(p.error[0] != '\0');
        CU_ASSERT_TRUE(safe_total <= c->len);
        /* Once failed, always failed. */
        CU_ASSERT_EQUAL(wsframe_feed(&p, "\x81\x00", 2, NULL), -1);
    }
    CU_ASSERT_EQUAL(s.count, c->messages);
    /* The first message reported is the one the case describes. */
    if (c->messages > 0 && c->data != NULL) {
        size_t want = c->total < c->limit ? (size_t)c->total : c->limit;
        CU_ASSERT_EQUAL(s.opcode[0], c->opcode);
        CU_ASSERT_EQUAL(s.len[0], want);
        CU_ASSERT_EQUAL(s.total[0], c->total);
        CU_ASSERT_EQUAL(s.frames[0], c->frames);
        CU_ASSERT_EQUAL(memcmp(s.data[0], c->data, want < 63 ? want : 63), 0);
    }
    wsframe_free(&p);
}

static void test_every_case_parses_the_same_in_any_pieces(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct frame_case *c = &cases[i];
        run_case(c, c->len, c->len, false);
        run_case(c, 0, 0, true);
        for (size_t cut = 1; cut < c->len; cut++)
            run_case(c, cut, c->len, false);
        for (size_t cut = 1; cut + 1 < c->len; cut++)
            run_case(c, cut, cut + 1, false);
    }
}

static void test_message_held_up_to_the_limit(void)
{
    struct wsframe_parser p;
    struct seen s;
    unsigned char frame[4 + 300];

    memset(&s, 0, sizeof(s));
    frame[0] = 0x82;
    frame[1] = 126;
    frame[2] = 300 >> 8;
    frame[3] = 300 & 0xff;
    for (int i = 0; i < 300; i++)
        frame[4 + i] = (unsigned char)i;
    wsframe_init(&p, false, false, 10, 0, on_message, &s);
    CU_ASSERT_EQUAL(wsframe_feed(&p, frame, sizeof(frame), NULL), 0);
    CU_ASSERT_EQUAL(s.count, 1);
    CU_ASSERT_EQUAL(s.len[0], 10);
    CU_ASSERT_EQUAL(s.total[0], 300);
    CU_ASSERT_EQUAL(memcmp(s.data[0], frame + 4, 10), 0);
    CU_ASSERT_TRUE(p.message_cap <= 10);
    wsframe_free(&p);
}

static void test_close_code_is_reported(void)
{
    struct wsframe_parser p;
    struct seen s;

    memset(&s, 0, sizeof(s));
    wsframe_init(&p, false, false, 64, 0, on_message, &s);
    CU_ASSERT_EQUAL(wsframe_feed(&p, "\x88\x02\x0f\xa0", 4, NULL), 0); /* 4000 */
    CU_ASSERT_EQUAL(s.close_code[0], 4000);
    wsframe_free(&p);
    memset(&s, 0, sizeof(s));
    wsframe_init(&p, false, false, 64, 0, on_message, &s);
    CU_ASSERT_EQUAL(wsframe_feed(&p, "\x88\x00", 2, NULL), 0);
    CU_ASSERT_EQUAL(s.close_code[0], 1005);
    wsframe_free(&p);
}

static void test_safe_length_stops_before_the_bad_frame(void)
{
    struct wsframe_parser p;
    size_t safe = 99;

    wsframe_init(&p, false, false, 64, 0, NULL, NULL);
    /* A good frame, then a masked server frame. */
    CU_ASSERT_EQUAL(wsframe_feed(&p,
                                 "\x81\x01"
                                 "a\x81\x81",
                                 5, &safe),
                    -1);
    CU_ASSERT_EQUAL(safe, 3);
    wsframe_free(&p);
    /* The bad frame began in an earlier piece. */
    wsframe_init(&p, false, false, 64, 0, NULL, NULL);
    CU_ASSERT_EQUAL(wsframe_feed(&p, "\x81", 1, &safe), 0);
    CU_ASSERT_EQUAL(safe, 1);
    CU_ASSERT_FALSE(wsframe_at_boundary(&p));
    CU_ASSERT_EQUAL(wsframe_feed(&p, "\x81", 1, &safe), -1);
    CU_ASSERT_EQUAL(safe, 0);
    wsframe_free(&p);
}

static void test_close_frame_round_trips_both_ways(void)
{
    unsigned char out[WSFRAME_CLOSE_FRAME_BYTES];
    const unsigned char key[4] = {9, 8, 7, 6};
    struct wsframe_parser p;
    struct seen s;
    char reason[200];

    memset(reason, 'x', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    for (int masked = 0; masked < 2; masked++) {
        size_t n = wsframe_close_frame(out, 1002, masked ? "bad frame" : reason, masked, key);
        CU_ASSERT_TRUE(n <= WSFRAME_CLOSE_FRAME_BYTES);
        memset(&s, 0, sizeof(s));
        wsframe_init(&p, masked, false, 64, 0, on_message, &s);
        CU_ASSERT_EQUAL(wsframe_feed(&p, out, n, NULL), 0);
        CU_ASSERT_EQUAL(s.count, 1);
        CU_ASSERT_EQUAL(s.opcode[0], WSFRAME_CLOSE);
        CU_ASSERT_EQUAL(s.close_code[0], 1002);
        CU_ASSERT_EQUAL(s.total[0], masked ? 2 + 9 : 125);
        wsframe_free(&p);
    }
    /* A reason is never cut inside a character. */
    CU_ASSERT_EQUAL(wsframe_close_frame(out, 1000, NULL, false, key), 4);
}

static void test_utf8_check(void)
{
    CU_ASSERT_TRUE(wsframe_is_utf8("", 0));
    CU_ASSERT_TRUE(wsframe_is_utf8("caf\xc3\xa9 \xf0\x9f\x98\x80", 10));
    CU_ASSERT_TRUE(wsframe_is_utf8("\xf4\x8f\xbf\xbf", 4));
    CU_ASSERT_FALSE(wsframe_is_utf8("\xf4\x90\x80\x80", 4));
    CU_ASSERT_FALSE(wsframe_is_utf8("\xe0\x80\xaf", 3));
    CU_ASSERT_FALSE(wsframe_is_utf8("\xf5\x80\x80\x80", 4));
    CU_ASSERT_FALSE(wsframe_is_utf8("\x80", 1));
    CU_ASSERT_FALSE(wsframe_is_utf8("\xe2\x82", 2));
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("wsframe", NULL, NULL);
    CU_add_test(s, "every case parses the same in any pieces",
                test_every_case_parses_the_same_in_any_pieces);
    CU_add_test(s, "message held up to the limit", test_message_held_up_to_the_limit);
    CU_add_test(s, "close code is reported", test_close_code_is_reported);
    CU_add_test(s, "safe length stops before the bad frame",
                test_safe_length_stops_before_the_bad_frame);
    CU_add_test(s, "close frame round trips both ways", test_close_frame_round_trips_both_ways);
    CU_add_test(s, "utf-8 check", test_utf8_check);
    return testutil_run();
}
