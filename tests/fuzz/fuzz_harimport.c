/*
 * libFuzzer target for harimport: a HAR document uploaded to the
 * dashboard (POST /api/har) read into flows. Checked for every flow made:
 * it is marked imported, its scheme is http or https, its host, method and
 * target are non-empty, its header sections hold no bare CR or LF inside a
 * line, and its bodies are within the limit. The counts add up.
 *
 * fuzz-sources: src/harimport.c src/flow.c src/codec.c src/errmsg.c
 * fuzz-libs: jansson zlib libbrotlidec libbrotlienc libzstd
 */
#include "harimport.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BODY_LIMIT 4096

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* Every line ends in CRLF and holds no other CR or LF. */
static void check_section(const char *text)
{
    const char *p = text;

    if (text == NULL)
        return;
    while (*p != '\0') {
        size_t line = strcspn(p, "\r\n");

        CHECK(p[line] == '\r' && p[line + 1] == '\n');
        CHECK(line > 0);
        p += line + 2;
    }
}

static int check_flow(void *arg, struct flow *f)
{
    size_t *count = arg;

    CHECK(f->is_imported);
    CHECK(strcmp(f->scheme, "http") == 0 || strcmp(f->scheme, "https") == 0);
    CHECK(f->host[0] != '\0' && f->method[0] != '\0');
    CHECK(f->target != NULL && f->target[0] == '/');
    CHECK(strpbrk(f->target, " \r\n") == NULL);
    check_section(f->request_headers);
    check_section(f->response_headers);
    CHECK(f->request_body.len <= BODY_LIMIT && f->response_body.len <= BODY_LIMIT);
    CHECK(f->status >= 0 && f->status <= 999);
    (*count)++;
    flow_free(f);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct harimport_result result;
    size_t count = 0;
    char err[256];

    if (size > 1 << 20)
        return 0;
    if (harimport_parse((const char *)data, size, BODY_LIMIT, check_flow, &count, &result, err,
                        sizeof(err)) == 0) {
        CHECK(result.imported == count);
        CHECK(result.skipped == 0 || result.first_skipped[0] != '\0');
    } else {
        CHECK(err[0] != '\0');
    }
    return 0;
}
