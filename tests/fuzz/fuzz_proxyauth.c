/*
 * libFuzzer target for the Proxy-Authorization reader of proxyauth: the
 * field value comes from any client of the explicit proxy, before it has
 * proved anything. Checked after every call: the strict base64 decoder
 * never writes past its buffer (ASan) and returns a length that fits, and
 * only the one accepted credential passes.
 *
 * fuzz-sources: src/proxyauth.c src/keyfile.c src/errmsg.c
 */
#include "proxyauth.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static const char accepted[] = "Basic YWxpY2U6czNjcmV0"; /* alice:s3cret */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct proxyauth *auth;
    unsigned char out[64];
    char err[128];
    char *in;
    long n;

    if (auth == NULL && proxyauth_new("alice:s3cret", &auth, err, sizeof(err)) < 0)
        __builtin_trap();
    /* An exact-size heap copy, so that ASan sees any read past size. */
    in = malloc(size > 0 ? size : 1);
    CHECK(in != NULL);
    memcpy(in, data, size);
    if (proxyauth_check_basic(auth, in, size)) {
        /* "Basic" in any case, then blanks, then the one credential. */
        const char *b64 = memchr(in, 'Y', size);
        CHECK(b64 != NULL && (size_t)(in + size - b64) == strlen(accepted) - 6);
        CHECK(memcmp(b64, accepted + 6, strlen(accepted) - 6) == 0);
    }
    n = proxyauth_base64_decode(in, size, out, sizeof(out));
    CHECK(n >= -1 && n <= (long)sizeof(out));
    CHECK(n < 0 || (size_t)n <= size / 4 * 3);
    free(in);
    return 0;
}
