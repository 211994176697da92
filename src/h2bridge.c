/*
 * h2bridge: see h2bridge.h.
 *
 * Each connection runs one exchange at a time as a small state machine
 * driven by h2bridge_step(): the request head and body go out through an
 * output buffer written as far as the socket takes it, the response is
 * parsed from the stream's input buffer as it arrives (http1's strict
 * parser and chunked decoder) and handed to the stream. Nothing here waits
 * on a socket: a new connection is opened (origin_open(), which blocks on
 * DNS, connect, an upstream proxy and the TLS handshake) by a thread of its
 * own, the opener, which owns the connection's origin until it signals an
 * eventfd the relay polls; the relay then joins it and takes the origin
 * back. Why a thread rather than a non-blocking origin_open(): that is
 * the one path every mode shares (chains through upstream proxies,
 * verification, the session cache), and a second, event-driven copy of it
 * would be two places to get TLS verification right.
 */
#include "h2bridge.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "http1.h"
#include "http1codec.h"
#include "httptoken.h"
#include "log.h"
#include "upstreamproxy.h"

/* A head we build plus a chunk of body with its framing, or a last chunk
 * with the trailers. */
#define OUT_MAX_BYTES (HTTP1CODEC_MAX_BUILT_HEAD_BYTES + H2BRIDGE_CHUNK_BYTES + 64)

/* CONN_OPENING: the opener thread owns own until open_done. */
enum conn_state { CONN_CLOSED, CONN_OPENING, CONN_IDLE, CONN_BUSY };
enum resp_state { RESP_HEAD, RESP_BODY };

struct waiting {
    void *stream;
    struct message req; /* owned */
    struct waiting *next;
};

struct h2bridge;

struct conn {
    enum conn_state state;
    struct h2bridge *b; /* for the opener thread */
    struct origin own;
    struct origin *o; /* &own, or the borrowed env->first until it closes */
    void *stream;     /* CONN_BUSY: the stream served */
    struct message req;
    /* The request: bytes waiting for the socket, and what is left to send. */
    struct buf out;
    size_t out_off;
    short out_want; /* the poll events the pending write waits for */
    enum message_body req_body;
    uint64_t req_left;  /* MESSAGE_BODY_LENGTH: bytes still to come */
    bool is_body_taken; /* the stream's whole body is in out (or sent) */
    bool is_req_done;   /* and out is empty */
    enum resp_state resp;
    enum http1_framing framing;
    uint64_t resp_left; /* HTTP1_BODY_LENGTH */
    struct http1_chunked *chunked;
    bool resp_keep_alive;
    int64_t deadline_ms;  /* 0: none; else when an origin that makes no progress fails */
    int poll_index;       /* in the last h2bridge_pollfds(), or -1 */
    bool is_reused;       /* it served a request before this one */
    uint64_t read_before; /* the stream's bytes_read when this request started */
    /* CONN_OPENING: the opener, what it found (written before open_done is
     * set, read after), and the eventfd it signals. */
    pthread_t opener;
    int open_fd;
    atomic_bool open_done;
    int open_rc;
    struct upstream_error open_err;
};

struct h2bridge {
    struct h2bridge_env env;
    struct conn conns[H2BRIDGE_MAX_CONNECTIONS];
    struct waiting *wait_head, **wait_tail;
    size_t waiting;
    struct http1_head *head; /* parse scratch */
};

/* ---- the gate: what HTTP/1.1 would read differently ---- */

static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!httptoken_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* RFC 9110 5.5 field-value, and RFC 9113 8.2.1: no leading or trailing
 * whitespace, no CR, LF, NUL or other control but HTAB. */
