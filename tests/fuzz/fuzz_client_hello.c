/*
 * libFuzzer target for the ClientHello reader.
 * fuzz-sources: src/tlsserver.c src/stream.c src/errmsg.c
 *
 * Besides ASan/UBSan catching over-reads, it traps when a result breaks the
 * contract callers rely on: the SNI is a NUL-terminated, lowercase host name
 * shorter than 256 bytes, the ALPN list is within bounds and every entry is
 * a non-empty string, the reader is deterministic, and a complete hello
 * always passes the cheap tlsserver_looks_like_tls() test.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tlsserver.h"

static void check_host_name(const struct client_hello *ch)
{
    const char *end = memchr(ch->sni, '\0', sizeof ch->sni);
    size_t n, i;

    if (end == NULL)
        __builtin_trap();
    n = (size_t)(end - ch->sni);
    if (ch->has_sni != (n > 0) || n >= 256)
        __builtin_trap();
    for (i = 0; i < n; i++) {
        char c = ch->sni[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            __builtin_trap();
    }
    if (n > 0 && (ch->sni[0] == '.' || ch->sni[n - 1] == '.' || strstr(ch->sni, "..") != NULL))
        __builtin_trap();
}

static void check_alpn(const struct client_hello *ch)
{
    size_t i;

    if (ch->alpn_count > TLSSERVER_MAX_ALPN)
        __builtin_trap();
    for (i = 0; i < ch->alpn_count; i++) {
        const char *end = memchr(ch->alpn[i], '\0', sizeof ch->alpn[i]);

        if (end == NULL || end == ch->alpn[i])
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct client_hello first, second;
    enum tlsserver_hello_result r = tlsserver_parse_client_hello(data, size, &first);

    if (r != TLSSERVER_HELLO_COMPLETE && r != TLSSERVER_HELLO_INCOMPLETE &&
        r != TLSSERVER_HELLO_NOT_TLS && r != TLSSERVER_HELLO_MALFORMED &&
        r != TLSSERVER_HELLO_TOO_LARGE)
        __builtin_trap();
    if (tlsserver_parse_client_hello(data, size, &second) != r)
        __builtin_trap();
    if (r == TLSSERVER_HELLO_COMPLETE) {
        check_host_name(&first);
        check_alpn(&first);
        if (memcmp(&first, &second, sizeof first) != 0)
            __builtin_trap();
        if (!tlsserver_looks_like_tls(data, size))
            __builtin_trap();
    }
    (void)tlsserver_looks_like_tls(data, size);
    return 0;
}
