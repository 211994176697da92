/*
 * capture: see capture.h. The hooks write straight into the flow: no copy
 * of a head or a body is made that the flow does not keep.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "clock.h"
#include "flowstore.h"

/* Copies src into dst[size], cut to fit. snprintf(dst, size, "%s", src)
 * does the same at several times the cost, paid four times per flow. */
static void copy_text(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);

    if (n > size - 1)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

char *capture_headers_text(const struct message_fields *fields, struct flow_header_facts *facts)
{
    /* Sized first, then filled: one allocation per flow and header section
     * (a growable buffer would append four pieces per field). */
    size_t len = 0;
    size_t i;
    char *text;
    char *p;
    struct flow_header_facts found;

    for (i = 0; i < fields->count; i++)
        len += fields->items[i].name_len + fields->items[i].value_len + 4;
    text = malloc(len + 1);
    if (text == NULL)
        return NULL;
    memset(&found, 0, sizeof(found));
    found.text = text;
    p = text;
    for (i = 0; i < fields->count; i++) {
        const struct message_field *h = &fields->items[i];
        uint32_t at;

        memcpy(p, h->name, h->name_len);
        p += h->name_len;
        *p++ = ':';
        *p++ = ' ';
        /* A section is far below 4 GiB: the parser bounds a head. */
        at = (uint32_t)(p - text);
        if (facts && !found.has_content_type && message_field_is(h, "Content-Type")) {
            found.has_content_type = true;
            found.content_type_at = at;
            found.content_type_len = (uint32_t)h->value_len;
        } else if (facts && h->value_len > 0 && message_field_is(h, "Content-Encoding")) {
            found.has_more_encodings = found.has_content_encoding;
            found.has_content_encoding = true;
            found.content_encoding_at = at;
            found.content_encoding_len = (uint32_t)h->value_len;
        }
        memcpy(p, h->value, h->value_len);
        p += h->value_len;
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    if (facts)
        *facts = found;
    return text;
}

/* ---- the hooks the exchange calls ---- */

/* The hooks get the capture: the WebSocket ones also reach the store. */
static struct flow *flow_of(void *arg)
{
    return ((struct capture *)arg)->flow;
}

static void on_response_head(void *arg, const struct message *sent, const struct message *received)
{
    struct flow *f = flow_of(arg);
    size_t n = sent->reason_len < sizeof(f->reason) ? sent->reason_len : sizeof(f->reason) - 1;

    f->status = sent->status;
    if (n > 0) /* HTTP/2 has no reason phrase: reason may be NULL */
        memcpy(f->reason, sent->reason, n);
    f->reason[n] = '\0';
    f->response_version = sent->version;
    free(f->response_headers);
    f->response_headers = capture_headers_text(&sent->fields, &f->response_facts);
    if (received != NULL) {
        free(f->response_headers_original);
        f->response_headers_original = capture_headers_text(&received->fields, NULL);
    }
    if (sent->status == 101)
        f->kind = FLOW_WEBSOCKET;
}

static void on_body(void *arg, enum exchange_side side, const void *data, size_t len)
{
    struct flow *f = flow_of(arg);

    flow_body_append(side == EXCHANGE_REQUEST ? &f->request_body : &f->response_body, data, len);
}

static void on_body_original(void *arg, enum exchange_side side, const void *data, size_t len)
{
    struct flow *f = flow_of(arg);

    if (side == EXCHANGE_REQUEST) {
        flow_body_append(&f->request_body_original, data, len);
        f->has_request_body_original = true;
    } else {
        flow_body_append(&f->response_body_original, data, len);
        f->has_response_body_original = true;
    }
}

/*
 * A recorded header section ("Name: value\r\n" lines) with its framing
 * lines replaced: Content-Length, Transfer-Encoding and, when drop_encoding,
 * Content-Encoding go, and content_length is declared where the old length
 * stood (else at the end). Returns a new text (caller frees, *out_len its
 * length) or NULL when out of memory.
 */
static char *reframe_section(const char *text, size_t text_len, uint64_t content_length,
                             bool drop_encoding, size_t *out_len)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);
    const char *p = text, *end = text + text_len, *line_end;
    bool declared = false;
    char cl[48];

    snprintf(cl, sizeof(cl), "Content-Length: %llu\r\n", (unsigned long long)content_length);
    buf_reserve(&b, text_len + sizeof(cl));
    for (; p < end; p = line_end + 1) {
        line_end = memchr(p, '\n', (size_t)(end - p));
        if (!line_end)
            break;
        size_t n = (size_t)(line_end + 1 - p);
        if (n <= 2) /* a blank line */
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
    if (b.has_failed) {
        buf_free(&b);
        return NULL;
    }
    *out_len = b.len;
    return b.data;
}

/* The recorded header text of a buffered body's message: what was sent has
 * a new Content-Length, and no Content-Encoding when rules rewrote the body
 * (then the original keeps the header text as received, if nothing did
 * yet). */
