/*
 * session: one client connection, from its first byte to its close.
 *
 * The connection's life is an explicit state machine (enum session_mode),
 * run by session_run(): the explicit proxy's request loop; a CONNECT that
 * turns the connection into a tunnel; the tunnel's request loop, plain HTTP
 * or intercepted TLS; the end. Inside a tunnel the first bytes the client
 * sends are peeked (not read), so they can still go to OpenSSL unchanged:
 *   - a TLS ClientHello: connect upstream with the client's SNI and ALPN
 *     (restricted to h2 and http/1.1), verify the origin honestly, mint a
 *     leaf from the origin's names and finish the client's handshake with
 *     it, selecting the protocol the origin chose: h2 on both sides goes to
 *     h2relay, HTTP/1.1 to the request loop. When the
 *     origin fails verification the client still gets a leaf for the name it
 *     asked for, and every request on it gets an error page naming the
 *     reason: the origin's content is never presented as trusted.
 *   - an HTTP request: proxied as plain HTTP to the tunnel's destination;
 *   - anything else: relayed raw.
 * Hosts matching --ignore-host are relayed untouched without peeking.
 *
 * Every answer tapwire makes itself (refusals, error pages, the CA page at
 * http://tapwire.invalid/) goes through answer(): it is sent, logged and
 * recorded as a flow exactly as sent, so no refusal goes unseen.
 */
#include "session.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "capage.h"
#include "capture.h"
#include "clock.h"
#include "exchange.h"
#include "h1toh2.h"
#include "h2relay.h"
#include "http1codec.h"
#include "http1.h"
#include "intercept.h"
#include "log.h"
#include "origin.h"
#include "rewrite.h"
#include "ruleaction.h"
#include "stacktrim.h"
#include "stream.h"
#include "tlsserver.h"
#include "upstream.h"

#define SESSION_IN_MAX_BYTES (HTTP1_MAX_HEAD_BYTES + STREAM_READ_CHUNK_BYTES)
/* Quiet this long, a kept-alive connection releases its buffers and stack
 * (see wait_next_request). */
#define SESSION_IDLE_GRACE_MS 200
#define SESSION_ERROR_BODY_BYTES 1200
/* A request a rule answers (mock, block) has its body read and recorded up
 * to this much, so the connection can stay open; past it the connection
 * closes after the answer. */
#define SESSION_ANSWER_DRAIN_BYTES (8 * 1024 * 1024)

enum session_mode {
    SESSION_PROXY,
    SESSION_TUNNEL_PLAIN,
    SESSION_TUNNEL_TLS,
    SESSION_TUNNEL_H2, /* h2 with the client and the origin: h2relay */
    SESSION_REVERSE,   /* a --reverse listener: every request goes to one origin */
    SESSION_END
};

struct session {
    const struct proxy_env *env;
    const struct config *cfg;
    char client_name[INET6_ADDRSTRLEN + 10];
    char client_ip[INET6_ADDRSTRLEN];
    struct stream client;
    struct origin origin;
    /* The HTTP/2 session over origin when it chose h2 and the client
     * speaks HTTP/1.1; NULL until the first such request. */
    struct h1toh2 *h1toh2;
    struct origin_settings origin_settings;
    struct exchange_timeouts t;
    /* The request being served; 4 KiB of field slots, so allocated on the
     * first request and freed while the connection idles. */
    struct http1_head *head;

    /* The destination of a tunnel (CONNECT, or an entry point that knew it). */
    char tunnel_host[HTTP1_MAX_HOST_BYTES];
    uint16_t tunnel_port;
    bool has_sni;
    char sni[256];
    bool offers_http11;
    bool offers_h2;
    struct upstream_error tunnel_error; /* status != OK: each request gets an error page */

    /* A --reverse listener's origin; NULL for every other way in. */
    const struct reverse_target *reverse;
    enum session_listener listener; /* the way the client came in */

    /* The client side's TLS facts (client_* fields only; the origin's are in
     * origin.tls). */
    struct flow_tls client_tls;
    bool client_is_tls;
};

/* One request being answered: what its log line and its flow need. */
struct request_ctx {
    char method[32];    /* "-" until a request line was read */
    const char *url;    /* "-" until known */
    const char *scheme; /* "http", "https" */
    const char *host;   /* "" until known */
    uint16_t port;
    const char *target; /* as the client sent it, may be NULL */
    int64_t started_us;
    bool is_captured; /* cap was begun (capture may still be off) */
    struct capture cap;
    /* An intercept that may hold the response: its hooks go to the
     * exchange in front of cap's. NULL: none. */
    struct intercept_response *response_hold;
};

static void request_ctx_init(struct request_ctx *rq, const struct session *s, int64_t started_us)
{
    memset(rq, 0, sizeof(*rq));
    snprintf(rq->method, sizeof(rq->method), "-");
    rq->url = "-";
    rq->scheme = s->client_is_tls ? "https" : "http";
    rq->host = s->tunnel_host;
    rq->port = s->tunnel_port;
    rq->started_us = started_us;
}

/* ---- log lines and flows ---- */

static void log_request(const struct session *s, const struct request_ctx *rq, int status,
                        uint64_t bytes, const char *error)
{
    double ms = (double)(clock_mono_us() - rq->started_us) / 1000.0;
    const char *note = s->origin.insecure_note;

    if (error != NULL && error[0] != '\0')
        log_info("%s %s %s %d %lluB %.1fms error: %s%s%s", s->client_name, rq->method, rq->url,
                 status, (unsigned long long)bytes, ms, error, note[0] ? "; " : "", note);
    else
        log_info("%s %s %s %d %lluB %.1fms%s%s", s->client_name, rq->method, rq->url, status,
                 (unsigned long long)bytes, ms, note[0] ? " warning: " : "", note);
}

/* Begins rq's flow with what is known of the request so far. */
static void begin_capture(struct session *s, struct request_ctx *rq, const char *scheme,
                          const char *target)
{
    struct capture_start start = {
        .client = s->client_name,
        .scheme = scheme,
        .method = rq->method,
        .host = rq->host,
        .port = rq->port,
        .target = target,
        .is_tls = s->client_is_tls,
        .body_limit = s->cfg->capture_limit,
        .listener = session_listener_name(s->listener),
    };

    capture_begin(&rq->cap, s->env->flows, &start);
    rq->is_captured = true;
}

/* The TLS facts of both sides as a flow records them: the client side's
 * own, the origin's borrowed from s->origin (valid while it stays open). */
static void both_sides_tls(const struct session *s, struct flow_tls *tls)
{
    *tls = s->client_tls;
    memcpy(tls->upstream_version, s->origin.tls.version, sizeof(tls->upstream_version));
    memcpy(tls->upstream_cipher, s->origin.tls.cipher, sizeof(tls->upstream_cipher));
    tls->cert_subject = s->origin.tls.cert_subject;
    tls->cert_issuer = s->origin.tls.cert_issuer;
    tls->cert_sans = s->origin.tls.cert_sans;
    tls->cert_not_after = s->origin.tls.cert_not_after;
    tls->verification = s->origin.tls.verification;
    tls->strings = NULL;
}

/* Hands rq's flow to the store with the TLS facts of both sides and, when
 * the origin connection was opened for this exchange, its open times. */
static void finish_capture(struct session *s, struct request_ctx *rq, int status, const char *error)
{
    struct flow_tls tls;
    struct capture_connection conn = {.tls = &tls};

    if (!capture_is_on(&rq->cap))
        return; /* capture off: no facts to gather for a flow nobody keeps */
    /* Borrowed: capture_finish() copies them. */
    both_sides_tls(s, &tls);
    origin_take_open_times(&s->origin, &conn.connected_at_us, &conn.tls_done_at_us);
    capture_finish(&rq->cap, &conn, status, error);
}

/* ---- tapwire's own answers ---- */

struct own_answer {
    int status;
    const char *reason_phrase;
    const char *fields; /* header lines, "Name: value\r\n" each */
    const void *body;
    size_t body_len;
    bool is_head;      /* HEAD: the body is announced, not sent */
    bool is_closing;   /* the connection ends after it */
    const char *error; /* for the log and the flow; NULL for a normal answer */
};

/*
 * The one path for every answer tapwire makes itself: sends it (a closing
 * answer lingers, RFC 9112 9.6, since the client may still be sending what
 * was refused), writes the log line and records the flow as sent. Returns
 * whether the connection can carry another request.
 */
static bool answer(struct session *s, struct request_ctx *rq, const struct own_answer *a)
{
    char status_line[96];
    int timeout = s->t.io_ms;
    int r;

    snprintf(status_line, sizeof(status_line), "HTTP/1.1 %d %s\r\n", a->status, a->reason_phrase);
    if (a->is_closing)
        stream_linger_on_close(&s->client);
    r = stream_putstr(&s->client, status_line, timeout);
    if (r == STREAM_OK)
        r = stream_putstr(&s->client, a->fields, timeout);
    if (r == STREAM_OK)
        r = stream_put(&s->client, "\r\n", 2, timeout);
    if (r == STREAM_OK && !a->is_head)
        r = stream_put(&s->client, a->body, a->body_len, timeout);
    if (r == STREAM_OK)
        r = stream_flush(&s->client, timeout);
    log_request(s, rq, a->status, a->is_head ? 0 : a->body_len, a->error);
    if (!rq->is_captured)
        begin_capture(s, rq, rq->scheme, rq->target);
    capture_answer(&rq->cap, a->status, a->reason_phrase, a->fields, a->body,
                   a->is_head ? 0 : a->body_len);
    finish_capture(s, rq, a->status, a->error);
    return r == STREAM_OK && !a->is_closing;
}

