/*
 * libFuzzer target for http1codec: what the proxy writes for the next hop
 * from a head it parsed. A request or response head the parser accepted,
 * read as a message and written out again, must parse back as the same
 * message (method, target, status, body framing and length, no field the
 * proxy must not forward), and trailer sections split into fields that lie
 * inside the section.
 *
 * fuzz-sources: src/http1codec.c src/http1.c src/message.c src/buf.c src/stream.c src/errmsg.c
 *
 * The first byte selects what the rest is: 0 request, 1 response (bit 2:
 * to a HEAD request; bit 3: for an HTTP/1.0 client), 2 a trailer section.
 */
#include "http1codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static char *copy_of(const uint8_t *data, size_t len)
{
    char *p = malloc(len > 0 ? len : 1);

    CHECK(p != NULL);
    if (len > 0)
        memcpy(p, data, len);
    return p;
}

/* No field that belongs to one hop survives into the written head, except
 * those the codec declares itself. */
static void check_no_hop_fields(const struct http1_head *in, const struct http1_head *out)
{
    for (size_t i = 0; i < out->num_headers; i++) {
        const struct message_field *f = &out->headers[i];
        struct message_fields all = {in->headers, in->num_headers};
        if (message_field_is(f, "Connection") || message_field_is(f, "Upgrade") ||
            message_field_is(f, "Transfer-Encoding") || message_field_is(f, "Via") ||
            message_field_is(f, "Content-Length") || message_field_is(f, "Host"))
            continue;
        CHECK(!message_is_hop_by_hop(&all, f));
    }
}

static void fuzz_request(const uint8_t *data, size_t size)
{
    static struct http1_head h, back;
    struct http1_error err = {0, NULL};
    struct message m;
    char *buf = copy_of(data, size);
    char *out;
    size_t out_len = 0;

    /* The written head adds Host and Via: at the field limit it is
     * longer than our own parser would take, as it was before. */
    if (http1_parse_request(buf, size, &h, &err) <= 0 || h.num_headers + 2 > HTTP1_MAX_HEADERS)
        goto done;
    http1codec_view(&h, &m);
    if (message_find(&m, "Host") == NULL) {
        m.authority = "example.test";
        m.authority_len = 12;
    }
    out = http1codec_request_head(&m, &out_len);
    if (out == NULL)
        goto done;
    CHECK(http1_parse_request(out, out_len, &back, &err) == (int)out_len);
    CHECK(back.method_len == h.method_len && memcmp(back.method, h.method, h.method_len) == 0);
    CHECK(back.target_len == h.target_len && memcmp(back.target, h.target, h.target_len) == 0);
    CHECK(back.framing == h.framing);
    CHECK(back.framing != HTTP1_BODY_LENGTH || back.content_length == h.content_length);
    CHECK(back.is_upgrade == h.is_upgrade);
    CHECK(!back.expect_continue);
    check_no_hop_fields(&h, &back);
    free(out);
done:
    free(buf);
}

static void fuzz_response(const uint8_t *data, size_t size, uint8_t mode)
{
    static struct http1_head h, back;
    struct http1_error err = {0, NULL};
    struct message m;
    const char *method = (mode & 4) ? "HEAD" : "GET";
    int client_minor = (mode & 8) ? 0 : 1;
    bool keep = true, is_chunked = false;
    char *buf = copy_of(data, size);
    char *out;
    size_t out_len = 0;

    if (http1_parse_response(buf, size, method, strlen(method), &h, &err) <= 0 || h.status < 200 ||
        h.num_headers + 4 > HTTP1_MAX_HEADERS)
        goto done;
    http1codec_view(&h, &m);
    out = http1codec_response_head(&m, client_minor, &keep, &is_chunked, &out_len);
    if (out == NULL)
        goto done;
    CHECK(http1_parse_response(out, out_len, method, strlen(method), &back, &err) == (int)out_len);
    CHECK(back.status == h.status);
    if (h.status != 101) {
        /* A stream of unknown length is chunked to 1.1 and ends by the close for 1.0. */
        if (h.framing == HTTP1_BODY_CHUNKED || h.framing == HTTP1_BODY_UNTIL_CLOSE)
            CHECK(client_minor == 1 ? (is_chunked && back.framing == HTTP1_BODY_CHUNKED)
                                    : (!keep && back.framing == HTTP1_BODY_UNTIL_CLOSE));
        else
            CHECK(!is_chunked && back.framing == h.framing);
        CHECK(back.framing != HTTP1_BODY_LENGTH || back.content_length == h.content_length);
    }
    check_no_hop_fields(&h, &back);
    free(out);
done:
    free(buf);
}

static void fuzz_trailers(const uint8_t *data, size_t size)
{
    struct message_field fields[64];
    char *buf = copy_of(data, size);
    size_t n = http1codec_split_fields(buf, size, fields, 64);

    CHECK(n <= 64);
    for (size_t i = 0; i < n; i++) {
        CHECK(fields[i].name >= buf && fields[i].name + fields[i].name_len <= buf + size);
        CHECK(fields[i].value >= buf && fields[i].value + fields[i].value_len <= buf + size);
        CHECK(fields[i].name_len > 0 && memchr(fields[i].name, '\n', fields[i].name_len) == NULL);
        CHECK(memchr(fields[i].value, '\n', fields[i].value_len) == NULL);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t mode;

    if (size == 0)
        return 0;
    mode = data[0];
    data++;
    size--;
    switch (mode & 3) {
    case 0:
        fuzz_request(data, size);
        break;
    case 1:
        fuzz_response(data, size, mode);
        break;
    default:
        fuzz_trailers(data, size);
        break;
    }
    return 0;
}
