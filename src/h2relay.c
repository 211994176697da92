/*
 * h2relay: see h2relay.h.
 *
 * Flow control is end to end: automatic WINDOW_UPDATEs are off on both
 * sessions, and the bytes of a DATA frame are acknowledged to their sender
 * (nghttp2_session_consume()) only when the other side's session has taken
 * them into a frame. A stream's bytes inside tapwire are therefore bounded
 * by the window we opened for it, however fast one side sends and however
 * slowly the other reads, and a stalled stream stalls no other.
 *
 * The defences against a hostile client are nghttp2's, switched on and
 * bounded here: concurrent streams, the rate of stream resets (rapid reset,
 * CVE-2023-44487), CONTINUATION frames per header block, SETTINGS entries,
 * queued ACKs (PING and SETTINGS floods), the HPACK table size, and a header
 * list bound checked as fields arrive (an HPACK bomb is refused before it
 * is held). A connection nghttp2 finds at fault gets GOAWAY and ends.
 */
#include "h2relay.h"

#include <ctype.h>
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "capture.h"
#include "clock.h"
#include "exchange.h"
#include "grpcmsg.h"
#include "h2bridge.h"
#include "h2intercept.h"
#include "log.h"
#include "message.h"
#include "reverse.h"
#include "rewrite.h"
#include "ruleaction.h"
#include "stacktrim.h"

/* Nothing the relay holds per stream grows past what flow control allows,
 * except the header lists, which H2RELAY_MAX_HEADER_LIST_BYTES bounds. */
#define MAX_CONTINUATIONS 8
#define MAX_SETTINGS_ENTRIES 32
#define MAX_OUTBOUND_ACKS 1000
/* Rapid reset: a burst of this many stream resets, refilled at this rate
 * per second (nghttp2's token bucket). */
#define RESET_BURST 200
#define RESET_RATE_PER_S 33

/*
 * Memory a connection recycles between its streams: each stream's text (its
 * header fields, pseudo-header fields, URL, the lists handed to nghttp2)
 * lives in an arena of blocks that never move, and its body queues start in
 * a block of the same size. Blocks go back to the connection's pool when
 * the stream ends, so once a connection is warm a stream costs a handful of
 * allocations instead of one per field (the allocator was a quarter of the
 * relay's time before).
 */
#define BLOCK_BYTES 16384
#define POOL_MAX_BLOCKS 64 /* what a connection keeps for its next streams: 1 MiB */

struct pool {
    void *blocks[POOL_MAX_BLOCKS];
    size_t count;
};

static void *pool_get(struct pool *p)
{
    return p->count > 0 ? p->blocks[--p->count] : malloc(BLOCK_BYTES);
}

static void pool_put(struct pool *p, void *block)
{
    if (p->count < POOL_MAX_BLOCKS)
        p->blocks[p->count++] = block;
    else
        free(block);
}

static void pool_free(struct pool *p)
{
    while (p->count > 0)
        free(p->blocks[--p->count]);
}

struct arena_block {
    struct arena_block *next;
    size_t size; /* bytes of data; BLOCK_BYTES - the header for a pooled block */
    size_t used;
    max_align_t data[];
};

#define ARENA_BLOCK_DATA (BLOCK_BYTES - offsetof(struct arena_block, data))

struct arena {
    struct arena_block *head;
};

/* size bytes aligned for any type, or NULL when out of memory. A request
 * larger than a block gets a block of its own. */
static void *arena_alloc(struct arena *a, struct pool *pool, size_t size)
{
    size_t aligned = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    struct arena_block *b = a->head;

    if (b == NULL || b->size - b->used < aligned) {
        bool is_big = aligned > ARENA_BLOCK_DATA;
        b = is_big ? malloc(offsetof(struct arena_block, data) + aligned) : pool_get(pool);
        if (b == NULL)
            return NULL;
        b->size = is_big ? aligned : ARENA_BLOCK_DATA;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *out = (char *)b->data + b->used;
    b->used += aligned;
    return out;
}

static char *arena_text(struct arena *a, struct pool *pool, const void *text, size_t len)
{
    char *out = arena_alloc(a, pool, len + 1);

    if (out != NULL) {
        memcpy(out, text, len);
        out[len] = '\0';
    }
    return out;
}

static void arena_free(struct arena *a, struct pool *pool)
{
    while (a->head != NULL) {
        struct arena_block *b = a->head;
        a->head = b->next;
        if (b->size == ARENA_BLOCK_DATA)
            pool_put(pool, b);
        else
            free(b);
    }
}

/* Header fields collected as they arrive, in the stream's arena. */
struct fieldlist {
    struct message_field *items;
    size_t count, cap;
};

static int fieldlist_add(struct fieldlist *l, struct arena *a, struct pool *pool,
                         const uint8_t *name, size_t name_len, const uint8_t *value,
                         size_t value_len)
{
    if (l->count == l->cap) {
        /* The old array stays in the arena: a header list is bounded. */
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct message_field *items = arena_alloc(a, pool, cap * sizeof(*items));
        if (items == NULL)
            return -1;
        if (l->count > 0)
            memcpy(items, l->items, l->count * sizeof(*items));
        l->items = items;
        l->cap = cap;
    }
    char *n = arena_text(a, pool, name, name_len);
    char *v = arena_text(a, pool, value, value_len);
    if (n == NULL || v == NULL)
        return -1;
    l->items[l->count++] = (struct message_field){n, name_len, v, value_len};
    return 0;
}

static struct message_fields fields_of(const struct fieldlist *l)
{
    return (struct message_fields){l->items, l->count};
}

/* Body bytes waiting for the other side: at most a flow-control window. */
struct queue {
    char *data; /* a pooled block while cap is BLOCK_BYTES */
    size_t start, end, cap;
};

static int queue_put(struct queue *q, struct pool *pool, const uint8_t *data, size_t len)
{
    if (q->start > 0 && q->end + len > q->cap) {
        memmove(q->data, q->data + q->start, q->end - q->start);
        q->end -= q->start;
        q->start = 0;
    }
    if (q->data == NULL && len <= BLOCK_BYTES) {
        q->data = pool_get(pool);
        if (q->data == NULL)
            return -1;
        q->cap = BLOCK_BYTES;
    }
    if (q->end + len > q->cap) {
        size_t cap = q->cap ? q->cap : BLOCK_BYTES;
        while (cap < q->end + len)
            cap *= 2;
        char *grown = malloc(cap);
        if (grown == NULL)
            return -1;
        if (q->data != NULL) {
            memcpy(grown, q->data, q->end);
            if (q->cap == BLOCK_BYTES)
                pool_put(pool, q->data);
            else
                free(q->data);
        }
        q->data = grown;
        q->cap = cap;
    }
    memcpy(q->data + q->end, data, len);
    q->end += len;
    return 0;
}

static size_t queue_take(struct queue *q, uint8_t *out, size_t len)
{
    size_t n = q->end - q->start;

    if (n > len)
        n = len;
    if (n == 0)
        return 0;
    memcpy(out, q->data + q->start, n);
    q->start += n;
    if (q->start == q->end)
        q->start = q->end = 0;
    return n;
}

static size_t queue_len(const struct queue *q)
{
    return q->end - q->start;
}

static void queue_free(struct queue *q, struct pool *pool)
{
    if (q->data != NULL && q->cap == BLOCK_BYTES)
        pool_put(pool, q->data);
    else
        free(q->data);
    memset(q, 0, sizeof(*q));
}

struct h2relay;

/* One client stream and the origin stream that serves it: one flow. */
struct h2ex {
    struct h2relay *r;
    struct h2ex *next;
    struct arena text; /* every string and list of the stream */
    int32_t client_id, origin_id;
    /* The request: pseudo-header fields, then the others; trailers. */
    char *method, *scheme, *authority, *path;
    struct fieldlist req, req_trailers;
    size_t req_header_bytes;
    /* The response. */
    int status;
    bool has_response; /* the final response head arrived */
    struct fieldlist resp, resp_trailers;
    size_t resp_header_bytes;
    struct queue up, down; /* request body to the origin, response body to the client */
    bool up_ended, down_ended;
    /* A body the body rules want is held whole (up to --rewrite-limit) with
     * its head, which goes out once the body is rewritten; the bytes are
     * acknowledged to their sender as they arrive (early), so that a body
     * larger than one window can be held. [0] the request, [1] the response. */
    bool is_holding[2];
    struct message held[2];
    /* An intercept collects the body before the head parks (h2intercept.h),
     * acknowledged as it arrives; has_collected: all of it, to go on whole. */
    bool is_collecting[2];
    bool has_collected[2];
    size_t collected[2];      /* counted in the relay's collected_bytes */
    int64_t collect_until_us; /* a collection ends by then (monotonic) */
    size_t early[2];          /* acknowledged bytes still at the front of the queue */
    size_t reserved[2];       /* held against --rewrite-memory */
    bool client_closed, origin_closed;
    uint64_t up_bytes, down_bytes;
    struct rewrite rw;
    struct capture cap;
    /* The HTTP/1.1 side serving the request: the relay's bridge, a
     * map-remote's (struct remote), or NULL: the h2 origin session. */
    struct h2bridge *bridge;
    bool is_remapped;  /* a map-remote sent it to another origin */
    bool is_answered;  /* a mock or block rule answered it: no origin */
    bool answer_waits; /* its answer goes once the request body is in */
    /* A head an intercept parked waits in held[] (h2intercept.h). */
    struct h2intercept_stream ic;
    char *url;
    int64_t started_us;
    char error[GRPCMSG_MAX_STATUS_TEXT_BYTES + 64]; /* a gRPC status fits */
};

/* The origin of a map-remote rule, reached over HTTP/1.1 by a bridge of
 * its own (opened on the first stream mapped to it, kept for the
 * connection's life): whatever the connection's origin speaks, a mapped
 * stream is translated, so one path serves every mapped origin. */
struct remote {
    struct h2bridge *bridge;
    char host[256]; /* the bridge's target borrows these */
    uint16_t port;
    bool is_tls;
    size_t at, polled; /* its entries in the last poll */
};

struct h2relay {
    const struct h2relay_env *env;
    nghttp2_session *client; /* we are the server */
    nghttp2_session *origin; /* we are the client; NULL with an HTTP/1.1-only origin */
    struct h2bridge *bridge; /* an HTTP/1.1-only origin: the streams' requests go there */
    struct remote remotes[H2RELAY_MAX_REMOTES];
    size_t remote_count;
    /* The last poll: the bridge's entries start at bridge_at, bridge_polled of them. */
    struct pollfd pfd[5 + H2BRIDGE_MAX_CONNECTIONS * (1 + H2RELAY_MAX_REMOTES)];
    size_t bridge_at, bridge_polled;
    struct h2ex *streams;
    struct pool pool;
    struct h2intercept ic;
    int park_left_ms;       /* until the first parked stream's --intercept-timeout */
    size_t collected_bytes; /* of every stream, H2RELAY_MAX_COLLECTED_BYTES at most */
    size_t collecting;      /* streams collecting a body now */
    int collect_left_ms;    /* until the first collection's deadline */
    bool has_told_open_times;
    bool has_said_goaway; /* a GOAWAY with an error went out, and was logged */
    char why[160];        /* why the relay ended early, for the log */
};

static void set_error(struct h2ex *ex, const char *error)
{
    if (ex->error[0] == '\0')
        snprintf(ex->error, sizeof(ex->error), "%s", error);
}

/* ---- one exchange's record ---- */

/* A collected body went on, or its stream ended: its bytes no longer count
 * against the connection's budget. */
static void release_collected(struct h2ex *ex, int dir)
{
    ex->r->collected_bytes -= ex->collected[dir];
    ex->collected[dir] = 0;
}

static void record_and_free(struct h2ex *ex)
{
    struct h2relay *r = ex->r;
    const struct h2relay_env *env = r->env;
    struct h2ex **p;

    if (ex->bridge != NULL && !ex->origin_closed) {
        h2bridge_cancel(ex->bridge, ex);
        ex->origin_closed = true;
    }
    double ms = (double)(clock_mono_us() - ex->started_us) / 1000.0;
    int status = ex->has_response ? ex->status : 0;
    struct message_fields trailers = fields_of(&ex->resp_trailers);
    struct message_fields head = fields_of(&ex->resp);
    char why[GRPCMSG_MAX_STATUS_TEXT_BYTES + 64];
    int grpc_status;

    /* A gRPC call fails in its trailers (or a trailers-only head) under an
     * HTTP 200: the flow says so, so that the list shows it as an error. */
    if (ex->has_response && (grpcmsg_failed(&trailers, &grpc_status, why, sizeof(why)) ||
                             grpcmsg_failed(&head, &grpc_status, why, sizeof(why))))
        set_error(ex, why);

    h2intercept_end(&r->ic, &ex->ic, &ex->cap, ex->error[0] ? ex->error : "the stream ended");
    if (ex->url != NULL) {
        if (ex->error[0] != '\0')
            log_info("%s %s %s %d %lluB %.1fms error: %s", env->client_name, ex->method, ex->url,
                     status, (unsigned long long)ex->down_bytes, ms, ex->error);
        else
            log_info("%s %s %s %d %lluB %.1fms", env->client_name, ex->method, ex->url, status,
                     (unsigned long long)ex->down_bytes, ms);
        capture_rules(&ex->cap, rewrite_applied(&ex->rw), rewrite_notes(&ex->rw));
        if (capture_is_on(&ex->cap)) {
            const struct exchange_capture *hooks = capture_hooks(&ex->cap);
            struct capture_connection conn = {.tls = env->tls};
            struct flow_tls client_side;
            if (ex->is_remapped) {
                /* The connection's origin did not serve it, and the
                 * mapped one's facts stay in its bridge: the flow has the
                 * client side's. */
                client_side = *env->tls;
                memset(client_side.upstream_version, 0, sizeof(client_side.upstream_version));
                memset(client_side.upstream_cipher, 0, sizeof(client_side.upstream_cipher));
                client_side.cert_subject = NULL;
                client_side.cert_issuer = NULL;
                client_side.cert_sans = NULL;
                client_side.cert_not_after = 0;
                client_side.verification = NULL;
                client_side.strings = NULL;
                conn.tls = &client_side;
            } else if (!r->has_told_open_times) {
                /* The connection was opened for the first exchange recorded. */
                conn.connected_at_us = env->connected_at_us;
                conn.tls_done_at_us = env->tls_done_at_us;
                r->has_told_open_times = true;
            }
            if (hooks && hooks->ops->moment)
                hooks->ops->moment(hooks->arg, EXCHANGE_DONE, clock_wall_us());
            capture_finish(&ex->cap, &conn, status, ex->error[0] ? ex->error : NULL);
        }
    } else if (ex->error[0] != '\0') {
        log_info("%s %s - 0 0B %.1fms error: %s", env->client_name,
                 ex->method != NULL ? ex->method : "-", ms, ex->error);
    }
    capture_abandon(&ex->cap);
    rewrite_end(&ex->rw);
    for (p = &r->streams; *p != NULL; p = &(*p)->next) {
        if (*p == ex) {
            *p = ex->next;
            break;
        }
    }
    queue_free(&ex->up, &r->pool);
    queue_free(&ex->down, &r->pool);
    for (int i = 0; i < 2; i++) {
        release_collected(ex, i);
        if (ex->is_collecting[i])
            r->collecting--;
        message_free(&ex->held[i]);
        exchange_rewrite_release(ex->reserved[i]);
    }
    arena_free(&ex->text, &r->pool);
    free(ex);
}

static void maybe_finish(struct h2ex *ex)
{
    if (ex->client_closed && ex->origin_closed)
        record_and_free(ex);
}

/* ---- header lists for nghttp2 ---- */

static nghttp2_nv nv_of(const char *name, size_t name_len, const char *value, size_t value_len)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, name_len, value_len,
                        NGHTTP2_NV_FLAG_NONE};
}

