/*
 * replay: see replay.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "replay.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "capture.h"
#include "exchange.h"
#include "h1toh2.h"
#include "http1.h"
#include "http1codec.h"
#include "log.h"
#include "origin.h"
#include "rewrite.h"
#include "ruleaction.h"
#include "stream.h"

#define REPLAY_IN_MAX_BYTES (HTTP1_MAX_HEAD_BYTES + STREAM_READ_CHUNK_BYTES)
/* How long a replayed upgrade's connection may stay quiet before it is
 * closed: no client will ever speak on it. */
#define REPLAY_UPGRADE_QUIET_MS 2000

struct replay {
    struct replay_env env;
    pthread_mutex_t lock; /* one replay at a time: the new flow is found by its client */
};

struct replay *replay_new(const struct replay_env *env)
{
    struct replay *rp = calloc(1, sizeof(*rp));

    if (rp == NULL)
        return NULL;
    if (pthread_mutex_init(&rp->lock, NULL) != 0) {
        free(rp);
        return NULL;
    }
    rp->env = *env;
    return rp;
}

void replay_free(struct replay *rp)
{
    if (rp == NULL)
        return;
    pthread_mutex_destroy(&rp->lock);
    free(rp);
}

/* The request to send, every part owned. */
struct outgoing {
    char *method;
    char *url;
    char *headers; /* "Name: value\r\n" lines, when no edit gives fields */
    unsigned char *body;
    size_t body_len;
    struct message_field *items; /* the fields, pointing into headers or the edit */
    size_t count;
};

static void outgoing_free(struct outgoing *o)
{
    free(o->method);
    free(o->url);
    free(o->headers);
    free(o->body);
    free(o->items);
}

/* "scheme://host[:port]target" of a stored flow. */
static char *flow_url(const struct flow *f)
{
    bool is_https = strcmp(f->scheme, "https") == 0;
    bool is_default = f->port == (is_https ? 443 : 80);
    bool is_v6 = strchr(f->host, ':') != NULL;
    char port[8] = "";
    char *url = NULL;

    if (!is_default)
        snprintf(port, sizeof(port), ":%u", f->port);
    if (asprintf(&url, "%s://%s%s%s%s%s", is_https ? "https" : "http", is_v6 ? "[" : "", f->host,
                 is_v6 ? "]" : "", port, f->target != NULL ? f->target : "/") < 0)
        return NULL;
    return url;
}

/* The stored request of source_id as o. */
static int load_flow(struct replay *rp, int64_t source_id, bool has_new_body, struct outgoing *o,
                     char *err, size_t err_len)
{
    struct flowstore_record *rec = NULL;
    const struct flow *f;
    int rc = REPLAY_FAILED;

    if (flowstore_get(rp->env.flows, source_id, &rec, err, err_len) != 0)
        goto out;
    if (rec == NULL) {
        snprintf(err, err_len, "no such flow");
        rc = REPLAY_NOT_FOUND;
        goto out;
    }
    f = &rec->flow;
    if (f->kind == FLOW_TUNNEL || strcmp(f->method, "CONNECT") == 0 ||
        (strcmp(f->scheme, "http") != 0 && strcmp(f->scheme, "https") != 0)) {
        snprintf(err, err_len, "flow %lld is a tunnel, not an HTTP request: nothing to replay",
                 (long long)source_id);
        rc = REPLAY_INVALID;
        goto out;
    }
    if (f->request_body.truncated && !has_new_body) {
        snprintf(err, err_len,
                 "the request body of flow %lld was cut at the capture limit (%llu of %llu "
                 "bytes kept): replaying it would send it shortened; give the whole body in "
                 "the edit",
                 (long long)source_id, (unsigned long long)rec->request_captured,
                 (unsigned long long)f->request_body.size);
        rc = REPLAY_TRUNCATED;
        goto out;
    }
    o->method = strdup(f->method);
    o->url = flow_url(f);
    o->headers = strdup(f->request_headers != NULL ? f->request_headers : "");
    if (o->method == NULL || o->url == NULL || o->headers == NULL) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    if (!has_new_body && rec->request_captured > 0 &&
        flowstore_get_body(rp->env.flows, source_id, FLOWSTORE_REQUEST, &o->body, &o->body_len, err,
                           err_len) != 0)
        goto out;
    rc = 0;
out:
    flowstore_record_free(rec);
    return rc;
}

