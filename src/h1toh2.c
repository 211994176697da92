/*
 * h1toh2: see h1toh2.h.
 *
 * One exchange is one stream: h1toh2_forward() submits the request, then
 * alternates nghttp2_session_mem_send() (which pulls the request body off
 * the client through the data provider, blocking on the client as the
 * HTTP/1.1 exchange does) and reads of the origin fed to
 * nghttp2_session_mem_recv(), until the stream ends. The callbacks write
 * the response to the client as it arrives. nghttp2 checks the origin's
 * messaging (pseudo-headers, connection-specific fields, content-length
 * against the DATA) and resets the stream when it is wrong; such a stream
 * fails the exchange like a broken HTTP/1.1 response.
 */
#include "h1toh2.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "grpcmsg.h"
#include "http1.h"
#include "http1codec.h"

/* The exchange under way on a connection. */
struct xfer {
    int32_t stream_id;
    struct stream *client;
    const struct message *req;
    const struct exchange_timeouts *t;
    const struct exchange_rewrite *rw;
    const struct exchange_capture *cap;
    struct exchange_result *res;
    /* The request body, read off the client in its framing. */
    struct http1codec_reader reader;
    const char *slice;
    size_t slice_len;
    bool is_body_read;
    bool is_client_fault; /* the client's body broke off or was framed wrongly */
    /* What goes before the rest of the body: the bytes buffered for the
     * request body rules (rewritten, or as they came). */
    unsigned char *pre_buf; /* owned: the bytes as they came */
    const unsigned char *pre;
    size_t pre_len, pre_off;
    bool is_pre_whole; /* pre is the whole body, reframed: no trailers */
    struct exchange_body_rewrite req_br;
    /* The response as it arrives: fields (then trailers) copied into text. */
    struct message_field fields[H1TOH2_MAX_RESPONSE_FIELDS];
    size_t field_count;
    size_t trailer_start; /* fields[trailer_start..] are trailers */
    char *text;
    size_t text_len;
    int status;
    bool is_over_limit;
    bool is_in_trailers;
    bool has_first_byte;
    bool is_head_sent;
    bool is_done;          /* END_STREAM arrived and the client has the response */
    bool is_closed;        /* nghttp2 closed the stream */
    bool is_sink_fault;    /* the client stopped taking the response */
    bool is_body_replaced; /* an intercept edit replaced the body: the origin's is dropped */
    bool has_final_head;   /* the final response head arrived */
    /* Body rules want the whole response body: the head (after the header
     * rules, and as received when they changed it) waits with the body. */
    bool is_buffering;
    struct message held, received;
    bool has_held, has_received;
    unsigned char *buffered;
    size_t buffered_len, buffered_cap;
    size_t reserved;     /* held against --rewrite-memory */
    uint32_t reset_code; /* when closed before its end */
    bool is_origin_gone; /* the origin connection closed or failed */
    struct http1codec_writer writer;
};

struct h1toh2 {
    nghttp2_session *session;
    struct stream *origin;
    bool is_broken; /* GOAWAY, or an I/O or protocol failure */
    struct xfer *x;
};

/* ---- the request head ---- */

static bool is_te_trailers(const struct message_field *f)
{
    const char *v = f->value;
    size_t n = f->value_len;

    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n == 8 && strncasecmp(v, "trailers", 8) == 0;
}