/* Fields that belong to one connection never go on (RFC 9113 8.2.2); TE
 * only as "trailers". nghttp2 refuses them on input already: this keeps a
 * rule from putting them back. */
static bool is_connection_specific(const struct message_field *f)
{
    if (message_field_is(f, "te"))
        return !(f->value_len == 8 && strncasecmp(f->value, "trailers", 8) == 0);
    return message_field_is(f, "connection") || message_field_is(f, "keep-alive") ||
           message_field_is(f, "proxy-connection") || message_field_is(f, "transfer-encoding") ||
           message_field_is(f, "upgrade");
}

/* nva[extra..] gets fields; returns the total count. nva has room for
 * extra + fields->count. */
static size_t put_fields(nghttp2_nv *nva, size_t extra, const struct message_fields *fields)
{
    size_t n = extra;

    for (size_t i = 0; i < fields->count; i++) {
        const struct message_field *f = &fields->items[i];
        if (f->name_len == 0 || f->name[0] == ':' || is_connection_specific(f))
            continue;
        nva[n++] = nv_of(f->name, f->name_len, f->value, f->value_len);
    }
    return n;
}

static int submit_trailers(struct h2ex *ex, nghttp2_session *session, int32_t stream_id,
                           const struct fieldlist *l)
{
    struct message_fields fields = fields_of(l);
    nghttp2_nv *nva = arena_alloc(&ex->text, &ex->r->pool, (l->count + 1) * sizeof(*nva));

    if (nva == NULL)
        return -1;
    return nghttp2_submit_trailer(session, stream_id, nva, put_fields(nva, 0, &fields));
}

/* ---- bodies: what one side sent, taken by the other side's session ---- */

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct h2relay *r = user_data;
    struct h2ex *ex = source->ptr;
    bool is_up = session == r->origin;
    struct queue *q = is_up ? &ex->up : &ex->down;
    bool is_ended = is_up ? ex->up_ended : ex->down_ended;
    size_t n = queue_take(q, buf, length);

    size_t *early = &ex->early[is_up ? 0 : 1];
    size_t already = n < *early ? n : *early;
    *early -= already;
    if (n > already) {
        /* Now the sender may send that much more (see the top comment). */
        nghttp2_session *from = is_up                                   ? r->client
                                : ex->bridge != NULL || ex->is_answered ? NULL
                                                                        : r->origin;
        int32_t from_id = is_up ? ex->client_id : ex->origin_id;
        /* No session sent a bridged response: h2bridge reads it as fast as
         * the queue empties. */
        if (from != NULL && nghttp2_session_consume(from, from_id, n - already) != 0)
            nghttp2_session_consume_connection(from, n - already);
    }
    if (queue_len(q) == 0 && is_ended) {
        const struct fieldlist *trailers = is_up ? &ex->req_trailers : &ex->resp_trailers;
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (trailers->count > 0 && submit_trailers(ex, session, stream_id, trailers) == 0)
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        return (ssize_t)n;
    }
    return n > 0 ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

/* Bytes arrived for a stream whose other side may be waiting for them. */
static void wake(nghttp2_session *session, int32_t stream_id)
{
    if (session != NULL && stream_id > 0 && nghttp2_session_find_stream(session, stream_id) != NULL)
        nghttp2_session_resume_data(session, stream_id);
}

/* ---- the request: client stream -> origin stream ---- */

static void refuse_stream(struct h2ex *ex, uint32_t code, const char *why)
{
    set_error(ex, why);
    nghttp2_submit_rst_stream(ex->r->client, NGHTTP2_FLAG_NONE, ex->client_id, code);
}

/* The request as received, read as a message. */
static void request_view(const struct h2ex *ex, struct message *m)
{
    memset(m, 0, sizeof(*m));
    m->method = ex->method;
    m->method_len = strlen(ex->method);
    m->scheme = ex->scheme;
    m->authority = ex->authority;
    m->authority_len = ex->authority ? strlen(ex->authority) : 0;
    m->target = ex->path;
    m->target_len = strlen(ex->path);
    m->version = 20;
    m->fields = fields_of(&ex->req);
    m->body = ex->up_ended ? MESSAGE_BODY_NONE : MESSAGE_BODY_STREAM;
    m->keep_alive = true;
}

/* The flow of the stream: the request as sent (req) and as received (view,
 * NULL when the same), to the connection's origin or to remote's. */
static void begin_record(struct h2ex *ex, const struct message *req, const struct message *view,
                         char *target_original, const struct ruleaction_remote *remote)
{
    const struct h2relay_env *env = ex->r->env;
    const char *scheme = env->scheme != NULL ? env->scheme : "https";
    struct capture_start start = {
        .client = env->client_name,
        .scheme = remote != NULL ? (remote->is_tls ? "https" : "http") : scheme,
        .method = ex->method,
        .host = remote != NULL ? remote->host : env->site,
        .port = remote != NULL ? remote->port : env->port,
        .target = req->target,
        .is_tls = true,
        .body_limit = env->capture_limit,
        .listener = env->listener,
    };

    capture_begin(&ex->cap, env->store, &start);
    capture_request(&ex->cap, req, view, target_original);
}

/* A reverse proxy's request names its origin (the :authority) and the
 * origin's path prefix. Returns 0, or -1 when out of memory. */
static int stand_in_for_origin(struct h2ex *ex)
{
    const struct h2relay_env *env = ex->r->env;

    struct pool *pool = &ex->r->pool;

    if (env->authority != NULL) {
        ex->authority = arena_text(&ex->text, pool, env->authority, strlen(env->authority));
        if (ex->authority == NULL)
            return -1;
    }
    if (env->path_prefix != NULL && env->path_prefix[0] != '\0') {
        size_t len = strlen(env->path_prefix) + strlen(ex->path) + 1;
        char *path = arena_alloc(&ex->text, pool, len);
        if (path == NULL)
            return -1;
        snprintf(path, len, "%s%s", env->path_prefix, ex->path);
        ex->path = path;
    }
    return 0;
}

/* The request to an HTTP/1.1-only origin through the bridge, its body to
 * follow from the up queue. A request HTTP/1.1 would read differently is
 * refused with PROTOCOL_ERROR (RFC 9113 8.1.1: malformed). Returns 0, or
 * -1 when the stream was refused. */