static bool is_field_value(const char *v, size_t len)
{
    if (len > 0 && (v[0] == ' ' || v[0] == '\t' || v[len - 1] == ' ' || v[len - 1] == '\t'))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool is_digits(const char *v, size_t len)
{
    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

static int check_fields(const struct message_fields *fields, const char **why)
{
    for (size_t i = 0; i < fields->count; i++) {
        const struct message_field *f = &fields->items[i];
        if (!is_token(f->name, f->name_len)) {
            *why = "a field name HTTP/1.1 cannot carry";
            return -1;
        }
        if (!is_field_value(f->value, f->value_len)) {
            *why = "a field value with a control character or surrounding whitespace";
            return -1;
        }
    }
    return 0;
}

int h2bridge_check_request(const struct message *req, const char **why)
{
    const struct message_field *cl = NULL;

    if (!is_token(req->method, req->method_len)) {
        *why = "a method that is not a token";
        return -1;
    }
    bool is_asterisk = req->target_len == 1 && req->target[0] == '*';
    if (req->target_len == 0 || (req->target[0] != '/' && !is_asterisk) ||
        (is_asterisk && !(req->method_len == 7 && memcmp(req->method, "OPTIONS", 7) == 0))) {
        *why = "a path that is not origin-form";
        return -1;
    }
    for (size_t i = 0; i < req->target_len; i++) {
        unsigned char c = (unsigned char)req->target[i];
        if (c <= 0x20 || c == 0x7f) {
            *why = "a path with a space or a control character";
            return -1;
        }
    }
    if (req->authority != NULL) {
        char host[HTTP1_MAX_HOST_BYTES];
        uint16_t port;
        if (http1_parse_authority(req->authority, req->authority_len, 443, host, &port) < 0) {
            *why = "an authority that is not host[:port]";
            return -1;
        }
    } else if (message_find(req, "host") == NULL) {
        *why = "neither :authority nor host";
        return -1;
    }
    if (check_fields(&req->fields, why) < 0)
        return -1;
    for (size_t i = 0; i < req->fields.count; i++) {
        const struct message_field *f = &req->fields.items[i];
        /* RFC 9113 8.2.2: TE may only say trailers. */
        if (message_field_is(f, "te") &&
            !(f->value_len == 8 && strncasecmp(f->value, "trailers", 8) == 0)) {
            *why = "TE other than trailers";
            return -1;
        }
        if (!message_field_is(f, "content-length"))
            continue;
        /* One number, however often repeated (RFC 9110 8.6). */
        if (!is_digits(f->value, f->value_len) ||
            (cl != NULL &&
             (cl->value_len != f->value_len || memcmp(cl->value, f->value, f->value_len) != 0))) {
            *why = "a content-length that is not one number";
            return -1;
        }
        cl = f;
    }
    return 0;
}

/* ---- connections ---- */

static void conn_reset(struct conn *c)
{
    message_free(&c->req);
    c->stream = NULL;
    c->out.len = 0;
    c->out.has_failed = c->out.is_over_max = false;
    c->out_off = 0;
    c->out_want = 0;
    c->is_body_taken = c->is_req_done = false;
    c->resp = RESP_HEAD;
    c->deadline_ms = 0;
}

static void conn_close(struct conn *c)
{
    origin_close(c->o);
    /* The borrowed connection's TLS facts stay with it (the flows point to
     * them): a new connection is always one of our own. */
    c->o = &c->own;
    conn_reset(c);
    c->state = CONN_CLOSED;
    c->is_reused = false;
}

/* A kept-alive connection the origin closed just before we used it: a
 * request without a body, of which nothing came back, goes again on a
 * fresh connection (RFC 9112 9.3.1), first in line. Returns 0 when it was
 * requeued (c closed), -1 when it cannot be. */
static int conn_retry(struct h2bridge *b, struct conn *c)
{
    struct waiting *w;

    if (!c->is_reused || c->req_body != MESSAGE_BODY_NONE || c->resp != RESP_HEAD ||
        c->o->stream.bytes_read != c->read_before || (w = calloc(1, sizeof(*w))) == NULL)
        return -1;
    w->stream = c->stream;
    w->req = c->req;
    memset(&c->req, 0, sizeof(c->req));
    w->next = b->wait_head;
    b->wait_head = w;
    if (b->wait_tail == &b->wait_head)
        b->wait_tail = &w->next;
    b->waiting++;
    c->stream = NULL;
    conn_close(c);
    return 0;
}

/* The stream is given up: the connection closes (the exchange on it is
 * broken), then the stream hears why. */
static void conn_fail(struct h2bridge *b, struct conn *c, int status, const char *why)
{
    void *stream = c->stream;

    c->stream = NULL;
    conn_close(c);
    if (stream != NULL)
        b->env.ops->failed(stream, status, why);
}

static void conn_finish(struct h2bridge *b, struct conn *c, const struct message_fields *trailers)
{
    void *stream = c->stream;
    bool is_reusable = c->resp_keep_alive && c->is_req_done &&
                       stream_buffered(&c->o->stream) == 0 && c->framing != HTTP1_BODY_UNTIL_CLOSE;

    c->stream = NULL;
    if (is_reusable) {
        conn_reset(c);
        c->state = CONN_IDLE;
        c->is_reused = true;
    } else {
        conn_close(c);
    }
    b->env.ops->response_end(stream, trailers);
}

/* Starts req on c: its head into the output buffer. Takes req. Returns 0,
 * or -1 with *why (req freed). */
static int conn_start(struct h2bridge *b, struct conn *c, void *stream, struct message *req,
                      const char **why)
{
    struct message via;
    struct upstreamproxy_request proxied = {0};
    char *head = NULL;
    size_t len = 0;
    int rc = -1;

    c->req = *req;
    memset(req, 0, sizeof(*req));
    c->stream = stream;
    c->state = CONN_BUSY;
    via = c->req;
    /* Through an upstream proxy a plain request names its origin. */
    if (c->o->is_proxied_http &&
        upstreamproxy_prepare(b->env.settings->proxy, &c->req, b->env.target.host,
                              b->env.target.port, &via, &proxied) < 0) {
        *why = "out of memory";
        goto out;
    }
    head = http1codec_request_head(&via, &len);
    if (head == NULL || buf_put(&c->out, head, len) < 0) {
        *why = "the request head is too large for HTTP/1.1";
        goto out;
    }
    c->req_body = c->req.body;
    c->req_left = c->req.content_length;
    c->read_before = c->o->stream.bytes_read;
    c->resp = RESP_HEAD;
    c->out_want = POLLOUT;
    c->deadline_ms = clock_mono_ms() + b->env.io_ms;
    rc = 0;
out:
    free(head);
    upstreamproxy_request_free(&proxied);
    if (rc < 0) {
        c->stream = NULL;
        conn_close(c);
    }
    return rc;
}

/* The last chunk and the trailers of a chunked request (RFC 9112 7.1.2);
 * connection-specific trailers and framing fields never go. */
static int put_last_chunk(struct h2bridge *b, struct conn *c, const char **why)
{
    struct message_fields trailers = b->env.ops->request_trailers(c->stream);

    if (check_fields(&trailers, why) < 0)
        return -1;
    buf_str(&c->out, "0\r\n");
    for (size_t i = 0; i < trailers.count; i++) {
        const struct message_field *f = &trailers.items[i];
        if (message_is_hop_by_hop(&trailers, f) || message_field_is(f, "content-length") ||
            message_field_is(f, "host"))
            continue;
        buf_put(&c->out, f->name, f->name_len);
        buf_str(&c->out, ": ");
        buf_put(&c->out, f->value, f->value_len);
        buf_str(&c->out, "\r\n");
    }
    if (buf_str(&c->out, "\r\n") < 0) {
        *why = "the request trailers are too large";
        return -1;
    }
    return 0;
}

/* More of the request body into the output buffer, framed as the head
 * declared. Returns 1 when something was added, 0 when the stream has
 * nothing yet, -1 (conn failed) when the body broke its framing. */
static int pull_body(struct h2bridge *b, struct conn *c)
{
    char data[H2BRIDGE_CHUNK_BYTES];
    bool is_end = false;
    const char *why = NULL;
    size_t n = b->env.ops->take_body(c->stream, data, sizeof(data), &is_end);

    if (n == 0 && !is_end)
        return 0;
    switch (c->req_body) {
    case MESSAGE_BODY_LENGTH:
        /* The content-length the client declared is what the origin reads:
         * a body of any other size would end early or run into the next
         * request (nghttp2 refuses it first; this is the last guard). */
        if (n > c->req_left || (is_end && n < c->req_left)) {
            why = "the request body does not match its content-length";
            break;
        }
        c->req_left -= n;
        buf_put(&c->out, data, n);
        break;
    case MESSAGE_BODY_STREAM:
        if (n > 0) {
            char line[24];
            buf_put(&c->out, line, http1_chunk_header(line, n));
            buf_put(&c->out, data, n);
            buf_str(&c->out, "\r\n");
        }
        if (is_end)
            put_last_chunk(b, c, &why);
        break;
    default:
        if (n > 0)
            why = "a request body after a head that declared none";
        break;
    }
    if (why == NULL && c->out.has_failed)
        why = "out of memory";
    if (why != NULL) {
        conn_fail(b, c, 0, why);
        return -1;
    }
    c->is_body_taken = is_end;
    return 1;
}

/* Writes what the socket takes. Returns 0, or -1 (conn failed). */
static int conn_write(struct h2bridge *b, struct conn *c, bool *has_moved)
{
    for (;;) {
        if (c->out_off == c->out.len) {
            c->out.len = 0;
            c->out_off = 0;
            c->out_want = 0;
            if (c->is_body_taken) {
                c->is_req_done = true;
                return 0;
            }
            int got = pull_body(b, c);
            if (got <= 0)
                return got;
            continue;
        }
        short want;
        ssize_t n = stream_write_some(&c->o->stream, c->out.data + c->out_off,
                                      c->out.len - c->out_off, &want);
        if (n < 0) {
            char why[200];
            if (conn_retry(b, c) == 0)
                return -1;
            snprintf(why, sizeof(why), "writing to the origin failed: %s",
                     c->o->stream.error[0] ? c->o->stream.error : "connection closed");
            conn_fail(b, c, 502, why);
            return -1;
        }
        if (n == 0) {
            c->out_want = want;
            return 0;
        }
        c->out_off += (size_t)n;
        *has_moved = true;
    }
}

/* The response head as the stream gets it: HTTP/1.1's connection-specific
 * fields gone (RFC 9113 8.2.2), framing its own. */
static int deliver_head(struct h2bridge *b, struct conn *c, const struct http1_head *h)
{
    struct message_field kept[HTTP1_MAX_HEADERS];
    struct message m;
    size_t n = 0;

    http1codec_view(h, &m);
    for (size_t i = 0; i < m.fields.count; i++) {
        const struct message_field *f = &m.fields.items[i];
        if (message_is_hop_by_hop(&m.fields, f))
            continue;
        /* A chunked or until-close body has no length to declare; a
         * length-framed one keeps it (HTTP/2 checks DATA against it). */
        if (message_field_is(f, "content-length") && h->framing != HTTP1_BODY_LENGTH &&
            h->framing != HTTP1_BODY_NONE)
            continue;
        kept[n++] = *f;
    }
    m.fields = (struct message_fields){kept, n};
    m.version = 11;
    return b->env.ops->response_head(c->stream, &m);
}

/* Parses and hands on what arrived. Returns 0, or -1 when c is done with
 * (finished or failed). */
static int conn_read(struct h2bridge *b, struct conn *c, bool *has_moved)
{
    struct stream *s = &c->o->stream;

    for (;;) {
        if (c->resp == RESP_HEAD && stream_buffered(s) > 0) {
            struct http1_error err = {0};
            int got = http1_parse_response(stream_data(s), stream_buffered(s), c->req.method,
                                           c->req.method_len, b->head, &err);
            if (got < 0) {
                char why[200];
                snprintf(why, sizeof(why), "bad response from the origin: %s",
                         err.message ? err.message : "unparsable");
                conn_fail(b, c, 502, why);
                return -1;
            }
            if (got > 0) {
                const struct http1_head *h = b->head;
                *has_moved = true;
                if (h->status == 101) {
                    conn_fail(b, c, 502,
                              "the origin switched protocols (101), which HTTP/2 cannot carry");
                    return -1;
                }
                if (h->status < 200) {
                    stream_consume(s, (size_t)got); /* interim: not passed on */
                    continue;
                }
                c->framing = h->framing;
                c->resp_left = h->content_length;
                c->resp_keep_alive = h->keep_alive;
                if (deliver_head(b, c, h) < 0) {
                    c->stream = NULL; /* the stream gave itself up */
                    conn_close(c);
                    return -1;
                }
                stream_consume(s, (size_t)got);
                c->resp = RESP_BODY;
                if (c->framing == HTTP1_BODY_CHUNKED) {
                    if (c->chunked == NULL && (c->chunked = malloc(sizeof(*c->chunked))) == NULL) {
                        conn_fail(b, c, 502, "out of memory");
                        return -1;
                    }
                    http1_chunked_init(c->chunked);
                }
                if (c->framing == HTTP1_BODY_NONE ||
                    (c->framing == HTTP1_BODY_LENGTH && c->resp_left == 0)) {
                    conn_finish(b, c, &(struct message_fields){NULL, 0});
                    return -1;
                }
                continue;
            }
        }
        if (c->resp == RESP_BODY) {
            if (!b->env.ops->can_take_body(c->stream))
                return 0; /* read on once the client took some */
            size_t have = stream_buffered(s);
            if (have > 0 && c->framing == HTTP1_BODY_CHUNKED) {
                size_t used = 0, len = 0;
                const char *data = NULL;
                enum http1_chunk_result r =
                    http1_chunked_decode(c->chunked, stream_data(s), have, &used, &data, &len);
                if (r == HTTP1_CHUNK_ERROR) {
                    conn_fail(b, c, 502, "bad chunked body from the origin");
                    return -1;
                }
                if (r == HTTP1_CHUNK_DATA && b->env.ops->response_body(c->stream, data, len) < 0) {
                    c->stream = NULL;
                    conn_close(c);
                    return -1;
                }
                stream_consume(s, used);
                *has_moved = *has_moved || used > 0;
                if (r == HTTP1_CHUNK_DONE) {
                    struct message_field items[64];
                    size_t count = http1codec_split_fields(c->chunked->trailers,
                                                           c->chunked->trailers_len, items, 64);
                    conn_finish(b, c, &(struct message_fields){items, count});
                    return -1;
                }
                if (r == HTTP1_CHUNK_DATA)
                    continue;
            } else if (have > 0) {
                size_t len = have;
                if (c->framing == HTTP1_BODY_LENGTH && len > c->resp_left)
                    len = (size_t)c->resp_left;
                if (b->env.ops->response_body(c->stream, stream_data(s), len) < 0) {
                    c->stream = NULL;
                    conn_close(c);
                    return -1;
                }
                stream_consume(s, len);
                *has_moved = true;
                if (c->framing == HTTP1_BODY_LENGTH) {
                    c->resp_left -= len;
                    if (c->resp_left == 0) {
                        conn_finish(b, c, &(struct message_fields){NULL, 0});
                        return -1;
                    }
                }
                continue;
            }
        }
        ssize_t got = stream_fill(s, 0);
        if (got > 0) {
            *has_moved = true;
            continue;
        }
        if (got == STREAM_TIMEOUT)
            return 0;
        if (got == STREAM_EOF && c->resp == RESP_BODY && c->framing == HTTP1_BODY_UNTIL_CLOSE) {
            conn_finish(b, c, &(struct message_fields){NULL, 0});
            return -1;
        }
        if (conn_retry(b, c) == 0)
            return -1;
        conn_fail(b, c, 502,
                  got == STREAM_EOF
                      ? (c->resp == RESP_HEAD ? "the origin closed the connection without answering"
                                              : "the origin closed the connection mid-response")
                  : got == STREAM_FULL ? "the origin's response head is too large"
                                       : "reading from the origin failed");
        return -1;
    }
}

static void conn_run(struct h2bridge *b, struct conn *c)
{
    bool has_moved = false;

    if (!c->is_req_done && conn_write(b, c, &has_moved) < 0)
        return;
    if (conn_read(b, c, &has_moved) < 0)
        return;
    int64_t now = clock_mono_ms();
    /* Waiting on the origin (our bytes not taken, or no answer to a whole
     * request) is bounded; waiting on the client is not the origin's doing. */
    bool is_on_origin =
        c->out_off < c->out.len ||
        (c->is_req_done && (c->resp == RESP_HEAD || b->env.ops->can_take_body(c->stream)));
    if (has_moved || !is_on_origin)
        c->deadline_ms = now + b->env.io_ms;
    else if (now >= c->deadline_ms)
        conn_fail(b, c, 504, "the origin did not answer in time (--io-timeout)");
}

/* ---- the pool ---- */

static struct waiting *take_waiting(struct h2bridge *b)
{
    struct waiting *w = b->wait_head;

    if (w != NULL) {
        b->wait_head = w->next;
        if (b->wait_head == NULL)
            b->wait_tail = &b->wait_head;
        b->waiting--;
    }
    return w;
}

static void *open_in_background(void *arg)
{
    struct conn *c = arg;
    uint64_t one = 1;

    c->open_rc = origin_open(&c->own, c->b->env.settings, &c->b->env.target, &c->open_err, NULL);
    atomic_store_explicit(&c->open_done, true, memory_order_release);
    /* Only a wake-up: the relay reads open_done, not the counter (which
     * one write cannot overflow). */
    ssize_t ignored = write(c->open_fd, &one, sizeof(one));
    (void)ignored;
    return NULL;
}

/* Starts opening c (CONN_CLOSED, its own origin) in the background.
 * Returns 0, or -1 when no thread could be started (c stays closed). */
static int conn_open_begin(struct conn *c)
{
    c->open_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->open_fd < 0)
        return -1;
    atomic_store_explicit(&c->open_done, false, memory_order_relaxed);
    c->open_rc = -1;
    c->state = CONN_OPENING;
    if (pthread_create(&c->opener, NULL, open_in_background, c) != 0) {
        close(c->open_fd);
        c->open_fd = -1;
        c->state = CONN_CLOSED;
        return -1;
    }
    return 0;
}

/* Waits for c's opener and takes its origin back; returns its result. */
static int conn_open_end(struct conn *c)
{
    pthread_join(c->opener, NULL);
    close(c->open_fd);
    c->open_fd = -1;
    c->state = CONN_CLOSED;
    return c->open_rc;
}

/* The origin cannot be reached now: every request waiting for it hears so
 * at once, rather than each trying again for --upstream-timeout. */
static void fail_waiting(struct h2bridge *b, const struct upstream_error *err)
{
    struct waiting *w;

    log_warn("%s: upstream %s:%u: %s", b->env.client_name, b->env.target.host, b->env.target.port,
             err->reason);
    while ((w = take_waiting(b)) != NULL) {
        b->env.ops->failed(w->stream, upstream_error_http_status(err), err->reason);
        message_free(&w->req);
        free(w);
    }
}

/* Opens that have ended become idle connections, or fail what waits. */
static void collect_opens(struct h2bridge *b)
{
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
        struct conn *c = &b->conns[i];
        if (c->state != CONN_OPENING || !atomic_load_explicit(&c->open_done, memory_order_acquire))
            continue;
        if (conn_open_end(c) == 0) {
            c->state = CONN_IDLE;
        } else {
            origin_close(c->o);
            fail_waiting(b, &c->open_err);
        }
    }
}

