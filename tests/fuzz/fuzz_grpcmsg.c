/*
 * libFuzzer target for grpcmsg: the message splitter over captured gRPC
 * bodies and the status reader over trailer values, with the invariants the
 * dashboard relies on (every message inside the body, only the last one
 * cut, lengths as the prefixes say).
 *
 * fuzz-sources: src/grpcmsg.c src/message.c
 */
#include "grpcmsg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct grpcmsg m[64];
    uint8_t *body = malloc(size > 0 ? size : 1);
    size_t rest = 0;

    CHECK(body != NULL);
    if (size > 0)
        memcpy(body, data, size);
    size_t n = grpcmsg_split(body, size, m, 64, &rest);
    CHECK(n <= 64 && rest < 5);
    for (size_t i = 0; i < n; i++) {
        CHECK(m[i].data >= body + 5 && m[i].data + m[i].captured <= body + size);
        CHECK(m[i].captured <= m[i].length);
        CHECK(m[i].captured == m[i].length || i == n - 1);
    }
    /* The same bytes as a grpc-status and a grpc-message value. */
    struct message_field items[] = {{"grpc-status", 11, (const char *)body, size < 12 ? size : 12},
                                    {"grpc-message", 12, (const char *)body, size}};
    struct message_fields fields = {items, 2};
    char why[300];
    int status = -1;
    if (grpcmsg_failed(&fields, &status, why, sizeof(why))) {
        CHECK(status > 0);
        CHECK(strlen(why) < sizeof(why));
        for (const char *p = why; *p; p++)
            CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    }
    free(body);
    return 0;
}