static int submit_to_bridge(struct h2ex *ex, const struct message *sent)
{
    struct message m = *sent;
    const char *why = NULL;

    m.body = ex->up_ended && queue_len(&ex->up) == 0 && ex->req_trailers.count == 0
                 ? MESSAGE_BODY_NONE
                 : MESSAGE_BODY_STREAM;
    if (h2bridge_check_request(&m, &why) < 0) {
        refuse_stream(ex, NGHTTP2_PROTOCOL_ERROR, why);
        return -1;
    }
    if (h2bridge_submit(ex->bridge, ex, &m, &why) < 0) {
        refuse_stream(ex, NGHTTP2_REFUSED_STREAM, why);
        return -1;
    }
    ex->origin_id = 1; /* no origin stream: marks the request as gone to the bridge */
    ex->origin_closed = false;

    if (ex->up_ended) {
        const struct exchange_capture *hooks = capture_hooks(&ex->cap);
        if (hooks && hooks->ops->moment)
            hooks->ops->moment(hooks->arg, EXCHANGE_REQUEST_SENT, clock_wall_us());
    }
    return 0;
}

/* The request head to the origin as a new stream, its body to follow from
 * the up queue. Returns 0, or -1 when the stream was refused. */
static int submit_request_head(struct h2ex *ex, const struct message *sent)
{
    struct h2relay *r = ex->r;
    const struct h2relay_env *env = r->env;
    nghttp2_data_provider body = {.source.ptr = ex, .read_callback = read_body};
    nghttp2_nv *nva = arena_alloc(&ex->text, &r->pool, (4 + sent->fields.count) * sizeof(*nva));
    const char *authority = ex->authority ? ex->authority : env->site;

    if (ex->bridge != NULL)
        return submit_to_bridge(ex, sent);
    if (nva == NULL) {
        refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "out of memory");
        return -1;
    }
    nva[0] = nv_of(":method", 7, sent->method, sent->method_len);
    nva[1] = nv_of(":scheme", 7, "https", 5);
    nva[2] = nv_of(":authority", 10, authority, strlen(authority));
    nva[3] = nv_of(":path", 5, sent->target, sent->target_len);
    size_t count = put_fields(nva, 4, &sent->fields);
    bool has_body = !ex->up_ended || queue_len(&ex->up) > 0 || ex->req_trailers.count > 0;
    ex->origin_id =
        nghttp2_submit_request(r->origin, NULL, nva, count, has_body ? &body : NULL, ex);
    if (ex->origin_id < 0) {
        refuse_stream(ex, NGHTTP2_REFUSED_STREAM, nghttp2_strerror(ex->origin_id));
        return -1;
    }
    ex->origin_closed = false;
    if (ex->up_ended) {
        const struct exchange_capture *hooks = capture_hooks(&ex->cap);
        if (hooks && hooks->ops->moment)
            hooks->ops->moment(hooks->arg, EXCHANGE_REQUEST_SENT, clock_wall_us());
    }
    return 0;
}

/* --reverse-forwarded: the X-Forwarded-* fields (reverse.h) on the
 * request, the client's :authority standing for the Host it sent (RFC 9113
 * 8.3.1). Everything lives in the stream's arena. Returns 0, or -1 when
 * out of memory. */
static int add_forwarded(struct h2ex *ex, const char *client_authority, struct message *view)
{
    struct pool *pool = &ex->r->pool;
    struct message_fields in = view->fields, out;
    struct message_field *items = arena_alloc(&ex->text, pool, (in.count + 1) * sizeof(*items));
    struct reverse_forwarded fw;
    size_t n = 0;
    int rc = -1;

    if (items == NULL)
        return -1;
    for (size_t i = 0; i < in.count; i++)
        items[n++] = in.items[i];
    if (client_authority != NULL && message_fields_find(&in, "host") == NULL)
        items[n++] = (struct message_field){"host", 4, client_authority, strlen(client_authority)};
    in = (struct message_fields){items, n};
    if (reverse_forwarded_fields(&in, ex->r->env->forwarded_for, true, &fw, &out) < 0)
        return -1;
    struct message_field *kept = arena_alloc(&ex->text, pool, out.count * sizeof(*kept));
    size_t k = 0;
    for (size_t i = 0; kept != NULL && i < out.count; i++) {
        const struct message_field *f = &out.items[i];
        if (f->value == client_authority && message_field_is(f, "host"))
            continue; /* the stand-in: :authority says it */
        char *name = arena_text(&ex->text, pool, f->name, f->name_len);
        char *value = arena_text(&ex->text, pool, f->value, f->value_len);
        if (name == NULL || value == NULL)
            goto out;
        /* HTTP/2 field names are lowercase (RFC 9113 8.2.1). */
        for (size_t j = 0; ex->r->bridge == NULL && j < f->name_len; j++)
            name[j] = (char)tolower((unsigned char)name[j]);
        kept[k++] = (struct message_field){name, f->name_len, value, f->value_len};
    }
    if (kept != NULL) {
        view->fields = (struct message_fields){kept, k};
        rc = 0;
    }
out:
    reverse_forwarded_free(&fw);
    return rc;
}

/* Body rules that want the body arrived while an intercept parked the head
 * give up: those bytes were not acknowledged early (see hold_bytes()). */
static bool can_hold_body(struct h2ex *ex, int dir)
{
    const struct exchange_rewrite *rw = rewrite_hooks(&ex->rw);
    bool is_ended = dir == 0 ? ex->up_ended : ex->down_ended;

    if (rw == NULL || is_ended || !rw->ops->wants_body(rw->arg))
        return false;
    if (queue_len(dir == 0 ? &ex->up : &ex->down) == 0)
        return true;
    rw->ops->note(rw->arg, "body rules skipped: the body came while the head was intercepted");
    return false;
}

/* The intercept wants the body of direction dir before its head parks: a
 * body that has not ended within H2RELAY_COLLECT_MS goes on being
 * collected no longer (check_collections()), so that a streaming call
 * (whose client waits for the answer before it ends) is not stuck. */
static void begin_collecting(struct h2ex *ex, int dir)
{
    ex->is_collecting[dir] = true;
    ex->collect_until_us = clock_mono_us() + (int64_t)H2RELAY_COLLECT_MS * 1000;
    ex->r->collecting++;
}

/* A client waiting for 100 (RFC 9110 10.1.1) is told to go on now, as
 * the HTTP/1.1 path does: the body is wanted at once, by the body rules,
 * the intercept or the bridge (where Expect does not go on), and an h2
 * origin's own 100 is not passed on. */
static void tell_continue(struct h2ex *ex, const struct message *sent)
{
    const struct message_field *expect = message_find(sent, "expect");
    if (expect != NULL && !ex->up_ended && expect->value_len == 12 &&
        strncasecmp(expect->value, "100-continue", 12) == 0) {
        nghttp2_nv go_on = nv_of(":status", 7, "100", 3);
        nghttp2_submit_headers(ex->r->client, NGHTTP2_FLAG_NONE, ex->client_id, NULL, &go_on, 1,
                               NULL);
    }
}

/* The request head on to the origin (its body after it), or held for the
 * body rules. Returns 0, or -1 when the stream was refused. */
static int forward_request(struct h2ex *ex, const struct message *sent)
{
    if (ex->up_bytes == 0)
        tell_continue(ex, sent); /* a client that sent body bytes waits no more */
    if (can_hold_body(ex, 0)) {
        /* The body rules want the request body: it goes out with its head
         * once it is whole and rewritten (finish_holding()). */
        if (message_copy(&ex->held[0], sent, NULL) < 0)
            return -1;
        ex->is_holding[0] = true;
        return 0;
    }
    return submit_request_head(ex, sent);
}

static int map_remote(struct h2ex *ex, const struct rule *act, const struct message *sent,
                      const char *target, struct ruleaction_remote *remote);
static int answer_by_rule(struct h2ex *ex, const struct rule *act, const struct message *req);
static int send_answer(struct h2ex *ex);

/* Rules on the request, the record begun, the intercept asked, and the
 * request sent on as a new origin stream. Returns 0, or -1 when the stream
 * was refused. */
static int start_exchange(struct h2ex *ex)
{
    struct h2relay *r = ex->r;
    const struct h2relay_env *env = r->env;
    struct message view, req = {0};
    const struct message *sent = &view;
    struct ruleaction_remote remote = {0};
    const struct rule *act;
    char *new_path = NULL;
    int changed = 0;
    int rc = -1;

    if (ex->method == NULL || ex->scheme == NULL || ex->path == NULL) {
        /* nghttp2 checks the pseudo-header fields; CONNECT has no :path. */
        refuse_stream(ex, NGHTTP2_REFUSED_STREAM, "CONNECT in an HTTP/2 stream is not supported");
        return -1;
    }
    const char *client_authority = ex->authority;
    if (stand_in_for_origin(ex) < 0)
        goto out;
    request_view(ex, &view);
    if (env->forwarded_for != NULL && add_forwarded(ex, client_authority, &view) < 0)
        goto out;
    if (rewrite_begin(&ex->rw, env->rules, &view, env->site, ex->path, env->rewrite_limit,
                      env->rewrite_memory) < 0 ||
        rewrite_url(&ex->rw, &new_path) < 0)
        goto out;
    if (new_path != NULL) {
        view.target = new_path;
        view.target_len = strlen(new_path);
    }
    if (rewrite_hooks(&ex->rw) != NULL &&
        (changed = exchange_rewrite_head(rewrite_hooks(&ex->rw), &view, &req)) < 0)
        goto out;
    if (changed > 0)
        sent = &req;
    ex->bridge = r->bridge;
    act = rewrite_action(&ex->rw);
    const char *scheme = env->scheme != NULL ? env->scheme : "https";
    size_t scheme_len = strlen(scheme);
    size_t authority_len = ex->authority ? strlen(ex->authority) : 0;
    ex->url =
        arena_alloc(&ex->text, &r->pool, scheme_len + 3 + authority_len + sent->target_len + 1);
    if (ex->url == NULL)
        goto out;
    /* Pieces copied rather than snprintf()'d: this runs for every stream. */
    char *at = ex->url;
    memcpy(at, scheme, scheme_len);
    at += scheme_len;
    memcpy(at, "://", 3);
    at += 3;
    if (authority_len > 0)
        memcpy(at, ex->authority, authority_len);
    at += authority_len;
    if (sent->target_len > 0)
        memcpy(at, sent->target, sent->target_len);
    at += sent->target_len;
    *at = '\0';
    if (act != NULL && act->target == RULES_TARGET_MAP_REMOTE) {
        rc = map_remote(ex, act, sent, new_path != NULL ? new_path : ex->path, &remote);
        if (rc < 0)
            goto out;
        sent = &remote.req;
        rc = -1;
    }
    char *target_original = new_path != NULL ? strdup(ex->path) : NULL;
    if (remote.target != NULL && target_original == NULL &&
        strcmp(new_path != NULL ? new_path : ex->path, remote.target) != 0)
        target_original = strdup(new_path != NULL ? new_path : ex->path);
    begin_record(ex, sent, changed > 0 || remote.target != NULL ? &view : NULL, target_original,
                 remote.target != NULL ? &remote : NULL);
    if (remote.note != NULL)
        capture_note(&ex->cap, NULL, remote.note);
    if (act != NULL && act->target != RULES_TARGET_MAP_REMOTE) {
        rc = answer_by_rule(ex, act, sent);
        goto out;
    }
    int parked = h2intercept_request(&r->ic, &ex->ic, sent, env->site, env->port, ex->url, &ex->cap,
                                     !ex->up_ended);
    if (parked != H2INTERCEPT_ON) {
        /* Until resume_parked(), or until the body is in (collected()). */
        rc = message_copy(&ex->held[0], sent, NULL);
        if (parked == H2INTERCEPT_COLLECT) {
            begin_collecting(ex, 0);
            tell_continue(ex, sent);
        }
        goto out;
    }
    rc = forward_request(ex, sent);
out:
    if (rc < 0 && ex->error[0] == '\0')
        refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "out of memory");
    ruleaction_remote_free(&remote);
    free(new_path);
    message_free(&req);
    return rc;
}

