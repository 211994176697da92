/*
 * libFuzzer target for the WebSocket frame parser: every byte of it comes
 * from a client or an origin after a 101. The input is parsed twice, whole
 * and cut into pieces whose sizes the input chooses, and the two runs must
 * agree on every message reported (opcode, sizes, a digest of the bytes) and
 * on how it ended. Checked on every message: held bytes within the whole
 * size (and the limit, for data messages), control payloads within 125 bytes, text held whole is
 * UTF-8; on failure a close code RFC 6455 names and a safe length within
 * what was fed.
 *
 * fuzz-sources: src/wsframe.c
 *
 * Byte 0: bit 0 the side (client), bit 1 permessage-deflate, bits 2-7 the
 * limit. Byte 1: the piece sizes' seed.
 */
#include "wsframe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

struct digest {
    uint64_t count;
    uint64_t hash;
    size_t limit;
};

static void on_message(void *arg, const struct wsframe_message *m)
{
    struct digest *d = arg;

    CHECK(m->len <= m->total_len);
    CHECK(m->data != NULL || m->len == 0);
    /* Control payloads are held whole; data messages up to the limit. */
    if (m->opcode == WSFRAME_CLOSE || m->opcode == WSFRAME_PING || m->opcode == WSFRAME_PONG)
        CHECK(m->total_len <= WSFRAME_MAX_CONTROL_BYTES && m->len == m->total_len);
    else
        CHECK((m->opcode == WSFRAME_TEXT || m->opcode == WSFRAME_BINARY) && m->len <= d->limit);
    if (m->opcode == WSFRAME_TEXT && !m->is_compressed && m->len == m->total_len)
        CHECK(wsframe_is_utf8(m->data, m->len));
    d->count++;
    d->hash = d->hash * 1099511628211u ^ (uint64_t)m->opcode ^ m->total_len << 8 ^ m->len << 32;
    for (size_t i = 0; i < m->len; i++)
        d->hash = (d->hash ^ m->data[i]) * 1099511628211u;
}

static int run(const uint8_t *data, size_t size, uint8_t mode, uint8_t seed, bool is_whole,
               struct digest *d, int *code)
{
    struct wsframe_parser p;
    size_t at = 0;
    int rc = 0;
    uint32_t x = seed * 2654435761u + 1;

    wsframe_init(&p, mode & 1, (mode & 2) != 0, d->limit, 1u << 20, on_message, d);
    while (at < size && rc == 0) {
        size_t n = size - at;
        size_t safe = 0;
        if (!is_whole) {
            x = x * 1103515245u + 12345u;
            n = 1 + (x >> 16) % 17;
            if (n > size - at)
                n = size - at;
        }
        rc = wsframe_feed(&p, data + at, n, &safe);
        CHECK(safe <= n);
        CHECK(rc == 0 ? safe == n : 1);
        at += n;
    }
    *code = p.close_code;
    if (rc < 0)
        CHECK(p.close_code == 1002 || p.close_code == 1007 || p.close_code == 1009);
    else
        CHECK(p.close_code == 0);
    wsframe_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct digest a = {0}, b = {0};
    int code_a = 0, code_b = 0;

    if (size < 2)
        return 0;
    a.limit = b.limit = (size_t)(data[0] >> 2) * 3;
    int ra = run(data + 2, size - 2, data[0], data[1], true, &a, &code_a);
    int rb = run(data + 2, size - 2, data[0], data[1], false, &b, &code_b);
    CHECK(ra == rb && code_a == code_b);
    CHECK(a.count == b.count && a.hash == b.hash);
    return 0;
}