static void on_reframed(void *arg, enum exchange_side side, uint64_t content_length,
                        bool is_rewritten)
{
    struct flow *f = flow_of(arg);
    bool is_request = side == EXCHANGE_REQUEST;
    char **text = is_request ? &f->request_headers : &f->response_headers;
    char **original = is_request ? &f->request_headers_original : &f->response_headers_original;
    struct flow_header_facts *facts = is_request ? &f->request_facts : &f->response_facts;
    size_t len;
    char *fresh;

    if (*text == NULL)
        return;
    fresh = reframe_section(*text, strlen(*text), content_length, is_rewritten, &len);
    if (fresh == NULL)
        return;
    if (is_rewritten && *original == NULL) {
        *original = *text;
        *text = NULL;
    }
    free(*text);
    *text = fresh;
    /* What was noted is about the old section: the flow writer walks this
     * one (a rare path: only bodies that rules rewrite get here). */
    facts->text = NULL;
}

static void on_moment(void *arg, enum exchange_moment moment, int64_t wall_us)
{
    struct flow *f = flow_of(arg);

    if (moment == EXCHANGE_REQUEST_SENT)
        f->timings.request_sent = wall_us;
    else if (moment == EXCHANGE_FIRST_BYTE && f->timings.first_byte == 0)
        f->timings.first_byte = wall_us;
    else if (moment == EXCHANGE_DONE)
        f->timings.done = wall_us;
}

static void on_upgraded(void *arg, uint64_t bytes_up, uint64_t bytes_down)
{
    struct flow *f = flow_of(arg);

    f->bytes_up = bytes_up;
    f->bytes_down = bytes_down;
}

/* Hands the messages held so far to the store, after the flow's live row
 * (struct flow_live). A part that cannot be made is tried again later; one
 * the full queue drops is lost (flowstore counts it). */
static void ws_flush(struct capture *c)
{
    struct flow *f = c->flow;
    struct flow *part;

    if (c->live == NULL) {
        struct flow *open = flow_snapshot(f);
        c->live = open != NULL ? flow_live_new() : NULL;
        if (c->live == NULL) {
            flow_free(open);
            return;
        }
        open->live = flow_live_ref(c->live);
        open->live_part = FLOW_LIVE_OPEN;
        flowstore_submit(c->store, open);
    }
    c->ws_flushed_ms = clock_mono_ms();
    if (f->ws.count == 0 || (part = flow_new(0)) == NULL)
        return;
    part->kind = FLOW_WEBSOCKET;
    part->live = flow_live_ref(c->live);
    part->live_part = FLOW_LIVE_MESSAGES;
    part->ws = f->ws;
    part->ws.dropped = 0;
    uint64_t dropped = f->ws.dropped;
    memset(&f->ws, 0, sizeof(f->ws));
    f->ws.dropped = dropped;
    flowstore_submit(c->store, part);
}

static void on_ws_message(void *arg, enum exchange_side side, const struct wsrelay_message *m)
{
    struct capture *c = arg;
    struct flow *f = c->flow;
    struct flow_ws_message kept = {
        .time_us = m->time_us,
        .size = m->total_len,
        .data = (unsigned char *)m->data,
        .len = m->len,
        .opcode = m->opcode,
        .flags = (m->is_compressed ? FLOW_WS_COMPRESSED : 0) |
                 (m->is_decoded ? FLOW_WS_DECODED : 0) | (m->is_truncated ? FLOW_WS_TRUNCATED : 0),
        .is_from_client = side == EXCHANGE_REQUEST,
    };

    /* The bounds hold over the whole connection, not per batch. */
    if (c->ws_kept >= FLOW_WS_MAX_MESSAGES || m->len > FLOW_WS_MAX_BYTES - c->ws_kept_bytes) {
        f->ws.dropped++;
        return;
    }
    if (flow_ws_append(&f->ws, &kept) == 0) {
        c->ws_kept++;
        c->ws_kept_bytes += m->len;
    }
    if (c->live == NULL || f->ws.count >= CAPTURE_WS_FLUSH_MESSAGES ||
        clock_mono_ms() - c->ws_flushed_ms >= CAPTURE_WS_FLUSH_MS)
        ws_flush(c);
}

static void on_ws_quiet(void *arg)
{
    struct capture *c = arg;

    if (c->live == NULL || c->flow->ws.count > 0)
        ws_flush(c);
}

static const struct exchange_capture_ops flow_ops = {
    .response_head = on_response_head,
    .body = on_body,
    .body_original = on_body_original,
    .reframed = on_reframed,
    .moment = on_moment,
    .upgraded = on_upgraded,
    .ws_message = on_ws_message,
    .ws_quiet = on_ws_quiet,
};

/* ---- what the session tells ---- */

