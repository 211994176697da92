/*
 * http1codec: see http1codec.h.
 */
#include "http1codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "clock.h"

/* Most heads fit: one allocation, not a doubling from 256 bytes. */
#define HEAD_START_BYTES 1024

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
static int read_head(struct stream *s, int64_t deadline, int first_wait_ms, bool poll_first,
                     int (*parse)(const char *, size_t, void *, struct http1_head *,
                                  struct http1_error *),
                     void *parse_arg, struct http1_head *head, struct http1_error *err,
                     bool *got_nothing, int64_t *first_byte_us)
{
    size_t scan_from = 0;
    size_t parsed_at = 0;
    *got_nothing = false;
    /* A request head is read straight away: on a busy keep-alive connection
     * its bytes are usually there. A response head has only just been
     * asked for and is never there yet, so the caller has us wait first
     * rather than spend a read that can only say "not yet". */
    if (stream_buffered(s) == 0) {
        ssize_t r = poll_first ? stream_wait_readable(s, first_wait_ms) : STREAM_OK;
        if (r == STREAM_OK)
            r = stream_fill(s, first_wait_ms);
        if (r < 0) {
            *got_nothing = true;
            err->status = r == STREAM_TIMEOUT ? 408 : 400;
            err->message = stream_status_text((int)r);
            return -1;
        }
    }
    if (first_byte_us)
        *first_byte_us = clock_wall_us();
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
        int64_t left = deadline - clock_mono_ms();
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

int http1codec_read_request(struct stream *client, int idle_ms, int header_ms,
                            struct http1_head *head, struct http1_error *err)
{
    bool got_nothing;
    int64_t deadline;
    /* The header timeout starts with the first byte, so an idle keep-alive
     * connection is governed by the idle timeout alone. */
    if (stream_buffered(client) == 0 && stream_fill(client, idle_ms) <= 0)
        return 0;
    deadline = clock_mono_ms() + header_ms;
    int n = read_head(client, deadline, header_ms, false, parse_request_cb, NULL, head, err,
                      &got_nothing, NULL);
    if (n < 0 && got_nothing)
        return 0;
    return n;
}

int http1codec_read_response(struct stream *upstream, int io_ms, const char *method,
                             struct http1_head *head, struct http1_error *err, bool *got_nothing,
                             int64_t *first_byte_us)
{
    struct response_ctx rctx = {.method = method};

    return read_head(upstream, clock_mono_ms() + io_ms, io_ms, true, parse_response_cb, &rctx, head,
                     err, got_nothing, first_byte_us);
}

static enum message_body body_of(enum http1_framing framing)
{
    switch (framing) {
    case HTTP1_BODY_LENGTH:
        return MESSAGE_BODY_LENGTH;
    case HTTP1_BODY_CHUNKED:
        return MESSAGE_BODY_STREAM;
    case HTTP1_BODY_UNTIL_CLOSE:
        return MESSAGE_BODY_UNTIL_CLOSE;
    case HTTP1_BODY_NONE:
        break;
    }
    return MESSAGE_BODY_NONE;
}

void http1codec_view(const struct http1_head *head, struct message *out)
{
    memset(out, 0, sizeof(*out));
    out->method = head->method;
    out->method_len = head->method_len;
    out->target = head->target;
    out->target_len = head->target_len;
    out->status = head->status;
    out->reason = head->reason;
    out->reason_len = head->reason_len;
    out->version = 10 + head->version_minor;
    out->fields.items = head->headers;
    out->fields.count = head->num_headers;
    out->body = body_of(head->framing);
    out->content_length = head->content_length;
    out->keep_alive = head->keep_alive;
    out->expect_continue = head->expect_continue;
    out->is_upgrade = head->is_upgrade;
}

bool http1codec_has_only_chunked(const struct http1_head *head)
{
    for (size_t i = 0; i < head->num_headers; i++) {
        const struct message_field *h = &head->headers[i];
        if (!message_field_is(h, "Transfer-Encoding"))
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

static void put_field(struct buf *b, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    buf_put(b, name, name_len);
    buf_put(b, ": ", 2);
    buf_put(b, value, value_len);
    buf_put(b, "\r\n", 2);
}

static void head_start(struct buf *b)
{
    *b = (struct buf)BUF_INIT(HTTP1CODEC_MAX_BUILT_HEAD_BYTES);
    buf_reserve(b, HEAD_START_BYTES);
}

/* The built head (caller frees, *len its length), or NULL when the buffer
 * failed. */
static char *head_finish(struct buf *b, size_t *len)
{
    if (b->has_failed) {
        buf_free(b);
        return NULL;
    }
    *len = b->len;
    return b->data;
}

/* Connection: Upgrade and the Upgrade field, re-declared for this hop
 * (both are hop-by-hop, RFC 9110 7.8). */
static void put_upgrade(struct buf *b, const struct message *m)
{
    const struct message_field *up = message_find(m, "Upgrade");

    buf_str(b, "Connection: Upgrade\r\n");
    if (up)
        put_field(b, "Upgrade", 7, up->value, up->value_len);
}

static void put_content_length(struct buf *b, uint64_t length)
{
    char line[48];

    snprintf(line, sizeof(line), "Content-Length: %llu\r\n", (unsigned long long)length);
    buf_str(b, line);
}

char *http1codec_request_head(const struct message *req, size_t *len)
{
    struct buf b;

    head_start(&b);
    buf_put(&b, req->method, req->method_len);
    buf_put(&b, " ", 1);
    buf_put(&b, req->target, req->target_len);
    buf_str(&b, " HTTP/1.1\r\n");
    for (size_t i = 0; i < req->next_hop.count; i++) {
        const struct message_field *h = &req->next_hop.items[i];
        put_field(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (req->authority) {
        buf_str(&b, "Host: ");
        buf_put(&b, req->authority, req->authority_len);
        buf_str(&b, "\r\n");
    }
    for (size_t i = 0; i < req->fields.count; i++) {
        const struct message_field *h = &req->fields.items[i];
        /* Host stays even when Connection names it: dropping it would change
         * which site the origin serves. */
        if (message_field_is(h, "Host")) {
            if (!req->authority)
                put_field(&b, h->name, h->name_len, h->value, h->value_len);
            continue;
        }
        if (message_is_hop_by_hop(&req->fields, h) || message_field_is(h, "Content-Length"))
            continue;
        /* Expect is answered here; and an HTTP/1.0 request's must be
         * ignored (RFC 9110 10.1.1), not turned into a real one by the
         * HTTP/1.1 head. */
        if ((req->expect_continue || req->version < 11) && message_field_is(h, "Expect"))
            continue;
        put_field(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (req->is_upgrade)
        put_upgrade(&b, req);
    if (req->body == MESSAGE_BODY_LENGTH)
        put_content_length(&b, req->content_length);
    else if (req->body == MESSAGE_BODY_STREAM)
        buf_str(&b, "Transfer-Encoding: chunked\r\n");
    buf_str(&b, "Via: " HTTP1CODEC_VIA "\r\n\r\n");
    return head_finish(&b, len);
}

char *http1codec_response_head(const struct message *resp, int client_version_minor,
                               bool *keep_alive, bool *is_chunked, size_t *len)
{
    struct buf b;
    char line[64];
    bool client_11 = client_version_minor >= 1;
    bool keep = *keep_alive;

    head_start(&b);
    *is_chunked = false;
    if (resp->body == MESSAGE_BODY_STREAM || resp->body == MESSAGE_BODY_UNTIL_CLOSE) {
        /* An HTTP/1.0 client cannot take chunked: it gets raw bytes and the
         * close marks the end. */
        if (client_11)
            *is_chunked = true;
        else
            keep = false;
    }
    snprintf(line, sizeof(line), "HTTP/1.1 %03d ", resp->status);
    buf_str(&b, line);
    buf_put(&b, resp->reason, resp->reason_len);
    buf_str(&b, "\r\n");
    for (size_t i = 0; i < resp->fields.count; i++) {
        const struct message_field *h = &resp->fields.items[i];
        if (message_is_hop_by_hop(&resp->fields, h))
            continue;
        /* A bodiless response (HEAD, 304) keeps the origin's Content-Length:
         * it describes the representation, not this message's framing. */
        if (message_field_is(h, "Content-Length") && resp->body != MESSAGE_BODY_NONE)
            continue;
        put_field(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (resp->status == 101)
        put_upgrade(&b, resp);
    else if (resp->body == MESSAGE_BODY_LENGTH)
        put_content_length(&b, resp->content_length);
    else if (*is_chunked)
        buf_str(&b, "Transfer-Encoding: chunked\r\n");
    if (resp->status >= 200 || resp->status == 101) {
        if (!keep)
            buf_str(&b, "Connection: close\r\n");
        else if (!client_11)
            buf_str(&b, "Connection: keep-alive\r\n");
    }
    buf_str(&b, "Via: " HTTP1CODEC_VIA "\r\n\r\n");
    *keep_alive = keep;
    return head_finish(&b, len);
}

/* ---- bodies ---- */

size_t http1codec_split_fields(const char *raw, size_t len, struct message_field *out, size_t max)
{
    const char *p = raw, *end = raw + len;
    size_t count = 0;

    while (p < end && count < max) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p) {
            const char *v = colon + 1, *z = line_end;
            while (v < z && (*v == ' ' || *v == '\t'))
                v++;
            while (z > v && (z[-1] == '\r' || z[-1] == ' ' || z[-1] == '\t'))
                z--;
            out[count++] = (struct message_field){p, (size_t)(colon - p), v, (size_t)(z - v)};
        }
        p = line_end + 1;
    }
    return count;
}

/* The trailer section the chunked decoder kept, as fields pointing into it. */
static int parse_trailers(struct http1codec_reader *r)
{
    const char *raw = r->chunked->trailers;
    size_t len = r->chunked->trailers_len, lines = 0;

    for (size_t i = 0; i < len; i++)
        lines += raw[i] == '\n';
    if (lines == 0)
        return 0;
    r->trailer_items = calloc(lines, sizeof(*r->trailer_items));
    if (r->trailer_items == NULL)
        return -1;
    r->trailer_count = http1codec_split_fields(raw, len, r->trailer_items, lines);
    return 0;
}

static int reader_next(struct body_source *src, int timeout_ms, const char **data, size_t *len)
{
    struct http1codec_reader *r = (struct http1codec_reader *)src;

    stream_consume(r->stream, r->pending);
    r->pending = 0;
    while (!r->is_done) {
        if (stream_buffered(r->stream) == 0) {
            ssize_t n = stream_fill(r->stream, timeout_ms);
            if (n == STREAM_EOF && r->framing == MESSAGE_BODY_UNTIL_CLOSE) {
                r->is_done = true;
                break;
            }
            if (n < 0) {
                src->fault = BODY_FAULT_SOURCE;
                return -1;
            }
        }
        const char *in = stream_data(r->stream);
        size_t have = stream_buffered(r->stream);
        if (r->framing == MESSAGE_BODY_STREAM) {
            size_t used = 0;
            enum http1_chunk_result cr =
                http1_chunked_decode(r->chunked, in, have, &used, data, len);
            if (cr == HTTP1_CHUNK_ERROR) {
                src->fault = BODY_FAULT_FRAMING;
                return -1;
            }
            if (cr == HTTP1_CHUNK_DONE) {
                stream_consume(r->stream, used);
                r->is_done = true;
                if (parse_trailers(r) < 0) {
                    src->fault = BODY_FAULT_SOURCE;
                    return -1;
                }
                break;
            }
            if (cr == HTTP1_CHUNK_DATA) {
                r->pending = used;
                return 1;
            }
            stream_consume(r->stream, used);
            continue;
        }
        size_t take = have;
        if (r->framing == MESSAGE_BODY_LENGTH) {
            if (take > r->remaining)
                take = (size_t)r->remaining;
            r->remaining -= take;
            r->is_done = r->remaining == 0;
        }
        r->pending = take;
        *data = in;
        *len = take;
        return 1;
    }
    return 0;
}

static struct message_fields reader_trailers(struct body_source *src)
{
    struct http1codec_reader *r = (struct http1codec_reader *)src;

    return (struct message_fields){r->trailer_items, r->trailer_count};
}

int http1codec_reader_init(struct http1codec_reader *r, struct stream *stream,
                           enum message_body framing, uint64_t length)
{
    memset(r, 0, sizeof(*r));
    r->source.next = reader_next;
    r->source.trailers = reader_trailers;
    r->stream = stream;
    r->framing = framing;
    r->remaining = length;
    r->is_done = framing == MESSAGE_BODY_NONE || (framing == MESSAGE_BODY_LENGTH && length == 0);
    if (framing == MESSAGE_BODY_STREAM) {
        r->chunked = malloc(sizeof(*r->chunked));
        if (!r->chunked)
            return -1;
        http1_chunked_init(r->chunked);
    }
    return 0;
}

void http1codec_reader_free(struct http1codec_reader *r)
{
    free(r->chunked);
    free(r->trailer_items);
    r->chunked = NULL;
    r->trailer_items = NULL;
}

static int writer_write(struct body_sink *dst, const void *data, size_t len, int timeout_ms)
{
    struct http1codec_writer *w = (struct http1codec_writer *)dst;
    char hdr[24];
    int r;

    if (len == 0)
        return STREAM_OK;
    if (!w->is_chunked)
        return stream_put(w->stream, data, len, timeout_ms);
    r = stream_put(w->stream, hdr, http1_chunk_header(hdr, len), timeout_ms);
    if (r == STREAM_OK)
        r = stream_put(w->stream, data, len, timeout_ms);
    if (r == STREAM_OK)
        r = stream_put(w->stream, "\r\n", 2, timeout_ms);
    return r;
}

static int writer_end(struct body_sink *dst, const struct message_fields *trailers, int timeout_ms)
{
    struct http1codec_writer *w = (struct http1codec_writer *)dst;
    int r = STREAM_OK;

    if (w->is_chunked) {
        r = stream_putstr(w->stream, "0\r\n", timeout_ms);
        for (size_t i = 0; trailers && i < trailers->count && r == STREAM_OK; i++) {
            const struct message_field *f = &trailers->items[i];
            r = stream_put(w->stream, f->name, f->name_len, timeout_ms);
            if (r == STREAM_OK)
                r = stream_put(w->stream, ": ", 2, timeout_ms);
            if (r == STREAM_OK)
                r = stream_put(w->stream, f->value, f->value_len, timeout_ms);
            if (r == STREAM_OK)
                r = stream_put(w->stream, "\r\n", 2, timeout_ms);
        }
        if (r == STREAM_OK)
            r = stream_putstr(w->stream, "\r\n", timeout_ms);
    }
    if (r == STREAM_OK)
        r = stream_flush(w->stream, timeout_ms);
    return r;
}

static int writer_flush(struct body_sink *dst, int timeout_ms)
{
    struct http1codec_writer *w = (struct http1codec_writer *)dst;

    return stream_flush(w->stream, timeout_ms);
}

void http1codec_writer_init(struct http1codec_writer *w, struct stream *stream, bool is_chunked)
{
    w->sink.write = writer_write;
    w->sink.end = writer_end;
    w->sink.flush = writer_flush;
    w->stream = stream;
    w->is_chunked = is_chunked;
}
