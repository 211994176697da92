/*
 * exchange: one request/response through the proxy.
 *
 * Bodies are streamed in slices of the stream buffer, never held whole, so a
 * 1 GiB download costs the same memory as 1 KiB. Framing is re-declared on
 * each hop from what the parser decided (RFC 9112 6): we never forward a
 * Content-Length or Transfer-Encoding we did not compute ourselves, which is
 * what keeps a smuggled second request from surviving the proxy.
 * Expect: 100-continue is answered by the proxy itself (the origin gets the
 * body without the Expect field), as mitmproxy does: the client never waits
 * on an origin that ignores Expect.
 */
#include "exchange.h"

#include "flowstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* A growable string for building heads; heads are bounded by the parser. */
struct strbuf {
    char *data;
    size_t len, cap;
    bool failed;
};

static void sb_append(struct strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_str(struct strbuf *b, const char *s)
{
    sb_append(b, s, strlen(s));
}

static void sb_header(struct strbuf *b, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    sb_append(b, name, name_len);
    sb_append(b, ": ", 2);
    sb_append(b, value, value_len);
    sb_append(b, "\r\n", 2);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool name_is(const struct http1_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* True when the buffer may hold a complete head: a blank line was seen. */
static bool has_head_end(const char *data, size_t len, size_t *scan_from)
{
    for (size_t i = *scan_from; i < len; i++) {
        if (data[i] != '\n')
            continue;
        if (i + 1 < len && data[i + 1] == '\n')
            return true;
        if (i + 2 < len && data[i + 1] == '\r' && data[i + 2] == '\n')
            return true;
    }
    *scan_from = len > 2 ? len - 2 : 0;
    return false;
}

/* Reads until parse() accepts or refuses a head. Parses only once there is a
 * chance of success (or of a limit error), so a head sent a byte at a time
 * costs linear, not quadratic, work. */
static int read_head(struct stream *s, int64_t deadline, int first_wait_ms,
                     int (*parse)(const char *, size_t, void *, struct http1_head *,
                                  struct http1_error *),
                     void *parse_arg, struct http1_head *head, struct http1_error *err,
                     bool *got_nothing, int64_t *first_byte_us)
{
    size_t scan_from = 0;
    size_t parsed_at = 0;
    *got_nothing = false;
    if (stream_buffered(s) == 0) {
        int w = stream_wait_readable(s, first_wait_ms);
        if (w != STREAM_OK) {
            *got_nothing = true;
            err->status = w == STREAM_TIMEOUT ? 408 : 400;
            err->message = stream_status_text(w);
            return -1;
        }
    }
    if (first_byte_us)
        *first_byte_us = wall_us();
    for (;;) {
        size_t have = stream_buffered(s);
        /* Parse on the first bytes (garbage is refused at once), when a
         * blank line arrived, and whenever the buffer doubled (limits): a
         * geometric schedule keeps the total work linear. */
        if (have > 0 && (parsed_at == 0 || have >= 2 * parsed_at || have >= HTTP1_MAX_HEAD_BYTES ||
                         has_head_end(stream_data(s), have, &scan_from))) {
            int n = parse(stream_data(s), have, parse_arg, head, err);
            if (n != HTTP1_INCOMPLETE)
                return n;
            parsed_at = have;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            err->status = 408;
            err->message = "the request head did not arrive in time";
            return -1;
        }
        ssize_t r = stream_fill(s, (int)left);
        if (r == STREAM_FULL) {
            err->status = 431;
            err->message = "header section too large";
            return -1;
        }
        if (r < 0) {
            *got_nothing = stream_buffered(s) == 0;
            err->status = r == STREAM_TIMEOUT ? 408 : 400;
            err->message = r == STREAM_TIMEOUT ? "the head did not arrive in time"
                                               : "connection closed in the middle of a head";
            return -1;
        }
    }
}

static int parse_request_cb(const char *buf, size_t len, void *arg, struct http1_head *head,
                            struct http1_error *err)
{
    (void)arg;
    return http1_parse_request(buf, len, head, err);
}

struct response_ctx {
    const char *method;
};

static int parse_response_cb(const char *buf, size_t len, void *arg, struct http1_head *head,
                             struct http1_error *err)
{
    const struct response_ctx *ctx = arg;
    return http1_parse_response(buf, len, ctx->method, strlen(ctx->method), head, err);
}

int exchange_read_request(struct stream *client, const struct exchange_timeouts *t,
                          struct http1_head *head, struct http1_error *err)
{
    bool got_nothing;
    int64_t deadline;
    /* The header timeout starts with the first byte, so an idle keep-alive
     * connection is governed by the idle timeout alone. */
    if (stream_buffered(client) == 0) {
        int w = stream_wait_readable(client, t->idle_ms);
        if (w != STREAM_OK)
            return 0;
    }
    deadline = now_ms() + t->header_ms;
    int n = read_head(client, deadline, t->header_ms, parse_request_cb, NULL, head, err,
                      &got_nothing, NULL);
    if (n < 0 && got_nothing)
        return 0;
    return n;
}

bool exchange_has_only_chunked(const struct http1_head *head)
{
    for (size_t i = 0; i < head->num_headers; i++) {
        const struct http1_header *h = &head->headers[i];
        if (!name_is(h, "Transfer-Encoding"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            const char *a = p, *z = e;
            while (a < z && (*a == ' ' || *a == '\t'))
                a++;
            while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
                z--;
            if (z > a && !((size_t)(z - a) == 7 && strncasecmp(a, "chunked", 7) == 0))
                return false;
            p = comma ? comma + 1 : end;
        }
    }
    return true;
}

int exchange_request_build(struct exchange_request *out, const struct http1_head *req,
                           const char *target, size_t target_len, const char *host_value)
{
    struct strbuf b = {0};
    memset(out, 0, sizeof(*out));
    size_t mlen = req->method_len < sizeof(out->method) ? req->method_len : sizeof(out->method) - 1;
    memcpy(out->method, req->method, mlen);
    out->version_minor = req->version_minor;
    out->framing = req->framing;
    out->content_length = req->content_length;
    out->keep_alive = req->keep_alive;
    out->expect_continue = req->expect_continue;
    out->is_upgrade = req->is_upgrade;

    sb_append(&b, req->method, req->method_len);
    sb_append(&b, " ", 1);
    sb_append(&b, target, target_len);
    sb_str(&b, " HTTP/1.1\r\n");
    if (host_value) {
        sb_str(&b, "Host: ");
        sb_str(&b, host_value);
        sb_str(&b, "\r\n");
    }
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http1_header *h = &req->headers[i];
        /* Host stays even when Connection names it: dropping it would change
         * which site the origin serves. */
        if (name_is(h, "Host")) {
            if (!host_value)
                sb_header(&b, h->name, h->name_len, h->value, h->value_len);
            continue;
        }
        if (http1_is_hop_by_hop(req, h) || name_is(h, "Content-Length"))
            continue;
        if (req->expect_continue && name_is(h, "Expect"))
            continue;
        sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (req->is_upgrade) {
        const struct http1_header *up = http1_find_header(req, "Upgrade");
        sb_str(&b, "Connection: Upgrade\r\n");
        if (up)
            sb_header(&b, "Upgrade", 7, up->value, up->value_len);
    }
    if (req->framing == HTTP1_BODY_LENGTH) {
        char cl[48];
        snprintf(cl, sizeof(cl), "Content-Length: %llu\r\n",
                 (unsigned long long)req->content_length);
        sb_str(&b, cl);
    } else if (req->framing == HTTP1_BODY_CHUNKED) {
        sb_str(&b, "Transfer-Encoding: chunked\r\n");
    }
    sb_str(&b, "Via: " EXCHANGE_VIA "\r\n\r\n");
    if (b.failed) {
        free(b.data);
        return -1;
    }
    out->head = b.data;
    out->head_len = b.len;
    return 0;
}

void exchange_request_free(struct exchange_request *req)
{
    free(req->head);
    req->head = NULL;
}

/* Output framing of a body on the next hop. */
enum out_framing { OUT_RAW, OUT_CHUNKED };

static int put_chunk(struct stream *dst, enum out_framing out, const char *data, size_t len,
                     int timeout_ms)
{
    if (len == 0)
        return STREAM_OK;
    if (out == OUT_RAW)
        return stream_put(dst, data, len, timeout_ms);
    char hdr[24];
    size_t n = http1_chunk_header(hdr, len);
    int r = stream_put(dst, hdr, n, timeout_ms);
    if (r == STREAM_OK)
        r = stream_put(dst, data, len, timeout_ms);
    if (r == STREAM_OK)
        r = stream_put(dst, "\r\n", 2, timeout_ms);
    return r;
}

/* Which side failed while moving a body. */
enum body_fault { FAULT_NONE, FAULT_SRC, FAULT_DST, FAULT_FRAMING };

/*
 * Copies one body from src to dst. in/length describe how src frames it; out
 * how dst gets it. dst may be NULL to discard. Returns 0 or -1 with *fault.
 */
static int move_body(struct stream *src, struct stream *dst, enum http1_framing in,
                     uint64_t length, enum out_framing out, int timeout_ms, uint64_t *count,
                     struct flow_body *capture, enum body_fault *fault)
{
    struct http1_chunked *chunked = NULL;
    int rc = -1;
    *fault = FAULT_NONE;

    if (in == HTTP1_BODY_NONE) {
        rc = 0;
        goto out;
    }
    if (in == HTTP1_BODY_CHUNKED) {
        chunked = malloc(sizeof(*chunked));
        if (!chunked) {
            *fault = FAULT_SRC;
            goto out;
        }
        http1_chunked_init(chunked);
    }
    uint64_t remaining = length;
    for (;;) {
        if (in == HTTP1_BODY_LENGTH && remaining == 0)
            break;
        if (stream_buffered(src) == 0) {
            ssize_t r = stream_fill(src, timeout_ms);
            if (r == STREAM_EOF && in == HTTP1_BODY_UNTIL_CLOSE)
                break;
            if (r < 0) {
                /* Pass on what did arrive, so the client sees a short body
                 * rather than nothing. */
                if (dst)
                    stream_flush(dst, timeout_ms);
                *fault = FAULT_SRC;
                goto out;
            }
        }
        const char *data = stream_data(src);
        size_t have = stream_buffered(src);
        if (in == HTTP1_BODY_CHUNKED) {
            size_t used = 0;
            const char *piece;
            size_t piece_len = 0;
            enum http1_chunk_result cr =
                http1_chunked_decode(chunked, data, have, &used, &piece, &piece_len);
            if (cr == HTTP1_CHUNK_ERROR) {
                *fault = FAULT_FRAMING;
                goto out;
            }
            if (cr == HTTP1_CHUNK_DATA && dst &&
                put_chunk(dst, out, piece, piece_len, timeout_ms) != STREAM_OK) {
                *fault = FAULT_DST;
                goto out;
            }
            if (cr == HTTP1_CHUNK_DATA) {
                *count += piece_len;
                if (capture)
                    flow_body_append(capture, piece, piece_len);
            }
            stream_consume(src, used);
            if (cr == HTTP1_CHUNK_DONE)
                break;
            continue;
        }
        size_t take = have;
        if (in == HTTP1_BODY_LENGTH && take > remaining)
            take = (size_t)remaining;
        if (dst && put_chunk(dst, out, data, take, timeout_ms) != STREAM_OK) {
            *fault = FAULT_DST;
            goto out;
        }
        if (capture)
            flow_body_append(capture, data, take);
        stream_consume(src, take);
        remaining -= in == HTTP1_BODY_LENGTH ? take : 0;
        *count += take;
    }
    if (dst && out == OUT_CHUNKED) {
        int r = stream_putstr(dst, "0\r\n", timeout_ms);
        if (r == STREAM_OK && chunked && chunked->trailers_len > 0)
            r = stream_put(dst, chunked->trailers, chunked->trailers_len, timeout_ms);
        if (r == STREAM_OK)
            r = stream_putstr(dst, "\r\n", timeout_ms);
        if (r != STREAM_OK) {
            *fault = FAULT_DST;
            goto out;
        }
    }
    if (dst && stream_flush(dst, timeout_ms) != STREAM_OK) {
        *fault = FAULT_DST;
        goto out;
    }
    rc = 0;
out:
    free(chunked);
    return rc;
}

int exchange_discard_body(struct stream *client, const struct exchange_request *req,
                          const struct exchange_timeouts *t)
{
    uint64_t count = 0;
    enum body_fault fault;
    return move_body(client, NULL, req->framing, req->content_length, OUT_RAW, t->io_ms, &count,
                     NULL, &fault);
}

/* Builds the head the client gets for response resp. */
static char *build_response_head(const struct http1_head *resp, const struct exchange_request *req,
                                 enum out_framing *out, bool *client_keep_alive, size_t *len)
{
    struct strbuf b = {0};
    char line[64];
    bool client_11 = req->version_minor >= 1;
    bool keep = *client_keep_alive;

    *out = OUT_RAW;
    if (resp->framing == HTTP1_BODY_CHUNKED || resp->framing == HTTP1_BODY_UNTIL_CLOSE) {
        /* An HTTP/1.0 client cannot take chunked: it gets raw bytes and the
         * close marks the end. */
        if (client_11)
            *out = OUT_CHUNKED;
        else
            keep = false;
    }
    snprintf(line, sizeof(line), "HTTP/1.1 %03d ", resp->status);
    sb_str(&b, line);
    sb_append(&b, resp->reason, resp->reason_len);
    sb_str(&b, "\r\n");
    for (size_t i = 0; i < resp->num_headers; i++) {
        const struct http1_header *h = &resp->headers[i];
        if (http1_is_hop_by_hop(resp, h))
            continue;
        /* A bodiless response (HEAD, 304) keeps the origin's Content-Length:
         * it describes the representation, not this message's framing. */
        if (name_is(h, "Content-Length") && resp->framing != HTTP1_BODY_NONE)
            continue;
        sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (resp->status == 101) {
        const struct http1_header *up = http1_find_header(resp, "Upgrade");
        sb_str(&b, "Connection: Upgrade\r\n");
        if (up)
            sb_header(&b, "Upgrade", 7, up->value, up->value_len);
    } else if (resp->framing == HTTP1_BODY_LENGTH) {
        snprintf(line, sizeof(line), "Content-Length: %llu\r\n",
                 (unsigned long long)resp->content_length);
        sb_str(&b, line);
    } else if (*out == OUT_CHUNKED) {
        sb_str(&b, "Transfer-Encoding: chunked\r\n");
    }
    if (resp->status >= 200 || resp->status == 101) {
        if (!keep)
            sb_str(&b, "Connection: close\r\n");
        else if (!client_11)
            sb_str(&b, "Connection: keep-alive\r\n");
    }
    sb_str(&b, "Via: " EXCHANGE_VIA "\r\n\r\n");
    *client_keep_alive = keep;
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

char *exchange_headers_text(const struct http1_head *head)
{
    struct strbuf b = {0};
    for (size_t i = 0; i < head->num_headers; i++) {
        const struct http1_header *h = &head->headers[i];
        sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (b.failed || !b.data) {
        free(b.data);
        return b.failed ? NULL : strdup("");
    }
    return b.data;
}

int exchange_forward(struct stream *client, struct stream *upstream,
                     const struct exchange_request *req, const struct exchange_timeouts *t,
                     struct flow *flow, struct exchange_result *res)
{
    struct http1_head *resp = NULL;
    char *head = NULL;
    int rc = -1;
    enum body_fault fault;
    uint64_t upstream_read_before = upstream->bytes_read;

    memset(res, 0, sizeof(*res));
    res->client_keep_alive = req->keep_alive;
    res->error_status = 502;

    if (stream_put(upstream, req->head, req->head_len, t->io_ms) != STREAM_OK ||
        (req->framing == HTTP1_BODY_NONE && stream_flush(upstream, t->io_ms) != STREAM_OK)) {
        res->upstream_stale = true;
        snprintf(res->error, sizeof(res->error), "sending the request upstream failed: %s",
                 upstream->error[0] ? upstream->error : "connection closed");
        goto out;
    }
    if (req->framing != HTTP1_BODY_NONE) {
        if (req->expect_continue && req->version_minor >= 1 &&
            (stream_putstr(client, "HTTP/1.1 100 Continue\r\n\r\n", t->io_ms) != STREAM_OK ||
             stream_flush(client, t->io_ms) != STREAM_OK)) {
            snprintf(res->error, sizeof(res->error), "client went away before its body");
            res->client_keep_alive = false;
            res->status = -1; /* nothing more can be sent */
            goto out;
        }
        enum out_framing out = req->framing == HTTP1_BODY_CHUNKED ? OUT_CHUNKED : OUT_RAW;
        if (move_body(client, upstream, req->framing, req->content_length, out, t->io_ms,
                      &res->request_bytes, flow ? &flow->request_body : NULL, &fault) < 0) {
            res->client_keep_alive = false;
            if (fault == FAULT_DST) {
                /* The origin stopped reading: it may have answered already
                 * (e.g. 413), so try to relay that below. */
                snprintf(res->error, sizeof(res->error), "origin stopped reading the body: %s",
                         upstream->error[0] ? upstream->error : "connection closed");
            } else {
                snprintf(res->error, sizeof(res->error), "%s while reading the request body",
                         fault == FAULT_FRAMING ? "bad chunked framing"
                                                : "client connection failed");
                if (fault == FAULT_FRAMING)
                    res->error_status = 400;
                else
                    res->status = -1;
                goto out;
            }
        }
    }

    if (flow)
        flow->timings.request_sent = wall_us();
    resp = malloc(sizeof(*resp));
    if (!resp) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    struct response_ctx rctx = {.method = req->method};
    for (;;) {
        struct http1_error perr = {0};
        bool got_nothing;
        int n = read_head(upstream, now_ms() + t->io_ms, t->io_ms, parse_response_cb, &rctx, resp,
                          &perr, &got_nothing,
                          flow && !flow->timings.first_byte ? &flow->timings.first_byte : NULL);
        if (n < 0) {
            bool nothing_back = upstream->bytes_read == upstream_read_before;
            if (nothing_back && req->framing == HTTP1_BODY_NONE && perr.status != 408)
                res->upstream_stale = true;
            if (perr.status == 408) {
                snprintf(res->error, sizeof(res->error),
                         "the origin did not answer within %d ms", t->io_ms);
                res->error_status = 504;
                goto out;
            }
            snprintf(res->error, sizeof(res->error), "%s",
                     got_nothing || nothing_back
                         ? "the origin closed the connection without a response"
                         : perr.message ? perr.message : "invalid response head");
            goto out;
        }
        if (resp->status >= 200 || resp->status == 101)
            break;
        /* Interim responses: 100 is ours to send (we answered Expect),
         * others (103 Early Hints) go through to HTTP/1.1 clients. */
        if (resp->status != 100 && req->version_minor >= 1) {
            if (stream_put(client, stream_data(upstream), (size_t)n, t->io_ms) != STREAM_OK) {
                res->status = -1;
                snprintf(res->error, sizeof(res->error), "client went away");
                goto out;
            }
        }
        stream_consume(upstream, (size_t)n);
    }
    size_t resp_head_len = resp->head_len;
    if (resp->status == 101 && !req->is_upgrade) {
        snprintf(res->error, sizeof(res->error), "the origin switched protocols unasked");
        goto out;
    }
    bool keep = res->client_keep_alive;
    enum out_framing out;
    size_t head_len = 0;
    head = build_response_head(resp, req, &out, &keep, &head_len);
    if (!head) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    res->client_keep_alive = keep && resp->status != 101;
    res->upstream_reusable = resp->keep_alive && resp->framing != HTTP1_BODY_UNTIL_CLOSE &&
                             res->error[0] == '\0';
    res->status = resp->status;
    if (flow) {
        flow->status = resp->status;
        snprintf(flow->reason, sizeof(flow->reason), "%.*s",
                 (int)(resp->reason_len < sizeof(flow->reason) ? resp->reason_len
                                                               : sizeof(flow->reason) - 1),
                 resp->reason);
        flow->response_version_minor = resp->version_minor;
        free(flow->response_headers);
        flow->response_headers = exchange_headers_text(resp);
        if (resp->status == 101)
            flow->kind = FLOW_WEBSOCKET;
    }
    enum http1_framing in = resp->framing;
    uint64_t length = resp->content_length;
    stream_consume(upstream, resp_head_len);
    if (stream_put(client, head, head_len, t->io_ms) != STREAM_OK) {
        snprintf(res->error, sizeof(res->error), "client went away");
        res->client_keep_alive = false;
        goto out;
    }
    if (resp->status == 101) {
        uint64_t up_bytes = 0, down_bytes = 0;
        res->upgraded = true;
        res->client_keep_alive = false;
        res->upstream_reusable = false;
        int r = stream_relay(client, upstream, t->idle_ms, &up_bytes, &down_bytes);
        res->request_bytes += up_bytes;
        res->response_bytes += down_bytes;
        if (flow) {
            flow->bytes_up = up_bytes;
            flow->bytes_down = down_bytes;
        }
        if (r < 0 && r != STREAM_TIMEOUT)
            snprintf(res->error, sizeof(res->error), "upgraded connection ended: %s",
                     stream_status_text(r));
        rc = 0;
        goto out;
    }
    if (move_body(upstream, client, in, length, out, t->io_ms, &res->response_bytes,
                  flow ? &flow->response_body : NULL, &fault) < 0) {
        res->client_keep_alive = false;
        res->upstream_reusable = false;
        snprintf(res->error, sizeof(res->error), "%s",
                 fault == FAULT_DST     ? "client went away during the response"
                 : fault == FAULT_FRAMING ? "origin sent bad chunked framing"
                                          : "origin connection broke during the response");
        goto out;
    }
    if (in == HTTP1_BODY_NONE && stream_flush(client, t->io_ms) != STREAM_OK) {
        res->client_keep_alive = false;
        snprintf(res->error, sizeof(res->error), "client went away");
        goto out;
    }
    rc = res->error[0] ? -1 : 0;
out:
    if (res->status < 0)
        res->status = 0, res->client_keep_alive = false;
    if (flow)
        flow->timings.done = wall_us();
    free(head);
    free(resp);
    return rc;
}

int exchange_send_error(struct stream *client, int status, const char *reason, bool close,
                        int timeout_ms)
{
    char head[512];
    char body[1200];
    int blen = snprintf(body, sizeof(body), "%d %s\n\ntapwire: %s\n", status,
                        http1_reason_phrase(status), reason);
    if (blen < 0)
        return STREAM_ERROR;
    if ((size_t)blen >= sizeof(body))
        blen = (int)sizeof(body) - 1;
    int hlen = snprintf(head, sizeof(head),
                        "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: %d\r\nCache-Control: no-store\r\n"
                        "X-Content-Type-Options: nosniff\r\n%s\r\n",
                        status, http1_reason_phrase(status), blen,
                        close ? "Connection: close\r\n" : "");
    int r = stream_put(client, head, (size_t)hlen, timeout_ms);
    if (r == STREAM_OK)
        r = stream_put(client, body, (size_t)blen, timeout_ms);
    if (r == STREAM_OK)
        r = stream_flush(client, timeout_ms);
    return r;
}