void capture_begin(struct capture *c, struct flowstore *store, const struct capture_start *start)
{
    struct flow *f;

    memset(c, 0, sizeof(*c));
    if (store == NULL || (f = flow_new(start->body_limit)) == NULL)
        return;
    f->timings.start = clock_wall_us();
    copy_text(f->client_addr, sizeof(f->client_addr), start->client);
    copy_text(f->scheme, sizeof(f->scheme), start->scheme);
    copy_text(f->method, sizeof(f->method), start->method);
    copy_text(f->host, sizeof(f->host), start->host);
    if (start->listener != NULL)
        copy_text(f->listener, sizeof(f->listener), start->listener);
    f->port = start->port;
    f->target = start->target != NULL ? strdup(start->target) : NULL;
    f->is_tls = start->is_tls || strcmp(start->scheme, "https") == 0;
    c->store = store;
    c->flow = f;
    c->hooks.ops = &flow_ops;
    c->hooks.arg = c;
    c->hooks.message_limit = start->body_limit;
}

const struct exchange_capture *capture_hooks(struct capture *c)
{
    return c->flow != NULL ? &c->hooks : NULL;
}

void capture_request(struct capture *c, const struct message *sent, const struct message *received,
                     char *target_original)
{
    struct flow *f = c->flow;

    if (f == NULL) {
        free(target_original);
        return;
    }
    f->request_version = sent->version;
    f->request_headers = capture_headers_text(&sent->fields, &f->request_facts);
    if (received != NULL)
        f->request_headers_original = capture_headers_text(&received->fields, NULL);
    f->target_original = target_original;
}

void capture_answer(struct capture *c, int status, const char *reason, const char *headers,
                    const void *body, size_t body_len)
{
    struct flow *f = c->flow;

    if (f == NULL)
        return;
    f->status = status;
    copy_text(f->reason, sizeof(f->reason), reason);
    f->response_version = 11;
    free(f->response_headers);
    f->response_headers = strdup(headers);
    f->response_facts.text = NULL; /* the writer walks it: a rare path */
    flow_body_append(&f->response_body, body, body_len);
}

void capture_tunnel(struct capture *c, uint64_t bytes_up, uint64_t bytes_down)
{
    if (c->flow == NULL)
        return;
    c->flow->kind = FLOW_TUNNEL;
    c->flow->bytes_up = bytes_up;
    c->flow->bytes_down = bytes_down;
}

/* *text with more after it, joined by "; " (a failed allocation keeps
 * what was there). */
static void append_text(char **text, const char *more)
{
    size_t had, n;
    char *grown;

    if (more == NULL || more[0] == '\0')
        return;
    if (*text == NULL) {
        *text = strdup(more);
        return;
    }
    had = strlen(*text);
    n = strlen(more);
    grown = realloc(*text, had + n + 3);
    if (grown == NULL)
        return;
    memcpy(grown + had, "; ", 2);
    memcpy(grown + had + 2, more, n + 1);
    *text = grown;
}

void capture_rules(struct capture *c, const char *applied, const char *notes)
{
    if (c->flow == NULL)
        return;
    /* rules: what changed the flow (its "modified" mark); notes: why a
     * matching rule did not apply. An intercept may have added its own. */
    append_text(&c->flow->rules, applied);
    append_text(&c->flow->rules_notes, notes);
}

void capture_note(struct capture *c, const char *label, const char *note)
{
    capture_rules(c, label, note);
}

void capture_request_edited(struct capture *c, const struct message *sent,
                            const void *body_original, size_t body_original_len)
{
    struct flow *f = c->flow;
    char *target;

    if (f == NULL)
        return;
    target = strndup(sent->target, sent->target_len);
    if (target == NULL)
        return;
    if (f->target_original == NULL && f->target != NULL && strcmp(f->target, target) != 0) {
        f->target_original = f->target;
        f->target = NULL;
    }
    free(f->target);
    f->target = target;
    copy_text(f->method, sizeof(f->method), sent->method);
    if (f->request_headers_original == NULL) {
        f->request_headers_original = f->request_headers;
        f->request_headers = NULL;
    }
    free(f->request_headers);
    f->request_headers = capture_headers_text(&sent->fields, &f->request_facts);
    if (body_original != NULL && !f->has_request_body_original) {
        flow_body_append(&f->request_body_original, body_original, body_original_len);
        f->has_request_body_original = true;
    }
}

void capture_finish(struct capture *c, const struct capture_connection *conn, int status,
                    const char *error)
{
    struct flow *f = c->flow;

    if (f == NULL)
        return;
    if (f->is_tls && conn != NULL && conn->tls != NULL)
        flow_tls_copy(&f->tls, conn->tls);
    if (conn != NULL && (conn->connected_at_us != 0 || conn->tls_done_at_us != 0)) {
        f->timings.connected = conn->connected_at_us;
        f->timings.tls_done = conn->tls_done_at_us;
    }
    if (status != 0 && f->status == 0)
        f->status = status;
    if (error != NULL && error[0] != '\0' && f->error == NULL)
        f->error = strdup(error);
    if (f->timings.done == 0)
        f->timings.done = clock_wall_us();
    if (c->live != NULL) {
        /* The finished flow replaces its live row. */
        f->live = c->live;
        f->live_part = FLOW_LIVE_FINAL;
        c->live = NULL;
    }
    c->flow = NULL;
    flowstore_submit(c->store, f);
}

void capture_abandon(struct capture *c)
{
    flow_free(c->flow);
    c->flow = NULL;
    flow_live_release(c->live);
    c->live = NULL;
}