/* A short text/plain page naming why, as every refusal and error gets;
 * extra (may be "") are more header lines ("Name: value\r\n"). */
static bool refuse_with(struct session *s, struct request_ctx *rq, int status, const char *reason,
                        bool is_closing, const char *extra)
{
    char body[SESSION_ERROR_BODY_BYTES];
    char fields[256];
    int len = snprintf(body, sizeof(body), "%d %s\n\ntapwire: %s\n", status,
                       http1_reason_phrase(status), reason);
    size_t body_len = len < 0 ? 0 : (size_t)len >= sizeof(body) ? sizeof(body) - 1 : (size_t)len;
    struct own_answer a = {
        .status = status,
        .reason_phrase = http1_reason_phrase(status),
        .fields = fields,
        .body = body,
        .body_len = body_len,
        .is_closing = is_closing,
        .error = reason,
    };

    snprintf(fields, sizeof(fields),
             "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
             "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s%s",
             body_len, is_closing ? "Connection: close\r\n" : "", extra);
    return answer(s, rq, &a);
}

static bool refuse(struct session *s, struct request_ctx *rq, int status, const char *reason,
                   bool is_closing)
{
    return refuse_with(s, rq, status, reason, is_closing, "");
}

/* ---- where the client wants to go ---- */

/* The proxy must not connect to itself (a loop until the connection cap is
 * reached), nor to its dashboard: a page proxied through us must not reach
 * the dashboard from the user's browser. This is the early check on names
 * ("localhost"); what stops every other spelling is the guard, which
 * upstream_connect_tcp() applies to each resolved address. Returns what
 * host:port is when it is tapwire itself, for the refusal, else NULL. */
static const char *self_target(const struct session *s, const char *host, uint16_t port)
{
    bool is_ours = strcasecmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
                   strcmp(host, "::1") == 0 || strcasecmp(host, s->cfg->listen_host) == 0;

    if (port == s->cfg->listen_port && is_ours)
        return "the proxy itself";
    if (s->cfg->dashboard_enabled && port == s->cfg->dashboard_port &&
        (is_ours || strcasecmp(host, s->cfg->dashboard_host) == 0))
        return "tapwire's dashboard (open it directly, not through the proxy)";
    return NULL;
}

/* The origin-form target to send: the parsed path, "/" when it is empty or
 * starts with a query. Caller frees; NULL when out of memory. */
static char *origin_form(const char *path, size_t len)
{
    bool needs_slash = len == 0 || path[0] != '/';
    char *out = malloc(len + 2);

    if (out == NULL)
        return NULL;
    if (needs_slash)
        out[0] = '/';
    memcpy(out + needs_slash, path, len);
    out[len + needs_slash] = '\0';
    return out;
}

/* http://tapwire.invalid/: the CA and how to trust it, served by the proxy
 * itself so a phone that only has the proxy set can fetch the CA. The name
 * is reserved (RFC 6761), so it can never be a real site. */
static bool serve_local_page(struct session *s, struct request_ctx *rq, const char *path,
                             size_t head_len)
{
    struct capage_response resp = {0};
    const struct http1_head *h = s->head;
    char err[256], url[300];
    char *fields = NULL;
    size_t fields_len;
    bool keep = false;
    bool keep_alive = h->keep_alive && h->framing == HTTP1_BODY_NONE;

    stream_consume(&s->client, head_len);
    snprintf(url, sizeof(url), "http://%s%s", CAPAGE_LOCAL_HOST, path);
    rq->url = url;
    rq->host = CAPAGE_LOCAL_HOST;
    rq->port = 80;
    if (capage_serve(s->env->ca, rq->method, path, &resp, err, sizeof(err)) < 0) {
        refuse(s, rq, 500, err, true);
        goto out;
    }
    fields_len = strlen(resp.headers != NULL ? resp.headers : "") + 64;
    fields = malloc(fields_len);
    if (fields == NULL) {
        refuse(s, rq, 503, "out of memory", true);
        goto out;
    }
    snprintf(fields, fields_len, "Content-Length: %zu\r\n%s%s", resp.body_len,
             keep_alive ? "" : "Connection: close\r\n", resp.headers != NULL ? resp.headers : "");
    struct own_answer a = {
        .status = resp.status,
        .reason_phrase = resp.reason,
        .fields = fields,
        .body = resp.body,
        .body_len = resp.body_len,
        .is_head = strcmp(rq->method, "HEAD") == 0,
        .is_closing = !keep_alive,
    };
    keep = answer(s, rq, &a);
out:
    free(fields);
    capage_response_free(&resp);
    return keep;
}

/* ---- one exchange ---- */

/* The URL as the client sees it: in a tunnel, the site is the one named by
 * Host (else SNI), not the address the tunnel goes to. */
static char *shown_url(const struct session *s, enum session_mode mode, bool is_tls,
                       const char *host, uint16_t port, const char *authority, size_t authority_len,
                       const char *path)
{
    const struct message_field *hh =
        mode == SESSION_PROXY ? NULL : http1_find_header(s->head, "Host");
    const char *name = s->has_sni ? s->sni : host;
    bool v6 = strchr(host, ':') != NULL;
    char shown[300];
    size_t len;
    char *url;

    if (authority != NULL && authority_len < sizeof(shown))
        snprintf(shown, sizeof(shown), "%.*s", (int)authority_len, authority);
    else if (hh && hh->value_len > 0 && hh->value_len < sizeof(shown))
        snprintf(shown, sizeof(shown), "%.*s", (int)hh->value_len, hh->value);
    else if (port == (is_tls ? 443 : 80))
        snprintf(shown, sizeof(shown), "%s%s%s", v6 ? "[" : "", name, v6 ? "]" : "");
    else
        snprintf(shown, sizeof(shown), "%s%s%s:%u", v6 ? "[" : "", name, v6 ? "]" : "", port);
    len = strlen(shown) + strlen(path) + 16;
    url = malloc(len);
    if (url != NULL)
        snprintf(url, len, "%s://%s%s", is_tls ? "https" : "http", shown, path);
    return url;
}

/* What serve_one() learned of the request's destination. */
struct destination {
    bool is_tls;
    char host[HTTP1_MAX_HOST_BYTES];
    uint16_t port;
    const char *authority; /* absolute-form: the Host value to send; NULL in a tunnel */
    size_t authority_len;
    char named[HTTP1_MAX_HOST_BYTES + 8]; /* a tunnel's site, when the client named none */
    char *path;                           /* owned: origin-form */
    struct reverse_forwarded forwarded;   /* --reverse-forwarded: the fields sent */
    bool is_remapped;                     /* a map-remote rule chose it: verified by its own name */
};

/*
 * Where the request in s->head goes: parsed from an absolute-form target
 * (explicit proxy) or the tunnel's destination. Returns 0, 1 when it was
 * answered here (refused, or the CA page) with *keep set, or -1 when out of
 * memory.
 */
static int route(struct session *s, enum session_mode mode, struct request_ctx *rq, size_t head_len,
                 struct destination *d, bool *keep)
{
    const struct http1_head *h = s->head;
    struct http1_absolute_target at;
    const char *self;

    rq->target = NULL;
    if (mode == SESSION_PROXY) {
        if (http1_parse_absolute_target(h->target, h->target_len, &at) < 0) {
            *keep = refuse(s, rq, 400,
                           h->target_len > 0 && h->target[0] == '/'
                               ? "this is a proxy: send absolute-form requests "
                                 "(GET http://host/path) or CONNECT"
                               : "invalid request target",
                           true);
            return 1;
        }
        d->is_tls = at.is_https;
        memcpy(d->host, at.host, sizeof(d->host));
        d->port = at.port;
        d->authority = at.authority;
        d->authority_len = at.authority_len;
        d->path = origin_form(at.path, at.path_len);
        rq->host = d->host;
        rq->port = d->port;
        rq->scheme = d->is_tls ? "https" : "http";
        if (d->path == NULL)
            return -1;
        if ((self = self_target(s, d->host, d->port)) != NULL) {
            char why[160];
            snprintf(why, sizeof(why), "refusing to proxy a request to %s", self);
            *keep = refuse(s, rq, 508, why, true);
            return 1;
        }
        if (!d->is_tls && capage_is_local_host(d->host)) {
            *keep = serve_local_page(s, rq, d->path, head_len);
            return 1;
        }
        return 0;
    }
    d->is_tls = mode == SESSION_TUNNEL_TLS;
    snprintf(d->host, sizeof(d->host), "%s", s->tunnel_host);
    d->port = s->tunnel_port;
    if (mode == SESSION_REVERSE) {
        /* The origin's scheme, whatever the client spoke to tapwire, and
         * its authority as the Host it gets. */
        d->is_tls = s->reverse->is_tls;
        d->authority = s->reverse->authority;
        d->authority_len = strlen(s->reverse->authority);
        rq->scheme = d->is_tls ? "https" : "http";
    }
    if (h->target_len > 0 && (h->target[0] == '/' || h->target[0] == '*')) {
        d->path = mode == SESSION_REVERSE ? reverse_map_target(s->reverse, h->target, h->target_len)
                                          : strndup(h->target, h->target_len);
    } else if (http1_parse_absolute_target(h->target, h->target_len, &at) == 0) {
        d->path = origin_form(at.path, at.path_len);
        if (d->path != NULL && mode == SESSION_REVERSE) {
            char *mapped = reverse_map_target(s->reverse, d->path, strlen(d->path));
            free(d->path);
            d->path = mapped;
        }
    } else {
        *keep = refuse(s, rq, 400, "invalid request target", true);
        return 1;
    }
    return d->path == NULL ? -1 : 0;
}