/* Gives waiting requests the idle connections, and starts opening new ones
 * (up to the limit) for those left waiting beyond the opens under way.
 * Returns whether one was given a connection. */
static bool dispatch(struct h2bridge *b)
{
    bool has_started = false;
    size_t opening = 0;

    while (b->wait_head != NULL) {
        struct conn *idle = NULL;
        for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS && idle == NULL; i++)
            if (b->conns[i].state == CONN_IDLE)
                idle = &b->conns[i];
        if (idle == NULL)
            break;
        struct waiting *w = take_waiting(b);
        const char *why = NULL;
        if (conn_start(b, idle, w->stream, &w->req, &why) < 0)
            b->env.ops->failed(w->stream, 502, why);
        else
            has_started = true;
        free(w);
    }
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++)
        opening += b->conns[i].state == CONN_OPENING;
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS && b->waiting > opening; i++) {
        struct conn *c = &b->conns[i];
        if (c->state != CONN_CLOSED)
            continue;
        if (conn_open_begin(c) < 0) {
            struct upstream_error err = {.status = UPSTREAM_UNREACHABLE};
            snprintf(err.reason, sizeof(err.reason), "cannot start a thread to connect");
            fail_waiting(b, &err);
            break;
        }
        opening++;
    }
    return has_started;
}

