/*
 * exchange: one request/response through the proxy.
 *
 * Bodies are streamed in slices of the codec's buffer, never held whole, so
 * a 1 GiB download costs the same memory as 1 KiB; only bodies that rules
 * rewrite are buffered, up to --rewrite-limit and within --rewrite-memory.
 * Framing is re-declared on each hop by the codec from what its parser
 * decided, never copied across (see http1codec.h).
 * Expect: 100-continue is answered by the proxy itself (the origin gets the
 * body without the Expect field), as mitmproxy does: the client never waits
 * on an origin that ignores Expect.
 */
#include "exchange.h"

#include "clock.h"

#include "codec.h"
#include "http1codec.h"
#include "membudget.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

int exchange_rewrite_head(const struct exchange_rewrite *rw, const struct message *in,
                          struct message *out)
{
    struct message_fields fields;
    int changed = rw->ops->fields(rw->arg, in, &fields);

    if (changed <= 0)
        return changed;
    return message_copy(out, in, &fields) == 0 ? 1 : -1;
}

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

/*
 * Sends what is left of the body in src to dst, after prefix (bytes already
 * read from src by the caller), then its end and trailers. Returns 0 or -1
 * with *fault.
 */
static int send_body_rest(struct body_source *src, const unsigned char *prefix, size_t prefix_len,
                          struct body_sink *dst, int timeout_ms, uint64_t *count,
                          const struct exchange_capture *cap, enum exchange_side side,
                          enum body_fault *fault)
{
    const char *data;
    size_t len;
    int n;
    *fault = BODY_FAULT_NONE;
    if (prefix_len > 0 && dst->write(dst, prefix, prefix_len, timeout_ms) != STREAM_OK) {
        *fault = BODY_FAULT_SINK;
        return -1;
    }
    while ((n = src->next(src, timeout_ms, &data, &len)) > 0) {
        if (dst->write(dst, data, len, timeout_ms) != STREAM_OK) {
            *fault = BODY_FAULT_SINK;
            return -1;
        }
        cap_body(cap, side, data, len);
        *count += len;
    }
    if (n < 0) {
        /* Pass on what did arrive, so the client sees a short body rather
         * than nothing. */
        dst->flush(dst, timeout_ms);
        *fault = src->fault;
        return -1;
    }
    struct message_fields trailers = src->trailers(src);
    if (dst->end(dst, &trailers, timeout_ms) != STREAM_OK) {
        *fault = BODY_FAULT_SINK;
        return -1;
    }
    return 0;
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

static void add_note(const struct exchange_rewrite *rw, const char *note)
{
    if (rw->ops->note)
        rw->ops->note(rw->arg, note);
}

/* Why a body went on as it was: the buffers of all exchanges are full. */
static void add_memory_note(const struct exchange_rewrite *rw)
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
 * src), or -1 on a fault.
 */