/* Whether a stored field goes into the replay: framing is declared anew,
 * and the exchange answers no Expect here. */
static bool is_kept(const struct message_field *f)
{
    return !message_field_is(f, "Content-Length") && !message_field_is(f, "Transfer-Encoding") &&
           !message_field_is(f, "Expect") && !message_field_is(f, "Host");
}

/* o's fields: the edit's, or the stored section's. */
static int gather_fields(struct outgoing *o, const struct intercept_edit *e)
{
    size_t pos = 0, n = 0, cap = 0;
    const char *name, *value;
    size_t name_len, value_len;

    if (e != NULL && e->has_fields) {
        o->items = calloc(e->field_count > 0 ? e->field_count : 1, sizeof(*o->items));
        if (o->items == NULL)
            return -1;
        for (size_t i = 0; i < e->field_count; i++) {
            struct message_field f = {e->fields[i].name, strlen(e->fields[i].name),
                                      e->fields[i].value, strlen(e->fields[i].value)};
            if (is_kept(&f))
                o->items[n++] = f;
        }
        o->count = n;
        return 0;
    }
    while (flow_headers_next(o->headers, &pos, &name, &name_len, &value, &value_len)) {
        struct message_field f = {name, name_len, value, value_len};
        if (!is_kept(&f))
            continue;
        if (n == cap) {
            size_t want = cap ? cap * 2 : 16;
            struct message_field *grown = realloc(o->items, want * sizeof(*grown));
            if (grown == NULL)
                return -1;
            o->items = grown;
            cap = want;
        }
        o->items[n++] = f;
    }
    o->count = n;
    return 0;
}

/* Reads and discards what the exchange sends the "client" until it closes. */
static void *drain_main(void *arg)
{
    int fd = *(int *)arg;
    char buf[16384];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    return NULL;
}

/* The flow's TLS facts and open times from the origin, as a session gives
 * them. */
static void finish(struct capture *cap, struct origin *origin, int status, const char *error)
{
    struct flow_tls tls = {0};
    struct capture_connection conn = {.tls = &tls};

    memcpy(tls.upstream_version, origin->tls.version, sizeof(tls.upstream_version));
    memcpy(tls.upstream_cipher, origin->tls.cipher, sizeof(tls.upstream_cipher));
    tls.cert_subject = origin->tls.cert_subject;
    tls.cert_issuer = origin->tls.cert_issuer;
    tls.cert_sans = origin->tls.cert_sans;
    tls.cert_not_after = origin->tls.cert_not_after;
    tls.verification = origin->tls.verification;
    origin_take_open_times(origin, &conn.connected_at_us, &conn.tls_done_at_us);
    capture_finish(cap, &conn, status, error);
}

/*
 * mock and block (ruleaction.h): the rule's answer is recorded as the
 * flow, with the request body as it would have been sent; the origin is
 * never contacted. block close records no answer, its reason as the error.
 */
static void answer_by_rule(const struct rule *act, const struct message *req,
                           const unsigned char *body, size_t body_len, struct capture *cap)
{
    const struct exchange_capture *hooks = capture_hooks(cap);
    struct capture_connection conn = {0};
    struct ruleaction_answer ra;
    bool is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;

    if (hooks != NULL && hooks->ops->body != NULL && body_len > 0)
        hooks->ops->body(hooks->arg, EXCHANGE_REQUEST, body, body_len);
    if (ruleaction_answer(act, false, &ra) < 0) {
        capture_finish(cap, &conn, 503, "out of memory");
        goto out;
    }
    capture_note(cap, NULL, ra.why);
    if (ra.is_close) {
        capture_finish(cap, &conn, 0, ra.why);
        goto out;
    }
    capture_answer(cap, ra.status, ra.reason_phrase, ra.fields, ra.body, is_head ? 0 : ra.body_len);
    capture_finish(cap, &conn, ra.status, ra.is_block ? ra.why : NULL);
out:
    ruleaction_answer_free(&ra);
}

/* The flow of a map-remote replay names the origin it went to, as a
 * session's does; the URL asked for is in the rule's note. */
static void record_destination(struct capture *cap, const struct ruleaction_remote *r)
{
    struct flow *f = cap->flow;

    if (f == NULL)
        return;
    snprintf(f->scheme, sizeof(f->scheme), "%s", r->is_tls ? "https" : "http");
    snprintf(f->host, sizeof(f->host), "%s", r->host);
    f->port = r->port;
    f->is_tls = r->is_tls;
}