/* ---- the response: origin stream -> client stream ---- */

/* The response head to the client, its body to follow from the down queue.
 * Returns 0 or -1. */
static int submit_response_head(struct h2ex *ex, const struct message *sent)
{
    struct h2relay *r = ex->r;
    nghttp2_data_provider body = {.source.ptr = ex, .read_callback = read_body};
    nghttp2_nv *nva = arena_alloc(&ex->text, &r->pool, (1 + sent->fields.count) * sizeof(*nva));
    char status[8];

    if (nva == NULL)
        return -1;
    if (sent->status >= 100 && sent->status <= 999) {
        /* snprintf() was a visible share of every response's cost. */
        status[0] = (char)('0' + sent->status / 100);
        status[1] = (char)('0' + sent->status / 10 % 10);
        status[2] = (char)('0' + sent->status % 10);
    } else {
        snprintf(status, sizeof(status), "%03d", sent->status);
    }
    nva[0] = nv_of(":status", 7, status, 3);
    size_t count = put_fields(nva, 1, &sent->fields);
    bool has_body = !ex->down_ended || queue_len(&ex->down) > 0 || ex->resp_trailers.count > 0;
    return nghttp2_submit_response(r->client, ex->client_id, nva, count, has_body ? &body : NULL) ==
                   0
               ? 0
               : -1;
}

/* The response as received, read as a message. */
static void response_view(const struct h2ex *ex, struct message *m)
{
    memset(m, 0, sizeof(*m));
    m->status = ex->status;
    m->reason = "";                            /* HTTP/2 has none */
    m->version = ex->bridge != NULL ? 11 : 20; /* the origin's hop */
    m->fields = fields_of(&ex->resp);
    m->body = ex->down_ended ? MESSAGE_BODY_NONE : MESSAGE_BODY_STREAM;
}

/* The response head on to the client, or held for the body rules. */
static int forward_response(struct h2ex *ex, const struct message *sent)
{
    if (can_hold_body(ex, 1)) {
        /* Held until the body is whole and rewritten (finish_holding()). */
        if (message_copy(&ex->held[1], sent, NULL) < 0)
            return -1;
        ex->is_holding[1] = true;
        return 0;
    }
    return submit_response_head(ex, sent);
}

static int start_response(struct h2ex *ex)
{
    const struct exchange_rewrite *rw = rewrite_hooks(&ex->rw);
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    struct message view, owned = {0};
    const struct message *sent = &view;
    int rc = -1;

    response_view(ex, &view);
    if (rw != NULL) {
        rw->ops->response(rw->arg, &view);
        int changed = exchange_rewrite_head(rw, &view, &owned);
        if (changed < 0)
            goto out;
        if (changed > 0)
            sent = &owned;
    }
    if (hooks && hooks->ops->response_head)
        hooks->ops->response_head(hooks->arg, sent, sent != &view ? &view : NULL);
    int parked =
        h2intercept_response(&ex->r->ic, &ex->ic, sent, ex->url, &ex->cap, !ex->down_ended);
    if (parked != H2INTERCEPT_ON) {
        /* Until resume_parked(), or until the body is in (collected()). */
        rc = message_copy(&ex->held[1], sent, NULL);
        if (parked == H2INTERCEPT_COLLECT)
            begin_collecting(ex, 1);
        goto out;
    }
    rc = forward_response(ex, sent);
out:
    message_free(&owned);
    return rc;
}

/* ---- bodies the body rules want: held whole, rewritten, then sent ---- */

/* head with its body declared as len bytes, and without Content-Encoding
 * when is_identity (a rewritten body is identity, as tapwire-rules(5)
 * says; so is an edited response body). The new fields live in the
 * stream's arena. */
static int reframe_head(struct h2ex *ex, const struct message *head, bool is_identity, size_t len,
                        struct message *out)
{
    struct pool *pool = &ex->r->pool;
    struct message_field *items =
        arena_alloc(&ex->text, pool, (head->fields.count + 1) * sizeof(*items));
    char *length = arena_alloc(&ex->text, pool, 24);
    size_t n = 0;

    if (items == NULL || length == NULL)
        return -1;
    snprintf(length, 24, "%zu", len);
    for (size_t i = 0; i < head->fields.count; i++) {
        const struct message_field *f = &head->fields.items[i];
        if (message_field_is(f, "content-length") ||
            (is_identity && message_field_is(f, "content-encoding")))
            continue;
        items[n++] = *f;
    }
    items[n++] = (struct message_field){"content-length", 14, length, strlen(length)};
    *out = *head;
    out->fields = (struct message_fields){items, n};
    out->storage = NULL;
    return 0;
}

static int submit_held(struct h2ex *ex, int dir, const struct message *head)
{
    return dir == 0 ? submit_request_head(ex, head) : submit_response_head(ex, head);
}

/* Gives the rewrite up (why goes to the notes, when not already noted):
 * the held head goes out and the body streams on as it comes. */
static int release_holding(struct h2ex *ex, int dir, const char *why)
{
    const struct exchange_rewrite *rw = rewrite_hooks(&ex->rw);
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    struct queue *q = dir == 0 ? &ex->up : &ex->down;

    if (why != NULL)
        rw->ops->note(rw->arg, why);
    /* The recorder was not told these bytes while they were held. */
    if (hooks && hooks->ops->body && queue_len(q) > 0)
        hooks->ops->body(hooks->arg, dir == 0 ? EXCHANGE_REQUEST : EXCHANGE_RESPONSE,
                         q->data + q->start, queue_len(q));
    ex->is_holding[dir] = false;
    return submit_held(ex, dir, &ex->held[dir]);
}

/* The held body is whole: decoded, rewritten, and sent with its head
 * (reframed when it changed). Returns 0 or -1. */
static int finish_holding(struct h2ex *ex, int dir)
{
    const struct exchange_rewrite *rw = rewrite_hooks(&ex->rw);
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    enum exchange_side side = dir == 0 ? EXCHANGE_REQUEST : EXCHANGE_RESPONSE;
    struct queue *q = dir == 0 ? &ex->up : &ex->down;
    const struct message_field *ce = message_find(&ex->held[dir], "content-encoding");
    struct exchange_body_rewrite br;
    struct message head = ex->held[dir];
    char encoding[64] = "";
    int rc = 0;

    if (ce != NULL)
        snprintf(encoding, sizeof(encoding), "%.*s", (int)ce->value_len, ce->value);
    ex->is_holding[dir] = false;
    if (exchange_rewrite_body(rw, encoding, (const unsigned char *)q->data + q->start, queue_len(q),
                              &br) < 0)
        return -1;
    if (br.rewritten != NULL) {
        rc = reframe_head(ex, &ex->held[dir], true, br.rewritten_len, &head);
        if (rc == 0 && hooks && hooks->ops->body_original)
            hooks->ops->body_original(hooks->arg, side, br.plain, br.plain_len);
        if (rc == 0 && hooks && hooks->ops->reframed)
            hooks->ops->reframed(hooks->arg, side, br.rewritten_len, true);
        q->start = q->end = 0;
        if (rc == 0)
            rc = queue_put(q, &ex->r->pool, br.rewritten, br.rewritten_len);
    }
    if (rc == 0 && hooks && hooks->ops->body && queue_len(q) > 0)
        hooks->ops->body(hooks->arg, side, q->data + q->start, queue_len(q));
    /* Every byte of the body was acknowledged as it arrived. */
    ex->early[dir] = queue_len(q);
    exchange_body_rewrite_free(&br);
    exchange_rewrite_release(ex->reserved[dir]);
    ex->reserved[dir] = 0;
    return rc == 0 ? submit_held(ex, dir, &head) : -1;
}

/* A held body's bytes arrived: acknowledged at once, and the rewrite given
 * up past --rewrite-limit or the --rewrite-memory budget. */
static int hold_bytes(struct h2ex *ex, int dir, nghttp2_session *from, int32_t from_id, size_t len)
{
    const struct exchange_rewrite *rw = rewrite_hooks(&ex->rw);
    struct queue *q = dir == 0 ? &ex->up : &ex->down;

    if (from != NULL) {
        if (nghttp2_session_consume(from, from_id, len) != 0)
            nghttp2_session_consume_connection(from, len);
        ex->early[dir] += len;
    }
    if (queue_len(q) > rw->limit)
        return release_holding(ex, dir, "body larger than --rewrite-limit: passed on unmodified");
    if (!exchange_rewrite_reserve(rw, len))
        return release_holding(ex, dir, NULL);
    ex->reserved[dir] += len;
    return 0;
}

/* ---- bodies an intercept collects before the head parks ---- */

/* Tells the recorder what of direction dir's body waits in its queue. */
static void record_queued(struct h2ex *ex, int dir)
{
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    struct queue *q = dir == 0 ? &ex->up : &ex->down;

    if (hooks && hooks->ops->body && queue_len(q) > 0)
        hooks->ops->body(hooks->arg, dir == 0 ? EXCHANGE_REQUEST : EXCHANGE_RESPONSE,
                         q->data + q->start, queue_len(q));
}

/* A whole collected body goes on with head: the resume's new body (with
 * its length; a response's as identity), or the body as it came, through
 * the body rules when they want it. Returns 0 or -1. */