static int buffer_body(struct body_source *src, size_t limit, size_t memory_limit, int timeout_ms,
                       unsigned char **buf, size_t *len, size_t *reserved)
{
    const char *data;
    size_t n, cap = 0;
    int got;
    *buf = NULL;
    *len = 0;
    while ((got = src->next(src, timeout_ms, &data, &n)) > 0) {
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
                /* The chunk in hand is already taken from src: keep it with
                 * an exact growth, counted past the limit (one read chunk
                 * at most), so that the body goes on whole. */
                is_full = true;
                want = *len + n;
                membudget_charge(&rewrite_memory, want - cap);
            }
            *reserved += want - cap;
            unsigned char *grown = realloc(*buf, want);
            if (!grown) {
                src->fault = BODY_FAULT_SOURCE;
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

int exchange_rewrite_body(const struct exchange_rewrite *rw, const char *content_encoding,
                          const unsigned char *raw, size_t raw_len,
                          struct exchange_body_rewrite *out)
{
    unsigned char *decoded = NULL;
    size_t decoded_len = 0;
    char err[256];

    memset(out, 0, sizeof(*out));
    pthread_once(&rewrite_memory_once, fix_mmap_threshold);
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
            out->reserved += decoded_len;
            out->decoded = decoded;
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
        out->reserved += plain_len;
    }
    if (plain && rw->ops->body(rw->arg, plain, plain_len, rw->limit, &out->rewritten,
                               &out->rewritten_len) < 0)
        return -1;
    if (out->rewritten && out->rewritten_len > plain_len) {
        membudget_charge(&rewrite_memory, out->rewritten_len - plain_len);
        out->reserved += out->rewritten_len - plain_len;
    }
    out->plain = plain;
    out->plain_len = plain != NULL ? plain_len : 0;
    return 0;
}

bool exchange_rewrite_reserve(const struct exchange_rewrite *rw, size_t bytes)
{
    if (membudget_reserve(&rewrite_memory, bytes, rw->memory_limit))
        return true;
    add_memory_note(rw);
    return false;
}

void exchange_rewrite_release(size_t bytes)
{
    membudget_release(&rewrite_memory, bytes);
}

void exchange_body_rewrite_free(struct exchange_body_rewrite *br)
{
    free(br->decoded);
    free(br->rewritten);
    membudget_release(&rewrite_memory, br->reserved);
    memset(br, 0, sizeof(*br));
}

struct forward;

/* One body on its way from src to dst, after its head. */
struct body_hop {
    struct body_source *src;
    struct body_sink *dst;
    const struct message *head; /* sent first; reframed when the body is buffered */
    /* Writes a head on dst's side and sets dst's framing from it. */
    int (*send_head)(struct forward *f, const struct message *head);
    const char *content_encoding; /* of the body, "" or NULL for none */
    enum exchange_side side;
};

/*
 * head with its body declared as content_length bytes, and without
 * Content-Encoding when the body was rewritten (sent as identity): *out
 * points into head's strings and *items (caller frees).
 */
static int reframed(const struct message *head, uint64_t content_length, bool drop_encoding,
                    struct message *out, struct message_field **items)
{
    size_t n = 0;

    *out = *head;
    out->body = MESSAGE_BODY_LENGTH;
    out->content_length = content_length;
    out->storage = NULL;
    *items = malloc((head->fields.count ? head->fields.count : 1) * sizeof(**items));
    if (*items == NULL)
        return -1;
    for (size_t i = 0; i < head->fields.count; i++) {
        const struct message_field *f = &head->fields.items[i];
        if (message_field_is(f, "Content-Length") || message_field_is(f, "Transfer-Encoding") ||
            (drop_encoding && message_field_is(f, "Content-Encoding")))
            continue;
        (*items)[n++] = *f;
    }
    out->fields = (struct message_fields){*items, n};
    return 0;
}

/*
 * A body that body rules want: buffered (up to the rewrite limit), decoded,
 * rewritten, and sent with a Content-Length after its head (reframed). Too
 * large or undecodable bodies go on unmodified and the reason lands in the
 * rules notes. Returns 0 or -1 with *fault.
 */
static int send_rewritten_body(struct forward *f, const struct exchange_rewrite *rw,
                               const struct body_hop *hop, const struct exchange_capture *cap,
                               int timeout_ms, uint64_t *count, enum body_fault *fault)
{
    struct body_source *src = hop->src;
    struct body_sink *dst = hop->dst;
    const char *content_encoding = hop->content_encoding;
    unsigned char *raw = NULL;
    size_t raw_len = 0;
    size_t reserved = 0; /* in rewrite_memory, for raw */
    struct exchange_body_rewrite br = {0};
    struct message new_head;
    struct message_field *new_items = NULL;
    int rc = -1;
    *fault = BODY_FAULT_SOURCE;
    if (hop->head->body == MESSAGE_BODY_LENGTH && hop->head->content_length > rw->limit) {
        add_note(rw, "body larger than --rewrite-limit: passed on unmodified");
        if (hop->send_head(f, hop->head) < 0) {
            *fault = BODY_FAULT_SINK;
            goto out;
        }
        rc = send_body_rest(src, NULL, 0, dst, timeout_ms, count, cap, hop->side, fault);
        goto out;
    }
    pthread_once(&rewrite_memory_once, fix_mmap_threshold);
    int b = buffer_body(src, rw->limit, rw->memory_limit, timeout_ms, &raw, &raw_len, &reserved);
    if (b < 0) {
        *fault = src->fault;
        goto out;
    }
    if (b > 0) {
        if (b == 2)
            add_memory_note(rw);
        else
            add_note(rw, "body larger than --rewrite-limit: passed on unmodified");
        if (hop->send_head(f, hop->head) < 0) {
            *fault = BODY_FAULT_SINK;
            goto out;
        }
        cap_body(cap, hop->side, raw, raw_len);
        *count += raw_len;
        rc = send_body_rest(src, raw, raw_len, dst, timeout_ms, count, cap, hop->side, fault);
        goto out;
    }
    if (exchange_rewrite_body(rw, content_encoding, raw, raw_len, &br) < 0) {
        *fault = BODY_FAULT_SOURCE;
        goto out;
    }
    const unsigned char *plain = br.plain, *rewritten = br.rewritten;
    size_t plain_len = br.plain_len, rewritten_len = br.rewritten_len;
    /* Unchanged: the bytes as they came (still encoded); changed: identity,
     * which is what tapwire-rules(5) documents. */
    const unsigned char *send = rewritten ? rewritten : raw;
    size_t send_len = rewritten ? rewritten_len : raw_len;
    if (reframed(hop->head, send_len, rewritten != NULL, &new_head, &new_items) < 0)
        goto out;
    if (rewritten && cap && cap->ops->body_original)
        cap->ops->body_original(cap->arg, hop->side, plain, plain_len);
    if (cap && cap->ops->reframed)
        cap->ops->reframed(cap->arg, hop->side, send_len, rewritten != NULL);
    cap_body(cap, hop->side, send, send_len);
    *count += send_len;
    if (hop->send_head(f, &new_head) < 0 || dst->write(dst, send, send_len, timeout_ms) < 0 ||
        dst->end(dst, NULL, timeout_ms) < 0) {
        *fault = BODY_FAULT_SINK;
        goto out;
    }
    *fault = BODY_FAULT_NONE;
    rc = 0;
out:
    free(raw);
    exchange_body_rewrite_free(&br);
    membudget_release(&rewrite_memory, reserved);
    free(new_items);
    return rc;
}

/* One exchange_forward() in progress: what its three phases share. */
struct forward {
    struct stream *client;
    struct stream *upstream;
    const struct message *req;
    const struct exchange_timeouts *t;
    const struct exchange_rewrite *rw; /* NULL: no rules */
    const struct exchange_capture *cap;
    struct exchange_result *res;
    char method[32];              /* req's, as a string for the response parser */
    struct http1_head *resp_head; /* the final response head, parsed */
    struct message resp;          /* a view of resp_head */
    struct message resp_owned;    /* resp after header rules, or copied to outlive the head */
    struct http1codec_writer up_writer;
    struct http1codec_writer client_writer;
    bool client_keep_alive; /* what the response head declares */
};

/* The request head for the origin; the body after it goes out as it says. */
static int send_request_head(struct forward *f, const struct message *head)
{
    size_t len = 0;
    char *text = http1codec_request_head(head, &len);
    int r = text ? stream_put(f->upstream, text, len, f->t->io_ms) : -1;

    free(text);
    http1codec_writer_init(&f->up_writer, f->upstream, head->body == MESSAGE_BODY_STREAM);
    return r == STREAM_OK ? 0 : -1;
}

/* The response head for the client, keeping the connection as decided. */
static int send_response_head(struct forward *f, const struct message *head)
{
    size_t len = 0;
    bool keep = f->client_keep_alive, is_chunked = false;
    char *text = http1codec_response_head(head, f->req->version - 10, &keep, &is_chunked, &len);
    int r = text ? stream_put(f->client, text, len, f->t->io_ms) : -1;

    free(text);
    http1codec_writer_init(&f->client_writer, f->client, is_chunked);
    return r == STREAM_OK ? 0 : -1;
}

/* Sends the interim 100 Continue the client waits for before its body. */
static int send_continue(struct forward *f)
{
    int io_ms = f->t->io_ms;

    if (stream_putstr(f->client, "HTTP/1.1 100 Continue\r\n\r\n", io_ms) != STREAM_OK ||
        stream_flush(f->client, io_ms) != STREAM_OK)
        return -1;
    return 0;
}

/* The request head and body to the origin. Returns 0 to read the response
 * (also when the origin stopped reading the body: it may have answered,
 * e.g. 413), -1 when the exchange is over. */
static int send_request(struct forward *f)
{
    const struct message *req = f->req;
    struct exchange_result *res = f->res;
    int io_ms = f->t->io_ms;
    enum body_fault fault;
    struct http1codec_reader reader;
    int moved = -1;
    /* A body that rules rewrite changes the head's framing: the head waits
     * until the body is known. */
    bool rewrite_request_body =
        f->rw && req->body != MESSAGE_BODY_NONE && f->rw->ops->wants_body(f->rw->arg);

    if ((!rewrite_request_body && send_request_head(f, req) < 0) ||
        (req->body == MESSAGE_BODY_NONE && stream_flush(f->upstream, io_ms) != STREAM_OK)) {
        res->upstream_stale = true;
        snprintf(res->error, sizeof(res->error), "sending the request upstream failed: %s",
                 f->upstream->error[0] ? f->upstream->error : "connection closed");
        return -1;
    }
    if (req->body == MESSAGE_BODY_NONE)
        return 0;
    if (req->expect_continue && req->version >= 11 && send_continue(f) < 0) {
        snprintf(res->error, sizeof(res->error), "%s before its body",
                 client_failed(f->client, false));
        res->client_keep_alive = false;
        res->status = -1; /* nothing more can be sent */
        return -1;
    }
    fault = BODY_FAULT_SOURCE;
    if (http1codec_reader_init(&reader, f->client, req->body, req->content_length) == 0) {
        const struct message_field *ce = message_find(req, "Content-Encoding");
        char encoding[64] = "";
        if (ce)
            snprintf(encoding, sizeof(encoding), "%.*s", (int)ce->value_len, ce->value);
        struct body_hop hop = {.src = &reader.source,
                               .dst = &f->up_writer.sink,
                               .head = req,
                               .send_head = send_request_head,
                               .content_encoding = encoding,
                               .side = EXCHANGE_REQUEST};
        moved =
            rewrite_request_body
                ? send_rewritten_body(f, f->rw, &hop, f->cap, io_ms, &res->request_bytes, &fault)
                : send_body_rest(&reader.source, NULL, 0, &f->up_writer.sink, io_ms,
                                 &res->request_bytes, f->cap, EXCHANGE_REQUEST, &fault);
    }
    http1codec_reader_free(&reader);
    if (moved == 0)
        return 0;
    res->client_keep_alive = false;
    if (fault == BODY_FAULT_SINK) {
        /* The origin stopped reading: it may have answered already (e.g.
         * 413), so try to relay that. */
        snprintf(res->error, sizeof(res->error), "origin stopped reading the body: %s",
                 f->upstream->error[0] ? f->upstream->error : "connection closed");
        return 0;
    }
    snprintf(res->error, sizeof(res->error), "%s while reading the request body",
             fault == BODY_FAULT_FRAMING ? "bad chunked framing"
             : f->client->has_timed_out  ? "client went quiet (--io-timeout)"
                                         : "client connection failed");
    if (fault == BODY_FAULT_FRAMING)
        res->error_status = 400;
    else
        res->status = -1;
    return -1;
}

/* Reads response heads until the final one (interim 1xx relayed on), into
 * f->resp_head. Returns 0, or -1 with f->res->error. */
static int read_final_head(struct forward *f, uint64_t upstream_read_before)
{
    const struct message *req = f->req;
    struct exchange_result *res = f->res;
    int io_ms = f->t->io_ms;
    int64_t first_byte_us = 0;

    for (;;) {
        struct http1_error perr = {0};
        bool got_nothing;
        int n = http1codec_read_response(f->upstream, io_ms, f->method, f->resp_head, &perr,
                                         &got_nothing, first_byte_us == 0 ? &first_byte_us : NULL);
        if (first_byte_us > 0) {
            cap_moment(f->cap, EXCHANGE_FIRST_BYTE, first_byte_us);
            first_byte_us = -1; /* told once: interim responses come first */
        }
        if (n < 0) {
            bool nothing_back = f->upstream->bytes_read == upstream_read_before;
            if (nothing_back && req->body == MESSAGE_BODY_NONE && perr.status != 408)
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
        if (f->resp_head->status >= 200 || f->resp_head->status == 101)
            break;
        /* Interim responses: 100 is ours to send (we answered Expect),
         * others (103 Early Hints) go through to HTTP/1.1 clients, as they
         * came: both sides speak HTTP/1.1. */
        if (f->resp_head->status != 100 && req->version >= 11 &&
            stream_put(f->client, stream_data(f->upstream), (size_t)n, io_ms) != STREAM_OK) {
            res->status = -1;
            snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, false));
            return -1;
        }
        stream_consume(f->upstream, (size_t)n);
    }
    http1codec_view(f->resp_head, &f->resp);
    if (f->resp.status == 101 && !req->is_upgrade) {
        snprintf(res->error, sizeof(res->error), "the origin switched protocols unasked");
        return -1;
    }
    return 0;
}

