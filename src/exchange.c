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

#include "clock.h"

#include "buf.h"
#include "codec.h"
#include "membudget.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* A head we build: what the parser bounded, plus the fields we add. */
#define EXCHANGE_MAX_BUILT_HEAD_BYTES (2 * HTTP1_MAX_HEAD_BYTES)
/* Most heads fit: one allocation, not a doubling from 256 bytes. */
#define EXCHANGE_HEAD_START_BYTES 1024

static void head_start(struct buf *b)
{
    *b = (struct buf)BUF_INIT(EXCHANGE_MAX_BUILT_HEAD_BYTES);
    buf_reserve(b, EXCHANGE_HEAD_START_BYTES);
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

static void put_field(struct buf *b, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    buf_put(b, name, name_len);
    buf_put(b, ": ", 2);
    buf_put(b, value, value_len);
    buf_put(b, "\r\n", 2);
}

static bool name_is(const struct http1_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* The capture hooks, each optional: an exchange with no recorder passes
 * NULL, and a recorder implements only what it keeps. */
static void cap_body(const struct exchange_capture *cap, enum exchange_side side, const void *data,
                     size_t len)
{
    if (cap && cap->ops->body)
        cap->ops->body(cap->arg, side, data, len);
}

static void cap_moment(const struct exchange_capture *cap, enum exchange_moment moment,
                       int64_t wall_us)
{
    if (cap && cap->ops->moment)
        cap->ops->moment(cap->arg, moment, wall_us);
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

int exchange_read_request(struct stream *client, const struct exchange_timeouts *t,
                          struct http1_head *head, struct http1_error *err)
{
    bool got_nothing;
    int64_t deadline;
    /* The header timeout starts with the first byte, so an idle keep-alive
     * connection is governed by the idle timeout alone. */
    if (stream_buffered(client) == 0 && stream_fill(client, t->idle_ms) <= 0)
        return 0;
    deadline = clock_mono_ms() + t->header_ms;
    int n = read_head(client, deadline, t->header_ms, false, parse_request_cb, NULL, head, err,
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

/* Adds to the reasons rules did not apply, for the flow record. */
static void add_note(struct exchange_rules *rw, const char *note)
{
    size_t used = strlen(rw->ctx->notes);
    snprintf(rw->ctx->notes + used, sizeof(rw->ctx->notes) - used, "%s%s", used ? "; " : "", note);
}

int exchange_apply_header_rules(struct exchange_rules *rw, const struct http1_head *in,
                                struct exchange_modified_head **out)
{
    struct rules_header *fields = NULL;
    struct exchange_modified_head *mod = NULL;
    int rc = -1;
    *out = NULL;
    fields = calloc(in->num_headers ? in->num_headers : 1, sizeof(*fields));
    if (!fields)
        goto out;
    for (size_t i = 0; i < in->num_headers; i++)
        fields[i] = (struct rules_header){in->headers[i].name, in->headers[i].name_len,
                                          in->headers[i].value, in->headers[i].value_len};
    mod = calloc(1, sizeof(*mod));
    if (!mod || rules_apply_headers(rw->set, rw->ctx, fields, in->num_headers, &mod->fields) < 0)
        goto out;
    if (mod->fields.fields) {
        mod->head = *in;
        size_t n = mod->fields.count;
        if (n > HTTP1_MAX_HEADERS) {
            add_note(rw, "header rules made too many fields: the last ones were dropped");
            n = HTTP1_MAX_HEADERS;
        }
        for (size_t i = 0; i < n; i++)
            mod->head.headers[i] =
                (struct http1_header){mod->fields.fields[i].name, mod->fields.fields[i].name_len,
                                      mod->fields.fields[i].value, mod->fields.fields[i].value_len};
        mod->head.num_headers = n;
        *out = mod;
        mod = NULL;
    }
    rc = 0;
out:
    exchange_modified_head_free(mod);
    free(fields);
    return rc;
}

void exchange_modified_head_free(struct exchange_modified_head *mod)
{
    if (!mod)
        return;
    rules_headers_free(&mod->fields);
    free(mod);
}

int exchange_request_build(struct exchange_request *out, const struct http1_head *req,
                           const char *target, size_t target_len, const char *host_value)
{
    struct buf b;
    head_start(&b);
    memset(out, 0, sizeof(*out));
    size_t mlen = req->method_len < sizeof(out->method) ? req->method_len : sizeof(out->method) - 1;
    memcpy(out->method, req->method, mlen);
    out->version_minor = req->version_minor;
    out->framing = req->framing;
    out->content_length = req->content_length;
    out->keep_alive = req->keep_alive;
    out->expect_continue = req->expect_continue;
    out->is_upgrade = req->is_upgrade;
    const struct http1_header *ce = http1_find_header(req, "Content-Encoding");
    if (ce)
        snprintf(out->content_encoding, sizeof(out->content_encoding), "%.*s", (int)ce->value_len,
                 ce->value);

    buf_put(&b, req->method, req->method_len);
    buf_put(&b, " ", 1);
    buf_put(&b, target, target_len);
    buf_str(&b, " HTTP/1.1\r\n");
    if (host_value) {
        buf_str(&b, "Host: ");
        buf_str(&b, host_value);
        buf_str(&b, "\r\n");
    }
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http1_header *h = &req->headers[i];
        /* Host stays even when Connection names it: dropping it would change
         * which site the origin serves. */
        if (name_is(h, "Host")) {
            if (!host_value)
                put_field(&b, h->name, h->name_len, h->value, h->value_len);
            continue;
        }
        if (http1_is_hop_by_hop(req, h) || name_is(h, "Content-Length"))
            continue;
        if (req->expect_continue && name_is(h, "Expect"))
            continue;
        put_field(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (req->is_upgrade) {
        const struct http1_header *up = http1_find_header(req, "Upgrade");
        buf_str(&b, "Connection: Upgrade\r\n");
        if (up)
            put_field(&b, "Upgrade", 7, up->value, up->value_len);
    }
    if (req->framing == HTTP1_BODY_LENGTH) {
        char cl[48];
        snprintf(cl, sizeof(cl), "Content-Length: %llu\r\n",
                 (unsigned long long)req->content_length);
        buf_str(&b, cl);
    } else if (req->framing == HTTP1_BODY_CHUNKED) {
        buf_str(&b, "Transfer-Encoding: chunked\r\n");
    }
    buf_str(&b, "Via: " EXCHANGE_VIA "\r\n\r\n");
    out->head = head_finish(&b, &out->head_len);
    return out->head != NULL ? 0 : -1;
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

/* The words for the client failing while we send to it: one that went
 * quiet until --io-timeout is not one that went away. */
static const char *client_failed(const struct stream *client, bool is_response)
{
    if (client->has_timed_out)
        return is_response ? "client stopped reading the response (--io-timeout)"
                           : "client stopped reading (--io-timeout)";
    return is_response ? "client went away during the response" : "client went away";
}

/* Likewise for the origin failing while it sends the response body. */
static const char *origin_failed(const struct stream *upstream)
{
    return upstream->has_timed_out ? "origin stopped sending the response (--io-timeout)"
                                   : "origin connection broke during the response";
}

/* Reads one body slice by slice in whatever framing src uses; the slices
 * point into src's buffer and stay valid until the next call. */
struct body_reader {
    struct stream *src;
    enum http1_framing in;
    uint64_t remaining;            /* HTTP1_BODY_LENGTH */
    struct http1_chunked *chunked; /* owned, HTTP1_BODY_CHUNKED */
    size_t pending;                /* bytes of src to consume before reading on */
    bool done;
    enum body_fault fault;
};

static int body_reader_init(struct body_reader *r, struct stream *src, enum http1_framing in,
                            uint64_t length)
{
    memset(r, 0, sizeof(*r));
    r->src = src;
    r->in = in;
    r->remaining = length;
    r->done = in == HTTP1_BODY_NONE || (in == HTTP1_BODY_LENGTH && length == 0);
    if (in == HTTP1_BODY_CHUNKED) {
        r->chunked = malloc(sizeof(*r->chunked));
        if (!r->chunked)
            return -1;
        http1_chunked_init(r->chunked);
    }
    return 0;
}

static void body_reader_free(struct body_reader *r)
{
    free(r->chunked);
    r->chunked = NULL;
}

/* Returns 1 with the next slice, 0 at the end of the body, -1 on a fault. */
static int body_next(struct body_reader *r, int timeout_ms, const char **data, size_t *len)
{
    stream_consume(r->src, r->pending);
    r->pending = 0;
    while (!r->done) {
        if (stream_buffered(r->src) == 0) {
            ssize_t n = stream_fill(r->src, timeout_ms);
            if (n == STREAM_EOF && r->in == HTTP1_BODY_UNTIL_CLOSE) {
                r->done = true;
                break;
            }
            if (n < 0) {
                r->fault = FAULT_SRC;
                return -1;
            }
        }
        const char *in = stream_data(r->src);
        size_t have = stream_buffered(r->src);
        if (r->in == HTTP1_BODY_CHUNKED) {
            size_t used = 0;
            enum http1_chunk_result cr =
                http1_chunked_decode(r->chunked, in, have, &used, data, len);
            if (cr == HTTP1_CHUNK_ERROR) {
                r->fault = FAULT_FRAMING;
                return -1;
            }
            if (cr == HTTP1_CHUNK_DONE) {
                stream_consume(r->src, used);
                r->done = true;
                break;
            }
            if (cr == HTTP1_CHUNK_DATA) {
                r->pending = used;
                return 1;
            }
            stream_consume(r->src, used);
            continue;
        }
        size_t take = have;
        if (r->in == HTTP1_BODY_LENGTH && take > r->remaining)
            take = (size_t)r->remaining;
        if (r->in == HTTP1_BODY_LENGTH) {
            r->remaining -= take;
            r->done = r->remaining == 0;
        }
        r->pending = take;
        *data = in;
        *len = take;
        return 1;
    }
    return 0;
}

/*
 * Sends what is left of the body in r to dst (NULL: discard), after prefix
 * (bytes already read from r by the caller), framed as out. Returns 0 or -1
 * with *fault.
 */
static int send_body_rest(struct body_reader *r, const unsigned char *prefix, size_t prefix_len,
                          struct stream *dst, enum out_framing out, int timeout_ms, uint64_t *count,
                          const struct exchange_capture *cap, enum exchange_side side,
                          enum body_fault *fault)
{
    const char *data;
    size_t len;
    int n;
    *fault = FAULT_NONE;
    if (prefix_len > 0 && dst &&
        put_chunk(dst, out, (const char *)prefix, prefix_len, timeout_ms) != STREAM_OK) {
        *fault = FAULT_DST;
        return -1;
    }
    while ((n = body_next(r, timeout_ms, &data, &len)) > 0) {
        if (dst && put_chunk(dst, out, data, len, timeout_ms) != STREAM_OK) {
            *fault = FAULT_DST;
            return -1;
        }
        cap_body(cap, side, data, len);
        *count += len;
    }
    if (n < 0) {
        /* Pass on what did arrive, so the client sees a short body rather
         * than nothing. */
        if (dst)
            stream_flush(dst, timeout_ms);
        *fault = r->fault;
        return -1;
    }
    if (dst && out == OUT_CHUNKED) {
        int w = stream_putstr(dst, "0\r\n", timeout_ms);
        if (w == STREAM_OK && r->chunked && r->chunked->trailers_len > 0)
            w = stream_put(dst, r->chunked->trailers, r->chunked->trailers_len, timeout_ms);
        if (w == STREAM_OK)
            w = stream_putstr(dst, "\r\n", timeout_ms);
        if (w != STREAM_OK) {
            *fault = FAULT_DST;
            return -1;
        }
    }
    if (dst && stream_flush(dst, timeout_ms) != STREAM_OK) {
        *fault = FAULT_DST;
        return -1;
    }
    return 0;
}

/* Copies one body from src to dst (NULL: discard). Returns 0 or -1 with *fault. */
static int move_body(struct stream *src, struct stream *dst, enum http1_framing in, uint64_t length,
                     enum out_framing out, int timeout_ms, uint64_t *count,
                     const struct exchange_capture *cap, enum exchange_side side,
                     enum body_fault *fault)
{
    struct body_reader r;
    int rc = -1;
    *fault = FAULT_SRC;
    if (body_reader_init(&r, src, in, length) < 0)
        goto out;
    rc = send_body_rest(&r, NULL, 0, dst, out, timeout_ms, count, cap, side, fault);
out:
    body_reader_free(&r);
    return rc;
}

/* Every body buffer of rules in the process, against --rewrite-memory. */
static struct membudget rewrite_memory = MEMBUDGET_INIT;
static pthread_once_t rewrite_memory_once = PTHREAD_ONCE_INIT;

/*
 * glibc raises its mmap threshold to the size of each mmap'd block freed (up
 * to 32 MiB), so after the first large body every later one comes from the
 * arenas, whose memory stays with the process once freed: 100 bodies of 16
 * MiB left it at 320-430 MB. A fixed threshold turns that off; body buffers
 * are then mmap'd, grow by mremap, and go back to the system when freed.
 */
static void fix_mmap_threshold(void)
{
#ifdef M_MMAP_THRESHOLD
    mallopt(M_MMAP_THRESHOLD, EXCHANGE_MMAP_THRESHOLD_BYTES);
#endif
}

/* Why a body went on as it was: the buffers of all exchanges are full. */
static void add_memory_note(struct exchange_rules *rw)
{
    char note[128];
    if (rw->memory_limit >= 1024 * 1024)
        snprintf(note, sizeof(note), "body rules skipped: rewrite memory budget (%zu MiB) in use",
                 rw->memory_limit / (1024 * 1024));
    else
        snprintf(note, sizeof(note), "body rules skipped: rewrite memory budget (%zu bytes) in use",
                 rw->memory_limit);
    add_note(rw, note);
}

/*
 * Reads the body into memory, up to limit bytes, reserving what the buffer
 * grows by in rewrite_memory first (*reserved adds it up). Returns 0 with the
 * whole body in *buf (caller frees), 1 when it is larger than limit or 2 when
 * memory_limit is reached (*buf holds the first bytes; the rest is still in
 * r), or -1 on a fault.
 */
static int buffer_body(struct body_reader *r, size_t limit, size_t memory_limit, int timeout_ms,
                       unsigned char **buf, size_t *len, size_t *reserved)
{
    const char *data;
    size_t n, cap = 0;
    int got;
    *buf = NULL;
    *len = 0;
    while ((got = body_next(r, timeout_ms, &data, &n)) > 0) {
        bool is_full = false;
        if (*len + n > cap) {
            size_t want = cap ? cap : 16384;
            while (want < *len + n)
                want *= 2;
            /* Past limit the body is not rewritten: doubling's slack beyond
             * it would hold up to twice the limit for nothing. */
            size_t ceiling = *len + n > limit + 1 ? *len + n : limit + 1;
            if (want > ceiling)
                want = ceiling;
            if (!membudget_reserve(&rewrite_memory, want - cap, memory_limit)) {
                /* The chunk in hand is already taken from r: keep it with
                 * an exact growth, counted past the limit (one read chunk
                 * at most), so that the body goes on whole. */
                is_full = true;
                want = *len + n;
                membudget_charge(&rewrite_memory, want - cap);
            }
            *reserved += want - cap;
            unsigned char *grown = realloc(*buf, want);
            if (!grown) {
                r->fault = FAULT_SRC;
                return -1;
            }
            *buf = grown;
            cap = want;
        }
        memcpy(*buf + *len, data, n);
        *len += n;
        if (is_full)
            return 2;
        if (*len > limit)
            return 1;
    }
    return got < 0 ? -1 : 0;
}

char *exchange_reframe(const char *head, size_t head_len, bool is_head, uint64_t content_length,
                       bool drop_encoding, size_t *out_len)
{
    struct buf b;
    head_start(&b);
    const char *p = head, *end = head + head_len;
    const char *line_end = p - 1;
    bool declared = false;
    char cl[48];
    snprintf(cl, sizeof(cl), "Content-Length: %llu\r\n", (unsigned long long)content_length);
    if (is_head) {
        line_end = memchr(p, '\n', (size_t)(end - p));
        if (!line_end)
            return NULL;
        buf_put(&b, p, (size_t)(line_end + 1 - p)); /* start line */
    }
    for (p = line_end + 1; p < end; p = line_end + 1) {
        line_end = memchr(p, '\n', (size_t)(end - p));
        if (!line_end)
            break;
        size_t n = (size_t)(line_end + 1 - p);
        if (n <= 2) /* the blank line */
            break;
        if (n > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
            /* The new length takes the old one's place. */
            if (!declared)
                buf_str(&b, cl);
            declared = true;
            continue;
        }
        if ((n > 18 && strncasecmp(p, "Transfer-Encoding:", 18) == 0) ||
            (drop_encoding && n > 17 && strncasecmp(p, "Content-Encoding:", 17) == 0))
            continue;
        buf_put(&b, p, n);
    }
    if (!declared)
        buf_str(&b, cl);
    if (is_head)
        buf_str(&b, "\r\n");
    return head_finish(&b, out_len);
}

static char *reframe_head(const char *head, size_t head_len, uint64_t content_length,
                          bool drop_encoding, size_t *out_len)
{
    return exchange_reframe(head, head_len, true, content_length, drop_encoding, out_len);
}

/* One body on its way from src to dst, after head. */
struct body_hop {
    struct stream *src;
    enum http1_framing in;
    uint64_t length; /* HTTP1_BODY_LENGTH */
    struct stream *dst;
    enum out_framing out;
    const char *head; /* sent first; reframed when the body is buffered */
    size_t head_len;
    const char *content_encoding; /* of the body, "" or NULL for none */
    enum exchange_side side;
};

/*
 * A body that body rules want: buffered (up to the rewrite limit), decoded,
 * rewritten, and sent with a Content-Length after head (reframed). Too large
 * or undecodable bodies go on unmodified and the reason lands in the rules
 * notes. Returns 0 or -1 with *fault.
 */
static int send_rewritten_body(struct exchange_rules *rw, const struct body_hop *hop,
                               const struct exchange_capture *cap, int timeout_ms, uint64_t *count,
                               enum body_fault *fault)
{
    struct stream *dst = hop->dst;
    const char *head = hop->head;
    size_t head_len = hop->head_len;
    const char *content_encoding = hop->content_encoding;
    struct body_reader r;
    unsigned char *raw = NULL, *decoded = NULL, *rewritten = NULL;
    size_t raw_len = 0, decoded_len = 0, rewritten_len = 0;
    size_t reserved = 0; /* in rewrite_memory, for raw, decoded and rewritten */
    char *new_head = NULL;
    size_t new_head_len = 0;
    char err[256];
    int rc = -1;
    *fault = FAULT_SRC;
    if (body_reader_init(&r, hop->src, hop->in, hop->length) < 0)
        goto out;
    if (hop->in == HTTP1_BODY_LENGTH && hop->length > rw->limit) {
        add_note(rw, "body larger than --rewrite-limit: passed on unmodified");
        if (stream_put(dst, head, head_len, timeout_ms) != STREAM_OK) {
            *fault = FAULT_DST;
            goto out;
        }
        rc = send_body_rest(&r, NULL, 0, dst, hop->out, timeout_ms, count, cap, hop->side, fault);
        goto out;
    }
    pthread_once(&rewrite_memory_once, fix_mmap_threshold);
    int b = buffer_body(&r, rw->limit, rw->memory_limit, timeout_ms, &raw, &raw_len, &reserved);
    if (b < 0) {
        *fault = r.fault;
        goto out;
    }
    if (b > 0) {
        if (b == 2)
            add_memory_note(rw);
        else
            add_note(rw, "body larger than --rewrite-limit: passed on unmodified");
        if (stream_put(dst, head, head_len, timeout_ms) != STREAM_OK) {
            *fault = FAULT_DST;
            goto out;
        }
        cap_body(cap, hop->side, raw, raw_len);
        *count += raw_len;
        rc = send_body_rest(&r, raw, raw_len, dst, hop->out, timeout_ms, count, cap, hop->side,
                            fault);
        goto out;
    }
    const unsigned char *plain = raw;
    size_t plain_len = raw_len;
    bool is_encoded =
        content_encoding && content_encoding[0] && strcasecmp(content_encoding, "identity") != 0;
    if (is_encoded) {
        if (codec_decode_content(content_encoding, raw, raw_len, rw->limit, &decoded, &decoded_len,
                                 err, sizeof(err)) < 0) {
            char note[320];
            snprintf(note, sizeof(note), "body not rewritten: %s", err);
            add_note(rw, note);
            plain = NULL;
        } else if (!membudget_reserve(&rewrite_memory, decoded_len, rw->memory_limit)) {
            /* Its size is known only once decoded: a moment over the budget,
             * given back at once. */
            add_memory_note(rw);
            free(decoded);
            decoded = NULL;
            plain = NULL;
        } else {
            reserved += decoded_len;
            plain = decoded;
            plain_len = decoded_len;
        }
    }
    /* The rewritten copy is about as large as the input: reserve that much
     * first, and count any growth once it is made (at most rw->limit). */
    if (plain && !membudget_reserve(&rewrite_memory, plain_len, rw->memory_limit)) {
        add_memory_note(rw);
        plain = NULL;
    } else if (plain) {
        reserved += plain_len;
    }
    if (plain && rules_apply_body(rw->set, rw->ctx, plain, plain_len, rw->limit, &rewritten,
                                  &rewritten_len) < 0) {
        *fault = FAULT_SRC;
        goto out;
    }
    if (rewritten && rewritten_len > plain_len) {
        membudget_charge(&rewrite_memory, rewritten_len - plain_len);
        reserved += rewritten_len - plain_len;
    }
    /* Unchanged: the bytes as they came (still encoded); changed: identity,
     * which is what tapwire-rules(5) documents. */
    const unsigned char *send = rewritten ? rewritten : raw;
    size_t send_len = rewritten ? rewritten_len : raw_len;
    new_head = reframe_head(head, head_len, send_len, rewritten != NULL, &new_head_len);
    if (!new_head)
        goto out;
    if (rewritten && cap && cap->ops->body_original)
        cap->ops->body_original(cap->arg, hop->side, plain, plain_len);
    if (cap && cap->ops->reframed)
        cap->ops->reframed(cap->arg, hop->side, send_len, rewritten != NULL);
    cap_body(cap, hop->side, send, send_len);
    *count += send_len;
    if (stream_put(dst, new_head, new_head_len, timeout_ms) != STREAM_OK ||
        stream_put(dst, send, send_len, timeout_ms) != STREAM_OK ||
        stream_flush(dst, timeout_ms) != STREAM_OK) {
        *fault = FAULT_DST;
        goto out;
    }
    *fault = FAULT_NONE;
    rc = 0;
out:
    body_reader_free(&r);
    free(raw);
    free(decoded);
    free(rewritten);
    membudget_release(&rewrite_memory, reserved);
    free(new_head);
    return rc;
}

int exchange_discard_body(struct stream *client, const struct exchange_request *req,
                          const struct exchange_timeouts *t)
{
    uint64_t count = 0;
    enum body_fault fault;
    return move_body(client, NULL, req->framing, req->content_length, OUT_RAW, t->io_ms, &count,
                     NULL, EXCHANGE_REQUEST, &fault);
}

/* Builds the head the client gets for response resp. */
static char *build_response_head(const struct http1_head *resp, const struct exchange_request *req,
                                 enum out_framing *out, bool *client_keep_alive, size_t *len)
{
    struct buf b;
    head_start(&b);
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
    buf_str(&b, line);
    buf_put(&b, resp->reason, resp->reason_len);
    buf_str(&b, "\r\n");
    for (size_t i = 0; i < resp->num_headers; i++) {
        const struct http1_header *h = &resp->headers[i];
        if (http1_is_hop_by_hop(resp, h))
            continue;
        /* A bodiless response (HEAD, 304) keeps the origin's Content-Length:
         * it describes the representation, not this message's framing. */
        if (name_is(h, "Content-Length") && resp->framing != HTTP1_BODY_NONE)
            continue;
        put_field(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (resp->status == 101) {
        const struct http1_header *up = http1_find_header(resp, "Upgrade");
        buf_str(&b, "Connection: Upgrade\r\n");
        if (up)
            put_field(&b, "Upgrade", 7, up->value, up->value_len);
    } else if (resp->framing == HTTP1_BODY_LENGTH) {
        snprintf(line, sizeof(line), "Content-Length: %llu\r\n",
                 (unsigned long long)resp->content_length);
        buf_str(&b, line);
    } else if (*out == OUT_CHUNKED) {
        buf_str(&b, "Transfer-Encoding: chunked\r\n");
    }
    if (resp->status >= 200 || resp->status == 101) {
        if (!keep)
            buf_str(&b, "Connection: close\r\n");
        else if (!client_11)
            buf_str(&b, "Connection: keep-alive\r\n");
    }
    buf_str(&b, "Via: " EXCHANGE_VIA "\r\n\r\n");
    *client_keep_alive = keep;
    return head_finish(&b, len);
}

/* One exchange_forward() in progress: what its three phases share. */
struct forward {
    struct stream *client;
    struct stream *upstream;
    const struct exchange_request *req;
    const struct exchange_timeouts *t;
    struct exchange_rules *rw; /* NULL: no rules */
    const struct exchange_capture *cap;
    struct exchange_result *res;
    struct http1_head *resp;                 /* the final response head */
    struct exchange_modified_head *resp_mod; /* after header rules, NULL: unchanged */
    size_t resp_head_len;
    char *head; /* the head the client gets */
};

/* The request head and body to the origin. Returns 0 to read the response
 * (also when the origin stopped reading the body: it may have answered,
 * e.g. 413), -1 when the exchange is over. */
static int send_request(struct forward *f)
{
    const struct exchange_request *req = f->req;
    struct exchange_result *res = f->res;
    int io_ms = f->t->io_ms;
    enum body_fault fault;
    /* A body that rules rewrite changes the head's framing: the head waits
     * until the body is known. */
    bool rewrite_request_body =
        f->rw && req->framing != HTTP1_BODY_NONE && rules_wants_body(f->rw->set, f->rw->ctx);

    if ((!rewrite_request_body &&
         stream_put(f->upstream, req->head, req->head_len, io_ms) != STREAM_OK) ||
        (req->framing == HTTP1_BODY_NONE && stream_flush(f->upstream, io_ms) != STREAM_OK)) {
        res->upstream_stale = true;
        snprintf(res->error, sizeof(res->error), "sending the request upstream failed: %s",
                 f->upstream->error[0] ? f->upstream->error : "connection closed");
        return -1;
    }
    if (req->framing == HTTP1_BODY_NONE)
        return 0;
    if (req->expect_continue && req->version_minor >= 1 &&
        (stream_putstr(f->client, "HTTP/1.1 100 Continue\r\n\r\n", io_ms) != STREAM_OK ||
         stream_flush(f->client, io_ms) != STREAM_OK)) {
        snprintf(res->error, sizeof(res->error), "%s before its body",
                 client_failed(f->client, false));
        res->client_keep_alive = false;
        res->status = -1; /* nothing more can be sent */
        return -1;
    }
    enum out_framing out = req->framing == HTTP1_BODY_CHUNKED ? OUT_CHUNKED : OUT_RAW;
    struct body_hop hop = {.src = f->client,
                           .in = req->framing,
                           .length = req->content_length,
                           .dst = f->upstream,
                           .out = out,
                           .head = req->head,
                           .head_len = req->head_len,
                           .content_encoding = req->content_encoding,
                           .side = EXCHANGE_REQUEST};
    int moved = rewrite_request_body
                    ? send_rewritten_body(f->rw, &hop, f->cap, io_ms, &res->request_bytes, &fault)
                    : move_body(f->client, f->upstream, req->framing, req->content_length, out,
                                io_ms, &res->request_bytes, f->cap, EXCHANGE_REQUEST, &fault);
    if (moved == 0)
        return 0;
    res->client_keep_alive = false;
    if (fault == FAULT_DST) {
        /* The origin stopped reading: it may have answered already (e.g.
         * 413), so try to relay that. */
        snprintf(res->error, sizeof(res->error), "origin stopped reading the body: %s",
                 f->upstream->error[0] ? f->upstream->error : "connection closed");
        return 0;
    }
    snprintf(res->error, sizeof(res->error), "%s while reading the request body",
             fault == FAULT_FRAMING     ? "bad chunked framing"
             : f->client->has_timed_out ? "client went quiet (--io-timeout)"
                                        : "client connection failed");
    if (fault == FAULT_FRAMING)
        res->error_status = 400;
    else
        res->status = -1;
    return -1;
}

/* Reads response heads until the final one (interim 1xx relayed on), into
 * f->resp. Returns 0, or -1 with f->res->error. */
static int read_final_head(struct forward *f, uint64_t upstream_read_before)
{
    const struct exchange_request *req = f->req;
    struct exchange_result *res = f->res;
    struct response_ctx rctx = {.method = req->method};
    int io_ms = f->t->io_ms;
    int64_t first_byte_us = 0;

    for (;;) {
        struct http1_error perr = {0};
        bool got_nothing;
        int n =
            read_head(f->upstream, clock_mono_ms() + io_ms, io_ms, true, parse_response_cb, &rctx,
                      f->resp, &perr, &got_nothing, first_byte_us == 0 ? &first_byte_us : NULL);
        if (first_byte_us > 0) {
            cap_moment(f->cap, EXCHANGE_FIRST_BYTE, first_byte_us);
            first_byte_us = -1; /* told once: interim responses come first */
        }
        if (n < 0) {
            bool nothing_back = f->upstream->bytes_read == upstream_read_before;
            if (nothing_back && req->framing == HTTP1_BODY_NONE && perr.status != 408)
                res->upstream_stale = true;
            if (perr.status == 408) {
                snprintf(res->error, sizeof(res->error), "the origin did not answer within %d ms",
                         io_ms);
                res->error_status = 504;
                return -1;
            }
            snprintf(res->error, sizeof(res->error), "%s",
                     got_nothing || nothing_back
                         ? "the origin closed the connection without a response"
                     : perr.message ? perr.message
                                    : "invalid response head");
            return -1;
        }
        if (f->resp->status >= 200 || f->resp->status == 101)
            break;
        /* Interim responses: 100 is ours to send (we answered Expect),
         * others (103 Early Hints) go through to HTTP/1.1 clients. */
        if (f->resp->status != 100 && req->version_minor >= 1 &&
            stream_put(f->client, stream_data(f->upstream), (size_t)n, io_ms) != STREAM_OK) {
            res->status = -1;
            snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, false));
            return -1;
        }
        stream_consume(f->upstream, (size_t)n);
    }
    f->resp_head_len = f->resp->head_len;
    if (f->resp->status == 101 && !req->is_upgrade) {
        snprintf(res->error, sizeof(res->error), "the origin switched protocols unasked");
        return -1;
    }
    return 0;
}

/* The response to the client: head (after header rules), then the body as
 * it comes, rewritten by body rules, or the upgraded connection. Returns 0,
 * or -1 with f->res->error. */
static int relay_response(struct forward *f)
{
    struct exchange_result *res = f->res;
    const struct http1_head *resp = f->resp;
    const struct http1_head *sent_resp = resp;
    struct stream *client = f->client, *upstream = f->upstream;
    char response_encoding[128] = "";
    enum body_fault fault;
    enum out_framing out;
    size_t head_len = 0;
    int io_ms = f->t->io_ms;

    /* Response rules see the final head; header rules give a modified copy
     * the client's head is built from. */
    if (f->rw && resp->status != 101) {
        const struct http1_header *ct = http1_find_header(resp, "Content-Type");
        char type[RULES_MAX_CONTENT_TYPE_BYTES] = "";
        if (ct)
            snprintf(type, sizeof(type), "%.*s", (int)ct->value_len, ct->value);
        rules_ctx_set_response(f->rw->ctx, resp->status, ct ? type : NULL);
        if (exchange_apply_header_rules(f->rw, resp, &f->resp_mod) < 0) {
            snprintf(res->error, sizeof(res->error), "out of memory");
            return -1;
        }
        if (f->resp_mod)
            sent_resp = &f->resp_mod->head;
        const struct http1_header *ce = http1_find_header(sent_resp, "Content-Encoding");
        if (ce)
            snprintf(response_encoding, sizeof(response_encoding), "%.*s", (int)ce->value_len,
                     ce->value);
    }
    bool keep = res->client_keep_alive;
    f->head = build_response_head(sent_resp, f->req, &out, &keep, &head_len);
    if (!f->head) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        return -1;
    }
    res->client_keep_alive = keep && resp->status != 101;
    res->upstream_reusable =
        resp->keep_alive && resp->framing != HTTP1_BODY_UNTIL_CLOSE && res->error[0] == '\0';
    res->status = resp->status;
    if (f->cap && f->cap->ops->response_head)
        f->cap->ops->response_head(f->cap->arg, sent_resp, f->resp_mod ? resp : NULL);
    enum http1_framing in = resp->framing;
    uint64_t length = resp->content_length;
    int status = resp->status;
    bool rewrite_response_body =
        f->rw && in != HTTP1_BODY_NONE && status != 101 && rules_wants_body(f->rw->set, f->rw->ctx);
    /* resp and resp_mod point into the upstream buffer: done with them. */
    stream_consume(upstream, f->resp_head_len);
    if (rewrite_response_body) {
        struct body_hop hop = {.src = upstream,
                               .in = in,
                               .length = length,
                               .dst = client,
                               .out = out,
                               .head = f->head,
                               .head_len = head_len,
                               .content_encoding = response_encoding,
                               .side = EXCHANGE_RESPONSE};
        if (send_rewritten_body(f->rw, &hop, f->cap, io_ms, &res->response_bytes, &fault) < 0) {
            res->client_keep_alive = false;
            res->upstream_reusable = false;
            snprintf(res->error, sizeof(res->error), "%s",
                     fault == FAULT_DST ? client_failed(client, true) : origin_failed(upstream));
            return -1;
        }
        return 0;
    }
    if (stream_put(client, f->head, head_len, io_ms) != STREAM_OK) {
        snprintf(res->error, sizeof(res->error), "%s", client_failed(client, false));
        res->client_keep_alive = false;
        return -1;
    }
    if (status == 101) {
        uint64_t up_bytes = 0, down_bytes = 0;
        res->upgraded = true;
        res->client_keep_alive = false;
        res->upstream_reusable = false;
        int r = stream_relay(client, upstream, f->t->idle_ms, &up_bytes, &down_bytes);
        res->request_bytes += up_bytes;
        res->response_bytes += down_bytes;
        if (f->cap && f->cap->ops->upgraded)
            f->cap->ops->upgraded(f->cap->arg, up_bytes, down_bytes);
        if (r < 0 && r != STREAM_TIMEOUT)
            snprintf(res->error, sizeof(res->error), "upgraded connection ended: %s",
                     stream_status_text(r));
        return 0;
    }
    if (move_body(upstream, client, in, length, out, io_ms, &res->response_bytes, f->cap,
                  EXCHANGE_RESPONSE, &fault) < 0) {
        res->client_keep_alive = false;
        res->upstream_reusable = false;
        snprintf(res->error, sizeof(res->error), "%s",
                 fault == FAULT_DST       ? client_failed(client, true)
                 : fault == FAULT_FRAMING ? "origin sent bad chunked framing"
                                          : origin_failed(upstream));
        return -1;
    }
    if (in == HTTP1_BODY_NONE && stream_flush(client, io_ms) != STREAM_OK) {
        res->client_keep_alive = false;
        snprintf(res->error, sizeof(res->error), "%s", client_failed(client, false));
        return -1;
    }
    return res->error[0] ? -1 : 0;
}

int exchange_forward(struct stream *client, struct stream *upstream,
                     const struct exchange_request *req, const struct exchange_timeouts *t,
                     struct exchange_rules *rw, const struct exchange_capture *cap,
                     struct exchange_result *res)
{
    struct forward f = {.client = client,
                        .upstream = upstream,
                        .req = req,
                        .t = t,
                        .rw = rw,
                        .cap = cap,
                        .res = res};
    uint64_t upstream_read_before = upstream->bytes_read;
    int rc = -1;

    memset(res, 0, sizeof(*res));
    res->client_keep_alive = req->keep_alive;
    res->error_status = 502;
    if (send_request(&f) < 0)
        goto out;
    cap_moment(cap, EXCHANGE_REQUEST_SENT, clock_wall_us());
    f.resp = malloc(sizeof(*f.resp));
    if (f.resp == NULL) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    if (read_final_head(&f, upstream_read_before) < 0)
        goto out;
    rc = relay_response(&f);
out:
    if (res->status < 0)
        res->status = 0, res->client_keep_alive = false;
    cap_moment(cap, EXCHANGE_DONE, clock_wall_us());
    exchange_modified_head_free(f.resp_mod);
    free(f.head);
    free(f.resp);
    return rc;
}