struct h2bridge *h2bridge_new(const struct h2bridge_env *env)
{
    struct h2bridge *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    b->head = malloc(sizeof(*b->head));
    if (b->head == NULL) {
        free(b);
        return NULL;
    }
    b->env = *env;
    b->wait_tail = &b->wait_head;
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
        struct conn *c = &b->conns[i];
        origin_init(&c->own, env->settings->cancel_fd);
        c->o = &c->own;
        c->b = b;
        c->open_fd = -1;
        c->out = (struct buf)BUF_INIT(OUT_MAX_BYTES);
        c->poll_index = -1;
    }
    if (env->first != NULL && stream_is_open(&env->first->stream)) {
        b->conns[0].o = env->first;
        b->conns[0].state = CONN_IDLE;
    }
    return b;
}

void h2bridge_free(struct h2bridge *b)
{
    struct waiting *w;

    if (b == NULL)
        return;
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
        struct conn *c = &b->conns[i];
        /* An open under way ends within --upstream-timeout (or at once on
         * shutdown, through the cancel fd). */
        if (c->state == CONN_OPENING)
            conn_open_end(c);
        conn_close(c);
        origin_free(&c->own);
        buf_free(&c->out);
        free(c->chunked);
    }
    while ((w = take_waiting(b)) != NULL) {
        message_free(&w->req);
        free(w);
    }
    free(b->head);
    free(b);
}