static int send_collected(struct h2ex *ex, int dir, const struct message *head)
{
    const struct exchange_rewrite *rw = rewrite_hooks(&ex->rw);
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    enum exchange_side side = dir == 0 ? EXCHANGE_REQUEST : EXCHANGE_RESPONSE;
    struct h2intercept_stream *s = &ex->ic;
    struct queue *q = dir == 0 ? &ex->up : &ex->down;
    struct message framed;

    ex->has_collected[dir] = false;
    release_collected(ex, dir);
    if (s->has_edited_body) {
        if (reframe_head(ex, head, dir == 1, s->edited_body_len, &framed) < 0)
            return -1;
        q->start = q->end = 0;
        if (queue_put(q, &ex->r->pool, s->edited_body, s->edited_body_len) < 0)
            return -1;
        /* Every byte that came was acknowledged; these were never sent. */
        ex->early[dir] = queue_len(q);
        if (dir == 1 && hooks && hooks->ops->body_original && s->has_body)
            hooks->ops->body_original(hooks->arg, side, s->body, s->body_len);
        if (hooks && hooks->ops->reframed)
            hooks->ops->reframed(hooks->arg, side, s->edited_body_len, true);
        record_queued(ex, dir);
        if (rw != NULL && rw->ops->wants_body(rw->arg))
            rw->ops->note(rw->arg, "body rules skipped: the body was edited while intercepted");
        free(s->edited_body);
        s->edited_body = NULL;
        s->edited_body_len = 0;
        s->has_edited_body = false;
        return submit_held(ex, dir, &framed);
    }
    if (rw != NULL && rw->ops->wants_body(rw->arg) && queue_len(q) <= rw->limit) {
        /* finish_holding() rewrites it and sends it with the head. */
        message_free(&ex->held[dir]);
        if (message_copy(&ex->held[dir], head, NULL) < 0)
            return -1;
        ex->is_holding[dir] = true;
        return finish_holding(ex, dir);
    }
    record_queued(ex, dir);
    return submit_held(ex, dir, head);
}

/* The collection of direction dir ends: the body whole (is_whole), or past
 * the limit. The head parks with it, or goes on. Returns 0 or -1. */
static int collected(struct h2ex *ex, int dir, bool is_whole)
{
    struct h2relay *r = ex->r;
    struct queue *q = dir == 0 ? &ex->up : &ex->down;
    int rc;

    if (ex->is_collecting[dir])
        r->collecting--;
    ex->is_collecting[dir] = false;
    int parked =
        h2intercept_body(&r->ic, &ex->ic, &ex->held[dir], (const unsigned char *)q->data + q->start,
                         queue_len(q), is_whole, ex->url, &ex->cap);
    if (!is_whole)
        record_queued(ex, dir); /* the rest is recorded as it comes */
    ex->has_collected[dir] = is_whole;
    if (parked == H2INTERCEPT_PARKED)
        return 0; /* until resume_parked() */
    release_collected(ex, dir);
    struct message head = ex->held[dir];
    memset(&ex->held[dir], 0, sizeof(ex->held[dir]));
    if (is_whole)
        rc = send_collected(ex, dir, &head);
    else
        rc = dir == 0 ? forward_request(ex, &head) : forward_response(ex, &head);
    message_free(&head);
    return rc;
}

/* Bytes of a body being collected arrived: acknowledged at once (from:
 * their session; NULL for the bridge, which reads while the queue lets
 * it), the collection over past the intercept's limit. */
static int collect_bytes(struct h2ex *ex, int dir, nghttp2_session *from, int32_t from_id,
                         size_t len)
{
    struct h2relay *r = ex->r;

    if (from != NULL) {
        if (nghttp2_session_consume(from, from_id, len) != 0)
            nghttp2_session_consume_connection(from, len);
        ex->early[dir] += len;
    }
    ex->collected[dir] += len;
    r->collected_bytes += len;
    if (r->collected_bytes > H2RELAY_MAX_COLLECTED_BYTES) {
        capture_note(&ex->cap, NULL,
                     "intercept: the connection's streams hold too many bodies: not held");
        return collected(ex, dir, false);
    }
    if (queue_len(dir == 0 ? &ex->up : &ex->down) > INTERCEPT_MAX_BODY_BYTES)
        return collected(ex, dir, false);
    return 0;
}

/* ---- nghttp2 callbacks, both sessions ---- */

static struct h2ex *ex_of(nghttp2_session *session, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(session, stream_id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2relay *r = user_data;
    struct h2ex *ex;

    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (session == r->client) {
        if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
            return 0;
        ex = calloc(1, sizeof(*ex));
        if (ex == NULL)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        ex->r = r;
        ex->client_id = frame->hd.stream_id;
        ex->origin_closed = true; /* until a request goes out */
        ex->started_us = clock_mono_us();
        ex->next = r->streams;
        r->streams = ex;
        nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, ex);
        return 0;
    }
    ex = ex_of(session, frame->hd.stream_id);
    if (ex != NULL && !ex->has_response) {
        /* Each interim (1xx) head is replaced by the next; the bytes count
         * on, so endless interim heads reach the header list bound. */
        ex->resp.count = 0;
        ex->status = 0;
    }
    return 0;
}

/* Copies a pseudo-header field's value; a repeated one was refused by
 * nghttp2 already. */
static int take_pseudo(struct h2ex *ex, char **slot, const uint8_t *value, size_t len)
{
    *slot = arena_text(&ex->text, &ex->r->pool, value, len);
    return *slot != NULL ? 0 : -1;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *user_data)
{
    struct h2relay *r = user_data;
    struct h2ex *ex = ex_of(session, frame->hd.stream_id);
    bool is_client = session == r->client;
    int rc = 0;

    (void)flags;
    if (ex == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    size_t *bytes = is_client ? &ex->req_header_bytes : &ex->resp_header_bytes;
    /* RFC 9113 6.5.2: each field counts 32 bytes besides its name and value. */
    *bytes += name_len + value_len + 32;
    if (*bytes > H2RELAY_MAX_HEADER_LIST_BYTES) {
        set_error(ex,
                  is_client ? "request header list too large" : "response header list too large");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (is_client && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (name_len > 0 && name[0] == ':') {
            if (name_len == 7 && memcmp(name, ":method", 7) == 0)
                rc = take_pseudo(ex, &ex->method, value, value_len);
            else if (name_len == 7 && memcmp(name, ":scheme", 7) == 0)
                rc = take_pseudo(ex, &ex->scheme, value, value_len);
            else if (name_len == 10 && memcmp(name, ":authority", 10) == 0)
                rc = take_pseudo(ex, &ex->authority, value, value_len);
            else if (name_len == 5 && memcmp(name, ":path", 5) == 0)
                rc = take_pseudo(ex, &ex->path, value, value_len);
        } else {
            rc = fieldlist_add(&ex->req, &ex->text, &r->pool, name, name_len, value, value_len);
        }
    } else if (is_client) {
        rc =
            fieldlist_add(&ex->req_trailers, &ex->text, &r->pool, name, name_len, value, value_len);
    } else if (!ex->has_response) {
        if (name_len == 7 && memcmp(name, ":status", 7) == 0)
            ex->status = atoi((const char *)value);
        else if (name_len == 0 || name[0] != ':')
            rc = fieldlist_add(&ex->resp, &ex->text, &r->pool, name, name_len, value, value_len);
    } else {
        rc = fieldlist_add(&ex->resp_trailers, &ex->text, &r->pool, name, name_len, value,
                           value_len);
    }
    return rc == 0 ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void on_client_frame(struct h2relay *r, struct h2ex *ex, const nghttp2_frame *frame)
{
    bool is_end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        ex->up_ended = is_end;
        start_exchange(ex);
        return;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && is_end) {
        ex->up_ended = true;
        const struct exchange_capture *hooks = capture_hooks(&ex->cap);
        if (hooks && hooks->ops->moment)
            hooks->ops->moment(hooks->arg, EXCHANGE_REQUEST_SENT, clock_wall_us());
        if (ex->answer_waits && send_answer(ex) < 0)
            refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "out of memory");
        else if (ex->is_holding[0] && finish_holding(ex, 0) < 0)
            refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "the rewritten request could not go on");
        else if (ex->is_collecting[0] && collected(ex, 0, true) < 0)
            refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "the intercepted request could not go on");
        else if (!ex->origin_closed && ex->bridge == NULL)
            wake(r->origin, ex->origin_id);
    }
}

static void on_origin_frame(struct h2relay *r, struct h2ex *ex, const nghttp2_frame *frame)
{
    bool is_end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    if (frame->hd.type == NGHTTP2_HEADERS && !ex->has_response) {
        if (ex->status >= 100 && ex->status < 200)
            return; /* interim: not passed on (the client side is nghttp2's) */
        ex->has_response = true;
        ex->down_ended = is_end;
        const struct exchange_capture *hooks = capture_hooks(&ex->cap);
        if (hooks && hooks->ops->moment)
            hooks->ops->moment(hooks->arg, EXCHANGE_FIRST_BYTE, clock_wall_us());
        if (ex->client_closed || start_response(ex) < 0) {
            set_error(ex, "the response could not be passed on");
            nghttp2_submit_rst_stream(r->origin, NGHTTP2_FLAG_NONE, ex->origin_id, NGHTTP2_CANCEL);
        }
        return;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && is_end) {
        ex->down_ended = true;
        if (ex->is_holding[1] && !ex->client_closed && finish_holding(ex, 1) < 0) {
            set_error(ex, "the rewritten response could not be passed on");
            nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, ex->client_id,
                                      NGHTTP2_INTERNAL_ERROR);
        } else if (ex->is_collecting[1] && !ex->client_closed && collected(ex, 1, true) < 0) {
            set_error(ex, "the intercepted response could not be passed on");
            nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, ex->client_id,
                                      NGHTTP2_INTERNAL_ERROR);
        } else if (!ex->client_closed) {
            wake(r->client, ex->client_id);
        }
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2relay *r = user_data;
    struct h2ex *ex;

    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    ex = ex_of(session, frame->hd.stream_id);
    if (ex == NULL)
        return 0;
    if (session == r->client)
        on_client_frame(r, ex, frame);
    else
        on_origin_frame(r, ex, frame);
    return 0;
}

/* Body bytes arrived from one side (from: its session, NULL for the
 * bridge) for the other. Returns 0, or -1 when out of memory. */