/*
 * The request as it goes on: the client's head as a message with the
 * destination's target (and, for absolute-form, authority: RFC 9112 3.2.2),
 * after the request rules (URL, then header fields). *req gets an owned
 * copy; *rewritten tells whether header rules changed the fields (view then
 * still holds them as received). The URL rules may replace d->path (the old
 * one goes to *target_original). Returns 0, or -1 when out of memory.
 */
static int build_request(struct session *s, struct destination *d, const char *site,
                         struct rewrite *rw, struct message *view, struct message *req,
                         bool *rewritten, char **target_original)
{
    char *new_path = NULL;
    int changed = 0;

    http1codec_view(s->head, view);
    if (s->reverse != NULL && s->cfg->is_reverse_forwarded &&
        reverse_forwarded_fields(&view->fields, s->client_ip, s->client_is_tls, &d->forwarded,
                                 &view->fields) < 0)
        return -1;
    if (d->authority == NULL && message_find(view, "Host") == NULL) {
        /* An HTTP/1.0 request may come without Host, but the head the
         * origin gets is HTTP/1.1, which must have one (RFC 9112 3.2): the
         * site the tunnel goes to names it. */
        bool v6 = strchr(site, ':') != NULL;
        if (d->port == (d->is_tls ? 443 : 80))
            snprintf(d->named, sizeof(d->named), "%s%s%s", v6 ? "[" : "", site, v6 ? "]" : "");
        else
            snprintf(d->named, sizeof(d->named), "%s%s%s:%u", v6 ? "[" : "", site, v6 ? "]" : "",
                     d->port);
        d->authority = d->named;
        d->authority_len = strlen(d->named);
    }
    view->scheme = d->is_tls ? "https" : "http";
    view->authority = d->authority;
    view->authority_len = d->authority_len;
    if (rewrite_begin(rw, s->env->rules, view, site, d->path, s->cfg->rewrite_limit,
                      s->cfg->rewrite_memory) < 0 ||
        rewrite_url(rw, &new_path) < 0)
        return -1;
    if (new_path) {
        *target_original = d->path;
        d->path = new_path;
    }
    view->target = d->path;
    view->target_len = strlen(d->path);
    if (rewrite_hooks(rw) && (changed = exchange_rewrite_head(rewrite_hooks(rw), view, req)) < 0)
        return -1;
    *rewritten = changed > 0;
    return changed > 0 ? 0 : message_copy(req, view, NULL);
}

/* Opens the origin for the request unless the open one serves it. */
static int connect_origin(struct session *s, enum session_mode mode, const struct destination *d,
                          bool accepts_h2, struct upstream_error *err)
{
    bool is_client_sni = mode == SESSION_TUNNEL_TLS && !d->is_remapped;
    struct origin_target target = {
        .host = d->host,
        .port = d->port,
        .is_tls = d->is_tls,
        .sni = d->is_tls ? (is_client_sni ? (s->has_sni ? s->sni : NULL) : d->host) : NULL,
        .verify_name = is_client_sni && s->has_sni ? s->sni : d->host,
        .offers_http11 = s->offers_http11,
        .accepts_h2_only = accepts_h2 && d->is_tls && !s->cfg->no_http2,
        .is_plain_http = true,
    };

    /* A new connection: any HTTP/2 session was the old one's. */
    h1toh2_free(s->h1toh2);
    s->h1toh2 = NULL;
    return origin_open(&s->origin, &s->origin_settings, &target, err, NULL);
}

/* Sends req and relays the response, retrying once on a fresh origin
 * connection when a kept-alive one turned out closed. */
static void forward(struct session *s, enum session_mode mode, const struct destination *d,
                    struct request_ctx *rq, const struct message *req, struct rewrite *rw,
                    struct exchange_result *res, bool *keep)
{
    bool is_reused = origin_is_open_to(&s->origin, d->host, d->port, d->is_tls);
    bool was_h2 = is_reused && s->origin.is_h2;

    /* An HTTP/2 origin connection that said GOAWAY takes no more streams. */
    if (was_h2 && s->h1toh2 != NULL && !h1toh2_is_usable(s->h1toh2, &s->origin.stream))
        is_reused = false;
    /* An upgrade (WebSocket) has no HTTP/2 form for h1toh2 to give it: it
     * goes on a connection that offers the origin http/1.1 alone. An
     * origin that chose h2 before and now chooses nothing speaks only h2. */
    if (req->is_upgrade && was_h2)
        is_reused = false;

    for (int attempt = 0; attempt < 2; attempt++) {
        if (!is_reused) {
            struct upstream_error uerr;
            /* h2 is offered after http/1.1 only to an origin tapwire
             * chose, a --reverse listener's or a map-remote's: the
             * client of a tunnel chose its own and its ALPN is mirrored. */
            bool accepts_h2 = !req->is_upgrade && (mode == SESSION_REVERSE || d->is_remapped);
            if (connect_origin(s, mode, d, accepts_h2, &uerr) < 0) {
                bool close = req->body != MESSAGE_BODY_NONE || !req->keep_alive;
                *keep = refuse(s, rq, upstream_error_http_status(&uerr), uerr.reason, close);
                return;
            }
            if (req->is_upgrade && was_h2 && !s->origin.is_http11_chosen) {
                origin_close(&s->origin);
                *keep = refuse(s, rq, 502,
                               "the origin speaks only HTTP/2, where an HTTP/1.1 upgrade "
                               "(WebSocket) cannot go (RFC 9113 8.6)",
                               true);
                return;
            }
            if (s->origin.insecure_note[0] != '\0')
                log_warn("%s: upstream %s:%u %s", s->client_name, d->host, d->port,
                         s->origin.insecure_note);
        }
        /* Through an upstream proxy a plain request names its origin. */
        struct message via = *req;
        struct upstreamproxy_request proxied = {0};
        if (s->origin.is_proxied_http &&
            upstreamproxy_prepare(s->env->proxy, req, d->host, d->port, &via, &proxied) < 0) {
            *keep = refuse(s, rq, 503, "out of memory", true);
            return;
        }
        const struct exchange_capture *hooks =
            rq->response_hold != NULL ? &rq->response_hold->hooks : capture_hooks(&rq->cap);
        int r;
        if (s->origin.is_h2) {
            /* The origin chose h2 on an HTTP/1.1 client's behalf: each
             * request is one stream of the connection's HTTP/2 session. */
            if (s->h1toh2 == NULL)
                s->h1toh2 = h1toh2_new(&s->origin.stream);
            if (s->h1toh2 == NULL) {
                upstreamproxy_request_free(&proxied);
                *keep = refuse(s, rq, 503, "out of memory", true);
                return;
            }
            r = h1toh2_forward(s->h1toh2, &s->client, &via, &s->t, rewrite_hooks(rw), hooks, res);
        } else {
            r = exchange_forward(&s->client, &s->origin.stream, &via, &s->t, rewrite_hooks(rw),
                                 hooks, res);
        }
        upstreamproxy_request_free(&proxied);
        if (r < 0 && res->upstream_stale && is_reused) {
            /* A kept-alive origin connection may have been closed by the
             * origin just before we used it; a request without a body is
             * safe to send again on a fresh one (RFC 9112 9.3.1). */
            is_reused = false;
            continue;
        }
        if (r < 0 && res->status == 0) {
            /* Through an upstream proxy, the proxy is what failed: named. */
            char why[EXCHANGE_ERROR_BYTES + 300];
            snprintf(why, sizeof(why), "%s%s%s%s",
                     s->origin.is_proxied_http ? "upstream proxy " : "",
                     s->origin.is_proxied_http ? upstreamproxy_name(s->env->proxy) : "",
                     s->origin.is_proxied_http ? ": " : "", res->error);
            capture_rules(&rq->cap, rewrite_applied(rw), rewrite_notes(rw));
            origin_close(&s->origin);
            *keep = refuse(s, rq, res->error_status, why, true);
            return;
        }
        break;
    }
    log_request(s, rq, res->status, res->response_bytes, res->error);
    capture_rules(&rq->cap, rewrite_applied(rw), rewrite_notes(rw));
    finish_capture(s, rq, res->status, res->error);
    if (!res->upstream_reusable)
        origin_close(&s->origin);
    *keep = res->client_keep_alive;
}

/* ---- intercept ---- */