/*
 * An HTTP/2 client may send Cookie as several fields (RFC 9113 8.2.3);
 * HTTP/1.1 must get one, the values joined by "; ", where the first was.
 * With two or more, *items (the request's fields with the joined one) and
 * *joined are allocated (caller frees both) and *out lists them; else
 * both stay NULL. Returns 0, or -1 when out of memory.
 */
static int join_cookies(const struct message_fields *in, struct message_field **items,
                        char **joined, struct message_fields *out)
{
    size_t count = 0, len = 0, n = 0, at = 0;
    bool has_first = false;

    *items = NULL;
    *joined = NULL;
    for (size_t i = 0; i < in->count; i++) {
        if (message_field_is(&in->items[i], "cookie")) {
            len += in->items[i].value_len + (count > 0 ? 2 : 0);
            count++;
        }
    }
    if (count < 2)
        return 0;
    *items = malloc(in->count * sizeof(**items));
    *joined = malloc(len + 1);
    if (*items == NULL || *joined == NULL) {
        free(*items);
        free(*joined);
        *items = NULL;
        *joined = NULL;
        return -1;
    }
    for (size_t i = 0; i < in->count; i++) {
        const struct message_field *f = &in->items[i];
        if (!message_field_is(f, "cookie")) {
            (*items)[n++] = *f;
            continue;
        }
        if (has_first) {
            memcpy(*joined + at, "; ", 2);
            at += 2;
        } else {
            (*items)[n++] = (struct message_field){"cookie", 6, *joined, len};
        }
        memcpy(*joined + at, f->value, f->value_len);
        at += f->value_len;
        has_first = true;
    }
    (*joined)[len] = '\0';
    *out = (struct message_fields){*items, n};
    return 0;
}