/* A WebSocket message, on to the recorder. */
static void on_ws_message(void *arg, const struct wsrelay_message *m)
{
    const struct exchange_capture *cap = arg;

    cap->ops->ws_message(cap->arg, m->is_from_client ? EXCHANGE_REQUEST : EXCHANGE_RESPONSE, m);
}

static void on_ws_quiet(void *arg)
{
    const struct exchange_capture *cap = arg;

    cap->ops->ws_quiet(cap->arg);
}

/* The upgraded connection (101) until either side ends it: WebSocket
 * (ws not NULL) message by message, anything else raw. */
static int relay_upgraded(struct forward *f, const struct wsinflate_params *ws)
{
    struct exchange_result *res = f->res;
    uint64_t up_bytes = 0, down_bytes = 0;
    int r;

    res->upgraded = true;
    res->client_keep_alive = false;
    res->upstream_reusable = false;
    if (ws != NULL) {
        struct wsrelay_config wc = {.idle_timeout_ms = f->t->idle_ms};
        struct wsrelay_result wr;
        if (f->cap && f->cap->ops->ws_message) {
            wc.limit = f->cap->message_limit;
            wc.message = on_ws_message;
            wc.quiet = f->cap->ops->ws_quiet ? on_ws_quiet : NULL;
            wc.arg = (void *)f->cap;
        }
        r = wsrelay_run(f->client, f->upstream, ws, &wc, &wr);
        up_bytes = wr.bytes_up;
        down_bytes = wr.bytes_down;
        if (r < 0)
            snprintf(res->error, sizeof(res->error), "%s", wr.error);
    } else {
        r = stream_relay(f->client, f->upstream, f->t->idle_ms, &up_bytes, &down_bytes);
        if (r < 0 && r != STREAM_TIMEOUT)
            snprintf(res->error, sizeof(res->error), "upgraded connection ended: %s",
                     stream_status_text(r));
    }
    res->request_bytes += up_bytes;
    res->response_bytes += down_bytes;
    if (f->cap && f->cap->ops->upgraded)
        f->cap->ops->upgraded(f->cap->arg, up_bytes, down_bytes);
    return 0;
}