static void put_nv(struct h1toh2_head *h, const char *name, size_t name_len, const char *value,
                   size_t value_len)
{
    nghttp2_nv *nv = &h->nv[h->count++];

    nv->name = (uint8_t *)(uintptr_t)name;
    nv->namelen = name_len;
    nv->value = (uint8_t *)(uintptr_t)value;
    nv->valuelen = value_len;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

int h1toh2_request_head(const struct message *req, struct h1toh2_head *out, const char **why)
{
    const struct message_field *host = message_find(req, "Host");
    const char *authority = req->authority;
    size_t authority_len = req->authority_len;
    size_t used = 0;

    out->count = 0;
    if (req->is_upgrade) {
        *why = "the origin speaks only HTTP/2, where an HTTP/1.1 upgrade (WebSocket) cannot "
               "go (RFC 9113 8.6)";
        return -1;
    }
    if (req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0) {
        *why = "a CONNECT cannot be sent on to an origin that speaks only HTTP/2";
        return -1;
    }
    if (authority == NULL && host != NULL) {
        authority = host->value;
        authority_len = host->value_len;
    }
    if (authority == NULL || authority_len == 0) {
        *why = "the request names no host, which HTTP/2 needs (:authority)";
        return -1;
    }
    if (req->fields.count > H1TOH2_MAX_FIELDS) {
        *why = "the request has more fields than are sent on to an HTTP/2 origin";
        return -1;
    }
    put_nv(out, ":method", 7, req->method, req->method_len);
    put_nv(out, ":scheme", 7, req->scheme != NULL ? req->scheme : "https",
           req->scheme != NULL ? strlen(req->scheme) : 5);
    put_nv(out, ":authority", 10, authority, authority_len);
    put_nv(out, ":path", 5, req->target, req->target_len);
    for (size_t i = 0; i < req->fields.count; i++) {
        const struct message_field *f = &req->fields.items[i];
        bool is_te = message_field_is(f, "TE");
        /* RFC 9113 8.2.2: TE may go, as "trailers" only. */
        if (is_te ? !is_te_trailers(f) : message_is_hop_by_hop(&req->fields, f))
            continue;
        /* Host became :authority (RFC 9113 8.3.1); 100-continue is answered
         * here, before the body is read. */
        if (message_field_is(f, "Host") || message_field_is(f, "Expect"))
            continue;
        if (used + f->name_len > sizeof(out->names)) {
            *why = "the request's field names are too long to send on to an HTTP/2 origin";
            return -1;
        }
        char *name = out->names + used;
        for (size_t k = 0; k < f->name_len; k++)
            name[k] = (char)tolower((unsigned char)f->name[k]);
        used += f->name_len;
        if (is_te)
            put_nv(out, name, f->name_len, "trailers", 8);
        else
            put_nv(out, name, f->name_len, f->value, f->value_len);
    }
    return 0;
}

/* ---- the session ---- */

static void set_error(struct xfer *x, int status, const char *why)
{
    if (x->res->error[0] == '\0') {
        snprintf(x->res->error, sizeof(x->res->error), "%s", why);
        x->res->error_status = status;
    }
}

/* The client's request body could not be read: its own framing (400) or
 * the connection (502). */
static void client_body_failed(struct xfer *x)
{
    bool is_framing = x->reader.source.fault == BODY_FAULT_FRAMING;

    x->is_client_fault = true;
    set_error(x, is_framing ? 400 : 502,
              is_framing ? "the client's request body was framed wrongly"
                         : "the client's request body broke off");
}

static void moment(struct xfer *x, enum exchange_moment m)
{
    if (x->cap != NULL && x->cap->ops != NULL && x->cap->ops->moment != NULL)
        x->cap->ops->moment(x->cap->arg, m, clock_wall_us());
}

static void captured_body(struct xfer *x, enum exchange_side side, const void *data, size_t len)
{
    if (len > 0 && x->cap != NULL && x->cap->ops != NULL && x->cap->ops->body != NULL)
        x->cap->ops->body(x->cap->arg, side, data, len);
}

/* Request trailers as name/value pairs, lower-cased, without what never
 * goes on. */
static void submit_trailers(nghttp2_session *session, struct xfer *x,
                            const struct message_fields *trailers)
{
    nghttp2_nv nv[64];
    char names[4096];
    size_t n = 0, used = 0;

    for (size_t i = 0; i < trailers->count && n < 64; i++) {
        const struct message_field *f = &trailers->items[i];
        if (message_is_hop_by_hop(NULL, f) || used + f->name_len > sizeof(names))
            continue;
        for (size_t k = 0; k < f->name_len; k++)
            names[used + k] = (char)tolower((unsigned char)f->name[k]);
        nv[n] = (nghttp2_nv){(uint8_t *)names + used, (uint8_t *)(uintptr_t)f->value, f->name_len,
                             f->value_len, NGHTTP2_NV_FLAG_NONE};
        used += f->name_len;
        n++;
    }
    nghttp2_submit_trailer(session, x->stream_id, nv, n);
}

static ssize_t read_request_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                                 size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                 void *user_data)
{
    struct h1toh2 *c = user_data;
    struct xfer *x = c->x;
    size_t n;

    (void)stream_id;
    (void)source;
    if (x == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (x->pre_off < x->pre_len) {
        n = x->pre_len - x->pre_off < length ? x->pre_len - x->pre_off : length;
        memcpy(buf, x->pre + x->pre_off, n);
        captured_body(x, EXCHANGE_REQUEST, x->pre + x->pre_off, n);
        x->pre_off += n;
        x->res->request_bytes += n;
        if (x->pre_off == x->pre_len && x->is_body_read) {
            struct message_fields trailers = {0};
            if (!x->is_pre_whole)
                trailers = x->reader.source.trailers(&x->reader.source);
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            if (trailers.count > 0) {
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                submit_trailers(session, x, &trailers);
            }
            moment(x, EXCHANGE_REQUEST_SENT);
        }
        return (ssize_t)n;
    }
    while (x->slice_len == 0 && !x->is_body_read) {
        int r = x->reader.source.next(&x->reader.source, x->t->io_ms, &x->slice, &x->slice_len);
        if (r < 0) {
            client_body_failed(x);
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        if (r == 0)
            x->is_body_read = true;
    }
    n = x->slice_len < length ? x->slice_len : length;
    if (n > 0) {
        memcpy(buf, x->slice, n);
        captured_body(x, EXCHANGE_REQUEST, x->slice, n);
        x->slice += n;
        x->slice_len -= n;
        x->res->request_bytes += n;
    }
    if (x->is_body_read && x->slice_len == 0) {
        struct message_fields trailers = x->reader.source.trailers(&x->reader.source);
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (trailers.count > 0) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            submit_trailers(session, x, &trailers);
        }
        moment(x, EXCHANGE_REQUEST_SENT);
    }
    return (ssize_t)n;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h1toh2 *c = user_data;
    struct xfer *x = c->x;

    (void)session;
    if (x == NULL || frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != x->stream_id)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && x->has_final_head) {
        x->is_in_trailers = true;
        x->trailer_start = x->field_count;
    } else {
        /* A new response head (an interim one is dropped, RFC 9110 15.2). */
        x->field_count = 0;
        x->text_len = 0;
        x->status = 0;
    }
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct h1toh2 *c = user_data;
    struct xfer *x = c->x;

    (void)session;
    (void)flags;
    if (x == NULL || frame->hd.stream_id != x->stream_id)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        /* nghttp2 checked it is three digits. */
        x->status =
            valuelen == 3 ? (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0') : 0;
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    if (x->field_count == H1TOH2_MAX_RESPONSE_FIELDS ||
        x->text_len + namelen + valuelen > H1TOH2_MAX_RESPONSE_FIELD_BYTES) {
        x->is_over_limit = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    char *p = x->text + x->text_len;
    memcpy(p, name, namelen);
    memcpy(p + namelen, value, valuelen);
    x->fields[x->field_count++] = (struct message_field){p, namelen, p + namelen, valuelen};
    x->text_len += namelen + valuelen;
    return 0;
}

static bool is_head_request(const struct message *req)
{
    return req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
}

/*
 * Sends sent (the final head after the header rules; received: as the
 * origin sent it, when the rules changed it) to the client, where an
 * intercept may hold it first (the head alone; the body streams on once it
 * is let go, unless the edit replaced it). Returns 0 or -1.
 */
static int emit_head(struct xfer *x, const struct message *sent, const struct message *received)
{
    const struct message *final = sent;
    struct message framed;
    struct exchange_held h = {0};
    bool keep = x->req->keep_alive, is_chunked = false;
    size_t len = 0, hold_limit = 0;
    char *head = NULL;
    int held = 0, rc = -1;

    if (x->cap != NULL && x->cap->ops != NULL && x->cap->ops->response_holds != NULL &&
        x->cap->ops->response_hold != NULL &&
        x->cap->ops->response_holds(x->cap->arg, sent, &hold_limit)) {
        h.head = sent;
        held = x->cap->ops->response_hold(x->cap->arg, &h);
        if (held < 0) {
            set_error(x, 502, "response dropped while intercepted");
            goto out;
        }
        if (held > 0)
            final = &h.edited;
        if (held > 0 && h.has_edited_body) {
            framed = h.edited;
            framed.body = MESSAGE_BODY_LENGTH;
            framed.content_length = h.edited_body_len;
            final = &framed;
            x->is_body_replaced = true;
        }
    }
    head = http1codec_response_head(final, x->req->version >= 11 ? 1 : 0, &keep, &is_chunked, &len);
    if (head == NULL) {
        set_error(x, 502, "the origin's response head is too large");
        goto out;
    }
    if (stream_put(x->client, head, len, x->t->io_ms) != STREAM_OK ||
        (x->is_body_replaced && !is_head_request(x->req) &&
         stream_put(x->client, h.edited_body, h.edited_body_len, x->t->io_ms) != STREAM_OK)) {
        x->is_sink_fault = true;
        set_error(x, 502, "the client stopped taking the response");
        goto out;
    }
    x->is_head_sent = true;
    x->res->status = final->status;
    x->res->client_keep_alive = keep;
    http1codec_writer_init(&x->writer, x->client, is_chunked);
    if (x->cap != NULL && x->cap->ops != NULL && x->cap->ops->response_head != NULL)
        x->cap->ops->response_head(x->cap->arg, final,
                                   received != NULL ? received
                                   : final != sent  ? sent
                                                    : NULL);
    if (x->is_body_replaced) {
        captured_body(x, EXCHANGE_RESPONSE, h.edited_body, h.edited_body_len);
        x->res->response_bytes += h.edited_body_len;
    }
    rc = 0;
out:
    free(head);
    if (held > 0) {
        message_free(&h.edited);
        free(h.edited_body);
    }
    return rc;
}

/* Sends the held head and the body buffered so far, then streams on: the
 * body rules gave up on this body (why noted). Returns 0 or -1. */
static int stop_buffering(struct xfer *x, const char *why)
{
    int rc;

    if (why != NULL && x->rw->ops->note != NULL)
        x->rw->ops->note(x->rw->arg, why);
    x->is_buffering = false;
    rc = emit_head(x, &x->held, x->has_received ? &x->received : NULL);
    if (rc == 0 && !x->is_body_replaced && x->buffered_len > 0) {
        if (x->writer.sink.write(&x->writer.sink, x->buffered, x->buffered_len, x->t->io_ms) !=
            STREAM_OK) {
            x->is_sink_fault = true;
            set_error(x, 502, "the client stopped taking the response");
            rc = -1;
        } else {
            captured_body(x, EXCHANGE_RESPONSE, x->buffered, x->buffered_len);
            x->res->response_bytes += x->buffered_len;
        }
    }
    free(x->buffered);
    x->buffered = NULL;
    x->buffered_len = 0;
    return rc;
}

/*
 * The final response head arrived: the header rules run on it, then it
 * goes to the client, or is kept while body rules want the whole body.
 * Returns 0 or -1 (the client is gone, or out of memory).
 */
static int send_head(struct xfer *x, bool is_end)
{
    struct message resp = {0}, edited = {0};
    const struct message *sent = &resp;
    const struct message_field *cl;
    int rc = -1;

    resp.status = x->status;
    resp.reason = http1_reason_phrase(x->status);
    resp.reason_len = strlen(resp.reason);
    resp.version = 20;
    resp.fields = (struct message_fields){x->fields, x->field_count};
    resp.keep_alive = true;
    cl = message_find(&resp, "content-length");
    if (is_head_request(x->req) || x->status == 204 || x->status == 304) {
        resp.body = MESSAGE_BODY_NONE;
    } else if (cl != NULL && (message_find(&resp, "trailer") == NULL || x->req->version < 11)) {
        /* nghttp2 checked it is one number, and counts the DATA against it.
         * Announced trailers need chunked to reach an HTTP/1.1 client. */
        resp.body = MESSAGE_BODY_LENGTH;
        resp.content_length = 0;
        for (size_t i = 0; i < cl->value_len; i++)
            resp.content_length = resp.content_length * 10 + (uint64_t)(cl->value[i] - '0');
    } else if (is_end) {
        resp.body = MESSAGE_BODY_LENGTH;
        resp.content_length = 0;
    } else {
        resp.body = MESSAGE_BODY_STREAM;
    }
    bool wants_body = false;
    if (x->rw != NULL && x->rw->ops != NULL) {
        if (x->rw->ops->response != NULL)
            x->rw->ops->response(x->rw->arg, &resp);
        wants_body = resp.body != MESSAGE_BODY_NONE && !is_end && x->rw->ops->wants_body != NULL &&
                     x->rw->ops->wants_body(x->rw->arg);
        int changed = exchange_rewrite_head(x->rw, &resp, &edited);
        if (changed < 0) {
            set_error(x, 502, "out of memory");
            return -1;
        }
        if (changed > 0)
            sent = &edited;
    }
    if (wants_body && resp.body == MESSAGE_BODY_LENGTH && resp.content_length > x->rw->limit) {
        if (x->rw->ops->note != NULL)
            x->rw->ops->note(x->rw->arg, "body larger than --rewrite-limit: passed on unmodified");
        wants_body = false;
    }
    if (wants_body) {
        /* The head waits for the body (exchange.c does the same). */
        if (message_copy(&x->held, sent, NULL) < 0 ||
            (sent != &resp && message_copy(&x->received, &resp, NULL) < 0)) {
            set_error(x, 502, "out of memory");
            goto out;
        }
        x->has_held = true;
        x->has_received = sent != &resp;
        x->is_buffering = true;
        rc = 0;
        goto out;
    }
    rc = emit_head(x, sent, sent != &resp ? &resp : NULL);
out:
    if (sent == &edited)
        message_free(&edited);
    return rc;
}

/* A DATA chunk while the body rules want the whole body. Returns 0 or -1. */
static int buffer_chunk(struct xfer *x, const uint8_t *data, size_t len)
{
    if (x->buffered_len + len > x->rw->limit)
        return stop_buffering(x, "body larger than --rewrite-limit: passed on unmodified") < 0 ? -1
                                                                                               : 1;
    if (!exchange_rewrite_reserve(x->rw, len))
        return stop_buffering(x, NULL) < 0 ? -1 : 1; /* the budget noted it */
    x->reserved += len;
    if (x->buffered_len + len > x->buffered_cap) {
        size_t cap = x->buffered_cap ? x->buffered_cap : 16384;
        while (cap < x->buffered_len + len)
            cap *= 2;
        unsigned char *p = realloc(x->buffered, cap);
        if (p == NULL) {
            set_error(x, 502, "out of memory");
            return -1;
        }
        x->buffered = p;
        x->buffered_cap = cap;
    }
    memcpy(x->buffered + x->buffered_len, data, len);
    x->buffered_len += len;
    return 0;
}

/* The whole body is buffered: the body rules run, and the head goes with
 * the body as it now is, reframed with a content-length (and without
 * content-encoding when rewritten), as exchange.c does. Returns 0 or -1. */
static int send_rewritten(struct xfer *x)
{
    const struct message_field *ce = message_find(&x->held, "content-encoding");
    char encoding[128] = "";
    struct exchange_body_rewrite br = {0};
    struct message framed;
    struct message_field *items = NULL;
    int rc = -1;

    if (ce != NULL)
        snprintf(encoding, sizeof(encoding), "%.*s", (int)ce->value_len, ce->value);
    if (exchange_rewrite_body(x->rw, encoding, x->buffered, x->buffered_len, &br) < 0) {
        set_error(x, 502, "out of memory");
        goto out;
    }
    const unsigned char *send = br.rewritten != NULL ? br.rewritten : x->buffered;
    size_t send_len = br.rewritten != NULL ? br.rewritten_len : x->buffered_len;
    size_t n = 0;
    items = malloc((x->held.fields.count ? x->held.fields.count : 1) * sizeof(*items));
    if (items == NULL) {
        set_error(x, 502, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < x->held.fields.count; i++) {
        const struct message_field *f = &x->held.fields.items[i];
        if (message_field_is(f, "content-length") ||
            (br.rewritten != NULL && message_field_is(f, "content-encoding")))
            continue;
        items[n++] = *f;
    }
    framed = x->held;
    framed.fields = (struct message_fields){items, n};
    framed.body = MESSAGE_BODY_LENGTH;
    framed.content_length = send_len;
    framed.storage = NULL;
    x->is_buffering = false;
    if (br.rewritten != NULL && x->cap != NULL && x->cap->ops != NULL &&
        x->cap->ops->body_original != NULL)
        x->cap->ops->body_original(x->cap->arg, EXCHANGE_RESPONSE, br.plain, br.plain_len);
    if (x->cap != NULL && x->cap->ops != NULL && x->cap->ops->reframed != NULL)
        x->cap->ops->reframed(x->cap->arg, EXCHANGE_RESPONSE, send_len, br.rewritten != NULL);
    if (emit_head(x, &framed, x->has_received ? &x->received : NULL) < 0)
        goto out;
    if (!x->is_body_replaced) {
        if (x->writer.sink.write(&x->writer.sink, send, send_len, x->t->io_ms) != STREAM_OK) {
            x->is_sink_fault = true;
            set_error(x, 502, "the client stopped taking the response");
            goto out;
        }
        captured_body(x, EXCHANGE_RESPONSE, send, send_len);
        x->res->response_bytes += send_len;
    }
    rc = 0;
out:
    exchange_body_rewrite_free(&br);
    free(items);
    return rc;
}

/* A gRPC call fails in its trailers (or a trailers-only head) under an
 * HTTP 200: the error says so, as an HTTP/2 client's flow does
 * (h2relay.c), so that the list shows it as failed. The exchange
 * completed: no error page (error_status stays). */
static void note_grpc_status(struct xfer *x)
{
    size_t head_count = x->is_in_trailers ? x->trailer_start : x->field_count;
    struct message_fields head = {x->fields, head_count};
    struct message_fields trailers = {x->fields + head_count, x->field_count - head_count};
    char why[GRPCMSG_MAX_STATUS_TEXT_BYTES + 64];
    int code;

    if (x->res->error[0] == '\0' && (grpcmsg_failed(&trailers, &code, why, sizeof(why)) ||
                                     grpcmsg_failed(&head, &code, why, sizeof(why))))
        snprintf(x->res->error, sizeof(x->res->error), "%s", why);
}

static void end_response(struct xfer *x)
{
    struct message_fields trailers = {0};

    /* A reframed body has a content-length: its trailers cannot follow. */
    bool is_reframed = x->is_buffering;
    if (x->is_buffering && send_rewritten(x) < 0)
        return;
    if (x->is_in_trailers && !x->is_body_replaced && !is_reframed)
        trailers = (struct message_fields){x->fields + x->trailer_start,
                                           x->field_count - x->trailer_start};
    if (x->writer.sink.end(&x->writer.sink, &trailers, x->t->io_ms) != STREAM_OK) {
        x->is_sink_fault = true;
        set_error(x, 502, "the client stopped taking the response");
        return;
    }
    x->is_done = true;
    note_grpc_status(x);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h1toh2 *c = user_data;
    struct xfer *x = c->x;
    bool is_end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    (void)session;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        c->is_broken = true;
    if (x == NULL || frame->hd.stream_id != x->stream_id)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !x->has_final_head) {
        if (!x->has_first_byte) {
            x->has_first_byte = true;
            moment(x, EXCHANGE_FIRST_BYTE);
        }
        if (x->status < 200)
            return 0;
        x->has_final_head = true;
        if (send_head(x, is_end) < 0)
            return nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, x->stream_id,
                                             NGHTTP2_CANCEL) == 0
                       ? 0
                       : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (is_end && (x->is_head_sent || x->is_buffering) && !x->is_sink_fault &&
        (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA))
        end_response(x);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    struct h1toh2 *c = user_data;
    struct xfer *x = c->x;

    (void)flags;
    if (x == NULL || stream_id != x->stream_id || x->is_sink_fault)
        return 0;
    if (x->is_buffering) {
        int r = buffer_chunk(x, data, len);
        if (r < 0)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        if (r != 1)
            return 0;
        /* Given up: this chunk streams on after what was buffered. */
    }
    if (!x->is_head_sent || x->is_body_replaced)
        return 0;
    if (x->writer.sink.write(&x->writer.sink, data, len, x->t->io_ms) != STREAM_OK) {
        x->is_sink_fault = true;
        set_error(x, 502, "the client stopped taking the response");
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
    }
    captured_body(x, EXCHANGE_RESPONSE, data, len);
    x->res->response_bytes += len;
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct h1toh2 *c = user_data;
    struct xfer *x = c->x;

    (void)session;
    if (x == NULL || stream_id != x->stream_id)
        return 0;
    x->is_closed = true;
    x->reset_code = error_code;
    return 0;
}

struct h1toh2 *h1toh2_new(struct stream *origin)
{
    nghttp2_session_callbacks *cb = NULL;
    struct h1toh2 *c = calloc(1, sizeof(*c));

    if (c == NULL || nghttp2_session_callbacks_new(&cb) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    if (nghttp2_session_client_new(&c->session, cb, c) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cb);
    cb = NULL;
    /* One stream at a time: the default settings, no push. */
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1) != 0)
        goto fail;
    c->origin = origin;
    return c;
fail:
    if (cb != NULL)
        nghttp2_session_callbacks_del(cb);
    h1toh2_free(c);
    return NULL;
}

void h1toh2_free(struct h1toh2 *c)
{
    if (c == NULL)
        return;
    nghttp2_session_del(c->session);
    free(c);
}

bool h1toh2_is_usable(const struct h1toh2 *c, const struct stream *origin)
{
    return c != NULL && c->origin == origin && !c->is_broken && stream_is_open(origin);
}

/* Writes what nghttp2 has to send (the request body included, read off
 * the client as it goes). Returns 0 or -1 (the origin failed). */
static int send_pending(struct h1toh2 *c, int io_ms)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        if (stream_put(c->origin, data, (size_t)n, io_ms) != STREAM_OK)
            return -1;
    }
    return stream_flush(c->origin, io_ms) == STREAM_OK ? 0 : -1;
}