/* Reads req's whole body (a Content-Length within INTERCEPT_MAX_BODY_BYTES)
 * off the client to hold it, answering its Expect: 100-continue first.
 * Returns 0 with *body (caller frees), or -1 when it did not arrive. */
static int read_held_body(struct session *s, struct message *req, unsigned char **body, size_t *len)
{
    size_t want = (size_t)req->content_length, got = 0;
    unsigned char *buf = malloc(want > 0 ? want : 1);

    if (buf == NULL)
        return -1;
    if (req->expect_continue && req->version >= 11) {
        if (stream_putstr(&s->client, "HTTP/1.1 100 Continue\r\n\r\n", s->t.io_ms) != STREAM_OK ||
            stream_flush(&s->client, s->t.io_ms) != STREAM_OK)
            goto fail;
    }
    req->expect_continue = false;
    while (got < want) {
        ssize_t n = stream_read(&s->client, buf + got, want - got, s->t.io_ms);
        if (n <= 0)
            goto fail;
        got += (size_t)n;
    }
    *body = buf;
    *len = want;
    return 0;
fail:
    free(buf);
    return -1;
}

/*
 * A resume's edits on *req (replaced by an owned copy) and the flow: the
 * method, the path of the URL (intercept_resume() checked that the origin
 * stays), the fields, the body (*body, the held one, swapped for the
 * edited one). Returns 0, or -1 when out of memory.
 */
static int apply_request_edit(struct request_ctx *rq, struct destination *d, struct message *req,
                              struct intercept_edit *e, unsigned char **body, size_t *body_len)
{
    struct message view = *req, out;
    struct message_field *items = intercept_edit_message_fields(e);
    struct message_fields fields = {items, items != NULL ? e->field_count : 0};
    struct http1_absolute_target at;
    char *path = NULL;
    char note[96];
    int rc = -1;

    if (e->has_fields && e->field_count > 0 && items == NULL)
        goto out;
    if (e->method != NULL) {
        snprintf(note, sizeof(note), "intercept: the method was %.*s", (int)req->method_len,
                 req->method);
        capture_note(&rq->cap, NULL, note);
        view.method = e->method;
        view.method_len = strlen(e->method);
    }
    if (e->url != NULL) {
        if (http1_parse_absolute_target(e->url, strlen(e->url), &at) < 0 ||
            (path = origin_form(at.path, at.path_len)) == NULL)
            goto out;
        view.target = path;
        view.target_len = strlen(path);
    }
    if (e->has_body) {
        view.body = MESSAGE_BODY_LENGTH;
        view.content_length = e->body_len;
    }
    if (message_copy(&out, &view, e->has_fields ? &fields : NULL) < 0)
        goto out;
    capture_request_edited(&rq->cap, &out, e->has_body ? *body : NULL, e->has_body ? *body_len : 0);
    message_free(req);
    *req = out;
    if (path != NULL) {
        free(d->path);
        d->path = path;
        path = NULL;
    }
    if (e->has_body) {
        free(*body);
        *body = e->body;
        *body_len = e->body_len;
        e->body = NULL;
        e->body_len = 0;
    }
    rc = 0;
out:
    free(path);
    free(items);
    return rc;
}

/*
 * The intercept (--intercept, the dashboard's filter): a request that
 * matches waits here, with its body when it can be held (none, or a
 * Content-Length within INTERCEPT_MAX_BODY_BYTES), until it is resumed,
 * edited or not, dropped (tapwire's error page), timed out (unchanged),
 * or its client hangs up. A filter that reads the response is set up in
 * *resp to be matched again at the response head. A held body goes back
 * in front of the client's stream, so the exchange reads and frames it
 * like any other. Returns 0 to forward *req, 1 when the exchange ended
 * here (*keep set).
 */
static int hold_request(struct session *s, struct request_ctx *rq, struct destination *d,
                        struct message *req, struct intercept_response *resp, bool *keep)
{
    struct intercept_filter *f = intercept_acquire(s->env->intercept);
    const char *scheme = d->is_tls ? "https" : "http";
    bool can_hold_body =
        req->body == MESSAGE_BODY_NONE ||
        (req->body == MESSAGE_BODY_LENGTH && req->content_length <= INTERCEPT_MAX_BODY_BYTES);
    bool has_body = req->body == MESSAGE_BODY_NONE;
    unsigned char *body = NULL;
    size_t body_len = 0;
    struct flow *flow = NULL;
    struct intercept_edit edit = {0};
    int64_t waited = 0;
    char note[160];
    int rc = 0;

    if (f == NULL)
        return 0;
    if (can_hold_body && !has_body && intercept_filter_reads_request_body(f)) {
        if (read_held_body(s, req, &body, &body_len) < 0)
            goto no_body;
        has_body = true;
    }
    flow = intercept_request_flow(req, scheme, rq->host, rq->port, body, body_len);
    if (flow == NULL || !intercept_filter_match(f, flow))
        goto response;
    if (can_hold_body && !has_body) {
        if (read_held_body(s, req, &body, &body_len) < 0)
            goto no_body;
        has_body = true;
    }
    struct intercept_message msg = {
        .method = flow->method,
        .url = (char *)rq->url,
        .headers = flow->request_headers,
        .has_body = has_body,
        .body = body,
        .body_len = body_len,
    };
    enum intercept_outcome outcome =
        intercept_hold(s->env->intercept, &msg, s->client.fd, s->env->stop_fd, &edit, &waited);
    bool is_edited = outcome == INTERCEPT_RESUMED && !intercept_edit_is_empty(&edit);
    intercept_outcome_note(outcome, is_edited, waited, note, sizeof(note));
    capture_note(&rq->cap, is_edited ? "intercept" : NULL, note);
    if (outcome == INTERCEPT_DROPPED) {
        *keep = refuse(s, rq, 502, "dropped while intercepted", true);
        rc = 1;
        goto out;
    }
    if (outcome == INTERCEPT_CLIENT_GONE) {
        log_request(s, rq, 0, 0, note);
        finish_capture(s, rq, 0, "the client hung up while its request was intercepted");
        *keep = false;
        rc = 1;
        goto out;
    }
    if (is_edited && apply_request_edit(rq, d, req, &edit, &body, &body_len) < 0) {
        *keep = refuse(s, rq, 503, "out of memory", true);
        rc = 1;
        goto out;
    }
response:
    if (intercept_filter_is_response(f) && flow != NULL) {
        intercept_response_begin(resp, s->env->intercept, f, flow, &rq->cap, rq->url, s->client.fd,
                                 s->env->stop_fd);
        rq->response_hold = resp;
        f = NULL;
        flow = NULL;
    }
    if (has_body && (body_len > 0 || req->body == MESSAGE_BODY_LENGTH)) {
        if (stream_unshift(&s->client, body, body_len) < 0) {
            *keep = refuse(s, rq, 503, "out of memory", true);
            rc = 1;
            goto out;
        }
        req->body = MESSAGE_BODY_LENGTH;
        req->content_length = body_len;
    }
    goto out;
no_body:
    *keep = refuse(s, rq, 400, "the request body did not arrive whole", true);
    rc = 1;
out:
    intercept_edit_free(&edit);
    intercept_filter_release(f);
    flow_free(flow);
    free(body);
    return rc;
}

/* ---- actions of rules: mock, block, map-remote ---- */

/*
 * map-remote: the request goes to the rule's origin instead, verified by
 * that origin's own name like any other (connect_origin()), through the
 * same destination guard. *req and d become what is sent (ruleaction.h);
 * the old target goes to *target_original unless a URL rule set one.
 * *note gets "asked for URL, sent to URL" for the flow (caller frees).
 * Returns 0, or -1 when out of memory or the target would be too long.
 */
static int map_remote(struct destination *d, const struct rule *act, const char *asked,
                      struct message *req, char **target_original, char **note)
{
    struct ruleaction_remote r;

    if (ruleaction_map_remote(act, asked, req, d->path, &r) < 0)
        return -1;
    d->is_tls = r.is_tls;
    snprintf(d->host, sizeof(d->host), "%s", r.host);
    d->port = r.port;
    d->authority = r.authority;
    d->authority_len = strlen(r.authority);
    d->is_remapped = true;
    message_free(req);
    *req = r.req;
    memset(&r.req, 0, sizeof(r.req));
    if (*target_original == NULL && strcmp(d->path, r.target) != 0)
        *target_original = d->path;
    else
        free(d->path);
    d->path = r.target;
    r.target = NULL;
    *note = r.note;
    r.note = NULL;
    ruleaction_remote_free(&r);
    return 0;
}

/*
 * Reads the body of a request a rule answers, recording it like any
 * request body, so that the connection can carry the next request.
 * Returns true when the whole body was read; false (the connection must
 * close after the answer) when it was larger than
 * SESSION_ANSWER_DRAIN_BYTES, broke off, or the client waits for a
 * 100 Continue it will not get (RFC 9110 10.1.1: it then sends nothing).
 */