static int took_bytes(struct h2ex *ex, bool is_up, const uint8_t *data, size_t len,
                      nghttp2_session *from, int32_t from_id)
{
    struct h2relay *r = ex->r;
    const struct exchange_capture *hooks;

    if (queue_put(is_up ? &ex->up : &ex->down, &r->pool, data, len) < 0)
        return -1;
    int dir = is_up ? 0 : 1;
    if (ex->is_collecting[dir]) {
        if (is_up)
            ex->up_bytes += len;
        else
            ex->down_bytes += len;
        return collect_bytes(ex, dir, from, from_id, len);
    }
    if (ex->is_holding[dir]) {
        if (is_up)
            ex->up_bytes += len;
        else
            ex->down_bytes += len;
        return hold_bytes(ex, dir, from, from_id, len) < 0 ? -1 : 0;
        /* the recorder is told once the body is rewritten */
    }
    hooks = capture_hooks(&ex->cap);
    if (hooks && hooks->ops->body)
        hooks->ops->body(hooks->arg, is_up ? EXCHANGE_REQUEST : EXCHANGE_RESPONSE, data, len);
    if (is_up) {
        ex->up_bytes += len;
        if (!ex->origin_closed && ex->bridge == NULL)
            wake(r->origin, ex->origin_id);
    } else {
        ex->down_bytes += len;
        if (!ex->client_closed)
            wake(r->client, ex->client_id);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    struct h2relay *r = user_data;
    struct h2ex *ex = ex_of(session, stream_id);
    bool is_up = session == r->client;

    (void)flags;
    if (ex == NULL)
        return 0;
    if (is_up && ex->is_answered) {
        /* A rule answered: the body is recorded, as the HTTP/1.1 path
         * reads and records it, and acknowledged at once. */
        const struct exchange_capture *hooks = capture_hooks(&ex->cap);
        if (hooks && hooks->ops->body)
            hooks->ops->body(hooks->arg, EXCHANGE_REQUEST, data, len);
        ex->up_bytes += len;
        if (nghttp2_session_consume(session, stream_id, len) != 0)
            nghttp2_session_consume_connection(session, len);
        if (ex->answer_waits && ex->up_bytes > H2RELAY_ANSWER_DRAIN_BYTES && send_answer(ex) < 0)
            refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "out of memory");
        return 0;
    }
    if (ex->bridge != NULL && ex->origin_id > 0 && ex->origin_closed) {
        /* The origin answered and is done with this request: what the
         * client still sends is acknowledged and dropped. */
        if (nghttp2_session_consume(session, stream_id, len) != 0)
            nghttp2_session_consume_connection(session, len);
        return 0;
    }
    return took_bytes(ex, is_up, data, len, session, stream_id) < 0
               ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
               : 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct h2relay *r = user_data;
    struct h2ex *ex = ex_of(session, stream_id);
    char why[96];

    if (ex == NULL)
        return 0;
    if (session == r->client) {
        ex->client_closed = true;
        if (error_code != NGHTTP2_NO_ERROR) {
            snprintf(why, sizeof(why), "client reset the stream (%s)",
                     nghttp2_http2_strerror(error_code));
            set_error(ex, why);
        }
        if (ex->bridge != NULL && !ex->origin_closed) {
            h2bridge_cancel(ex->bridge, ex);
            ex->origin_closed = true;
        } else if (!ex->origin_closed && (!ex->down_ended || error_code != NGHTTP2_NO_ERROR)) {
            nghttp2_submit_rst_stream(r->origin, NGHTTP2_FLAG_NONE, ex->origin_id, NGHTTP2_CANCEL);
        }
    } else {
        ex->origin_closed = true;
        if (error_code != NGHTTP2_NO_ERROR || !ex->down_ended) {
            snprintf(why, sizeof(why), "origin reset the stream (%s)",
                     nghttp2_http2_strerror(error_code));
            set_error(ex, why);
            if (!ex->client_closed)
                nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, ex->client_id,
                                          error_code != NGHTTP2_NO_ERROR ? error_code
                                                                         : NGHTTP2_INTERNAL_ERROR);
        }
    }
    maybe_finish(ex);
    return 0;
}

/* ---- an HTTP/1.1-only origin: h2bridge's side of each stream ---- */

static size_t bridge_take_body(void *stream, char *buf, size_t len, bool *is_end)
{
    struct h2ex *ex = stream;
    size_t n = queue_take(&ex->up, (uint8_t *)buf, len);
    size_t already = n < ex->early[0] ? n : ex->early[0];

    ex->early[0] -= already;
    /* Taken by the origin's socket: the client may send that much more. */
    if (n > already && nghttp2_session_consume(ex->r->client, ex->client_id, n - already) != 0)
        nghttp2_session_consume_connection(ex->r->client, n - already);
    *is_end = ex->up_ended && queue_len(&ex->up) == 0;
    return n;
}

static struct message_fields bridge_request_trailers(void *stream)
{
    return fields_of(&((struct h2ex *)stream)->req_trailers);
}

static bool bridge_can_take_body(void *stream)
{
    struct h2ex *ex = stream;

    /* A body being held for the rules, or collected for the intercept, is
     * taken whole (bounded there). */
    return ex->is_holding[1] || ex->is_collecting[1] ||
           queue_len(&ex->down) < H2RELAY_STREAM_WINDOW_BYTES;
}

/* HTTP/2 field names are lowercase (RFC 9113 8.2.1); HTTP/1.1's are not. */
static int add_lowercase(struct h2ex *ex, struct fieldlist *l, const struct message_field *f)
{
    if (fieldlist_add(l, &ex->text, &ex->r->pool, (const uint8_t *)f->name, f->name_len,
                      (const uint8_t *)f->value, f->value_len) < 0)
        return -1;
    char *name = (char *)l->items[l->count - 1].name;
    for (size_t i = 0; i < f->name_len; i++)
        name[i] = (char)tolower((unsigned char)name[i]);
    return 0;
}

/* The bridge is done with the stream: the client's side decides the rest. */
static void bridge_done(struct h2ex *ex, uint32_t reset_code)
{
    ex->origin_closed = true;
    if (reset_code != NGHTTP2_NO_ERROR && !ex->client_closed)
        nghttp2_submit_rst_stream(ex->r->client, NGHTTP2_FLAG_NONE, ex->client_id, reset_code);
    maybe_finish(ex);
}

static int bridge_response_head(void *stream, const struct message *head)
{
    struct h2ex *ex = stream;
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);

    ex->resp.count = 0;
    for (size_t i = 0; i < head->fields.count; i++) {
        if (add_lowercase(ex, &ex->resp, &head->fields.items[i]) < 0)
            goto fail;
    }
    ex->status = head->status;
    ex->has_response = true;
    ex->down_ended = head->body == MESSAGE_BODY_NONE;
    if (hooks && hooks->ops->moment)
        hooks->ops->moment(hooks->arg, EXCHANGE_FIRST_BYTE, clock_wall_us());
    if (ex->client_closed || start_response(ex) < 0)
        goto fail;
    return 0;
fail:
    set_error(ex, "the response could not be passed on");
    bridge_done(ex, NGHTTP2_INTERNAL_ERROR);
    return -1;
}

static int bridge_response_body(void *stream, const char *data, size_t len)
{
    struct h2ex *ex = stream;

    if (took_bytes(ex, false, (const uint8_t *)data, len, NULL, 0) < 0) {
        set_error(ex, "the response could not be passed on");
        bridge_done(ex, NGHTTP2_INTERNAL_ERROR);
        return -1;
    }
    return 0;
}

static void bridge_response_end(void *stream, const struct message_fields *trailers)
{
    struct h2ex *ex = stream;
    uint32_t reset = NGHTTP2_NO_ERROR;

    for (size_t i = 0; i < trailers->count; i++) {
        if (add_lowercase(ex, &ex->resp_trailers, &trailers->items[i]) < 0) {
            set_error(ex, "out of memory");
            break;
        }
    }
    ex->down_ended = true;
    if (ex->is_holding[1] && !ex->client_closed && finish_holding(ex, 1) < 0) {
        set_error(ex, "the rewritten response could not be passed on");
        reset = NGHTTP2_INTERNAL_ERROR;
    } else if (ex->is_collecting[1] && !ex->client_closed && collected(ex, 1, true) < 0) {
        set_error(ex, "the intercepted response could not be passed on");
        reset = NGHTTP2_INTERNAL_ERROR;
    } else if (!ex->client_closed) {
        wake(ex->r->client, ex->client_id);
    }
    bridge_done(ex, reset);
}

/* tapwire's own answer on the stream (the origin could not be reached or
 * did not answer): a short text page, recorded like any response. */
static int answer_stream(struct h2ex *ex, int status, const char *why)
{
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    static const struct message_field type = {"content-type", 12, "text/plain; charset=utf-8", 25};
    struct message view = {0};
    char body[GRPCMSG_MAX_STATUS_TEXT_BYTES + 64];
    int len = snprintf(body, sizeof(body), "tapwire: %s\n", why);

    if (len < 0 || (size_t)len >= sizeof(body))
        len = (int)strlen(body);
    ex->status = status;
    ex->has_response = true;
    ex->down_ended = true;
    view.status = status;
    view.reason = "";
    view.version = 20;
    view.fields = (struct message_fields){&type, 1};
    view.body = MESSAGE_BODY_LENGTH;
    view.content_length = (uint64_t)len;
    if (queue_put(&ex->down, &ex->r->pool, (const uint8_t *)body, (size_t)len) < 0)
        return -1;
    ex->down_bytes += (uint64_t)len;
    if (hooks && hooks->ops->response_head)
        hooks->ops->response_head(hooks->arg, &view, NULL);
    if (hooks && hooks->ops->body)
        hooks->ops->body(hooks->arg, EXCHANGE_RESPONSE, body, (size_t)len);
    return submit_response_head(ex, &view);
}

static void bridge_failed(void *stream, int status, const char *why)
{
    struct h2ex *ex = stream;
    uint32_t reset = NGHTTP2_NO_ERROR;

    set_error(ex, why);
    if (ex->client_closed)
        reset = NGHTTP2_NO_ERROR;
    else if (status == 0)
        reset = NGHTTP2_PROTOCOL_ERROR; /* the client's framing was at fault */
    else if (ex->has_response || answer_stream(ex, status, why) < 0)
        reset = NGHTTP2_INTERNAL_ERROR;
    bridge_done(ex, reset);
}

static const struct h2bridge_ops bridge_ops = {
    .take_body = bridge_take_body,
    .request_trailers = bridge_request_trailers,
    .can_take_body = bridge_can_take_body,
    .response_head = bridge_response_head,
    .response_body = bridge_response_body,
    .response_end = bridge_response_end,
    .failed = bridge_failed,
};

/* ---- actions of rules on a stream: mock, block, map-remote ---- */

/* The bridge to the origin of a map-remote, opened on first use. NULL
 * when H2RELAY_MAX_REMOTES are open already or out of memory. */
static struct h2bridge *remote_bridge(struct h2relay *r, const struct ruleaction_remote *to)
{
    const struct h2relay_env *env = r->env;
    struct remote *rm;

    for (size_t i = 0; i < r->remote_count; i++) {
        rm = &r->remotes[i];
        if (rm->is_tls == to->is_tls && rm->port == to->port && strcmp(rm->host, to->host) == 0)
            return rm->bridge;
    }
    if (r->remote_count == H2RELAY_MAX_REMOTES || env->bridge_settings == NULL)
        return NULL;
    rm = &r->remotes[r->remote_count];
    snprintf(rm->host, sizeof(rm->host), "%s", to->host);
    rm->port = to->port;
    rm->is_tls = to->is_tls;
    /* Verified by the mapped origin's own name, like any origin: the
     * HTTP/1.1 path's connect_origin() does the same. */
    struct h2bridge_env bridge = {
        .ops = &bridge_ops,
        .settings = env->bridge_settings,
        .target =
            {
                .host = rm->host,
                .port = rm->port,
                .is_tls = rm->is_tls,
                .sni = rm->is_tls ? rm->host : NULL,
                .verify_name = rm->host,
                .offers_http11 = true,
                .is_plain_http = !rm->is_tls,
            },
        .client_name = env->client_name,
        .io_ms = env->io_ms,
    };
    rm->bridge = h2bridge_new(&bridge);
    if (rm->bridge == NULL)
        return NULL;
    r->remote_count++;
    return rm->bridge;
}

/* map-remote (ruleaction.h): sent goes to act's origin instead, over the
 * bridge to it. *remote gets the request as it goes (caller frees).
 * Returns 0, or -1 when the stream was refused. */