/* Whether req asks to switch protocols (Connection: upgrade and an Upgrade
 * field, as http1.c decides for a client's request). */
static bool asks_upgrade(const struct message *req)
{
    bool has_token = false, has_upgrade = false;

    for (size_t i = 0; i < req->fields.count; i++) {
        const struct message_field *f = &req->fields.items[i];
        if (message_field_is(f, "Connection") &&
            http1_list_has_token(f->value, f->value_len, "upgrade"))
            has_token = true;
        else if (message_field_is(f, "Upgrade"))
            has_upgrade = true;
    }
    return has_token && has_upgrade;
}

/* Sends req (body in body) to at's origin as one flow recorded by cap. */
static void send_one(struct replay *rp, const struct http1_absolute_target *at, char *path,
                     const char *url, const struct message *built, const unsigned char *body,
                     size_t body_len, struct capture *cap)
{
    const struct config *cfg = rp->env.cfg;
    struct origin origin;
    struct origin_settings settings = {
        .tls_ctx = rp->env.upstream_ctx,
        .guard = rp->env.guard,
        .proxy = rp->env.proxy,
        .timeout_ms = cfg->upstream_timeout_ms,
        .cancel_fd = rp->env.cancel_fd,
        .in_max_bytes = REPLAY_IN_MAX_BYTES,
    };
    struct origin_target target = {
        .host = at->host,
        .port = at->port,
        .is_tls = at->is_https,
        .sni = at->is_https ? at->host : NULL,
        .verify_name = at->host,
        .offers_http11 = true,
        .is_plain_http = true,
    };
    struct exchange_timeouts t = {
        .idle_ms = cfg->idle_timeout_ms,
        .header_ms = cfg->header_timeout_ms,
        .io_ms = cfg->io_timeout_ms,
    };
    struct rewrite rw = {0};
    struct message view = *built, req = {0};
    struct upstream_error uerr = {0};
    struct exchange_result res = {0};
    struct stream client;
    struct upstreamproxy_request proxied = {0};
    struct ruleaction_remote remote = {0};
    struct h1toh2 *h2 = NULL;
    const struct rule *act;
    const char *host = at->host;
    uint16_t port = at->port;
    char *new_path = NULL;
    char *target_original = NULL;
    int sv[2] = {-1, -1};
    pthread_t drainer;
    bool has_drainer = false, rewritten = false;
    int changed = 0;

    origin_init(&origin, rp->env.cancel_fd);
    stream_clear(&client, rp->env.cancel_fd);
    if (rewrite_begin(&rw, rp->env.rules, &view, at->host, path, cfg->rewrite_limit,
                      cfg->rewrite_memory) < 0 ||
        rewrite_url(&rw, &new_path) < 0)
        goto oom;
    if (new_path != NULL) {
        view.target = new_path;
        view.target_len = strlen(new_path);
    }
    if (rewrite_hooks(&rw) &&
        (changed = exchange_rewrite_head(rewrite_hooks(&rw), &view, &req)) < 0)
        goto oom;
    rewritten = changed > 0;
    if (!rewritten && message_copy(&req, &view, NULL) < 0)
        goto oom;
    if (new_path != NULL && (target_original = strdup(path)) == NULL)
        goto oom;
    act = rewrite_action(&rw);
    if (act != NULL && act->target == RULES_TARGET_MAP_REMOTE) {
        const char *sent = new_path != NULL ? new_path : path;

        if (ruleaction_map_remote(act, url, &req, sent, &remote) < 0) {
            capture_request(cap, &req, rewritten ? &view : NULL, target_original);
            target_original = NULL;
            capture_rules(cap, rewrite_applied(&rw), rewrite_notes(&rw));
            finish(cap, &origin, 500, "map-remote: out of memory, or the target too long");
            goto out;
        }
        if (target_original == NULL && strcmp(sent, remote.target) != 0 &&
            (target_original = strdup(sent)) == NULL)
            goto oom;
        message_free(&req);
        req = remote.req;
        memset(&remote.req, 0, sizeof(remote.req));
        host = remote.host;
        port = remote.port;
        target.host = host;
        target.port = port;
        target.is_tls = remote.is_tls;
        target.sni = remote.is_tls ? host : NULL;
        target.verify_name = host;
        record_destination(cap, &remote);
        /* What arrived is recorded beside what was sent, as a session's. */
        rewritten = true;
    }
    capture_request(cap, &req, rewritten ? &view : NULL, target_original);
    target_original = NULL;
    if (cap->flow != NULL && (new_path != NULL || remote.target != NULL)) {
        free(cap->flow->target);
        cap->flow->target = strdup(remote.target != NULL ? remote.target : new_path);
    }
    if (act != NULL && act->target != RULES_TARGET_MAP_REMOTE) {
        capture_rules(cap, rewrite_applied(&rw), rewrite_notes(&rw));
        answer_by_rule(act, &req, body, body_len, cap);
        goto out;
    }
    if (remote.note != NULL)
        capture_note(cap, NULL, remote.note);

    /* No client chose this origin's protocol: like a --reverse listener's
     * origin (session.c), it is offered h2 after http/1.1, so that an
     * origin that speaks only HTTP/2 (a gRPC server) can be replayed to
     * through h1toh2, and one that speaks both stays on HTTP/1.1 when it
     * honours the order. An upgrade has no HTTP/2 form (RFC 9113 8.6).
     * A replayed upgrade (a WebSocket handshake) goes as one, Connection
     * and Upgrade fields included, so that the origin answers it as it did
     * the first time. */
    req.is_upgrade = asks_upgrade(&req);
    target.accepts_h2_only = target.is_tls && !cfg->no_http2 && !req.is_upgrade;
    if (origin_open(&origin, &settings, &target, &uerr, NULL) < 0) {
        capture_rules(cap, rewrite_applied(&rw), rewrite_notes(&rw));
        finish(cap, &origin, upstream_error_http_status(&uerr), uerr.reason);
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        stream_init(&client, sv[0], REPLAY_IN_MAX_BYTES, rp->env.cancel_fd) < 0)
        goto oom;
    sv[0] = -1; /* the stream owns it */
    if (stream_unshift(&client, body, body_len) < 0 ||
        pthread_create(&drainer, NULL, drain_main, &sv[1]) != 0)
        goto oom;
    has_drainer = true;
    /* No client speaks on an upgraded connection: its side ends at once
     * (the origin sees the half-close), and what the origin sends before
     * it closes, a greeting say, is recorded, for at most
     * REPLAY_UPGRADE_QUIET_MS without a byte. */
    if (req.is_upgrade) {
        (void)shutdown(sv[1], SHUT_WR); /* failing, the quiet time ends it */
        if (t.idle_ms <= 0 || t.idle_ms > REPLAY_UPGRADE_QUIET_MS)
            t.idle_ms = REPLAY_UPGRADE_QUIET_MS;
    }
    struct message via = req;
    if (origin.is_proxied_http &&
        upstreamproxy_prepare(rp->env.proxy, &req, host, port, &via, &proxied) < 0)
        goto oom;
    int r;
    if (origin.is_h2) {
        /* The origin chose h2: the request goes as one stream. */
        if ((h2 = h1toh2_new(&origin.stream)) == NULL)
            goto oom;
        r = h1toh2_forward(h2, &client, &via, &t, rewrite_hooks(&rw), capture_hooks(cap), &res);
    } else {
        r = exchange_forward(&client, &origin.stream, &via, &t, rewrite_hooks(&rw),
                             capture_hooks(cap), &res);
    }
    capture_rules(cap, rewrite_applied(&rw), rewrite_notes(&rw));
    finish(cap, &origin, r < 0 && res.status == 0 ? res.error_status : res.status, res.error);
    goto out;
oom:
    capture_rules(cap, rewrite_applied(&rw), rewrite_notes(&rw));
    finish(cap, &origin, 503, "out of memory");
out:
    stream_close(&client); /* the drainer reads its end to EOF */
    if (has_drainer)
        pthread_join(drainer, NULL);
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    upstreamproxy_request_free(&proxied);
    h1toh2_free(h2); /* before the origin connection it runs over */
    origin_free(&origin);
    message_free(&req);
    ruleaction_remote_free(&remote);
    rewrite_end(&rw);
    free(target_original);
    free(new_path);
}

