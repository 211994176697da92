/*
 * libFuzzer target for the request-target parsers of http1: absolute-form
 * ("http://host:port/path", what an explicit proxy client sends) and
 * authority-form ("host:port", CONNECT). Both read bytes from any client.
 * Checked after every call: a target that parses has a valid host that
 * fits, a port, and an authority and path that lie inside the input.
 *
 * fuzz-sources: src/http1.c src/message.c
 *
 * The first byte selects the parser: even absolute-form, odd authority-form
 * (bit 1 then says whether a default port is allowed).
 */
#include "http1.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static bool is_inside(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && p + n <= base + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in;
    size_t len;

    if (size < 1)
        return 0;
    len = size - 1;
    /* An exact-size heap copy, so that ASan sees any read past len. */
    in = malloc(len > 0 ? len : 1);
    CHECK(in != NULL);
    memcpy(in, data + 1, len);
    if ((data[0] & 1) == 0) {
        struct http1_absolute_target t;

        if (http1_parse_absolute_target(in, len, &t) == 0) {
            CHECK(http1_is_valid_host(t.host));
            CHECK(strlen(t.host) < sizeof(t.host));
            CHECK(t.port != 0);
            CHECK(is_inside(t.authority, t.authority_len, in, len));
            CHECK(t.authority_len > 0);
            CHECK(is_inside(t.path, t.path_len, in, len));
            CHECK(t.path_len == 0 || t.path[0] != '#');
            CHECK(memchr(t.authority, '@', t.authority_len) == NULL);
        }
    } else {
        char host[HTTP1_MAX_HOST_BYTES];
        uint16_t port = 0;
        uint16_t default_port = (data[0] & 2) ? 443 : 0;

        if (http1_parse_authority(in, len, default_port, host, &port) == 0) {
            CHECK(http1_is_valid_host(host));
            CHECK(port != 0);
            CHECK(default_port != 0 || memchr(in, ':', len) != NULL);
        }
    }
    free(in);
    return 0;
}