int h2bridge_submit(struct h2bridge *b, void *stream, const struct message *req, const char **why)
{
    struct waiting *w = NULL;
    struct message_field *items = NULL;
    struct message_fields fields;
    char *joined = NULL;

    if (h2bridge_check_request(req, why) < 0)
        return -1;
    if (b->waiting >= H2BRIDGE_MAX_WAITING) {
        *why = "too many requests waiting for the origin";
        return -1;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL || join_cookies(&req->fields, &items, &joined, &fields) < 0 ||
        message_copy(&w->req, req, items != NULL ? &fields : NULL) < 0) {
        free(w);
        free(items);
        free(joined);
        *why = "out of memory";
        return -1;
    }
    free(items);
    free(joined);
    w->stream = stream;
    w->req.version = 11;
    w->req.keep_alive = true;
    /* The relay answered Expect: 100-continue itself and the body goes at
     * once; passed on, Expect would make the origin wait for nothing. */
    w->req.expect_continue = true;
    const struct message_field *cl = message_find(&w->req, "content-length");
    if (w->req.body != MESSAGE_BODY_NONE && cl != NULL) {
        w->req.body = MESSAGE_BODY_LENGTH;
        w->req.content_length = strtoull(cl->value, NULL, 10);
    } else if (w->req.body != MESSAGE_BODY_NONE) {
        w->req.body = MESSAGE_BODY_STREAM; /* chunked: its end and trailers say themselves */
    }
    *b->wait_tail = w;
    b->wait_tail = &w->next;
    b->waiting++;
    return 0;
}