/*
 * The request body rules want the whole body: it is read here first (within
 * --rewrite-limit and --rewrite-memory), rewritten, and sent with a new
 * content-length and without content-encoding (*fields, the head's fields
 * as they must now go, caller frees). A body too large goes on unmodified
 * after what was read of it (noted). Returns 0, or -1 (the client failed,
 * or out of memory; res says why).
 */
static int buffer_request_body(struct xfer *x, struct message_field **fields, size_t *count,
                               char *length, size_t length_len)
{
    const struct exchange_rewrite *rw = x->rw;
    size_t cap = 0, reserved = 0;
    int rc = -1;

    *fields = NULL;
    if (x->req->body == MESSAGE_BODY_LENGTH && x->req->content_length > rw->limit) {
        if (rw->ops->note != NULL)
            rw->ops->note(rw->arg, "body larger than --rewrite-limit: passed on unmodified");
        return 0;
    }
    for (;;) {
        const char *data;
        size_t len;
        int r = x->reader.source.next(&x->reader.source, x->t->io_ms, &data, &len);
        if (r < 0) {
            client_body_failed(x);
            goto out;
        }
        if (r == 0) {
            x->is_body_read = true;
            break;
        }
        if (x->pre_len + len > rw->limit || !exchange_rewrite_reserve(rw, len)) {
            if (x->pre_len + len > rw->limit && rw->ops->note != NULL)
                rw->ops->note(rw->arg, "body larger than --rewrite-limit: passed on unmodified");
            /* This slice and the rest stream on after what was read. */
            x->slice = data;
            x->slice_len = len;
            rc = 0;
            goto out;
        }
        reserved += len;
        if (x->pre_len + len > cap) {
            size_t want = cap ? cap : 16384;
            while (want < x->pre_len + len)
                want *= 2;
            unsigned char *p = realloc(x->pre_buf, want);
            if (p == NULL) {
                set_error(x, 502, "out of memory");
                goto out;
            }
            x->pre = x->pre_buf = p;
            cap = want;
        }
        memcpy(x->pre_buf + x->pre_len, data, len);
        x->pre_len += len;
    }
    const struct message_field *ce = message_find(x->req, "Content-Encoding");
    char encoding[128] = "";
    if (ce != NULL)
        snprintf(encoding, sizeof(encoding), "%.*s", (int)ce->value_len, ce->value);
    if (exchange_rewrite_body(rw, encoding, x->pre_buf, x->pre_len, &x->req_br) < 0) {
        set_error(x, 502, "out of memory");
        goto out;
    }
    x->is_pre_whole = true;
    if (x->req_br.rewritten == NULL) {
        rc = 0;
        goto out;
    }
    if (x->cap != NULL && x->cap->ops != NULL && x->cap->ops->body_original != NULL)
        x->cap->ops->body_original(x->cap->arg, EXCHANGE_REQUEST, x->req_br.plain,
                                   x->req_br.plain_len);
    if (x->cap != NULL && x->cap->ops != NULL && x->cap->ops->reframed != NULL)
        x->cap->ops->reframed(x->cap->arg, EXCHANGE_REQUEST, x->req_br.rewritten_len, true);
    *fields = malloc((x->req->fields.count + 1) * sizeof(**fields));
    if (*fields == NULL) {
        set_error(x, 502, "out of memory");
        goto out;
    }
    *count = 0;
    for (size_t i = 0; i < x->req->fields.count; i++) {
        const struct message_field *f = &x->req->fields.items[i];
        if (!message_field_is(f, "Content-Length") && !message_field_is(f, "Content-Encoding"))
            (*fields)[(*count)++] = *f;
    }
    snprintf(length, length_len, "%zu", x->req_br.rewritten_len);
    (*fields)[(*count)++] = (struct message_field){"content-length", 14, length, strlen(length)};
    x->pre = x->req_br.rewritten;
    x->pre_len = x->req_br.rewritten_len;
    rc = 0;
out:
    exchange_rewrite_release(reserved);
    return rc;
}