/* Response rules on the final head: the rules' response phase, header rules
 * (f->resp_owned when they changed it) and the body's Content-Encoding as
 * the client will get it. Returns the head to send, or NULL when out of
 * memory. */
static const struct message *rewrite_response_head(struct forward *f, char *encoding,
                                                   size_t encoding_size)
{
    const struct message *sent = &f->resp;
    const struct message_field *ce;

    f->rw->ops->response(f->rw->arg, &f->resp);
    int changed = exchange_rewrite_head(f->rw, &f->resp, &f->resp_owned);
    if (changed < 0)
        return NULL;
    if (changed > 0)
        sent = &f->resp_owned;
    ce = message_find(sent, "Content-Encoding");
    if (ce)
        snprintf(encoding, encoding_size, "%.*s", (int)ce->value_len, ce->value);
    return sent;
}

/* Records how the body moved wrong in res: who failed and how. */
static void note_response_fault(struct forward *f, enum body_fault fault)
{
    struct exchange_result *res = f->res;

    res->client_keep_alive = false;
    res->upstream_reusable = false;
    snprintf(res->error, sizeof(res->error), "%s",
             fault == BODY_FAULT_SINK      ? client_failed(f->client, true)
             : fault == BODY_FAULT_FRAMING ? "origin sent bad chunked framing"
                                           : origin_failed(f->upstream));
}