static bool drain_request_body(struct session *s, struct request_ctx *rq, const struct message *req)
{
    const struct exchange_capture *cap = capture_hooks(&rq->cap);
    struct http1codec_reader reader;
    uint64_t total = 0;
    bool is_whole = false;
    const char *data;
    size_t len;
    int r;

    if (req->body == MESSAGE_BODY_NONE)
        return true;
    if (req->expect_continue || req->body == MESSAGE_BODY_UNTIL_CLOSE)
        return false;
    if (req->body == MESSAGE_BODY_LENGTH && req->content_length > SESSION_ANSWER_DRAIN_BYTES)
        return false;
    if (http1codec_reader_init(&reader, &s->client, req->body, req->content_length) < 0)
        return false;
    while ((r = reader.source.next(&reader.source, s->t.io_ms, &data, &len)) == 1) {
        total += len;
        if (total > SESSION_ANSWER_DRAIN_BYTES)
            break;
        if (cap != NULL && cap->ops->body != NULL)
            cap->ops->body(cap->arg, EXCHANGE_REQUEST, data, len);
    }
    is_whole = r == 0;
    http1codec_reader_free(&reader);
    return is_whole;
}

/*
 * mock and block: tapwire answers the request itself (ruleaction.h),
 * through answer(), so the flow records the answer exactly as sent and
 * names the rule. The origin is never contacted. block close ends the
 * connection instead. Returns whether the connection can carry another
 * request.
 */
static bool answer_by_rule(struct session *s, struct request_ctx *rq, const struct rule *act,
                           const struct message *req, struct rewrite *rw)
{
    struct ruleaction_answer ra;
    bool is_whole, is_closing, keep;

    capture_rules(&rq->cap, rewrite_applied(rw), rewrite_notes(rw));
    if (act->is_close) {
        /* Nothing is sent: the client sees the connection end. */
        if (ruleaction_answer(act, true, &ra) == 0) {
            capture_note(&rq->cap, NULL, ra.why);
            log_request(s, rq, 0, 0, ra.why);
            finish_capture(s, rq, 0, ra.why);
        }
        ruleaction_answer_free(&ra);
        return false;
    }
    is_whole = drain_request_body(s, rq, req);
    is_closing = !is_whole || !req->keep_alive;
    if (ruleaction_answer(act, is_closing, &ra) < 0) {
        ruleaction_answer_free(&ra);
        return refuse(s, rq, 503, "out of memory", true);
    }
    capture_note(&rq->cap, NULL, ra.why);
    struct own_answer a = {
        .status = ra.status,
        .reason_phrase = ra.reason_phrase,
        .fields = ra.fields,
        .body = ra.body,
        .body_len = ra.body_len,
        .is_head = strcmp(rq->method, "HEAD") == 0,
        .is_closing = is_closing,
        .error = ra.is_block ? ra.why : NULL,
    };
    keep = answer(s, rq, &a);
    ruleaction_answer_free(&ra);
    return keep;
}

/* One exchange after the head was parsed. Returns true to keep serving. */
static bool serve_one(struct session *s, enum session_mode mode, size_t head_len, int64_t started)
{
    const struct http1_head *h = s->head;
    struct request_ctx rq;
    struct destination d = {0};
    struct message view, req = {0};
    struct exchange_result res = {0};
    struct rewrite rw = {0};
    struct intercept_response held = {0};
    bool rewritten = false;
    char *target_original = NULL;
    char *url = NULL;
    char *remap_note = NULL;
    const struct rule *act = NULL;
    bool keep = false;
    int routed;

    request_ctx_init(&rq, s, started);
    snprintf(rq.method, sizeof(rq.method), "%.*s", (int)(h->method_len < 31 ? h->method_len : 31),
             h->method);
    routed = route(s, mode, &rq, head_len, &d, &keep);
    if (routed != 0)
        goto out;
    if (h->method_len == 7 && memcmp(h->method, "CONNECT", 7) == 0) {
        keep = refuse(s, &rq, 400, "CONNECT inside a tunnel is not supported", true);
        goto out;
    }
    if (h->framing == HTTP1_BODY_CHUNKED && !http1codec_has_only_chunked(h)) {
        keep = refuse(s, &rq, 501, "transfer codings other than chunked are not supported", true);
        goto out;
    }
    url = shown_url(s, mode, d.is_tls, d.host, d.port, d.authority, d.authority_len, d.path);
    if (url == NULL)
        goto out;
    rq.url = url;
    const char *site =
        mode == SESSION_PROXY || mode == SESSION_REVERSE ? d.host : (s->has_sni ? s->sni : d.host);
    if (build_request(s, &d, site, &rw, &view, &req, &rewritten, &target_original) < 0)
        goto out;
    act = rewrite_action(&rw);
    if (act != NULL && act->target == RULES_TARGET_MAP_REMOTE) {
        if (map_remote(&d, act, url, &req, &target_original, &remap_note) < 0) {
            keep = refuse(s, &rq, 500, "map-remote: out of memory, or the target too long", true);
            goto out;
        }
        site = d.host;
    }
    rq.host = site;
    rq.port = d.port;
    begin_capture(s, &rq, d.is_tls ? "https" : "http", d.path);
    capture_request(&rq.cap, &req, rewritten || d.is_remapped ? &view : NULL, target_original);
    target_original = NULL;
    stream_consume(&s->client, head_len);
    h = NULL; /* its bytes are gone, and view's with them */

    if (act != NULL && act->target != RULES_TARGET_MAP_REMOTE) {
        keep = answer_by_rule(s, &rq, act, &req, &rw);
        goto out;
    }
    if (d.is_remapped) {
        const char *self = self_target(s, d.host, d.port);

        capture_note(&rq.cap, NULL, remap_note);
        if (self != NULL) {
            char why[160];

            snprintf(why, sizeof(why), "map-remote: refusing to send a request to %s", self);
            keep = refuse(s, &rq, 508, why, true);
            goto out;
        }
    }
    if (s->tunnel_error.status != UPSTREAM_OK && !d.is_remapped) {
        bool close = req.body != MESSAGE_BODY_NONE || !req.keep_alive;
        keep = refuse(s, &rq, upstream_error_http_status(&s->tunnel_error), s->tunnel_error.reason,
                      close);
        goto out;
    }
    if (s->env->intercept != NULL && hold_request(s, &rq, &d, &req, &held, &keep) != 0)
        goto out;
    forward(s, mode, &d, &rq, &req, &rw, &res, &keep);
out:
    intercept_response_end(&held);
    capture_abandon(&rq.cap);
    rewrite_end(&rw);
    free(target_original);
    free(remap_note);
    message_free(&req);
    reverse_forwarded_free(&d.forwarded);
    free(d.path);
    free(url);
    return keep;
}

/* ---- the request loop ---- */

/*
 * Waits for the next request on a kept-alive connection. Returns false when
 * the connection should end (idle timeout, shutdown). A connection that
 * stays quiet for SESSION_IDLE_GRACE_MS gives back what only a busy
 * connection needs: its stream buffers and the stack pages its thread
 * touched (a TLS handshake goes deep). A busy one keeps them, so back-to-back
 * requests cost no free/malloc and no madvise. The grace counts towards the
 * idle timeout.
 */
static bool wait_next_request(struct session *s)
{
    int idle_ms = s->t.idle_ms;
    int grace_ms =
        idle_ms >= 0 && idle_ms < SESSION_IDLE_GRACE_MS ? idle_ms : SESSION_IDLE_GRACE_MS;
    int r = stream_wait_readable(&s->client, grace_ms);

    if (r != STREAM_TIMEOUT)
        return r == STREAM_OK;
    stream_release_idle(&s->client);
    stream_release_idle(&s->origin.stream);
    free(s->head);
    s->head = NULL;
    stacktrim_release();
    return stream_wait_readable(&s->client, idle_ms < 0 ? -1 : idle_ms - grace_ms) == STREAM_OK;
}

static enum session_mode open_tunnel(struct session *s, size_t head_len, int64_t started);

/* Serves requests in mode until the connection ends, or, in the explicit
 * proxy, until a CONNECT asks for a tunnel: returns the next mode. */
static enum session_mode serve_requests(struct session *s, enum session_mode mode)
{
    for (;;) {
        struct http1_error perr = {0};
        int n;

        /* Between requests (and until a head is read) a stopping proxy may
         * end the connection at once. */
        s->client.cancel_fd = s->env->stop_fd;
        bool is_waiting = wait_next_request(s);
        bool has_head = is_waiting && (s->head != NULL || (s->head = malloc(sizeof(*s->head))));
        n = has_head
                ? http1codec_read_request(&s->client, s->t.idle_ms, s->t.header_ms, s->head, &perr)
                : 0;
        s->client.cancel_fd = s->env->cancel_fd;
        int64_t started = clock_mono_us();
        if (is_waiting && !has_head) {
            struct request_ctx rq;
            request_ctx_init(&rq, s, started);
            refuse(s, &rq, 503, "out of memory", true);
            return SESSION_END;
        }
        if (n == 0)
            return SESSION_END;
        if (n < 0) {
            struct request_ctx rq;
            request_ctx_init(&rq, s, started);
            refuse(s, &rq, perr.status, perr.message, true);
            return SESSION_END;
        }
        /* --proxy-auth guards the explicit proxy; the credentials are taken
         * out of every head, so neither the flow nor the origin sees them. */
        bool is_allowed = s->env->auth == NULL || mode != SESSION_PROXY ||
                          proxyauth_check_head(s->env->auth, s->head);
        proxyauth_strip(s->head);
        if (!is_allowed) {
            struct request_ctx rq;
            char url[300];
            request_ctx_init(&rq, s, started);
            snprintf(rq.method, sizeof(rq.method), "%.*s",
                     (int)(s->head->method_len < 31 ? s->head->method_len : 31), s->head->method);
            snprintf(url, sizeof(url), "%.*s", (int)s->head->target_len, s->head->target);
            rq.url = url;
            refuse_with(s, &rq, 407, "proxy authentication required (--proxy-auth)", true,
                        PROXYAUTH_CHALLENGE);
            return SESSION_END;
        }
        if (mode == SESSION_PROXY && s->head->method_len == 7 &&
            memcmp(s->head->method, "CONNECT", 7) == 0)
            return open_tunnel(s, (size_t)n, started);
        if (!serve_one(s, mode, (size_t)n, started))
            return SESSION_END;
    }
}

