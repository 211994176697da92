/*
 * libFuzzer target for h1toh2: the glue between an HTTP/1.1 client's
 * exchange and an nghttp2 client session on the origin connection. The
 * input is split in two: the request body as the client frames it
 * (content-length or chunked) and the bytes an HTTP/2 origin sends (its
 * SETTINGS, HEADERS, DATA, trailers, resets, GOAWAY in whatever order and
 * content the fuzzer finds), each written into a socket pair before the
 * exchange runs on them. Up to two requests go over the connection, as a
 * kept-alive client's would. Each must end without a crash, a leak or a
 * hang, and what reaches the capture hooks must agree with the result: a
 * response head at most once and before any body byte, the body bytes
 * counted as the result says, a status only with a head.
 *
 * Rules are stubbed (they have tests of their own): the glue is what is
 * under test, buffering for the body rules included.
 *
 * fuzz-sources: src/h1toh2.c src/message.c src/log.c src/stream.c src/errmsg.c
 * fuzz-sources: src/stacktrim.c src/http1.c src/http1codec.c src/buf.c
 * fuzz-sources: src/grpcmsg.c
 * fuzz-libs: libnghttp2
 *
 * Input: first byte = the share of the rest (in 256ths) that is the
 * client's request body; second byte: bit 0 chunked (else content-length,
 * the body's length), bit 1 a HEAD request without a body, bit 2 an
 * HTTP/1.0 client, bit 3 body rules that want every body (an odd-sized one
 * is rewritten), the top four bits their limit in kB. The origin sends the
 * remainder.
 */
#include "h1toh2.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int exchange_rewrite_head(const struct exchange_rewrite *rw, const struct message *in,
                          struct message *out)
{
    (void)rw;
    (void)in;
    (void)out;
    return 0;
}

int exchange_rewrite_body(const struct exchange_rewrite *rw, const char *content_encoding,
                          const unsigned char *raw, size_t raw_len,
                          struct exchange_body_rewrite *out)
{
    (void)rw;
    (void)content_encoding;
    memset(out, 0, sizeof(*out));
    out->plain = raw;
    out->plain_len = raw_len;
    /* An odd-sized body is "rewritten" (doubled), an even one left alone. */
    if (raw_len % 2 == 1) {
        out->rewritten = malloc(raw_len * 2);
        CHECK(out->rewritten != NULL);
        memcpy(out->rewritten, raw, raw_len);
        memcpy(out->rewritten + raw_len, raw, raw_len);
        out->rewritten_len = raw_len * 2;
    }
    return 0;
}
void exchange_body_rewrite_free(struct exchange_body_rewrite *br)
{
    free(br->rewritten);
    br->rewritten = NULL;
}
bool exchange_rewrite_reserve(const struct exchange_rewrite *rw, size_t bytes)
{
    (void)rw;
    (void)bytes;
    return true;
}
void exchange_rewrite_release(size_t bytes)
{
    (void)bytes;
}

struct seen {
    int heads;
    uint64_t body_bytes[2];
    bool has_body_before_head;
};

static void on_head(void *arg, const struct message *sent, const struct message *received)
{
    struct seen *s = arg;

    CHECK(received == NULL);
    CHECK(sent->status >= 200 && sent->status <= 999);
    CHECK(sent->version == 20);
    s->heads++;
}

static void on_body(void *arg, enum exchange_side side, const void *data, size_t len)
{
    struct seen *s = arg;

    (void)data;
    if (side == EXCHANGE_RESPONSE && s->heads == 0)
        s->has_body_before_head = true;
    s->body_bytes[side] += len;
}

static const struct exchange_capture_ops ops = {.response_head = on_head, .body = on_body};

/* Body rules that want every body; their notes are dropped. */
static void rw_response(void *arg, const struct message *resp)
{
    (void)arg;
    (void)resp;
}
static bool rw_wants_body(void *arg)
{
    (void)arg;
    return true;
}
static void rw_note(void *arg, const char *why)
{
    (void)arg;
    CHECK(why != NULL);
}
static const struct exchange_rewrite_ops rw_ops = {
    .response = rw_response, .wants_body = rw_wants_body, .note = rw_note};