/* The client's connection and the origin's after this response. HTTP/1.0
 * cannot take a stream of unknown length except by the close. */
static void decide_keep_alive(struct forward *f)
{
    struct exchange_result *res = f->res;
    const struct message *resp = &f->resp;
    bool keep = res->client_keep_alive;

    if ((resp->body == MESSAGE_BODY_STREAM || resp->body == MESSAGE_BODY_UNTIL_CLOSE) &&
        f->req->version < 11)
        keep = false;
    f->client_keep_alive = keep;
    res->client_keep_alive = keep && resp->status != 101;
    res->upstream_reusable =
        resp->keep_alive && resp->body != MESSAGE_BODY_UNTIL_CLOSE && res->error[0] == '\0';
}

/* The body an intercept is shown: decoded (identity) within limit bytes.
 * Returns it (raw, or *decoded which the caller frees), or NULL when it
 * cannot be decoded or is larger. */
static const unsigned char *held_plain(const char *encoding, const unsigned char *raw,
                                       size_t raw_len, size_t limit, unsigned char **decoded,
                                       size_t *len)
{
    char err[256];

    *decoded = NULL;
    if (encoding[0] == '\0' || strcasecmp(encoding, "identity") == 0) {
        *len = raw_len;
        return raw_len <= limit ? (raw != NULL ? raw : (const unsigned char *)"") : NULL;
    }
    if (codec_decode_content(encoding, raw, raw_len, limit, decoded, len, err, sizeof(err)) < 0)
        return NULL;
    return *decoded;
}