/* ---- tunnels ---- */

enum first_bytes { FIRST_TLS, FIRST_HTTP, FIRST_RAW, FIRST_GONE };

/* HTTP when the bytes start like a request line: a method token and a
 * space. Returns -1 when more bytes are needed to tell. */
static int looks_like_http(const unsigned char *b, size_t n)
{
    size_t i = 0;
    while (i < n && i < 20 && (isupper(b[i]) || b[i] == '-' || b[i] == '_'))
        i++;
    if (i < n)
        return i > 0 && b[i] == ' ' ? 1 : 0;
    return i < 20 ? -1 : 0;
}

enum more_bytes { MORE_ARRIVED, MORE_GONE, MORE_TIMEOUT };

/*
 * Waits until more than have bytes are pending on fd, the client closes, or
 * deadline (clock_mono_us) passes. poll() alone reports the socket readable
 * while any byte is pending, so a client that sent part of a ClientHello and
 * stalled would make every wait return at once; SO_RCVLOWAT raises the mark
 * poll() waits for (Linux honours it for TCP, see socket(7)), so a stalled
 * client costs nothing until it sends more or hangs up.
 */
static enum more_bytes wait_more_bytes(int fd, int cancel_fd, size_t have, int64_t deadline)
{
    enum more_bytes result = MORE_TIMEOUT;
    int lowat = (int)have + 1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) < 0)
        return MORE_GONE;
    for (;;) {
        int64_t left_us = deadline - clock_mono_us();
        if (left_us <= 0)
            break;
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN | POLLRDHUP},
                              {.fd = cancel_fd, .events = POLLIN}};
        int r = poll(p, cancel_fd >= 0 ? 2 : 1, (int)((left_us + 999) / 1000));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (cancel_fd >= 0 && p[1].revents)) {
            result = MORE_GONE;
            break;
        }
        if (r == 0)
            continue; /* the deadline check above ends it */
        /* A hang-up or an error also wakes poll() below the mark: the rest
         * of the ClientHello will never come. */
        result = p[0].revents & (POLLRDHUP | POLLHUP | POLLERR) ? MORE_GONE : MORE_ARRIVED;
        break;
    }
    lowat = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) < 0)
        result = MORE_GONE;
    return result;
}

/* Peeks at what the client sends first inside a tunnel, without reading it. */
static enum first_bytes peek_first_bytes(struct session *s, struct client_hello *hello)
{
    enum first_bytes kind = FIRST_GONE;
    unsigned char *buf = NULL;
    int64_t deadline = clock_mono_us() + (int64_t)s->cfg->header_timeout_ms * 1000;
    size_t have = 0;

    if (stream_buffered(&s->client) > 0) {
        /* The client did not wait for our 200: those bytes are already read,
         * so they cannot be handed to OpenSSL; plain protocols still work. */
        const unsigned char *d = (const unsigned char *)stream_data(&s->client);
        size_t n = stream_buffered(&s->client);
        if (tlsserver_looks_like_tls(d, n)) {
            log_info("%s: TLS sent before the CONNECT response; closing", s->client_name);
            goto out;
        }
        kind = looks_like_http(d, n) == 1 ? FIRST_HTTP : FIRST_RAW;
        goto out;
    }
    if (stream_wait_readable(&s->client, s->cfg->header_timeout_ms) != STREAM_OK)
        goto out;
    buf = malloc(SESSION_PEEK_BYTES);
    if (!buf)
        goto out;
    for (;;) {
        ssize_t n = recv(s->client.fd, buf, SESSION_PEEK_BYTES, MSG_PEEK);
        if (n == 0)
            goto out;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            goto out;
        if (n > 0) {
            enum tlsserver_hello_result r = tlsserver_parse_client_hello(buf, (size_t)n, hello);
            if (r == TLSSERVER_HELLO_COMPLETE) {
                kind = FIRST_TLS;
                goto out;
            }
            if (r == TLSSERVER_HELLO_MALFORMED) {
                log_info("%s: malformed TLS ClientHello; closing", s->client_name);
                goto out;
            }
            if (r == TLSSERVER_HELLO_TOO_LARGE) {
                log_info("%s: TLS ClientHello larger than %d bytes; closing", s->client_name,
                         TLSSERVER_MAX_HELLO_BYTES);
                goto out;
            }
            if (r == TLSSERVER_HELLO_NOT_TLS) {
                int http = looks_like_http(buf, (size_t)n);
                if (http >= 0) {
                    kind = http ? FIRST_HTTP : FIRST_RAW;
                    goto out;
                }
            }
            if (n == SESSION_PEEK_BYTES) {
                log_info("%s: TLS ClientHello too large; closing", s->client_name);
                goto out;
            }
            have = (size_t)n;
        }
        enum more_bytes more = wait_more_bytes(s->client.fd, s->client.cancel_fd, have, deadline);
        if (more == MORE_GONE) {
            log_info("%s: client closed before its first bytes were complete", s->client_name);
            goto out;
        }
        if (more == MORE_TIMEOUT) {
            log_info("%s: first bytes of the tunnel did not arrive in time", s->client_name);
            goto out;
        }
    }
out:
    free(buf);
    return kind;
}

static bool offers_alpn(const struct client_hello *hello, const char *proto)
{
    for (size_t i = 0; i < hello->alpn_count; i++)
        if (strcmp(hello->alpn[i], proto) == 0)
            return true;
    return false;
}

static void record_client_tls(struct session *s, SSL *ssl)
{
    struct flow_tls *t = &s->client_tls;
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;

    snprintf(t->client_sni, sizeof(t->client_sni), "%s", s->has_sni ? s->sni : "");
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    snprintf(t->client_alpn, sizeof(t->client_alpn), "%.*s", (int)alpn_len,
             alpn ? (const char *)alpn : "");
    snprintf(t->client_version, sizeof(t->client_version), "%s", SSL_get_version(ssl));
    snprintf(t->client_cipher, sizeof(t->client_cipher), "%s", SSL_get_cipher_name(ssl));
    s->client_is_tls = true;
}

/* Completes the client's handshake with a leaf for names (minted, or from
 * the store; is_verified: may be stored). name is the one the client asked
 * for, for the log. Returns 0 or -1 (client gone, logged). */
static int accept_client_tls(struct session *s, const struct ca_names *names, bool is_verified,
                             const char *name, const char *alpn)
{
    X509 *leaf = NULL;
    SSL *ssl = NULL;
    char err[256];
    int rc = -1;

    leaf = certstore_get(s->env->certs, names, is_verified, err, sizeof(err));
    if (!leaf) {
        log_error("%s: minting a certificate for %s failed: %s", s->client_name, name, err);
        goto out;
    }
    ssl = tlsserver_accept_alpn(s->env->server_ctx, s->client.fd, leaf, ca_cert(s->env->ca),
                                ca_leaf_key(s->env->ca), alpn, s->cfg->header_timeout_ms, err,
                                sizeof(err));
    if (!ssl) {
        log_info("%s: TLS handshake with the client for %s failed: %s", s->client_name, name, err);
        goto out;
    }
    stream_attach_tls(&s->client, ssl);
    record_client_tls(s, ssl);
    rc = 0;
out:
    X509_free(leaf);
    return rc;
}

/* Connects and verifies the origin, then completes the client's handshake
 * with a leaf carrying the origin's names. Returns 0 or -1 (client gone). */