static int map_remote(struct h2ex *ex, const struct rule *act, const struct message *sent,
                      const char *target, struct ruleaction_remote *remote)
{
    if (ruleaction_map_remote(act, ex->url, sent, target, remote) < 0) {
        refuse_stream(ex, NGHTTP2_INTERNAL_ERROR,
                      "map-remote: out of memory, or the target too long");
        return -1;
    }
    ex->bridge = remote_bridge(ex->r, remote);
    if (ex->bridge == NULL) {
        refuse_stream(ex, NGHTTP2_REFUSED_STREAM,
                      "map-remote: too many mapped origins on one connection");
        return -1;
    }
    ex->is_remapped = true;
    return 0;
}

/* The answer of a rule, made by answer_by_rule(), out on the stream. */
/* The answer of a rule, made by answer_by_rule(), out on the stream and
 * recorded as sent (only now: a client that resets the stream first got
 * no answer). */
static int send_answer(struct h2ex *ex)
{
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    struct queue *q = &ex->down;
    struct message head = {.status = ex->status, .reason = "", .version = 20};

    head.fields = fields_of(&ex->resp);
    head.body = queue_len(q) > 0 ? MESSAGE_BODY_LENGTH : MESSAGE_BODY_NONE;
    head.content_length = queue_len(q);
    ex->answer_waits = false;
    ex->has_response = true;
    ex->down_ended = true;
    ex->down_bytes += queue_len(q);
    if (hooks && hooks->ops->response_head)
        hooks->ops->response_head(hooks->arg, &head, NULL);
    if (hooks && hooks->ops->body && queue_len(q) > 0)
        hooks->ops->body(hooks->arg, EXCHANGE_RESPONSE, q->data + q->start, queue_len(q));
    return submit_response_head(ex, &head);
}

/*
 * mock and block on a stream (ruleaction.h): the answer goes out on the
 * client's stream, HEADERS then DATA, with the content-length tapwire
 * declares (no DATA for HEAD, 204 or 304), and is recorded as sent; no
 * origin stream is opened. As on HTTP/1.1 the request body is read first,
 * recorded and acknowledged as it comes (on_data_chunk()), and the answer
 * goes once it ended, or at once when the client waits for 100 Continue,
 * or once H2RELAY_ANSWER_DRAIN_BYTES came. block close resets the stream
 * with CANCEL, not REFUSED_STREAM: REFUSED_STREAM tells the client the
 * request was not processed and may be retried as it is (RFC 9113 8.7),
 * where a closed connection must read as a failure, as it does on
 * HTTP/1.1. Returns 0, or -1 when out of memory.
 */
static int answer_by_rule(struct h2ex *ex, const struct rule *act, const struct message *req)
{
    bool is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    struct ruleaction_answer ra;
    const char *name, *value;
    size_t name_len, value_len, pos = 0;
    int rc = -1;

    if (ruleaction_answer(act, false, &ra) < 0)
        goto out;
    ex->is_answered = true;
    capture_note(&ex->cap, NULL, ra.why);
    if (ra.is_close) {
        refuse_stream(ex, NGHTTP2_CANCEL, ra.why);
        rc = 0;
        goto out;
    }
    if (ra.is_block)
        set_error(ex, ra.why);
    while (flow_headers_next(ra.fields, &pos, &name, &name_len, &value, &value_len)) {
        struct message_field f = {name, name_len, value, value_len};
        if (add_lowercase(ex, &ex->resp, &f) < 0)
            goto out;
    }
    size_t body_len = is_head ? 0 : ra.body_len;
    if (body_len > 0 && queue_put(&ex->down, &ex->r->pool, (const uint8_t *)ra.body, body_len) < 0)
        goto out;
    ex->status = ra.status;
    const struct message_field *expect = message_find(req, "expect");
    bool is_waited_for = expect != NULL && expect->value_len == 12 &&
                         strncasecmp(expect->value, "100-continue", 12) == 0;
    if (!ex->up_ended && !is_waited_for) {
        ex->answer_waits = true;
        rc = 0;
        goto out;
    }
    rc = send_answer(ex);
out:
    ruleaction_answer_free(&ra);
    return rc;
}

/* A GOAWAY with an error tells the client why its connection ends; the
 * log says it too (nghttp2 puts its reason in the debug data). */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2relay *r = user_data;

    if (session == r->client && frame->hd.type == NGHTTP2_GOAWAY &&
        frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        int len = frame->goaway.opaque_data_len < 120 ? (int)frame->goaway.opaque_data_len : 120;
        log_warn("%s: HTTP/2 client connection closed with GOAWAY (%s)%s%.*s", r->env->client_name,
                 nghttp2_http2_strerror(frame->goaway.error_code), len > 0 ? ": " : "", len,
                 (const char *)frame->goaway.opaque_data);
        r->has_said_goaway = true;
    }
    return 0;
}

/* ---- streams an intercept parked (h2intercept.h) ---- */

/* A dropped stream: tapwire's 502 to the client (the head alone), and the
 * origin's stream, if one was opened, cancelled. */
static void answer_dropped(struct h2ex *ex)
{
    struct h2relay *r = ex->r;
    nghttp2_nv status = nv_of(":status", 7, "502", 3);

    set_error(ex, "dropped while intercepted");
    ex->has_response = true;
    ex->status = 502;
    if (!ex->origin_closed && ex->bridge != NULL) {
        h2bridge_cancel(ex->bridge, ex);
        ex->origin_closed = true;
    } else if (!ex->origin_closed) {
        nghttp2_submit_rst_stream(r->origin, NGHTTP2_FLAG_NONE, ex->origin_id, NGHTTP2_CANCEL);
    }
    if (nghttp2_submit_response(r->client, ex->client_id, &status, 1, NULL) != 0 || !ex->up_ended)
        nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, ex->client_id, NGHTTP2_NO_ERROR);
}

static void resume_stream(struct h2ex *ex)
{
    struct h2relay *r = ex->r;
    const struct exchange_capture *hooks = capture_hooks(&ex->cap);
    int dir = ex->ic.is_response ? 1 : 0;
    struct message head = ex->held[dir], edited = {0}, view;
    enum h2intercept_verdict v =
        h2intercept_check(&r->ic, &ex->ic, &head, &edited, &ex->cap, &r->park_left_ms);
    int rc = 0;

    if (v == H2INTERCEPT_WAITS)
        return;
    if (!ex->has_collected[dir])
        release_collected(ex, dir);                   /* a part, past the limit: it goes on now */
    memset(&ex->held[dir], 0, sizeof(ex->held[dir])); /* head owns it now */
    const struct message *go = v == H2INTERCEPT_EDITED ? &edited : &head;
    if (v == H2INTERCEPT_DROP) {
        answer_dropped(ex);
    } else if (dir == 0) {
        rc = ex->has_collected[0] ? send_collected(ex, 0, go) : forward_request(ex, go);
    } else if (!ex->client_closed) {
        response_view(ex, &view);
        if (v == H2INTERCEPT_EDITED && hooks && hooks->ops->response_head)
            hooks->ops->response_head(hooks->arg, &edited, &view);
        rc = ex->has_collected[1] ? send_collected(ex, 1, go) : forward_response(ex, go);
    }
    if (rc < 0 && dir == 0 && ex->error[0] == '\0') {
        refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "out of memory");
    } else if (rc < 0) {
        set_error(ex, "the response could not be passed on");
        nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, ex->client_id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    message_free(&head);
    message_free(&edited);
}

/* Collections past their deadline (or all, when the proxy stops) end
 * with what came; r->collect_left_ms becomes the time to the next one. */
static void check_collections(struct h2relay *r)
{
    int64_t now = clock_mono_us();
    struct h2ex *next;

    r->collect_left_ms = -1;
    for (struct h2ex *ex = r->streams; ex != NULL; ex = next) {
        next = ex->next;
        for (int dir = 0; dir < 2; dir++) {
            if (!ex->is_collecting[dir] || (dir == 1 && ex->client_closed))
                continue; /* a response nobody waits for ends with its stream */
            if (!r->ic.is_stopping && now < ex->collect_until_us) {
                int left = (int)((ex->collect_until_us - now) / 1000) + 1;
                if (r->collect_left_ms < 0 || left < r->collect_left_ms)
                    r->collect_left_ms = left;
                continue;
            }
            capture_note(&ex->cap, NULL,
                         "intercept: the body did not end in time: its head waits without it");
            if (collected(ex, dir, false) == 0)
                continue;
            if (dir == 0) {
                refuse_stream(ex, NGHTTP2_INTERNAL_ERROR, "out of memory");
            } else {
                set_error(ex, "the response could not be passed on");
                nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, ex->client_id,
                                          NGHTTP2_INTERNAL_ERROR);
            }
        }
    }
}

/* Every parked stream that was resumed, dropped or timed out goes on;
 * r->park_left_ms becomes the time to the next timeout. */
static void resume_parked(struct h2relay *r)
{
    r->park_left_ms = -1;
    for (struct h2ex *ex = r->streams; ex != NULL; ex = ex->next)
        if (ex->ic.ticket != NULL)
            resume_stream(ex);
}

/* ---- the sessions and the loop ---- */

static int new_session(struct h2relay *r, bool is_server, nghttp2_session **out)
{
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    int rc = -1;

    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_continuations(opt, MAX_CONTINUATIONS);
    nghttp2_option_set_max_settings(opt, MAX_SETTINGS_ENTRIES);
    nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACKS);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    if (is_server) {
        nghttp2_option_set_stream_reset_rate_limit(opt, RESET_BURST, RESET_RATE_PER_S);
        rc = nghttp2_session_server_new2(out, cb, r, opt);
    } else {
        rc = nghttp2_session_client_new2(out, cb, r, opt);
    }
out:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    return rc == 0 ? 0 : -1;
}

/* Our SETTINGS, and the larger windows they promise. */
static int open_windows(nghttp2_session *session, bool is_server)
{
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2RELAY_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2RELAY_STREAM_WINDOW_BYTES},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2RELAY_MAX_HEADER_LIST_BYTES},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    /* A server does not send ENABLE_PUSH (RFC 9113 6.5.2). */
    size_t count = is_server ? 3 : 4;

    if (nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, count) != 0)
        return -1;
    return nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
                                                 H2RELAY_CONNECTION_WINDOW_BYTES);
}

/* Everything the session has to send, out. Returns 0 or -1. */
static int send_pending(struct h2relay *r, nghttp2_session *session, struct stream *s)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(session, &data);
        if (n < 0) {
            snprintf(r->why, sizeof(r->why), "%s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            break;
        if (stream_put(s, data, (size_t)n, r->env->io_ms) != STREAM_OK)
            return -1;
    }
    return stream_flush(s, r->env->io_ms) == STREAM_OK ? 0 : -1;
}

/* At most this many bytes are fed to a session between two flushes. */
#define RECEIVE_BATCH_BYTES (64 * 1024)

/*
 * What arrived on s, fed to its session: the bytes a read brings and then
 * the TLS records OpenSSL already holds, up to RECEIVE_BATCH_BYTES. Why not
 * one record per call: peers such as nginx put each response in its own
 * record and many records in one TCP segment, and the loop flushes both
 * sides after each call, so one record at a time cost a write system call,
 * and a TLS record, per response and per request. Returns 0, or -1 when
 * the connection ended or its peer broke the protocol.
 */