/*
 * A response an intercept holds (response_holds() said so). Its body is
 * read whole first when it fits body_limit, or the rewrite limit when body
 * rules want it (and rewritten by them), so that the hold shows it decoded
 * and an edit may replace it; then the head, edited or not, goes to the
 * client, and the body: a whole one with a Content-Length (identity when
 * it changed), any other streamed on as it comes. Returns 0, or -1 with
 * f->res->error (nothing sent when res->status is 0).
 */
static int relay_held_response(struct forward *f, const struct message *sent, size_t body_limit)
{
    struct exchange_result *res = f->res;
    const struct message *resp = &f->resp;
    bool rewrite_body =
        f->rw && resp->body != MESSAGE_BODY_NONE && f->rw->ops->wants_body(f->rw->arg);
    enum message_body in = resp->body;
    uint64_t length = resp->content_length;
    size_t limit = rewrite_body && f->rw->limit > body_limit ? f->rw->limit : body_limit;
    size_t memory_limit = rewrite_body ? f->rw->memory_limit : SIZE_MAX;
    const struct message_field *ce = message_find(sent, "Content-Encoding");
    struct exchange_held h = {0};
    struct message head = {0}, received = {0}, framed;
    struct message_field *framed_items = NULL;
    struct exchange_body_rewrite br = {0};
    struct http1codec_reader reader;
    bool has_reader = false;
    unsigned char *raw = NULL, *decoded = NULL;
    size_t raw_len = 0, reserved = 0, plain_len = 0;
    const unsigned char *plain = NULL;
    enum body_fault fault = BODY_FAULT_NONE;
    char encoding[128] = "";
    int whole = 1, held, rc = -1;

    if (ce != NULL)
        snprintf(encoding, sizeof(encoding), "%.*s", (int)ce->value_len, ce->value);
    /* Both heads point into the upstream buffer, which the body reuses. */
    if (message_copy(&head, sent, NULL) < 0 || message_copy(&received, resp, NULL) < 0) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    stream_consume(f->upstream, f->resp_head->head_len);
    if (http1codec_reader_init(&reader, f->upstream, in, length) < 0) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    has_reader = true;
    if (in != MESSAGE_BODY_NONE && limit > 0 && !(in == MESSAGE_BODY_LENGTH && length > limit)) {
        pthread_once(&rewrite_memory_once, fix_mmap_threshold);
        whole = buffer_body(&reader.source, limit, memory_limit, f->t->io_ms, &raw, &raw_len,
                            &reserved);
        if (whole < 0) {
            note_response_fault(f, reader.source.fault);
            goto out;
        }
    }
    if (rewrite_body && whole == 2)
        add_memory_note(f->rw);
    else if (rewrite_body && whole != 0)
        add_note(f->rw, "body larger than --rewrite-limit: passed on unmodified");
    if (rewrite_body && whole == 0 &&
        exchange_rewrite_body(f->rw, encoding, raw, raw_len, &br) < 0) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    if (whole == 0) {
        if (br.rewritten != NULL) {
            plain = br.rewritten;
            plain_len = br.rewritten_len;
        } else if (br.plain != NULL) {
            plain = br.plain;
            plain_len = br.plain_len;
        } else {
            plain = held_plain(encoding, raw, raw_len, body_limit, &decoded, &plain_len);
        }
    }
    h.head = &head;
    h.has_body = plain != NULL && plain_len <= body_limit;
    h.body = h.has_body ? plain : NULL;
    h.body_len = h.has_body ? plain_len : 0;
    held = f->cap->ops->response_hold(f->cap->arg, &h);
    if (held < 0) {
        snprintf(res->error, sizeof(res->error), "response dropped while intercepted");
        res->upstream_reusable = false;
        goto out;
    }
    const struct message *final = held > 0 ? &h.edited : &head;
    decide_keep_alive(f);
    res->status = final->status;
    if (f->cap->ops->response_head)
        f->cap->ops->response_head(f->cap->arg, final, held > 0 || sent != resp ? &received : NULL);
    if (whole != 0) {
        /* Not read whole: the head as the origin framed it, then the body
         * as it comes, after what was read of it. */
        if (send_response_head(f, final) < 0) {
            snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, false));
            res->client_keep_alive = false;
            goto out;
        }
        if (in == MESSAGE_BODY_NONE) {
            if (stream_flush(f->client, f->t->io_ms) != STREAM_OK) {
                res->client_keep_alive = false;
                snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, false));
                goto out;
            }
            rc = 0;
            goto out;
        }
        cap_body(f->cap, EXCHANGE_RESPONSE, raw, raw_len);
        res->response_bytes += raw_len;
        if (send_body_rest(&reader.source, raw, raw_len, &f->client_writer.sink, f->t->io_ms,
                           &res->response_bytes, f->cap, EXCHANGE_RESPONSE, &fault) < 0) {
            note_response_fault(f, fault);
            goto out;
        }
        rc = res->error[0] ? -1 : 0;
        goto out;
    }
    /* Whole: sent with its length, identity when rules or the edit changed it. */
    bool is_changed = h.has_edited_body || br.rewritten != NULL;
    const unsigned char *send = h.has_edited_body ? h.edited_body
                                : br.rewritten    ? br.rewritten
                                                  : raw;
    size_t send_len = h.has_edited_body ? h.edited_body_len
                      : br.rewritten    ? br.rewritten_len
                                        : raw_len;
    if (reframed(final, send_len, is_changed, &framed, &framed_items) < 0) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    if (is_changed && f->cap->ops->body_original) {
        /* The body as the origin sent it, decoded. */
        const unsigned char *original = br.plain != NULL ? br.plain : plain;
        size_t original_len = br.plain != NULL ? br.plain_len : plain_len;
        if (original != NULL)
            f->cap->ops->body_original(f->cap->arg, EXCHANGE_RESPONSE, original, original_len);
    }
    if (f->cap->ops->reframed)
        f->cap->ops->reframed(f->cap->arg, EXCHANGE_RESPONSE, send_len, is_changed);
    cap_body(f->cap, EXCHANGE_RESPONSE, send, send_len);
    res->response_bytes += send_len;
    if (send_response_head(f, &framed) < 0 ||
        (send_len > 0 &&
         f->client_writer.sink.write(&f->client_writer.sink, send, send_len, f->t->io_ms) < 0) ||
        f->client_writer.sink.end(&f->client_writer.sink, NULL, f->t->io_ms) < 0) {
        res->client_keep_alive = false;
        snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, true));
        goto out;
    }
    rc = 0;