static int intercept_tls(struct session *s, const struct client_hello *hello)
{
    struct ca_names names = {0};
    X509 *peer = NULL;
    int rc = -1;

    s->has_sni = hello->has_sni;
    snprintf(s->sni, sizeof(s->sni), "%s", hello->has_sni ? hello->sni : "");
    s->offers_http11 = hello->alpn_count == 0 || offers_alpn(hello, "http/1.1");
    const char *name = s->has_sni ? s->sni : s->tunnel_host;
    s->offers_h2 = !s->cfg->no_http2 && offers_alpn(hello, "h2");
    struct origin_target target = {
        .host = s->tunnel_host,
        .port = s->tunnel_port,
        .is_tls = true,
        .sni = s->has_sni ? s->sni : NULL,
        .verify_name = name,
        .offers_http11 = s->offers_http11,
        .offers_h2 = s->offers_h2,
        /* No h2 the client did not offer: the origin of an intercepted
         * tunnel is offered what the client's app offered (ALPN mirrored),
         * so it sees the protocol the app speaks, and an origin that
         * prefers h2 whenever it is offered does not turn every HTTP/1.1
         * client's traffic into translated streams. */
        .accepts_h2_only = false,
    };

    if (origin_open(&s->origin, &s->origin_settings, &target, &s->tunnel_error, &peer) < 0) {
        log_warn("%s: upstream %s:%u (%s): %s", s->client_name, s->tunnel_host, s->tunnel_port,
                 name, s->tunnel_error.reason);
        if (s->tunnel_error.status == UPSTREAM_OK)
            s->tunnel_error.status = UPSTREAM_TLS_FAILED;
    } else if (s->origin.insecure_note[0] != '\0') {
        log_warn("%s: upstream %s:%u %s", s->client_name, s->tunnel_host, s->tunnel_port,
                 s->origin.insecure_note);
    }
    /* The name the client asked for comes first: it becomes the CN. The
     * origin's names are copied only from a certificate that passed (or
     * that --insecure told us to accept). */
    if (ca_names_add(&names, name) < 0) {
        log_info("%s: cannot mint a certificate for '%s'", s->client_name, name);
        goto out;
    }
    if (s->tunnel_error.status == UPSTREAM_OK && peer)
        ca_names_add_from_cert(&names, peer);
    /* Only a verified origin's leaf is stored: any other name is whatever a
     * client chose to send, and would grow the database without bound. */
    bool is_verified =
        s->tunnel_error.status == UPSTREAM_OK && peer != NULL && s->origin.insecure_note[0] == '\0';
    /* The client gets the protocol the origin chose, so the common case
     * needs no translation; a client that speaks only h2 (gRPC, nghttp)
     * gets it over an HTTP/1.1-only origin too, through h2bridge, and one
     * that speaks only HTTP/1.1 gets that over an h2-only origin (h1toh2). */
    bool is_h2 = s->tunnel_error.status == UPSTREAM_OK && s->offers_h2 &&
                 (s->origin.is_h2 || !s->offers_http11);
    rc = accept_client_tls(s, &names, is_verified, name, is_h2 ? "h2" : "http/1.1");
out:
    X509_free(peer);
    ca_names_clear(&names);
    return rc;
}

/* Relays the tunnel's bytes untouched, as one flow with byte counts. */
static void relay_raw(struct session *s, const char *what, int64_t started)
{
    uint64_t up = 0, down = 0;
    struct upstream_error uerr = {0};
    struct request_ctx rq;
    char target[300];
    char note[128];
    int r;

    request_ctx_init(&rq, s, started);
    snprintf(rq.method, sizeof(rq.method), "CONNECT");
    snprintf(target, sizeof(target), "%s:%u", s->tunnel_host, s->tunnel_port);
    rq.url = target;
    if (!stream_is_open(&s->origin.stream)) {
        struct origin_target t = {.host = s->tunnel_host, .port = s->tunnel_port};
        if (origin_open(&s->origin, &s->origin_settings, &t, &uerr, NULL) < 0) {
            /* Past the 200 nothing can be answered: a log line and a flow. */
            log_request(s, &rq, upstream_error_http_status(&uerr), 0, uerr.reason);
            begin_capture(s, &rq, "tcp", NULL);
            finish_capture(s, &rq, upstream_error_http_status(&uerr), uerr.reason);
            return;
        }
    }
    begin_capture(s, &rq, "tcp", NULL);
    r = stream_relay(&s->client, &s->origin.stream, s->cfg->idle_timeout_ms, &up, &down);
    snprintf(note, sizeof(note), "%s relay, %llu bytes up%s%s", what, (unsigned long long)up,
             r < 0 ? ", ended: " : "", r < 0 ? stream_status_text(r) : "");
    log_request(s, &rq, 200, down, note);
    capture_tunnel(&rq.cap, up, down);
    finish_capture(s, &rq, 200, r < 0 && r != STREAM_TIMEOUT ? note : NULL);
}

/*
 * What runs inside a tunnel to s->tunnel_host:port, decided by what the
 * client sends first. Returns the mode to serve requests in, or
 * SESSION_END when the tunnel is over (relayed raw, closed).
 */
static enum session_mode enter_tunnel(struct session *s, int64_t started)
{
    struct client_hello hello;

    switch (peek_first_bytes(s, &hello)) {
    case FIRST_TLS:
        /* Clients often CONNECT by address and name the site only in the
         * SNI, so --ignore-host is checked again once the SNI is known. */
        if (hello.has_sni && config_is_ignored_host(s->cfg, hello.sni)) {
            relay_raw(s, "ignored host", started);
            return SESSION_END;
        }
        if (intercept_tls(s, &hello) < 0)
            return SESSION_END;
        return strcmp(s->client_tls.client_alpn, "h2") == 0 ? SESSION_TUNNEL_H2
                                                            : SESSION_TUNNEL_TLS;
    case FIRST_HTTP:
        return SESSION_TUNNEL_PLAIN;
    case FIRST_RAW:
        relay_raw(s, "raw", started);
        return SESSION_END;
    case FIRST_GONE:
        break;
    }
    return SESSION_END;
}

/*
 * Answers a CONNECT and sets up what runs inside the tunnel. Returns the
 * mode to serve requests in, or SESSION_END when the tunnel is already over
 * (refused, relayed raw, closed).
 */
static enum session_mode open_tunnel(struct session *s, size_t head_len, int64_t started)
{
    static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    char authority[300];
    const char *self;
    struct upstream_error refused;
    struct request_ctx rq;
    const struct http1_head *h = s->head;
    size_t alen = h->target_len < sizeof(authority) - 1 ? h->target_len : sizeof(authority) - 1;

    memcpy(authority, h->target, alen);
    authority[alen] = '\0';
    stream_consume(&s->client, head_len);
    request_ctx_init(&rq, s, started);
    snprintf(rq.method, sizeof(rq.method), "CONNECT");
    rq.url = authority;
    rq.scheme = "tcp";
    if (http1_parse_authority(h->target, h->target_len, 0, s->tunnel_host, &s->tunnel_port) < 0) {
        s->tunnel_host[0] = '\0';
        refuse(s, &rq, 400, "CONNECT wants host:port", true);
        return SESSION_END;
    }
    rq.host = s->tunnel_host;
    rq.port = s->tunnel_port;
    if ((self = self_target(s, s->tunnel_host, s->tunnel_port)) != NULL) {
        char why[160];
        snprintf(why, sizeof(why), "refusing to tunnel to %s", self);
        refuse(s, &rq, 508, why, true);
        return SESSION_END;
    }
    /* A numeric target refused by the guard is refused now, with a status,
     * rather than after the 200 when only the tunnel's requests could say
     * why; a name is checked when the tunnel connects. */
    if (upstream_check_numeric(s->tunnel_host, s->tunnel_port, s->env->guard, &refused) < 0) {
        refuse(s, &rq, upstream_error_http_status(&refused), refused.reason, true);
        return SESSION_END;
    }
    if (config_is_ignored_host(s->cfg, s->tunnel_host)) {
        struct upstream_error uerr;
        struct origin_target t = {.host = s->tunnel_host, .port = s->tunnel_port};
        if (origin_open(&s->origin, &s->origin_settings, &t, &uerr, NULL) < 0) {
            refuse(s, &rq, upstream_error_http_status(&uerr), uerr.reason, true);
            return SESSION_END;
        }
        if (stream_putstr(&s->client, established, s->t.io_ms) != STREAM_OK)
            return SESSION_END;
        relay_raw(s, "ignored host", started);
        return SESSION_END;
    }
    if (stream_putstr(&s->client, established, s->t.io_ms) != STREAM_OK ||
        stream_flush(&s->client, s->t.io_ms) != STREAM_OK)
        return SESSION_END;
    return enter_tunnel(s, started);
}

/* ---- the state machine and its entry points ---- */

/* The client chose h2: every stream of the connection in h2relay, to an
 * origin that chose h2 too, or translated to HTTP/1.1 (h2bridge). */
static enum session_mode serve_h2(struct session *s)
{
    const struct reverse_target *rt = s->reverse;
    bool is_tls = rt != NULL ? rt->is_tls : true;
    struct flow_tls tls;
    const char *site = s->reverse != NULL ? s->reverse->host : s->has_sni ? s->sni : s->tunnel_host;
    struct h2relay_env env = {
        .client = &s->client,
        .origin = &s->origin.stream,
        .client_name = s->client_name,
        .listener = session_listener_name(s->listener),
        .site = site,
        .port = s->tunnel_port,
        .store = s->env->flows,
        .capture_limit = s->cfg->capture_limit,
        .tls = &tls,
        .rules = s->env->rules,
        .rewrite_limit = s->cfg->rewrite_limit,
        .rewrite_memory = s->cfg->rewrite_memory,
        .intercept = s->env->intercept,
        .stop_fd = s->env->stop_fd,
        .idle_ms = s->t.idle_ms,
        .io_ms = s->t.io_ms,
        .authority = s->reverse != NULL ? s->reverse->authority : NULL,
        .path_prefix = s->reverse != NULL ? s->reverse->prefix : NULL,
        .forwarded_for = s->reverse != NULL && s->cfg->is_reverse_forwarded ? s->client_ip : NULL,
        /* Also for the origins of map-remote rules (h2relay.h). */
        .bridge_settings = &s->origin_settings,
    };