void h2bridge_cancel(struct h2bridge *b, void *stream)
{
    for (struct waiting **p = &b->wait_head; *p != NULL; p = &(*p)->next) {
        if ((*p)->stream == stream) {
            struct waiting *w = *p;
            *p = w->next;
            if (b->wait_tail == &w->next)
                b->wait_tail = p;
            b->waiting--;
            message_free(&w->req);
            free(w);
            return;
        }
    }
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
        struct conn *c = &b->conns[i];
        if (c->state == CONN_BUSY && c->stream == stream) {
            c->stream = NULL;
            conn_close(c);
        }
    }
}

size_t h2bridge_pollfds(struct h2bridge *b, struct pollfd *p, size_t max, int *timeout_ms)
{
    size_t n = 0;
    int64_t now = clock_mono_ms();

    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
        struct conn *c = &b->conns[i];
        c->poll_index = -1;
        if (c->state == CONN_CLOSED || n == max)
            continue;
        if (c->state == CONN_OPENING) {
            p[n] = (struct pollfd){.fd = c->open_fd, .events = POLLIN};
            c->poll_index = (int)n++;
            continue;
        }
        short events = POLLIN; /* an idle one: its close, or bytes it should not send */
        if (c->state == CONN_BUSY) {
            bool is_held = c->resp == RESP_BODY && !b->env.ops->can_take_body(c->stream);
            events = (short)((is_held ? 0 : POLLIN) | (c->out_off < c->out.len ? c->out_want : 0));
            if (!is_held && c->o->stream.ssl != NULL && SSL_has_pending(c->o->stream.ssl))
                *timeout_ms = 0;
            if (c->deadline_ms > 0) {
                int64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
                if (*timeout_ms < 0 || left < *timeout_ms)
                    *timeout_ms = (int)left;
            }
        }
        p[n] = (struct pollfd){.fd = c->o->stream.fd, .events = events};
        c->poll_index = (int)n++;
    }
    return n;
}