out:
    if (has_reader)
        http1codec_reader_free(&reader);
    free(framed_items);
    free(raw);
    free(decoded);
    exchange_body_rewrite_free(&br);
    membudget_release(&rewrite_memory, reserved);
    message_free(&h.edited);
    free(h.edited_body);
    message_free(&head);
    message_free(&received);
    return rc;
}

/* The response to the client: head (after header rules), then the body as
 * it comes, rewritten by body rules, or the upgraded connection. Returns 0,
 * or -1 with f->res->error. */
static int relay_response(struct forward *f)
{
    struct exchange_result *res = f->res;
    const struct message *resp = &f->resp;
    const struct message *sent = resp;
    char response_encoding[128] = "";
    enum body_fault fault = BODY_FAULT_NONE;
    struct http1codec_reader reader;
    int io_ms = f->t->io_ms;
    int rc = -1;

    if (f->rw && resp->status != 101 &&
        (sent = rewrite_response_head(f, response_encoding, sizeof(response_encoding))) == NULL) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        return -1;
    }
    size_t hold_limit = 0;
    if (f->cap && f->cap->ops->response_holds && f->cap->ops->response_hold &&
        resp->status != 101 && f->cap->ops->response_holds(f->cap->arg, sent, &hold_limit))
        return relay_held_response(f, sent, hold_limit);
    decide_keep_alive(f);
    res->status = resp->status;
    if (f->cap && f->cap->ops->response_head)
        f->cap->ops->response_head(f->cap->arg, sent, sent != resp ? resp : NULL);
    enum message_body in = resp->body;
    uint64_t length = resp->content_length;
    int status = resp->status;
    bool rewrite_response_body =
        f->rw && in != MESSAGE_BODY_NONE && status != 101 && f->rw->ops->wants_body(f->rw->arg);
    if (rewrite_response_body && sent == resp) {
        /* The head is sent after the body is read: it must outlive the
         * bytes it points into. */
        if (message_copy(&f->resp_owned, resp, NULL) < 0) {
            snprintf(res->error, sizeof(res->error), "out of memory");
            return -1;
        }
        sent = &f->resp_owned;
    }
    if (!rewrite_response_body && send_response_head(f, sent) < 0) {
        snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, false));
        res->client_keep_alive = false;
        stream_consume(f->upstream, f->resp_head->head_len);
        return -1;
    }
    /* resp (and sent, unless owned) point into the upstream buffer: read
     * what the upgrade needs, then done with them. */
    struct wsinflate_params ws;
    bool is_websocket = status == 101 && wsrelay_is_websocket(resp, &ws);
    stream_consume(f->upstream, f->resp_head->head_len);
    if (status == 101)
        return relay_upgraded(f, is_websocket ? &ws : NULL);
    if (http1codec_reader_init(&reader, f->upstream, in, length) < 0) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    if (rewrite_response_body) {
        struct body_hop hop = {.src = &reader.source,
                               .dst = &f->client_writer.sink,
                               .head = sent,
                               .send_head = send_response_head,
                               .content_encoding = response_encoding,
                               .side = EXCHANGE_RESPONSE};
        if (send_rewritten_body(f, f->rw, &hop, f->cap, io_ms, &res->response_bytes, &fault) < 0) {
            note_response_fault(f, fault == BODY_FAULT_SINK ? fault : BODY_FAULT_SOURCE);
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (in != MESSAGE_BODY_NONE &&
        send_body_rest(&reader.source, NULL, 0, &f->client_writer.sink, io_ms, &res->response_bytes,
                       f->cap, EXCHANGE_RESPONSE, &fault) < 0) {
        note_response_fault(f, fault);
        goto out;
    }
    if (in == MESSAGE_BODY_NONE && stream_flush(f->client, io_ms) != STREAM_OK) {
        res->client_keep_alive = false;
        snprintf(res->error, sizeof(res->error), "%s", client_failed(f->client, false));
        goto out;
    }
    rc = res->error[0] ? -1 : 0;
out:
    http1codec_reader_free(&reader);
    return rc;
}

int exchange_forward(struct stream *client, struct stream *upstream, const struct message *req,
                     const struct exchange_timeouts *t, const struct exchange_rewrite *rw,
                     const struct exchange_capture *cap, struct exchange_result *res)
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
    snprintf(f.method, sizeof(f.method), "%.*s", (int)req->method_len, req->method);
    res->client_keep_alive = req->keep_alive;
    res->error_status = 502;
    if (send_request(&f) < 0)
        goto out;
    cap_moment(cap, EXCHANGE_REQUEST_SENT, clock_wall_us());
    f.resp_head = malloc(sizeof(*f.resp_head));
    if (f.resp_head == NULL) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    if (read_final_head(&f, upstream_read_before) < 0)
        goto out;
    /* Relayed, the upstream proxy's 407 would read as tapwire's own, and
     * its challenge would ask the client for credentials meant for it. */
    if (req->is_to_proxy && f.resp.status == 407) {
        snprintf(res->error, sizeof(res->error),
                 "the upstream proxy answered 407 Proxy Authentication Required: "
                 "--upstream-proxy has no credentials, or not the ones it wants");
        goto out;
    }
    rc = relay_response(&f);
out:
    if (res->status < 0)
        res->status = 0, res->client_keep_alive = false;
    cap_moment(cap, EXCHANGE_DONE, clock_wall_us());
    message_free(&f.resp_owned);
    free(f.resp_head);
    return rc;
}