/* Reads what the origin sent while the connection was idle (a GOAWAY, a
 * PING, its close), without waiting. */
static void take_idle_input(struct h1toh2 *c)
{
    while (!c->is_broken && stream_wait_readable(c->origin, 0) == STREAM_OK) {
        if (stream_buffered(c->origin) == 0) {
            ssize_t r = stream_fill(c->origin, 0);
            if (r == STREAM_EOF || r == STREAM_ERROR)
                c->is_broken = true;
            if (r < 0)
                break;
        }
        ssize_t n = nghttp2_session_mem_recv(c->session, (const uint8_t *)stream_data(c->origin),
                                             stream_buffered(c->origin));
        if (n < 0) {
            c->is_broken = true;
            break;
        }
        stream_consume(c->origin, (size_t)n);
    }
}

int h1toh2_forward(struct h1toh2 *c, struct stream *client, const struct message *req,
                   const struct exchange_timeouts *t, const struct exchange_rewrite *rw,
                   const struct exchange_capture *cap, struct exchange_result *res)
{
    struct h1toh2_head *head = malloc(sizeof(*head));
    struct xfer *x = calloc(1, sizeof(*x));
    bool has_reader = false;
    const char *why = NULL;
    struct message_field *new_fields = NULL;
    size_t new_count = 0;
    char length[24];
    int rc = -1;

    memset(res, 0, sizeof(*res));
    if (head == NULL || x == NULL || (x->text = malloc(H1TOH2_MAX_RESPONSE_FIELD_BYTES)) == NULL) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        res->error_status = 502;
        goto out;
    }
    /* A kept-alive connection the origin closed or said GOAWAY on: nothing
     * was sent or read, the session retries on a new one. */
    take_idle_input(c);
    if (c->is_broken) {
        snprintf(res->error, sizeof(res->error), "the HTTP/2 origin closed the connection");
        res->error_status = 502;
        res->upstream_stale = true;
        goto out;
    }
    x->client = client;
    x->req = req;
    x->t = t;
    x->rw = rw;
    x->cap = cap;
    x->res = res;
    if (h1toh2_request_head(req, head, &why) < 0) {
        snprintf(res->error, sizeof(res->error), "%s", why);
        res->error_status = 502;
        goto out;
    }
    bool has_body = req->body != MESSAGE_BODY_NONE &&
                    !(req->body == MESSAGE_BODY_LENGTH && req->content_length == 0);
    if (has_body) {
        if (http1codec_reader_init(&x->reader, client, req->body, req->content_length) < 0) {
            snprintf(res->error, sizeof(res->error), "out of memory");
            res->error_status = 502;
            goto out;
        }
        has_reader = true;
        /* The proxy answers 100-continue itself (RFC 9110 10.1.1): HTTP/2
         * would relay it too, but this keeps one place that reads the body. */
        if (req->expect_continue && req->version >= 11 &&
            (stream_putstr(client, "HTTP/1.1 100 Continue\r\n\r\n", t->io_ms) != STREAM_OK ||
             stream_flush(client, t->io_ms) != STREAM_OK)) {
            snprintf(res->error, sizeof(res->error), "the client went away");
            res->error_status = 400;
            goto out;
        }
    }
    if (has_body && rw != NULL && rw->ops != NULL && rw->ops->wants_body != NULL &&
        rw->ops->wants_body(rw->arg)) {
        if (buffer_request_body(x, &new_fields, &new_count, length, sizeof(length)) < 0)
            goto out;
        if (new_fields != NULL) {
            /* The rewritten body goes with its own content-length. */
            struct message reframed = *req;
            reframed.fields = (struct message_fields){new_fields, new_count};
            reframed.body = MESSAGE_BODY_LENGTH;
            reframed.content_length = x->req_br.rewritten_len;
            if (h1toh2_request_head(&reframed, head, &why) < 0) {
                set_error(x, 502, why);
                goto out;
            }
        }
    }
    nghttp2_data_provider prd = {.read_callback = read_request_body};
    c->x = x;
    x->stream_id =
        nghttp2_submit_request(c->session, NULL, head->nv, head->count, has_body ? &prd : NULL, x);
    if (x->stream_id < 0) {
        c->is_broken = true;
        set_error(x, 502, "the HTTP/2 origin connection takes no more requests");
        goto out;
    }
    if (!has_body)
        moment(x, EXCHANGE_REQUEST_SENT);
    while (!x->is_done && !x->is_closed && !x->is_sink_fault) {
        if (send_pending(c, t->io_ms) < 0) {
            c->is_broken = true;
            set_error(x, 502,
                      c->origin->error[0] ? c->origin->error : "writing to the origin failed");
            break;
        }
        if (x->is_done || x->is_closed || x->is_sink_fault)
            break;
        if (stream_buffered(c->origin) == 0) {
            ssize_t r = stream_fill(c->origin, t->io_ms);
            if (r < 0) {
                c->is_broken = true;
                x->is_origin_gone = r == STREAM_EOF || r == STREAM_ERROR;
                set_error(x, r == STREAM_TIMEOUT ? 504 : 502,
                          r == STREAM_TIMEOUT ? "the HTTP/2 origin did not answer in time"
                          : r == STREAM_EOF   ? "the HTTP/2 origin closed the connection"
                                              : "reading from the HTTP/2 origin failed");
                break;
            }
        }
        ssize_t n = nghttp2_session_mem_recv(c->session, (const uint8_t *)stream_data(c->origin),
                                             stream_buffered(c->origin));
        if (n < 0) {
            c->is_broken = true;
            set_error(x, 502, nghttp2_strerror((int)n));
            break;
        }
        stream_consume(c->origin, (size_t)n);
        if (x->is_head_sent && !x->is_sink_fault && stream_flush(client, t->io_ms) != STREAM_OK) {
            x->is_sink_fault = true;
            set_error(x, 502, "the client stopped taking the response");
        }
    }
    /* The window updates, a reset of a stream we gave up. */
    if (!c->is_broken && send_pending(c, t->io_ms) < 0)
        c->is_broken = true;
    if (x->is_done) {
        rc = 0;
    } else if (x->res->error[0] == '\0') {
        char why_reset[96];
        snprintf(why_reset, sizeof(why_reset), "the HTTP/2 origin %s (%s)",
                 x->is_over_limit ? "sent too large a response head" : "reset the stream",
                 nghttp2_http2_strerror(x->reset_code));
        set_error(x, 502, why_reset);
    }
    if (!x->is_done) {
        /* A response cut short: the client must not take it for whole. */
        res->client_keep_alive = false;
        if (x->is_head_sent && !x->is_sink_fault)
            x->writer.sink.flush(&x->writer.sink, t->io_ms);
    }
    if (x->is_client_fault)
        res->client_keep_alive = false;
    /* Refused (RFC 9113 8.7: the origin did not process it), or the
     * connection died before any answer: a request without a body may go
     * again on a new connection. */
    if (!x->is_done && !x->has_first_byte && !has_body &&
        (x->reset_code == NGHTTP2_REFUSED_STREAM || x->is_origin_gone))
        res->upstream_stale = true;
    /* A body the client sent that was not all read leaves its connection
     * unframed. */
    if (has_reader && !x->is_body_read)
        res->client_keep_alive = false;
    moment(x, EXCHANGE_DONE);
    res->upstream_reusable = !c->is_broken;
out:
    c->x = NULL;
    if (x != NULL) {
        if (x->has_held)
            message_free(&x->held);
        if (x->has_received)
            message_free(&x->received);
        free(x->buffered);
        exchange_rewrite_release(x->reserved);
        exchange_body_rewrite_free(&x->req_br);
        free(x->pre_buf);
    }
    free(new_fields);
    if (has_reader)
        http1codec_reader_free(&x->reader);
    if (x != NULL)
        free(x->text);
    free(x);
    free(head);
    return rc;
}