static void feed(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0)
            break;
        data += n;
        len -= (size_t)n;
    }
    shutdown(fd, SHUT_WR);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int c[2], o[2];
    struct stream client, origin;
    struct exchange_timeouts t = {.idle_ms = 20, .header_ms = 20, .io_ms = 20};
    struct message_field fields[] = {{"Host", 4, "fuzz.test", 9},
                                     {"Content-Length", 14, NULL, 0},
                                     {"Transfer-Encoding", 17, "chunked", 7}};
    char length[24];

    if (size < 2 || size > 60000) /* both halves fit the socket buffers */
        return 0;
    signal(SIGPIPE, SIG_IGN);
    log_init(-1, LOG_ERROR);
    size_t body_len = (size - 2) * data[0] / 256;
    bool is_chunked = (data[1] & 1) != 0, is_head = (data[1] & 2) != 0;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, o) == 0);
    feed(c[0], data + 2, body_len);
    feed(o[0], data + 2 + body_len, size - 2 - body_len);
    CHECK(stream_init(&client, c[1], 65536, -1) == 0);
    CHECK(stream_init(&origin, o[1], 65536, -1) == 0);

    struct message req = {0};
    req.method = is_head ? "HEAD" : "POST";
    req.method_len = strlen(req.method);
    req.scheme = "https";
    req.target = "/fuzz";
    req.target_len = 5;
    req.version = (data[1] & 4) != 0 ? 10 : 11;
    req.keep_alive = true;
    snprintf(length, sizeof(length), "%zu", body_len);
    fields[1].value = length;
    fields[1].value_len = strlen(length);
    if (is_head) {
        req.fields = (struct message_fields){fields, 1};
        req.body = MESSAGE_BODY_NONE;
    } else if (is_chunked) {
        fields[1] = fields[2];
        req.fields = (struct message_fields){fields, 2};
        req.body = MESSAGE_BODY_STREAM;
    } else {
        req.fields = (struct message_fields){fields, 2};
        req.body = MESSAGE_BODY_LENGTH;
        req.content_length = body_len;
    }

    struct h1toh2 *h = h1toh2_new(&origin);
    CHECK(h != NULL);
    for (int i = 0; i < 2 && h1toh2_is_usable(h, &origin); i++) {
        struct seen seen = {0};
        struct exchange_capture cap = {.ops = &ops, .arg = &seen};
        struct exchange_result res;
        /* Bit 3: body rules, their limit from the top bits (0 to 15 kB). */
        struct exchange_rewrite rw = {.ops = &rw_ops, .limit = (size_t)(data[1] >> 4) * 1024};
        int rc = h1toh2_forward(h, &client, &req, &t, (data[1] & 8) != 0 ? &rw : NULL, &cap, &res);
        CHECK(seen.heads <= 1);
        CHECK(!seen.has_body_before_head);
        CHECK(seen.body_bytes[EXCHANGE_RESPONSE] == res.response_bytes);
        CHECK(seen.body_bytes[EXCHANGE_REQUEST] == res.request_bytes);
        CHECK((res.status != 0) == (seen.heads == 1));
        CHECK(rc == 0 ? res.status != 0 : res.error[0] != '\0');
        if (rc < 0 && res.status == 0)
            CHECK(res.error_status >= 400 && res.error_status <= 599);
        if (rc < 0 || !res.client_keep_alive)
            break;
        /* The second request has no body: the client sent it already. */
        req.method = "GET";
        req.method_len = 3;
        req.fields.count = 1;
        req.body = MESSAGE_BODY_NONE;
    }
    h1toh2_free(h);
    stream_close(&client);
    stream_close(&origin);
    close(c[0]);
    close(o[0]);
    return 0;
}