int replay_run(struct replay *rp, int64_t source_id, const struct intercept_edit *e,
               int64_t *new_id, char *err, size_t err_len)
{
    struct outgoing o = {0};
    struct http1_absolute_target at;
    struct capture cap;
    char client[64];
    char *path = NULL;
    bool has_new_body = e != NULL && e->has_body;
    int rc;

    *new_id = 0;
    pthread_mutex_lock(&rp->lock);
    if (source_id > 0) {
        rc = load_flow(rp, source_id, has_new_body, &o, err, err_len);
        if (rc != 0)
            goto out;
        snprintf(client, sizeof(client), "replay of #%lld", (long long)source_id);
    } else {
        rc = REPLAY_INVALID;
        if (e == NULL || e->url == NULL) {
            snprintf(err, err_len, "a new request needs a url");
            goto out;
        }
        snprintf(client, sizeof(client), "composed");
    }
    rc = REPLAY_FAILED;
    snprintf(err, err_len, "out of memory");
    if (e != NULL && e->method != NULL) {
        free(o.method);
        if ((o.method = strdup(e->method)) == NULL)
            goto out;
    }
    if (o.method == NULL && (o.method = strdup("GET")) == NULL)
        goto out;
    if (e != NULL && e->url != NULL) {
        free(o.url);
        if ((o.url = strdup(e->url)) == NULL)
            goto out;
    }
    if (has_new_body) {
        free(o.body);
        o.body = NULL;
        o.body_len = e->body_len;
        if (o.body_len > 0 && (o.body = malloc(o.body_len)) == NULL)
            goto out;
        if (o.body_len > 0)
            memcpy(o.body, e->body, o.body_len);
    }
    if (o.headers == NULL && (o.headers = strdup("")) == NULL)
        goto out;
    if (gather_fields(&o, e) < 0)
        goto out;
    rc = REPLAY_INVALID;
    if (http1_parse_absolute_target(o.url, strlen(o.url), &at) < 0) {
        snprintf(err, err_len, "the URL is not an absolute http:// or https:// URL");
        goto out;
    }
    if (o.method[0] == '\0' || strcmp(o.method, "CONNECT") == 0 ||
        strspn(o.method, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                         "!#$%&'*+-.^_`|~") != strlen(o.method)) {
        snprintf(err, err_len, "the method must be a token (and not CONNECT)");
        goto out;
    }
    if (rp->env.flows == NULL) {
        snprintf(err, err_len, "capture is off (--no-capture): a replay would leave no flow");
        goto out;
    }
    rc = REPLAY_FAILED;
    snprintf(err, err_len, "out of memory");
    path = malloc(at.path_len + 2);
    if (path == NULL)
        goto out;
    snprintf(path, at.path_len + 2, "%s%.*s", at.path_len > 0 && at.path[0] == '/' ? "" : "/",
             (int)at.path_len, at.path);
    struct message built = {
        .method = o.method,
        .method_len = strlen(o.method),
        .scheme = at.is_https ? "https" : "http",
        .authority = at.authority,
        .authority_len = at.authority_len,
        .target = path,
        .target_len = strlen(path),
        .version = 11,
        .fields = {o.items, o.count},
        .body = o.body_len > 0 || has_new_body || o.body != NULL ? MESSAGE_BODY_LENGTH
                                                                 : MESSAGE_BODY_NONE,
        .content_length = o.body_len,
        .keep_alive = false,
    };
    struct capture_start start = {
        .client = client,
        .scheme = built.scheme,
        .method = o.method,
        .host = at.host,
        .port = at.port,
        .target = path,
        .is_tls = false,
        .body_limit = rp->env.cfg->capture_limit,
        .listener = "replay",
    };
    capture_begin(&cap, rp->env.flows, &start);
    if (cap.flow != NULL)
        cap.flow->replay_of = source_id;
    send_one(rp, &at, path, o.url, &built, o.body, o.body_len, &cap);
    capture_abandon(&cap);
    if (flowstore_sync(rp->env.flows, REPLAY_SYNC_MS) != 0 ||
        flowstore_newest_of_client(rp->env.flows, client, new_id, err, err_len) != 0)
        log_warn("replay: the new flow was not written in time");
    log_info("replay: %s %s as flow %lld (%s)", o.method, o.url, (long long)*new_id, client);
    err[0] = '\0';
    rc = 0;
out:
    pthread_mutex_unlock(&rp->lock);
    free(path);
    outgoing_free(&o);
    return rc;
}