    if (!s->origin.is_h2) {
        /* HTTP/1.1 connections to the same place the session's went; that
         * one, when open, serves first. */
        const char *name = rt != NULL ? rt->host : s->has_sni ? s->sni : s->tunnel_host;
        env.origin = NULL;
        env.bridge_target = (struct origin_target){
            .host = rt != NULL ? rt->host : s->tunnel_host,
            .port = rt != NULL ? rt->port : s->tunnel_port,
            .is_tls = is_tls,
            .sni = rt != NULL   ? rt->host
                   : s->has_sni ? s->sni
                                : NULL,
            .verify_name = name,
            .offers_http11 = true,
            .is_plain_http = !is_tls,
        };
        env.bridge_first = &s->origin;
        env.scheme = is_tls ? "https" : "http";
    }

    /* Borrowed for the relay's life: the origin stays open throughout. */
    both_sides_tls(s, &tls);
    origin_take_open_times(&s->origin, &env.connected_at_us, &env.tls_done_at_us);
    h2relay_run(&env);
    return SESSION_END;
}

const char *session_listener_name(enum session_listener listener)
{
    switch (listener) {
    case SESSION_LISTENER_PROXY:
        return "proxy";
    case SESSION_LISTENER_SOCKS5:
        return "socks5";
    case SESSION_LISTENER_TRANSPARENT:
        return "transparent";
    case SESSION_LISTENER_REVERSE:
        return "reverse";
    }
    return "?";
}

static void session_run(struct session *s, enum session_mode mode)
{
    while (mode != SESSION_END)
        mode = mode == SESSION_TUNNEL_H2 ? serve_h2(s) : serve_requests(s, mode);
}

/* "host:port" ("[v6]:port") of peer into out, "unknown" for another
 * family; addr (INET6_ADDRSTRLEN) gets the address alone, or "?". */
static void name_client(const struct sockaddr_storage *peer, char *out, size_t out_len, char *addr)
{
    snprintf(addr, INET6_ADDRSTRLEN, "?");
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &in->sin_addr, addr, INET6_ADDRSTRLEN);
        snprintf(out, out_len, "%s:%u", addr, ntohs(in->sin_port));
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, INET6_ADDRSTRLEN);
        snprintf(out, out_len, "[%s]:%u", addr, ntohs(in6->sin6_port));
    } else {
        snprintf(out, out_len, "unknown");
    }
}

void session_record_refusal(const struct proxy_env *env, const struct sockaddr_storage *peer,
                            enum session_listener listener, const char *host, uint16_t port,
                            int status, const char *reason)
{
    char client[INET6_ADDRSTRLEN + 10], addr[INET6_ADDRSTRLEN];
    struct capture cap;
    struct capture_start start = {
        .client = client,
        .scheme = "tcp",
        .method = "CONNECT",
        .host = host,
        .port = port,
        .body_limit = env->cfg->capture_limit,
        .listener = session_listener_name(listener),
    };

    name_client(peer, client, sizeof(client), addr);
    capture_begin(&cap, env->flows, &start);
    capture_finish(&cap, NULL, status, reason);
}

/* A session for fd, or NULL (fd closed) when out of memory. */
static struct session *session_new(const struct proxy_env *env, int fd,
                                   const struct sockaddr_storage *peer)
{
    struct session *s = calloc(1, sizeof(*s));
    char addr[INET6_ADDRSTRLEN] = "?";

    if (s == NULL) {
        close(fd);
        return NULL;
    }
    s->env = env;
    s->cfg = env->cfg;
    s->t.idle_ms = env->cfg->idle_timeout_ms;
    s->t.header_ms = env->cfg->header_timeout_ms;
    s->t.io_ms = env->cfg->io_timeout_ms;
    s->offers_http11 = true; /* absolute-form https://: we speak HTTP/1.1 */
    s->origin_settings = (struct origin_settings){
        .tls_ctx = env->upstream_ctx,
        .guard = env->guard,
        .proxy = env->proxy,
        .timeout_ms = env->cfg->upstream_timeout_ms,
        .cancel_fd = env->cancel_fd,
        .in_max_bytes = SESSION_IN_MAX_BYTES,
    };
    name_client(peer, s->client_name, sizeof(s->client_name), addr);
    snprintf(s->client_ip, sizeof(s->client_ip), "%s", strcmp(addr, "?") != 0 ? addr : "unknown");
    origin_init(&s->origin, env->cancel_fd);
    if (stream_init(&s->client, fd, SESSION_IN_MAX_BYTES, env->cancel_fd) < 0) {
        close(fd);
        free(s);
        return NULL;
    }
    return s;
}

static void session_free(struct session *s)
{
    h1toh2_free(s->h1toh2);
    origin_free(&s->origin);
    stream_close(&s->client);
    free(s->head);
    free(s);
}

void session_serve_explicit(const struct proxy_env *env, int fd,
                            const struct sockaddr_storage *peer)
{
    struct session *s = session_new(env, fd, peer);

    if (s == NULL)
        return;
    session_run(s, SESSION_PROXY);
    session_free(s);
}

void session_serve_tunnel(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                          enum session_listener listener, const char *host, uint16_t port)
{
    struct session *s = session_new(env, fd, peer);

    if (s == NULL)
        return;
    s->listener = listener;
    snprintf(s->tunnel_host, sizeof(s->tunnel_host), "%s", host);
    s->tunnel_port = port;
    if (config_is_ignored_host(s->cfg, s->tunnel_host))
        relay_raw(s, "ignored host", clock_mono_us());
    else
        session_run(s, enter_tunnel(s, clock_mono_us()));
    session_free(s);
}

/*
 * A TLS --reverse listener: the client's handshake is finished with a leaf
 * for the name it asked for (SNI), or the origin's host when it sent none;
 * the origin is not asked first, as a reverse proxy stands in for one known
 * origin. Such a leaf is never stored: the name is the client's choice.
 * A client that offers h2 gets it: to an https origin that chose h2 too
 * (it is opened first, offered what the client offered) both sides speak
 * it (h2relay), to an HTTP/1.1 one each stream is translated (h2bridge,
 * the opened connection serving first). When the origin cannot be opened,
 * the client gets HTTP/1.1 and the first request the error page.
 * Returns the mode to serve in, or SESSION_END when the client did not
 * speak TLS or went away (logged).
 */
static enum session_mode accept_reverse_tls(struct session *s)
{
    struct client_hello hello;
    struct ca_names names = {0};
    enum session_mode mode = SESSION_END;

    enum first_bytes first = peek_first_bytes(s, &hello);
    if (first == FIRST_HTTP) {
        /* Plain HTTP on the TLS port: a person typed http://; say so. */
        struct request_ctx rq;
        request_ctx_init(&rq, s, clock_mono_us());
        refuse(s, &rq, 400, "this reverse proxy port speaks TLS: use https://", true);
        return SESSION_END;
    }
    if (first != FIRST_TLS) {
        log_info("%s: the reverse proxy for %s wants TLS, the client did not start it; closing",
                 s->client_name, s->reverse->authority);
        return SESSION_END;
    }
    s->has_sni = hello.has_sni;
    snprintf(s->sni, sizeof(s->sni), "%s", hello.has_sni ? hello.sni : "");
    const char *name = s->has_sni ? s->sni : s->reverse->host;
    if (ca_names_add(&names, name) < 0) {
        log_info("%s: cannot mint a certificate for '%s'", s->client_name, name);
        goto out;
    }
    bool is_h2 = false;
    bool wants_h2 = !s->cfg->no_http2 && offers_alpn(&hello, "h2");
    if (wants_h2 && !s->reverse->is_tls)
        is_h2 = true;
    if (wants_h2 && s->reverse->is_tls) {
        struct upstream_error uerr;
        struct origin_target target = {
            .host = s->reverse->host,
            .port = s->reverse->port,
            .is_tls = true,
            .sni = s->reverse->host,
            .verify_name = s->reverse->host,
            .offers_http11 = hello.alpn_count == 0 || offers_alpn(&hello, "http/1.1"),
            .offers_h2 = true,
        };
        /* A failure here is answered by the first request's error page. */
        is_h2 = origin_open(&s->origin, &s->origin_settings, &target, &uerr, NULL) == 0;
    }
    if (accept_client_tls(s, &names, false, name, is_h2 ? "h2" : "http/1.1") == 0)
        mode = strcmp(s->client_tls.client_alpn, "h2") == 0 ? SESSION_TUNNEL_H2 : SESSION_REVERSE;
out:
    ca_names_clear(&names);
    return mode;
}

void session_serve_reverse(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                           const struct reverse_target *rt)
{
    struct session *s = session_new(env, fd, peer);

    if (s == NULL)
        return;
    s->reverse = rt;
    s->listener = SESSION_LISTENER_REVERSE;
    snprintf(s->tunnel_host, sizeof(s->tunnel_host), "%s", rt->host);
    s->tunnel_port = rt->port;
    session_run(s, rt->is_tls_listener ? accept_reverse_tls(s) : SESSION_REVERSE);
    session_free(s);
}