static int receive(struct h2relay *r, nghttp2_session *session, struct stream *s)
{
    size_t fed = 0;

    do {
        if (stream_buffered(s) == 0) {
            ssize_t got = stream_fill(s, 0);
            if (got == STREAM_TIMEOUT)
                return 0;
            if (got < 0)
                return fed > 0 && got == STREAM_EOF ? 0 : -1;
        }
        ssize_t used =
            nghttp2_session_mem_recv(session, (const uint8_t *)stream_data(s), stream_buffered(s));
        if (used < 0) {
            snprintf(r->why, sizeof(r->why), "%s", nghttp2_strerror((int)used));
            return -1;
        }
        stream_consume(s, (size_t)used);
        fed += (size_t)used;
    } while (fed < RECEIVE_BATCH_BYTES && stream_buffered(s) == 0 && s->ssl != NULL &&
             SSL_has_pending(s->ssl));
    return 0;
}

static bool is_done(nghttp2_session *session)
{
    return !nghttp2_session_want_read(session) && !nghttp2_session_want_write(session);
}

/* Quiet this long, a connection gives back what only a busy one needs: its
 * stream buffers and the blocks its streams recycle (as the HTTP/1.1
 * request loop does). */
#define IDLE_GRACE_MS 200

/* ms, lowered to limit when limit is set (>= 0). */
static int at_most(int ms, int limit)
{
    return limit >= 0 && limit < ms ? limit : ms;
}

/* The remote bridges' entries of the last poll (n entries in all) are
 * theirs to read. */
static void mark_remotes_polled(struct h2relay *r, size_t n)
{
    for (size_t i = 0; i < r->remote_count; i++) {
        struct remote *rm = &r->remotes[i];
        size_t end = i + 1 < r->remote_count ? r->remotes[i + 1].at : n;
        rm->polled = end - rm->at;
    }
}

/* Waits for either connection (and the bridges'). Returns 1 with what is
 * readable (the bridge's entries are in r->pfd for h2bridge_step()), 1 too
 * when one of the bridge's deadlines is due, 0 when nothing moved for
 * idle_ms, -1 on shutdown or a poll failure. */
static int wait_either(struct h2relay *r, bool *client_ready, bool *origin_ready)
{
    const struct h2relay_env *env = r->env;
    struct pollfd *p = r->pfd;
    nfds_t n = 0;
    int at_origin = -1, at_cancel = -1, at_ic = -1, at_stop = -1, bridge_ms = -1;
    bool is_parked = r->ic.parked > 0 || r->collecting > 0;
    int grace = env->idle_ms > IDLE_GRACE_MS ? IDLE_GRACE_MS : env->idle_ms;

    r->bridge_polled = 0;
    p[n++] = (struct pollfd){.fd = env->client->fd, .events = POLLIN};
    if (env->origin != NULL) {
        at_origin = (int)n;
        p[n++] = (struct pollfd){.fd = env->origin->fd, .events = POLLIN};
    }
    if (env->client->cancel_fd >= 0) {
        at_cancel = (int)n;
        p[n++] = (struct pollfd){.fd = env->client->cancel_fd, .events = POLLIN};
    }
    at_ic = (int)n; /* a negative fd is ignored by poll() */
    p[n++] = (struct pollfd){.fd = h2intercept_fd(&r->ic), .events = POLLIN};
    if (is_parked) {
        at_stop = (int)n;
        p[n++] = (struct pollfd){.fd = r->ic.stop_fd, .events = POLLIN};
    }
    r->bridge_at = n;
    size_t bridged = r->bridge != NULL
                         ? h2bridge_pollfds(r->bridge, p + n, H2BRIDGE_MAX_CONNECTIONS, &bridge_ms)
                         : 0;
    n += bridged;
    for (size_t i = 0; i < r->remote_count; i++) {
        struct remote *rm = &r->remotes[i];
        rm->at = n;
        rm->polled = 0;
        n += h2bridge_pollfds(rm->bridge, p + n, H2BRIDGE_MAX_CONNECTIONS, &bridge_ms);
    }

    *client_ready =
        stream_buffered(env->client) > 0 || (env->client->ssl && SSL_has_pending(env->client->ssl));
    *origin_ready =
        env->origin != NULL && (stream_buffered(env->origin) > 0 ||
                                (env->origin->ssl && SSL_has_pending(env->origin->ssl)));
    if (*client_ready || *origin_ready)
        return 1;
    if (is_parked) {
        /* A parked stream keeps the connection (no idle end) and wakes the
         * loop at its timeout, when the dashboard resumes or drops it, or
         * when the proxy stops (it goes on unchanged); the bridge's
         * deadlines wake it too. */
        int park_ms = r->ic.parked > 0 ? r->park_left_ms : -1;
        if (r->collecting > 0 && r->collect_left_ms >= 0)
            park_ms = park_ms < 0 ? r->collect_left_ms : at_most(park_ms, r->collect_left_ms);
        if (r->ic.is_stopping)
            park_ms = 0;
        int got = poll(p, n, park_ms < 0 ? bridge_ms : at_most(park_ms, bridge_ms));
        if (got < 0)
            return errno == EINTR ? 1 : -1;
        if (at_cancel >= 0 && p[at_cancel].revents != 0)
            return -1;
        if (p[at_ic].revents != 0)
            h2intercept_drain(&r->ic);
        if (at_stop >= 0 && p[at_stop].revents != 0)
            r->ic.is_stopping = true;
        *client_ready = p[0].revents != 0;
        *origin_ready = at_origin >= 0 && p[at_origin].revents != 0;
        r->bridge_polled = bridged;
        mark_remotes_polled(r, n);
        return 1;
    }
    int got = poll(p, n, at_most(grace, bridge_ms));
    if (got == 0 && bridge_ms >= 0 && bridge_ms <= grace)
        return 1;
    if (got == 0 && grace < env->idle_ms) {
        stream_release_idle(env->client);
        if (env->origin != NULL)
            stream_release_idle(env->origin);
        pool_free(&r->pool);
        stacktrim_release();
        int rest = env->idle_ms - grace;
        got = poll(p, n, at_most(rest, bridge_ms >= 0 ? bridge_ms - grace : -1));
        if (got == 0 && bridge_ms >= 0 && bridge_ms - grace <= rest)
            return 1;
    }
    if (got < 0)
        return errno == EINTR ? 1 : -1;
    if (got == 0)
        return 0;
    if (at_cancel >= 0 && p[at_cancel].revents != 0)
        return -1;
    *client_ready = p[0].revents != 0;
    *origin_ready = at_origin >= 0 && p[at_origin].revents != 0;
    r->bridge_polled = bridged;
    mark_remotes_polled(r, n);
    return 1;
}

static void end_all(struct h2relay *r, const char *why)
{
    while (r->streams != NULL) {
        struct h2ex *ex = r->streams;
        set_error(ex, why);
        record_and_free(ex);
    }
}

int h2relay_run(const struct h2relay_env *env)
{
    struct h2relay r = {.env = env};
    const char *ended = NULL;
    int rc = -1;

    h2intercept_init(&r.ic, env->intercept, env->stop_fd);

    if (env->origin == NULL) {
        struct h2bridge_env bridge = {
            .ops = &bridge_ops,
            .settings = env->bridge_settings,
            .target = env->bridge_target,
            .first = env->bridge_first,
            .client_name = env->client_name,
            .io_ms = env->io_ms,
        };
        r.bridge = h2bridge_new(&bridge);
        if (r.bridge == NULL) {
            log_error("%s: cannot set up the HTTP/1.1 side", env->client_name);
            goto out;
        }
    }
    if (new_session(&r, true, &r.client) < 0 ||
        (env->origin != NULL && new_session(&r, false, &r.origin) < 0) ||
        open_windows(r.client, true) < 0 ||
        (r.origin != NULL && open_windows(r.origin, false) < 0)) {
        log_error("%s: cannot set up HTTP/2 sessions", env->client_name);
        goto out;
    }
    for (;;) {
        bool client_ready, origin_ready;
        if (r.collecting > 0)
            check_collections(&r);
        if (r.ic.parked > 0)
            resume_parked(&r);
        if (r.bridge != NULL) {
            /* What the last poll said of the bridge's sockets, and the
             * requests the client's frames just gave it. */
            h2bridge_step(r.bridge, r.pfd + r.bridge_at, r.bridge_polled);
            r.bridge_polled = 0;
        }
        for (size_t i = 0; i < r.remote_count; i++) {
            h2bridge_step(r.remotes[i].bridge, r.pfd + r.remotes[i].at, r.remotes[i].polled);
            r.remotes[i].polled = 0;
        }
        if (send_pending(&r, r.client, env->client) < 0) {
            ended = "the client connection failed";
            break;
        }
        if (r.origin != NULL && send_pending(&r, r.origin, env->origin) < 0) {
            ended = "the origin connection failed";
            break;
        }
        if (is_done(r.client)) {
            rc = 0;
            break;
        }
        if (r.origin != NULL && is_done(r.origin) && r.streams == NULL) {
            /* The origin said GOAWAY and its streams are over: so are we. */
            nghttp2_session_terminate_session(r.client, NGHTTP2_NO_ERROR);
            send_pending(&r, r.client, env->client);
            rc = 0;
            break;
        }
        int w = wait_either(&r, &client_ready, &origin_ready);
        if (w <= 0) {
            ended = w == 0 ? "idle (--idle-timeout)" : "shutting down";
            nghttp2_session_terminate_session(r.client, NGHTTP2_NO_ERROR);
            send_pending(&r, r.client, env->client);
            rc = 0;
            break;
        }
        if (client_ready && receive(&r, r.client, env->client) < 0) {
            ended = r.why[0] ? r.why : "the client closed the connection";
            /* A protocol error: nghttp2 queued a GOAWAY saying which. */
            send_pending(&r, r.client, env->client);
            if (r.origin != NULL) {
                nghttp2_session_terminate_session(r.origin, NGHTTP2_CANCEL);
                send_pending(&r, r.origin, env->origin);
            }
            rc = r.why[0] ? -1 : 0;
            break;
        }
        if (origin_ready && receive(&r, r.origin, env->origin) < 0) {
            ended = r.why[0] ? r.why : "the origin closed the connection";
            nghttp2_session_terminate_session(r.client, NGHTTP2_INTERNAL_ERROR);
            send_pending(&r, r.client, env->client);
            break;
        }
    }
    if (rc < 0 && ended != NULL && !r.has_said_goaway)
        log_warn("%s: HTTP/2 connection ended: %s", env->client_name, ended);
    end_all(&r, ended != NULL ? ended : "the connection ended");
    h2intercept_close(&r.ic);
out:
    h2bridge_free(r.bridge);
    for (size_t i = 0; i < r.remote_count; i++)
        h2bridge_free(r.remotes[i].bridge);
    nghttp2_session_del(r.client);
    nghttp2_session_del(r.origin);
    pool_free(&r.pool);
    return rc;
}
