/*
 * libFuzzer target for the SOCKS5 handshake parser: every byte of it comes
 * from a client of a --socks5 listener before it proved anything. The input
 * is fed as the listener reads it, exactly the bytes each call asks for.
 * Checked after every call: more is asked for only beyond what was given
 * and never past the longest message, and a parsed request has a host that
 * is printable text and a port.
 *
 * fuzz-sources: src/socks5.c
 *
 * The first byte selects the message: 0 greeting, 1 RFC 1929, 2 request.
 */
#include "socks5.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static enum socks5_parse parse(int which, const unsigned char *b, size_t n, size_t *need)
{
    struct socks5_greeting g;
    struct socks5_userpass up;
    struct socks5_request r;
    enum socks5_parse res;

    if (which == 0)
        return socks5_parse_greeting(b, n, &g, need);
    if (which == 1) {
        res = socks5_parse_userpass(b, n, &up, need);
        if (res == SOCKS5_OK)
            CHECK(up.user >= b && up.pass + up.pass_len <= b + n && up.user_len > 0);
        return res;
    }
    res = socks5_parse_request(b, n, &r, need);
    if (res == SOCKS5_OK) {
        size_t len = strlen(r.host);
        CHECK(len > 0 && len < sizeof(r.host) && r.port != 0);
        for (size_t i = 0; i < len; i++)
            CHECK(r.host[i] > 0x20 && r.host[i] < 0x7f);
    }
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *in;
    size_t have = 0, need = 0, len;
    enum socks5_parse r;
    int which;

    if (size < 1)
        return 0;
    which = data[0] % 3;
    len = size - 1;
    in = malloc(len > 0 ? len : 1);
    CHECK(in != NULL);
    memcpy(in, data + 1, len);
    for (;;) {
        r = parse(which, in, have, &need);
        if (r != SOCKS5_MORE)
            break;
        CHECK(need > have && need <= SOCKS5_MAX_MESSAGE_BYTES);
        if (need > len)
            break;
        have = need;
    }
    CHECK(r != SOCKS5_OK || need == have);
    free(in);
    return 0;
}