/*
 * An idle connection's socket became readable. What TLS 1.3 sends after
 * the handshake (session tickets, which OpenSSL reads only when asked for
 * data) leaves it usable: without this read, the connection the session
 * opened first, the one ALPN was asked on, was thrown away before its
 * first request. A close, an error or bytes nobody asked for do not.
 */
static bool is_idle_usable(struct conn *c)
{
    ssize_t got = stream_fill(&c->o->stream, 0);

    return got == STREAM_TIMEOUT && stream_buffered(&c->o->stream) == 0;
}

void h2bridge_step(struct h2bridge *b, const struct pollfd *p, size_t n)
{
    /* An idle connection that speaks was closed by the origin (or sends
     * what nobody asked for): it is not used again. */
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
        struct conn *c = &b->conns[i];
        if (c->state == CONN_IDLE && c->poll_index >= 0 && (size_t)c->poll_index < n &&
            p[c->poll_index].revents != 0 && !is_idle_usable(c))
            conn_close(c);
        c->poll_index = -1;
    }
    /* A connection freed by a finished exchange serves the next request
     * at once, and so on while requests wait and connections free up: no
     * request may be left waiting beside an idle connection, as nothing
     * would wake the loop for it. Each round starts a waiting request. */
    collect_opens(b);
    dispatch(b);
    do {
        for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++) {
            struct conn *c = &b->conns[i];
            if (c->state == CONN_BUSY)
                conn_run(b, c);
        }
    } while (b->wait_head != NULL && dispatch(b));
}

bool h2bridge_is_idle(const struct h2bridge *b)
{
    if (b->wait_head != NULL)
        return false;
    for (size_t i = 0; i < H2BRIDGE_MAX_CONNECTIONS; i++)
        if (b->conns[i].state == CONN_BUSY)
            return false;
    return true;
}
