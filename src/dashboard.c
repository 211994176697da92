/*
 * dashboard: libmicrohttpd in thread-per-connection mode, so a live stream
 * (Server-Sent Events) or a long HAR export simply blocks its own thread:
 * the content callbacks wait on a condition variable that the flow store's
 * written-callback, a clear, and dashboard_stop() signal. The connection
 * limit bounds those threads.
 *
 * What the browser gets is decided here, not in web/: every response carries
 * a CSP without inline script and nosniff; captured bytes only ever leave as
 * application/octet-stream attachments with a sandboxing CSP, so a captured
 * HTML page or script can never run on the dashboard's origin. JSON is only
 * built by jansson.
 *
 * Access: the token (compared in constant time) in the X-Tapwire-Token header,
 * or for reads in the cookie the token URL sets. Host must name the
 * dashboard, so a rebound DNS name cannot reach it; changes need the header
 * (a cross-site form cannot set it) and a same-origin Origin.
 *
 * The cookie is HttpOnly: cookies ignore ports (RFC 6265 8.5), so any page
 * served from another port of the same host shares the cookie jar, and must
 * not be able to read it from script. The page gets the token for its header
 * from the server instead, written into index.html as it is served to a
 * request that carries the cookie; another origin's script cannot read that
 * response (same-origin policy, no CORS here). The cookie's name carries the
 * port, so that two dashboards on one host do not overwrite each other's.
 *
 * Request bodies: only the rules changes take one, JSON of at most
 * DASHBOARD_MAX_JSON_BODY_BYTES with a Content-Length, checked before a
 * byte of it is read and gathered in the connection's context (struct
 * upload) until libmicrohttpd hands over the end. Every other request with
 * a body is refused unread.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "dashboard.h"

#include "buf.h"
#include "capage.h"
#include "webpolicy.h"
#include "wsframe.h"
#include "certstore.h"
#include "clock.h"
#include "errmsg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "codec.h"
#include "dashinteract.h"
#include "embedded.h"
#include "filter.h"
#include "grpcmsg.h"
#include "har.h"
#include "harimport.h"
#include "http1.h"
#include "jsontext.h"
#include "log.h"
#include "rulebook.h"
#include "sqlconsole.h"

#ifndef TAPWIRE_VERSION
#define TAPWIRE_VERSION "unknown"
#endif

/* libmicrohttpd 0.9.71 turned the handlers' int into enum MHD_Result. */
#if MHD_VERSION >= 0x00097100
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

/* Captured data: even opened directly, it runs in an opaque origin. */
#define CSP_CAPTURED WEBPOLICY_CSP_PAGE "; sandbox"
#define CSP_PAGE WEBPOLICY_CSP_PAGE
#define SECURITY_HEADER_LINES WEBPOLICY_HEADER_LINES
/* libmicrohttpd renamed these macros between releases; the numbers stay. */
#define HTTP_MISDIRECTED_REQUEST 421
#define HTTP_CONTENT_TOO_LARGE 413
#define TOKEN_COOKIE_PREFIX "tapwire_token_" /* then the dashboard's port */
#define TOKEN_COOKIE_NAME_BYTES 32
/* Where index.html receives the token, between the quotes of content. */
#define PAGE_TOKEN_SLOT "<meta name=\"tapwire-token\" content=\""
#define TOKEN_HEADER "X-Tapwire-Token"
/* 16 significant digits: unix milliseconds keep their microseconds. */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(16))
#define HAR_STREAM_BLOCK_BYTES (64 * 1024)
#define SSE_BLOCK_BYTES (16 * 1024)

/* One client connection, from accept to close, for the request deadline. */
struct dash_conn {
    struct dash_conn *prev;
    struct dash_conn *next;
    int fd;              /* a dup() of libmicrohttpd's socket: ours, so never reused under us */
    int64_t deadline_ms; /* the request must be in whole by then; 0: none (answering) */
};

struct dashboard {
    struct MHD_Daemon *daemon;
    struct flowstore *flows;
    const struct ca *ca;
    struct rulebook *rules;      /* NULL: rewrite rules are off */
    struct certstore *certs;     /* NULL: no certificate figures in /api/stats */
    struct sqlconsole *sql;      /* NULL: no database file, /api/sql answers 404 */
    struct intercept *intercept; /* NULL: no intercept endpoints */
    struct replay *replay;       /* NULL: no replay endpoints */
    size_t capture_limit;        /* body bytes an imported flow keeps */
    char token[DASHBOARD_MAX_TOKEN_CHARS + 1];
    char url_host[300]; /* the bound host as in a URL: IPv6 in brackets */
    /* Atomic: connection threads read it (Host check) and an ephemeral
     * port is only known once libmicrohttpd's threads run. */
    atomic_uint port;
    char *web_root;
    char *ca_pem;
    size_t ca_pem_len;
    unsigned char *ca_der;
    size_t ca_der_len;
    char *ca_page;
    size_t ca_page_len;
    bool is_callback_set;

    /* Live state, guarded by lock; cond wakes streams waiting for it. */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool has_lock, has_cond;
    int64_t newest_id; /* the newest flow written */
    uint64_t clears;   /* bumped by every clear */
    bool is_stopping;
    bool is_importing;       /* a HAR import is being read or stored (one at a time) */
    bool is_starting;        /* MHD's messages are kept in start_error */
    char start_error[256];   /* why MHD_start_daemon() failed */
    struct dash_conn *conns; /* open connections (under lock), for the watchdog */
    pthread_t watchdog;
    bool has_watchdog;
};

/* ---- growing strings ---- */

/* s as one shell word: in single quotes, each ' written as '\'' (POSIX
 * shell: nothing is special inside single quotes but the quote itself). */
static void sb_shell_quote(struct buf *b, const char *s, size_t n)
{
    size_t i, from = 0;

    buf_str(b, "'");
    for (i = 0; i < n; i++) {
        if (s[i] == '\'') {
            buf_put(b, s + from, i - from);
            buf_str(b, "'\\''");
            from = i + 1;
        }
    }
    buf_put(b, s + from, n - from);
    buf_str(b, "'");
}

/* ---- the proxy's own pages ---- */

/* ---- responses ---- */

static bool is_stopping(struct dashboard *d)
{
    bool stopping;

    pthread_mutex_lock(&d->lock);
    stopping = d->is_stopping;
    pthread_mutex_unlock(&d->lock);
    return stopping;
}

/* Adds a header; on failure destroys resp. NULL in, NULL out, so calls
 * chain and one check at the end covers them all. */
static struct MHD_Response *with_header(struct MHD_Response *resp, const char *name,
                                        const char *value)
{
    if (resp != NULL && MHD_add_response_header(resp, name, value) != MHD_YES) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    return resp;
}

/* Adds Content-Type and the headers every response carries, queues resp and
 * drops our reference. NULL resp (something failed): MHD_NO, which makes
 * libmicrohttpd close the connection. */
static mhd_result send_reply(struct MHD_Connection *conn, unsigned status,
                             struct MHD_Response *resp, const char *content_type, bool is_captured)
{
    mhd_result ret = MHD_NO;

    if (content_type != NULL)
        resp = with_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    resp = with_header(resp, "Content-Security-Policy", is_captured ? CSP_CAPTURED : CSP_PAGE);
    resp = with_header(resp, "X-Content-Type-Options", "nosniff");
    resp = with_header(resp, "Referrer-Policy", "no-referrer");
    resp = with_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (resp != NULL) {
        ret = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
    }
    return ret;
}

/* A response owning data (malloc'd); frees data if it cannot be made. */
static struct MHD_Response *owned_response(void *data, size_t len)
{
    struct MHD_Response *resp;

    if (data == NULL)
        return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        free(data);
    return resp;
}

static struct MHD_Response *static_response(const void *data, size_t len)
{
    return MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
}

/* Sends value (taken) as JSON. */
static mhd_result send_json(struct MHD_Connection *conn, unsigned status, json_t *value)
{
    char *text = value != NULL ? json_dumps(value, JSON_FLAGS) : NULL;

    json_decref(value);
    if (text == NULL)
        return MHD_NO;
    return send_reply(conn, status, owned_response(text, strlen(text)),
                      "application/json; charset=utf-8", false);
}

/* The builders below use jsontext's helpers on nearly every line; these
 * short names keep those lines readable. */
static json_t *jtext(const char *text, size_t len)
{
    return jsontext_n(text, len);
}

static json_t *jstr(const char *text)
{
    return jsontext_str(text);
}

/* NULL and "" are both "not known": JSON null. */
static json_t *jstr_or_null(const char *text)
{
    return text != NULL && text[0] != '\0' ? jstr(text) : json_null();
}

/* Microseconds since the epoch as unix milliseconds, null when unset. */
static json_t *jms(int64_t us)
{
    return us != 0 ? json_real((double)us / 1000.0) : json_null();
}

static bool jset(json_t *obj, const char *key, json_t *value)
{
    return jsontext_set(obj, key, value);
}

static bool jappend(json_t *array, json_t *value)
{
    return jsontext_append(array, value);
}

static mhd_result send_error(struct MHD_Connection *conn, unsigned status, const char *message)
{
    json_t *body = json_object();

    if (body != NULL && !jset(body, "error", jstr(message))) {
        json_decref(body);
        body = NULL;
    }
    return send_json(conn, status, body);
}

static mhd_result send_not_allowed(struct MHD_Connection *conn, const char *allow)
{
    json_t *body = json_pack("{s:s}", "error", "method not allowed");
    char *text = body != NULL ? json_dumps(body, JSON_FLAGS) : NULL;

    json_decref(body);
    if (text == NULL)
        return MHD_NO;
    return send_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                      with_header(owned_response(text, strlen(text)), MHD_HTTP_HEADER_ALLOW, allow),
                      "application/json; charset=utf-8", false);
}

static mhd_result send_html(struct MHD_Connection *conn, unsigned status, const char *html)
{
    return send_reply(conn, status, static_response(html, strlen(html)), "text/html; charset=utf-8",
                      false);
}

/* ---- who may ask ---- */

static const char *header(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static const char *arg(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
}

static bool is_method(const char *method, const char *want)
{
    return strcmp(method, want) == 0;
}

static bool token_matches(const struct dashboard *d, const char *given)
{
    size_t len = strlen(d->token);

    return given != NULL && strlen(given) == len && CRYPTO_memcmp(given, d->token, len) == 0;
}

static void cookie_name(struct dashboard *d, char *out, size_t out_len)
{
    snprintf(out, out_len, TOKEN_COOKIE_PREFIX "%u", atomic_load(&d->port));
}

/* The token cookie of this dashboard's request, or NULL. */
static const char *cookie_token(struct dashboard *d, struct MHD_Connection *conn)
{
    char name[TOKEN_COOKIE_NAME_BYTES];

    cookie_name(d, name, sizeof(name));
    return MHD_lookup_connection_value(conn, MHD_COOKIE_KIND, name);
}

/* "name:port", "[v6]:port" or "name" (port 80); name keeps v6 brackets. */
static int split_host(const char *host, char *name, size_t name_len, unsigned *port)
{
    const char *colon;
    size_t n;

    if (host[0] == '[') {
        const char *end = strchr(host, ']');

        if (end == NULL)
            return -1;
        n = (size_t)(end + 1 - host);
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] != '\0' && colon == NULL)
            return -1;
    } else {
        colon = strchr(host, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return -1; /* a bare IPv6 address is not a valid Host */
        n = colon != NULL ? (size_t)(colon - host) : strlen(host);
    }
    if (n == 0 || n >= name_len)
        return -1;
    memcpy(name, host, n);
    name[n] = '\0';
    *port = 80;
    if (colon != NULL) {
        char *end;
        unsigned long value;

        if (colon[1] < '0' || colon[1] > '9')
            return -1;
        errno = 0;
        value = strtoul(colon + 1, &end, 10);
        if (errno != 0 || *end != '\0' || value == 0 || value > 65535)
            return -1;
        *port = (unsigned)value;
    }
    return 0;
}

/* True when name is the IP address this connection came in on: an address
 * literal cannot be rebound, so it is as good as 127.0.0.1 when the
 * dashboard listens on a wildcard address. */
static bool is_connection_address(struct MHD_Connection *conn, const char *name)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sockaddr_storage local;
    socklen_t local_len = sizeof(local);
    char text[INET6_ADDRSTRLEN + 2] = "";

    if (info == NULL || getsockname(info->connect_fd, (struct sockaddr *)&local, &local_len) != 0)
        return false;
    if (local.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&local)->sin_addr, text, sizeof(text));
    } else if (local.ss_family == AF_INET6) {
        text[0] = '[';
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&local)->sin6_addr, text + 1,
                  sizeof(text) - 2);
        strcat(text, "]");
    }
    return text[0] != '\0' && strcasecmp(text, name) == 0;
}

/* DNS rebinding defence: a page on evil.example that resolves its own name
 * to 127.0.0.1 still sends "Host: evil.example". */
static bool is_own_host(struct dashboard *d, struct MHD_Connection *conn)
{
    const char *host = header(conn, MHD_HTTP_HEADER_HOST);
    char name[300];
    unsigned port;

    if (host == NULL || split_host(host, name, sizeof(name), &port) != 0 ||
        port != atomic_load(&d->port))
        return false;
    return strcasecmp(name, "localhost") == 0 || strcmp(name, "127.0.0.1") == 0 ||
           strcmp(name, "[::1]") == 0 || strcasecmp(name, d->url_host) == 0 ||
           is_connection_address(conn, name);
}

/* CSRF defence for changes, besides the token header a form cannot send. */
static bool is_same_origin(struct MHD_Connection *conn)
{
    const char *origin = header(conn, "Origin");
    const char *host = header(conn, MHD_HTTP_HEADER_HOST);
    const char *site = header(conn, "Sec-Fetch-Site");

    if (site != NULL && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
        return false;
    if (origin == NULL)
        return true;
    return host != NULL && strncasecmp(origin, "http://", 7) == 0 &&
           strcasecmp(origin + 7, host) == 0;
}

/* ---- JSON of flows ---- */

static const char *kind_name(enum flow_kind kind)
{
    switch (kind) {
    case FLOW_TUNNEL:
        return "tunnel";
    case FLOW_WEBSOCKET:
        return "websocket";
    case FLOW_HTTP:
    default:
        return "http";
    }
}

/* Fills obj with the SUMMARY fields of the API. */
static bool summary_fields(json_t *obj, const struct flowstore_record *rec)
{
    const struct flow *f = &rec->flow;
    bool has_duration = f->timings.start != 0 && f->timings.done >= f->timings.start;

    return jset(obj, "id", json_integer(f->id)) &&
           jset(obj, "time", json_integer(f->timings.start / 1000)) &&
           jset(obj, "method", jstr(f->method)) && jset(obj, "scheme", jstr(f->scheme)) &&
           jset(obj, "host", jstr(f->host)) && jset(obj, "port", json_integer(f->port)) &&
           jset(obj, "path", jstr(f->target != NULL ? f->target : "")) &&
           jset(obj, "status", json_integer(f->status)) &&
           jset(obj, "size", json_integer((json_int_t)f->response_body.size)) &&
           jset(obj, "duration_ms",
                has_duration ? json_real((double)(f->timings.done - f->timings.start) / 1000.0)
                             : json_null()) &&
           jset(obj, "content_type", jstr_or_null(rec->response_content_type)) &&
           jset(obj, "tls", json_boolean(f->is_tls)) && jset(obj, "error", jstr(f->error)) &&
           jset(obj, "modified", json_boolean(f->rules != NULL && f->rules[0] != '\0')) &&
           jset(obj, "imported", json_boolean(f->is_imported)) &&
           jset(obj, "listener", jstr_or_null(f->listener)) &&
           jset(obj, "bodies_dropped", json_boolean(f->are_bodies_dropped)) &&
           jset(obj, "kind", json_string(kind_name(f->kind)));
}

static json_t *summary_json(const struct flowstore_record *rec)
{
    json_t *obj = json_object();

    if (obj != NULL && !summary_fields(obj, rec)) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* [[name, value], ...] in the order and case received. */
static json_t *headers_json(const char *text)
{
    json_t *array = json_array();
    const char *name, *value;
    size_t name_len, value_len;
    size_t pos = 0;

    while (array != NULL && flow_headers_next(text, &pos, &name, &name_len, &value, &value_len)) {
        json_t *pair = json_array();

        if (!jappend(array, pair) || !jappend(pair, jtext(name, name_len)) ||
            !jappend(pair, jtext(value, value_len))) {
            json_decref(array);
            array = NULL;
        }
    }
    return array;
}

static json_t *body_json(const struct flow_body *body, size_t captured, const char *encoding,
                         const char *type)
{
    json_t *obj = json_object();

    if (obj != NULL && !(jset(obj, "size", json_integer((json_int_t)body->size)) &&
                         jset(obj, "captured", json_integer((json_int_t)captured)) &&
                         jset(obj, "truncated", json_boolean(body->truncated)) &&
                         jset(obj, "content_encoding", jstr_or_null(encoding)) &&
                         jset(obj, "content_type", jstr_or_null(type)))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

static json_t *message_json(const struct flowstore_record *rec, bool is_request)
{
    const struct flow *f = &rec->flow;
    json_t *obj = json_object();
    char version[16];
    bool is_ok;

    is_ok =
        obj != NULL &&
        jset(obj, "version",
             json_string(flow_version_text(is_request ? f->request_version : f->response_version,
                                           version, sizeof(version)))) &&
        jset(obj, "headers", headers_json(is_request ? f->request_headers : f->response_headers));
    if (is_ok && is_request)
        is_ok = jset(obj, "body",
                     body_json(&f->request_body, rec->request_captured,
                               rec->request_content_encoding, rec->request_content_type));
    else if (is_ok)
        is_ok = jset(obj, "body",
                     body_json(&f->response_body, rec->response_captured,
                               rec->response_content_encoding, rec->response_content_type)) &&
                jset(obj, "status", json_integer(f->status)) &&
                jset(obj, "reason", jstr(f->reason));
    if (!is_ok) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

static json_t *timings_json(const struct flow_timings *t)
{
    json_t *obj = json_object();

    if (obj != NULL &&
        !(jset(obj, "start", jms(t->start)) && jset(obj, "connected", jms(t->connected)) &&
          jset(obj, "tls_done", jms(t->tls_done)) &&
          jset(obj, "request_sent", jms(t->request_sent)) &&
          jset(obj, "first_byte", jms(t->first_byte)) && jset(obj, "done", jms(t->done)))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

static json_t *tls_json(const struct flow *f)
{
    const struct flow_tls *t = &f->tls;
    json_t *obj;

    if (!f->is_tls)
        return json_null();
    obj = json_object();
    if (obj != NULL &&
        !(jset(obj, "client_sni", jstr_or_null(t->client_sni)) &&
          jset(obj, "client_alpn", jstr_or_null(t->client_alpn)) &&
          jset(obj, "client_version", jstr_or_null(t->client_version)) &&
          jset(obj, "client_cipher", jstr_or_null(t->client_cipher)) &&
          jset(obj, "upstream_version", jstr_or_null(t->upstream_version)) &&
          jset(obj, "upstream_cipher", jstr_or_null(t->upstream_cipher)) &&
          jset(obj, "cert_subject", jstr_or_null(t->cert_subject)) &&
          jset(obj, "cert_issuer", jstr_or_null(t->cert_issuer)) &&
          jset(obj, "cert_sans", jstr_or_null(t->cert_sans)) &&
          /* unix ms, like every other time in the API */
          jset(obj, "cert_not_after",
               t->cert_not_after != 0 ? json_integer((json_int_t)t->cert_not_after * 1000)
                                      : json_null()) &&
          jset(obj, "verification", jstr_or_null(t->verification)))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* scheme://host[:port]target, the port left out when it is the default. */
static void sb_url(struct buf *b, const struct flow *f)
{
    bool is_default = (strcmp(f->scheme, "http") == 0 && f->port == 80) ||
                      (strcmp(f->scheme, "https") == 0 && f->port == 443);
    bool is_v6 = strchr(f->host, ':') != NULL;
    char port[8];

    buf_str(b, f->scheme);
    buf_str(b, is_v6 ? "://[" : "://");
    buf_str(b, f->host);
    buf_str(b, is_v6 ? "]" : "");
    if (!is_default && f->port != 0) {
        snprintf(port, sizeof(port), ":%u", (unsigned)f->port);
        buf_str(b, port);
    }
    buf_str(b, f->target != NULL && f->target[0] == '/' ? f->target : "/");
}

/* True when the field name is listed in a Connection field of headers
 * (RFC 9110 7.6.1: such a field is hop-by-hop). */
static bool is_named_in_connection(const char *headers, const char *name, size_t name_len)
{
    const char *n, *v;
    size_t n_len, v_len;
    size_t pos = 0;
    char token[128];

    if (name_len >= sizeof(token))
        return false; /* no Connection option is this long in practice */
    memcpy(token, name, name_len);
    token[name_len] = '\0';
    while (flow_headers_next(headers, &pos, &n, &n_len, &v, &v_len)) {
        if (n_len == 10 && strncasecmp(n, "Connection", 10) == 0 &&
            http1_list_has_token(v, v_len, token))
            return true;
    }
    return false;
}

/*
 * "copy as curl": one shell-safe command line repeating the request, whose
 * output is what the dashboard shows. Host and Content-Length are left to
 * curl (it derives both from the URL and the data), and so are hop-by-hop
 * fields, which concerned the client's connection to tapwire, not the
 * request. When the request accepted a content coding, --compressed
 * replaces its Accept-Encoding: curl then asks for the codings it can
 * decode and prints the decoded body, as the dashboard does. A body is
 * included when it was captured whole and is text, which is all a command
 * line can carry faithfully.
 */
static char *curl_command(const struct flowstore_record *rec, const unsigned char *body,
                          size_t body_len)
{
    const struct flow *f = &rec->flow;
    bool has_data = body != NULL && !f->request_body.truncated && flow_is_text(body, body_len);
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);
    struct buf url = BUF_INIT(BUF_UNBOUNDED_BYTES);
    const char *name, *value;
    size_t name_len, value_len;
    size_t pos = 0;
    bool is_compressed = false;

    while (flow_headers_next(f->request_headers, &pos, &name, &name_len, &value, &value_len)) {
        if (name_len == 15 && strncasecmp(name, "Accept-Encoding", 15) == 0 &&
            http1_accepts_content_coding(value, value_len))
            is_compressed = true;
    }
    pos = 0;
    buf_str(&b, "curl");
    if (is_compressed)
        buf_str(&b, " --compressed");
    if (strcmp(f->method, "HEAD") == 0) {
        buf_str(&b, " --head");
    } else if (!(strcmp(f->method, "GET") == 0 && !has_data) &&
               !(strcmp(f->method, "POST") == 0 && has_data)) {
        buf_str(&b, " -X ");
        sb_shell_quote(&b, f->method, strlen(f->method));
    }
    while (flow_headers_next(f->request_headers, &pos, &name, &name_len, &value, &value_len)) {
        struct buf line = BUF_INIT(BUF_UNBOUNDED_BYTES);
        struct message_field field = {.name = name, .name_len = name_len};

        /* Proxy-* fields were addressed to tapwire, not to the origin. */
        if ((name_len == 4 && strncasecmp(name, "Host", 4) == 0) ||
            (name_len == 14 && strncasecmp(name, "Content-Length", 14) == 0) ||
            (name_len > 6 && strncasecmp(name, "Proxy-", 6) == 0) ||
            (is_compressed && name_len == 15 && strncasecmp(name, "Accept-Encoding", 15) == 0) ||
            http1_is_hop_by_hop(NULL, &field) ||
            is_named_in_connection(f->request_headers, name, name_len))
            continue;
        buf_put(&line, name, name_len);
        buf_str(&line, value_len > 0 ? ": " : ";"); /* curl: "Name;" sends an empty value */
        buf_put(&line, value, value_len);
        buf_str(&b, " -H ");
        if (line.has_failed)
            b.has_failed = true;
        else
            sb_shell_quote(&b, line.data, line.len);
        free(line.data);
    }
    if (has_data) {
        buf_str(&b, " --data-binary ");
        sb_shell_quote(&b, (const char *)body, body_len);
    }
    sb_url(&url, f);
    buf_str(&b, " ");
    if (url.has_failed)
        b.has_failed = true;
    else
        sb_shell_quote(&b, url.data, url.len);
    free(url.data);
    if (b.has_failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

static json_t *original_body_json(bool has, const struct flow_body *body, size_t captured)
{
    json_t *obj;

    if (!has)
        return json_null();
    obj = json_object();
    if (obj != NULL && !(jset(obj, "size", json_integer((json_int_t)body->size)) &&
                         jset(obj, "captured", json_integer((json_int_t)captured)) &&
                         jset(obj, "truncated", json_boolean(body->truncated)))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

static json_t *headers_or_null(const char *text)
{
    return text != NULL ? headers_json(text) : json_null();
}

/* What arrived, for each part a rule changed (null for the others); null
 * as a whole when no rule changed anything. */
static json_t *original_json(const struct flowstore_record *rec)
{
    const struct flow *f = &rec->flow;
    json_t *obj;

    if (f->target_original == NULL && f->request_headers_original == NULL &&
        f->response_headers_original == NULL && !f->has_request_body_original &&
        !f->has_response_body_original)
        return json_null();
    obj = json_object();
    if (obj != NULL &&
        !(jset(obj, "target", jstr(f->target_original)) &&
          jset(obj, "request_headers", headers_or_null(f->request_headers_original)) &&
          jset(obj, "response_headers", headers_or_null(f->response_headers_original)) &&
          jset(obj, "request_body",
               original_body_json(f->has_request_body_original, &f->request_body_original,
                                  rec->request_original_captured)) &&
          jset(obj, "response_body",
               original_body_json(f->has_response_body_original, &f->response_body_original,
                                  rec->response_original_captured)))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

static json_t *detail_json(const struct flowstore_record *rec, const unsigned char *req_body,
                           size_t req_len)
{
    const struct flow *f = &rec->flow;
    bool has_response = f->status != 0 || f->response_headers != NULL;
    char *curl = curl_command(rec, req_body, req_len);
    json_t *obj = json_object();
    bool is_ok = obj != NULL && curl != NULL && summary_fields(obj, rec) &&
                 jset(obj, "client", jstr(f->client_addr)) &&
                 jset(obj, "request", message_json(rec, true)) &&
                 jset(obj, "response", has_response ? message_json(rec, false) : json_null()) &&
                 jset(obj, "timings", timings_json(&f->timings)) && jset(obj, "tls", tls_json(f)) &&
                 jset(obj, "rules", jstr_or_null(f->rules)) &&
                 jset(obj, "rules_notes", jstr_or_null(f->rules_notes)) &&
                 jset(obj, "original", original_json(rec)) &&
                 jset(obj, "bytes_up", json_integer((json_int_t)f->bytes_up)) &&
                 jset(obj, "bytes_down", json_integer((json_int_t)f->bytes_down)) &&
                 jset(obj, "replay_of",
                      f->replay_of > 0 ? json_integer((json_int_t)f->replay_of) : json_null()) &&
                 jset(obj, "curl", jstr(curl));

    free(curl);
    if (!is_ok) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* Where leaves came from, and what minting cost the connection threads. */
static json_t *certs_json(struct certstore *certs)
{
    struct certstore_stats st;
    json_t *obj = json_object();

    certstore_stats(certs, &st);
    if (obj == NULL || !jset(obj, "from_memory", json_integer((json_int_t)st.memory_hits)) ||
        !jset(obj, "from_database", json_integer((json_int_t)st.db_hits)) ||
        !jset(obj, "minted", json_integer((json_int_t)st.minted)) ||
        !jset(obj, "mint_us_total", json_integer((json_int_t)st.mint_us_total))) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static json_t *stats_json(struct dashboard *d, bool is_full)
{
    struct flowstore_stats st;
    json_t *obj = json_object();
    bool is_ok;

    flowstore_stats(d->flows, &st);
    is_ok =
        obj != NULL && jset(obj, "stored", json_integer((json_int_t)st.stored)) &&
        jset(obj, "dropped", json_integer((json_int_t)st.dropped)) &&
        jset(obj, "bodies_dropped", json_integer((json_int_t)st.bodies_dropped)) &&
        jset(obj, "written", json_integer((json_int_t)st.written)) &&
        jset(obj, "spooled", json_integer((json_int_t)st.spooled)) &&
        jset(obj, "recovered", json_integer((json_int_t)st.recovered)) &&
        jset(obj, "write_failing", json_boolean(st.is_write_failing)) &&
        jset(obj, "write_error", st.is_write_failing ? jstr_or_null(st.last_error) : json_null());
    if (is_ok && is_full)
        is_ok = jset(obj, "write_errors", json_integer((json_int_t)st.write_errors)) &&
                jset(obj, "last_error", jstr_or_null(st.last_error)) &&
                jset(obj, "version", json_string(TAPWIRE_VERSION)) &&
                jset(obj, "ca_path", jstr(ca_cert_path(d->ca)));
    if (is_ok && is_full && d->certs != NULL)
        is_ok = jset(obj, "certificates", certs_json(d->certs));
    if (!is_ok) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* ---- API handlers ---- */

/* A positive decimal id, nothing else. */
static bool parse_id(const char *text, size_t len, int64_t *id)
{
    int64_t value = 0;
    size_t i;

    if (len == 0 || len > 18)
        return false;
    for (i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        value = value * 10 + (text[i] - '0');
    }
    *id = value;
    return value > 0;
}

/* The host filter as people type it: "google" is any host containing it,
 * "*.example.com" a glob, and a leading "!" hides what matches (the
 * background noise of *.googleapis.com). */
static void host_filter(const char *value, struct flowstore_filter *filter)
{
    if (value == NULL)
        return;
    while (*value == ' ')
        value++;
    if (*value == '!') {
        filter->is_host_negated = true;
        value++;
        while (*value == ' ')
            value++;
    }
    if (strpbrk(value, "*?[") != NULL)
        filter->host_glob = value;
    else
        filter->host_text = value;
}

/* A filter expression of the list (filter=, tapwire-filters(7)), compiled
 * for one request; list_expr_free() after the listing. */
struct list_expr {
    struct filter *expr;
    struct filter_sql sql;
    char err[FILTER_ERROR_BYTES + 32];
};

static void list_expr_free(struct list_expr *le)
{
    filter_free(le->expr);
    filter_sql_free(&le->sql);
    le->expr = NULL;
}

/* The list's filters from the query string (host, method, status, type,
 * q, body, icase, filter), for the list and the HAR export alike. NULL, or
 * what is wrong for a 400. The filter's texts point into the request; the
 * expression's compiled form into le (free it with list_expr_free()). */
static const char *parse_list_filter(struct MHD_Connection *conn, struct flowstore_filter *filter,
                                     struct list_expr *le)
{
    const char *expr = arg(conn, "filter");
    const char *status = arg(conn, "status");
    const char *body = NULL;
    size_t body_len = 0;

    if (status != NULL && status[0] != '\0') {
        if (strcasecmp(status, "err") == 0)
            filter->status_class = FLOWSTORE_STATUS_ERROR;
        else if (strlen(status) == 3 && status[0] >= '1' && status[0] <= '5' &&
                 strcasecmp(status + 1, "xx") == 0)
            filter->status_class = status[0] - '0';
        else
            return "status must be 1xx..5xx or err";
    }
    host_filter(arg(conn, "host"), filter);
    filter->method = arg(conn, "method");
    filter->content_type = arg(conn, "type");
    filter->url_text = arg(conn, "q");
    /* The length variant: a body search may hold %00. */
    if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "body", strlen("body"), &body,
                                      &body_len) == MHD_YES &&
        body != NULL && body_len > 0) {
        const char *icase = arg(conn, "icase");

        filter->body_bytes = body;
        filter->body_len = body_len;
        filter->is_body_nocase = icase != NULL && strcmp(icase, "1") == 0;
    }
    memset(le, 0, sizeof(*le));
    if (expr != NULL && expr[strspn(expr, " \t")] != '\0') {
        char why[FILTER_ERROR_BYTES];
        if (filter_parse(expr, strlen(expr), &le->expr, why, sizeof(why)) != 0 ||
            filter_to_sql(le->expr, &le->sql, why, sizeof(why)) != 0) {
            snprintf(le->err, sizeof(le->err), "filter: %s", why);
            list_expr_free(le);
            return le->err;
        }
        filter->expr = le->expr;
        filter->expr_sql = &le->sql;
        filter->expr_text = expr;
    }
    return NULL;
}

static mhd_result api_list(struct dashboard *d, struct MHD_Connection *conn)
{
    struct flowstore_filter filter = {0};
    struct list_expr le = {0};
    struct flowstore_record **records = NULL;
    size_t count = 0, i;
    const char *limit = arg(conn, "limit");
    const char *before = arg(conn, "before");
    const char *bad;
    json_t *root = NULL, *flows = NULL;
    char err[512];
    mhd_result ret;
    int64_t n;

    filter.limit = DASHBOARD_LIST_DEFAULT_FLOWS;
    if (limit != NULL) {
        if (!parse_id(limit, strlen(limit), &n) || n > DASHBOARD_LIST_MAX_FLOWS)
            return send_error(conn, MHD_HTTP_BAD_REQUEST, "limit must be 1..500");
        filter.limit = (size_t)n;
    }
    if (before != NULL && before[0] != '\0' && !parse_id(before, strlen(before), &filter.before_id))
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "before must be a flow id");
    if ((bad = parse_list_filter(conn, &filter, &le)) != NULL)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, bad);
    if (flowstore_list(d->flows, &filter, &records, &count, err, sizeof(err)) != 0) {
        list_expr_free(&le);
        log_warn("dashboard: %s", err);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    list_expr_free(&le);
    root = json_object();
    flows = json_array();
    ret = MHD_NO;
    if (root == NULL || flows == NULL || json_object_set(root, "flows", flows) != 0)
        goto out;
    for (i = 0; i < count; i++)
        if (!jappend(flows, summary_json(records[i])))
            goto out;
    /* A full page may have more behind it; the client asks with before=next. */
    if (!jset(root, "next",
              count == filter.limit ? json_integer(records[count - 1]->flow.id) : json_null()) ||
        !jset(root, "stats", stats_json(d, false)))
        goto out;
    ret = send_json(conn, MHD_HTTP_OK, root);
    root = NULL;
out:
    json_decref(flows);
    json_decref(root);
    flowstore_records_free(records, count);
    return ret;
}

/* The flow or a response already sent: 404 when it is not stored. */
static struct flowstore_record *find_flow(struct dashboard *d, struct MHD_Connection *conn,
                                          int64_t id, mhd_result *sent)
{
    struct flowstore_record *rec = NULL;
    char err[512];

    if (flowstore_get(d->flows, id, &rec, err, sizeof(err)) != 0) {
        log_warn("dashboard: %s", err);
        *sent = send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    } else if (rec == NULL) {
        *sent = send_error(conn, MHD_HTTP_NOT_FOUND, "no such flow");
    }
    return rec;
}

static mhd_result api_detail(struct dashboard *d, struct MHD_Connection *conn, int64_t id)
{
    struct flowstore_record *rec;
    unsigned char *body = NULL;
    size_t body_len = 0;
    char err[512];
    mhd_result ret = MHD_NO;

    rec = find_flow(d, conn, id, &ret);
    if (rec == NULL)
        return ret;
    /* The curl line carries a whole text body; anything else is not read. */
    if (rec->request_captured > 0 && !rec->flow.request_body.truncated &&
        flowstore_get_body(d->flows, id, FLOWSTORE_REQUEST, &body, &body_len, err, sizeof(err)) !=
            0) {
        log_warn("dashboard: %s", err);
        ret = send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
        goto out;
    }
    ret = send_json(conn, MHD_HTTP_OK, detail_json(rec, body, body_len));
out:
    free(body);
    flowstore_record_free(rec);
    return ret;
}

/* A reason fit for a header value: printable ASCII only. */
static void header_safe(const char *in, char *out, size_t out_len)
{
    size_t i;

    for (i = 0; in[i] != '\0' && i + 1 < out_len; i++)
        out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
    out[i] = '\0';
}

/*
 * A body as an attachment: the bytes as sent on, or with ?original=1 the
 * bytes as received before a rule rewrote them. ?decode=1 removes the
 * Content-Encoding of a body as sent; originals are stored decoded (rules
 * work on the decoded body), so for them it changes nothing.
 */
static mhd_result api_body(struct dashboard *d, struct MHD_Connection *conn, int64_t id,
                           bool is_request)
{
    const char *decode = arg(conn, "decode");
    const char *original = arg(conn, "original");
    bool is_original = original != NULL && strcmp(original, "1") == 0;
    enum flowstore_direction direction;
    bool has_original;
    struct flowstore_record *rec;
    unsigned char *data = NULL, *decoded = NULL;
    size_t len = 0, decoded_len = 0;
    const char *encoding;
    bool is_truncated;
    bool is_decoded = false;
    char reason[256] = "";
    char safe[256];
    char disposition[96];
    char err[512];
    struct MHD_Response *resp;
    mhd_result ret = MHD_NO;

    if (original != NULL && !is_original && strcmp(original, "0") != 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "original must be 0 or 1");
    rec = find_flow(d, conn, id, &ret);
    if (rec == NULL)
        return ret;
    has_original =
        is_request ? rec->flow.has_request_body_original : rec->flow.has_response_body_original;
    if (is_original && !has_original) {
        ret = send_error(conn, MHD_HTTP_NOT_FOUND, "no rule rewrote this body");
        goto out;
    }
    if (is_original)
        direction = is_request ? FLOWSTORE_REQUEST_ORIGINAL : FLOWSTORE_RESPONSE_ORIGINAL;
    else
        direction = is_request ? FLOWSTORE_REQUEST : FLOWSTORE_RESPONSE;
    if (flowstore_get_body(d->flows, id, direction, &data, &len, err, sizeof(err)) != 0) {
        log_warn("dashboard: %s", err);
        ret = send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
        goto out;
    }
    encoding = is_original  ? NULL
               : is_request ? rec->request_content_encoding
                            : rec->response_content_encoding;
    if (is_original)
        is_truncated = is_request ? rec->flow.request_body_original.truncated
                                  : rec->flow.response_body_original.truncated;
    else
        is_truncated =
            is_request ? rec->flow.request_body.truncated : rec->flow.response_body.truncated;
    if (decode != NULL && strcmp(decode, "1") == 0 && encoding != NULL && encoding[0] != '\0' &&
        len > 0) {
        if (is_truncated)
            snprintf(reason, sizeof(reason),
                     "the body was truncated at the capture limit, so it cannot be decoded");
        else if (codec_decode_content(encoding, data, len, DASHBOARD_MAX_DECODED_BYTES, &decoded,
                                      &decoded_len, reason, sizeof(reason)) == 0)
            is_decoded = true;
        else if (reason[0] == '\0')
            snprintf(reason, sizeof(reason), "cannot decode %s", encoding);
    }
    snprintf(disposition, sizeof(disposition), "attachment; filename=\"flow-%" PRId64 "-%s%s.bin\"",
             id, is_request ? "request" : "response", is_original ? "-original" : "");
    if (is_decoded) {
        free(data);
        data = decoded;
        len = decoded_len;
        decoded = NULL;
    }
    resp = with_header(owned_response(data, len), "Content-Disposition", disposition);
    data = NULL;
    if (reason[0] != '\0') {
        header_safe(reason, safe, sizeof(safe));
        resp = with_header(resp, "X-Tapwire-Decode-Error", safe);
    } else if (is_decoded) {
        resp = with_header(resp, "X-Tapwire-Decoded", "1");
    }
    ret = send_reply(conn, MHD_HTTP_OK, resp, "application/octet-stream", true);
out:
    free(decoded);
    free(data);
    flowstore_record_free(rec);
    return ret;
}

struct har_stream {
    struct dashboard *d;
    struct har *har;
    const char *piece; /* owned by har, valid until the next har_read() */
    size_t piece_len;
    size_t off;
};

static ssize_t har_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct har_stream *s = cls;
    char err[512];
    size_t n;

    while (s->off == s->piece_len) {
        int rc;

        /* Stop in the middle of an export rather than hold up shutdown. */
        if (is_stopping(s->d))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        rc = har_read(s->har, &s->piece, &s->piece_len, err, sizeof(err));
        if (rc == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (rc < 0) {
            log_warn("dashboard: HAR export: %s", err);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        s->off = 0;
    }
    n = s->piece_len - s->off < max ? s->piece_len - s->off : max;
    memcpy(buf, s->piece + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void har_stream_free(void *cls)
{
    struct har_stream *s = cls;

    har_close(s->har);
    free(s);
}

/* Streams a HAR of ids, or (ids NULL) of the newest flows filter lists. */
static mhd_result send_har(struct dashboard *d, struct MHD_Connection *conn, const int64_t *ids,
                           size_t count, const struct flowstore_filter *filter)
{
    struct har_stream *s = calloc(1, sizeof(*s));
    struct MHD_Response *resp;
    char err[512];
    int rc;

    if (s == NULL)
        return MHD_NO;
    s->d = d;
    if (ids == NULL)
        rc = har_open_filtered(d->flows, filter, codec_decode_content, &s->har, err, sizeof(err));
    else
        rc = har_open(d->flows, ids, count, codec_decode_content, &s->har, err, sizeof(err));
    if (rc != 0) {
        free(s);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HAR_STREAM_BLOCK_BYTES,
                                             har_stream_read, s, har_stream_free);
    if (resp == NULL) {
        har_stream_free(s);
        return MHD_NO;
    }
    resp = with_header(resp, "Content-Disposition", "attachment; filename=\"tapwire.har\"");
    return send_reply(conn, MHD_HTTP_OK, resp, "application/json; charset=utf-8", true);
}

static mhd_result api_flow_har(struct dashboard *d, struct MHD_Connection *conn, int64_t id)
{
    struct flowstore_record *rec;
    mhd_result ret = MHD_NO;

    rec = find_flow(d, conn, id, &ret); /* 404 rather than an empty log */
    if (rec == NULL)
        return ret;
    flowstore_record_free(rec);
    return send_har(d, conn, &id, 1, NULL);
}

static mhd_result api_har(struct dashboard *d, struct MHD_Connection *conn)
{
    const char *list = arg(conn, "ids");
    int64_t *ids = NULL;
    size_t count = 0;
    mhd_result ret;

    if (list == NULL || list[0] == '\0') {
        struct flowstore_filter filter = {0};
        struct list_expr le;
        const char *bad = parse_list_filter(conn, &filter, &le);
        mhd_result sent;

        if (bad != NULL)
            return send_error(conn, MHD_HTTP_BAD_REQUEST, bad);
        sent = send_har(d, conn, NULL, 0, &filter); /* the export compiles its own */
        list_expr_free(&le);
        return sent;
    }
    ids = malloc(HAR_MAX_FLOWS * sizeof(ids[0]));
    if (ids == NULL)
        return MHD_NO;
    while (*list != '\0') {
        size_t n = strcspn(list, ",");

        if (count == HAR_MAX_FLOWS || !parse_id(list, n, &ids[count])) {
            free(ids);
            return send_error(conn, MHD_HTTP_BAD_REQUEST,
                              "ids must be at most 10000 flow ids separated by commas");
        }
        count++;
        list += n;
        if (*list == ',')
            list++;
    }
    ret = send_har(d, conn, ids, count, NULL);
    free(ids);
    return ret;
}

static mhd_result api_delete(struct dashboard *d, struct MHD_Connection *conn, int64_t id)
{
    bool found = false;
    char err[512];

    if (flowstore_delete(d->flows, id, &found, err, sizeof(err)) != 0) {
        log_warn("dashboard: %s", err);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    if (!found)
        return send_error(conn, MHD_HTTP_NOT_FOUND, "no such flow");
    return send_reply(conn, MHD_HTTP_NO_CONTENT, static_response("", 0), NULL, false);
}

static mhd_result api_clear(struct dashboard *d, struct MHD_Connection *conn)
{
    char err[512];

    if (flowstore_clear(d->flows, err, sizeof(err)) != 0) {
        log_warn("dashboard: %s", err);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    pthread_mutex_lock(&d->lock);
    d->clears++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return send_reply(conn, MHD_HTTP_NO_CONTENT, static_response("", 0), NULL, false);
}

/* ---- live updates ---- */

struct sse_stream {
    struct dashboard *d;
    int64_t cursor;        /* the newest flow sent (or skipped) */
    uint64_t clears;       /* clears already announced */
    int64_t end_ms;        /* monotonic: the stream ends here */
    int64_t next_stats_ms; /* monotonic: the next heartbeat */
    bool is_started;
    struct buf out; /* events not yet handed to libmicrohttpd */
    size_t off;
};

/* One event; data is compact JSON, so it has no newline of its own. */
static void sse_event(struct buf *out, const char *event, json_t *data)
{
    char *text = data != NULL ? json_dumps(data, JSON_FLAGS) : NULL;

    json_decref(data);
    if (text == NULL) {
        out->has_failed = true;
        return;
    }
    buf_str(out, "event: ");
    buf_str(out, event);
    buf_str(out, "\ndata: ");
    buf_str(out, text);
    buf_str(out, "\n\n");
    free(text);
}

/* Events for flows written after the cursor, oldest first. */
static int sse_flows(struct sse_stream *s, int64_t newest)
{
    struct flowstore_filter filter = {0};
    struct flowstore_record **records = NULL;
    size_t count = 0, i;
    char err[512];

    filter.after_id = s->cursor;
    filter.is_oldest_first = true;
    filter.limit = DASHBOARD_SSE_FLOWS_PER_READ;
    if (flowstore_list(s->d->flows, &filter, &records, &count, err, sizeof(err)) != 0) {
        log_warn("dashboard: live updates: %s", err);
        return -1;
    }
    for (i = 0; i < count; i++)
        sse_event(&s->out, "flow", summary_json(records[i]));
    /* Nothing listed: deleted or pruned before we looked. Skip to newest. */
    s->cursor = count > 0 ? records[count - 1]->flow.id : newest;
    flowstore_records_free(records, count);
    return 0;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
    *ts = clock_deadline_ms(CLOCK_MONOTONIC, ms);
}

/* Waits for something to send and queues it. 0, or -1 to end the stream. */
static int sse_fill(struct sse_stream *s)
{
    struct dashboard *d = s->d;

    s->out.len = 0;
    s->off = 0;
    if (!s->is_started) {
        /* EventSource waits this long before reconnecting. */
        buf_str(&s->out, "retry: 3000\n\n");
        s->is_started = true;
    }
    while (s->out.len == 0) {
        int64_t newest;
        uint64_t clears;
        bool stopping;
        int64_t now;

        pthread_mutex_lock(&d->lock);
        for (;;) {
            int64_t wake = s->next_stats_ms < s->end_ms ? s->next_stats_ms : s->end_ms;
            struct timespec until;

            now = clock_mono_ms();
            if (d->is_stopping || now >= wake || d->newest_id > s->cursor || d->clears != s->clears)
                break;
            deadline_in(&until, wake - now);
            pthread_cond_timedwait(&d->cond, &d->lock, &until);
        }
        newest = d->newest_id;
        clears = d->clears;
        stopping = d->is_stopping;
        pthread_mutex_unlock(&d->lock);

        if (stopping || now >= s->end_ms)
            return -1;
        if (clears != s->clears) {
            s->clears = clears;
            sse_event(&s->out, "clear", json_object());
        }
        if (newest > s->cursor && sse_flows(s, newest) != 0)
            return -1;
        if (now >= s->next_stats_ms) {
            sse_event(&s->out, "stats", stats_json(d, false));
            s->next_stats_ms = now + DASHBOARD_SSE_HEARTBEAT_MS;
        }
        if (s->out.has_failed)
            return -1;
    }
    return 0;
}

/* Runs on the connection's own thread and blocks there until there is
 * something to send: the point of thread-per-connection. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse_stream *s = cls;
    size_t n;

    if (s->off == s->out.len && sse_fill(s) != 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    n = s->out.len - s->off < max ? s->out.len - s->off : max;
    memcpy(buf, s->out.data + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    struct sse_stream *s = cls;

    free(s->out.data);
    free(s);
}

static mhd_result api_events(struct dashboard *d, struct MHD_Connection *conn)
{
    struct sse_stream *s = calloc(1, sizeof(*s));
    struct MHD_Response *resp;
    int64_t now = clock_mono_ms();

    if (s == NULL)
        return MHD_NO;
    s->d = d;
    s->out.max = BUF_UNBOUNDED_BYTES;
    pthread_mutex_lock(&d->lock);
    s->cursor = d->newest_id; /* only what is written from now on */
    s->clears = d->clears;
    pthread_mutex_unlock(&d->lock);
    s->end_ms = now + DASHBOARD_SSE_MAX_MS;
    s->next_stats_ms = now; /* the first heartbeat at once: the page shows counts */
    resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK_BYTES, sse_read, s, sse_free);
    if (resp == NULL) {
        sse_free(s);
        return MHD_NO;
    }
    return send_reply(conn, MHD_HTTP_OK, resp, "text/event-stream; charset=utf-8", false);
}

/* The flow store's written-callback: runs on the writer thread, so only
 * records the newest id and wakes the streams. */
static void on_flows_written(void *arg, const int64_t *ids, size_t count)
{
    struct dashboard *d = arg;

    if (count == 0)
        return;
    pthread_mutex_lock(&d->lock);
    if (ids[count - 1] > d->newest_id)
        d->newest_id = ids[count - 1];
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

/* ---- pages ---- */

struct static_file {
    const char *path;
    const char *file;
    const char *content_type;
    const unsigned char *data;
    const size_t *len;
};

static const struct static_file static_files[] = {
    {"/", "index.html", "text/html; charset=utf-8", embedded_web_index_html,
     &embedded_web_index_html_len},
    {"/app.js", "app.js", "text/javascript; charset=utf-8", embedded_web_app_js,
     &embedded_web_app_js_len},
    {"/interact.js", "interact.js", "text/javascript; charset=utf-8", embedded_web_interact_js,
     &embedded_web_interact_js_len},
    {"/style.css", "style.css", "text/css; charset=utf-8", embedded_web_style_css,
     &embedded_web_style_css_len},
};

/* dir/name whole, a regular file of at most DASHBOARD_MAX_STATIC_BYTES. */
static char *read_file(const char *dir, const char *name, size_t *len, char *err, size_t err_len)
{
    char path[4096];
    struct stat st;
    char *data = NULL;
    size_t have = 0;
    int fd = -1;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        errmsg_set(err, err_len, "cannot read %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > DASHBOARD_MAX_STATIC_BYTES) {
        errmsg_set(err, err_len, "%s is not a regular file of at most %d bytes", path,
                   DASHBOARD_MAX_STATIC_BYTES);
        goto fail;
    }
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto fail;
    }
    while (have < (size_t)st.st_size) {
        ssize_t n = read(fd, data + have, (size_t)st.st_size - have);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errmsg_set(err, err_len, "cannot read %s: %s", path, n < 0 ? strerror(errno) : "EOF");
            goto fail;
        }
        have += (size_t)n;
    }
    close(fd);
    *len = have;
    return data;
fail:
    if (fd >= 0)
        close(fd);
    free(data);
    return NULL;
}

/* --web-root maps only the three names above, so no URL can name another
 * file, whatever it holds ("..", encoded slashes, symlinks in the URL). */
static mhd_result send_static(struct dashboard *d, struct MHD_Connection *conn,
                              const struct static_file *file)
{
    char err[512];
    size_t len = 0;
    char *data;

    if (d->web_root == NULL)
        return send_reply(conn, MHD_HTTP_OK, static_response(file->data, *file->len),
                          file->content_type, false);
    data = read_file(d->web_root, file->file, &len, err, sizeof(err));
    if (data == NULL) {
        log_warn("dashboard: --web-root: %s", err);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    return send_reply(conn, MHD_HTTP_OK, owned_response(data, len), file->content_type, false);
}

static const char page_no_token[] =
    "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
    "<title>tapwire</title></head>\n<body>\n<h1>tapwire</h1>\n"
    "<p>Open the dashboard with the URL tapwire printed at startup, the one ending in "
    "<code>/?token=</code>: the token in it is what lets you in.</p>\n"
    "<p>The page on trusting tapwire's CA needs no token: <a href=\"/ca\">/ca</a>.</p>\n"
    "</body>\n</html>\n";

static const char page_wrong_token[] =
    "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
    "<title>tapwire</title></head>\n<body>\n<h1>tapwire</h1>\n"
    "<p>That token is not this dashboard's. Open the URL the running tapwire printed at "
    "startup (a restart makes a new token unless --dashboard-token is given).</p>\n"
    "</body>\n</html>\n";

/*
 * index.html with the token written into its slot: how the page learns the
 * value for its X-Tapwire-Token header now that script cannot read the
 * cookie. Returns a malloc'd copy (caller frees) or NULL when out of memory;
 * a page without the slot is copied unchanged.
 */
static char *page_with_token(const struct dashboard *d, const char *page, size_t len,
                             size_t *out_len)
{
    static const char slot[] = PAGE_TOKEN_SLOT;
    const char *at = memmem(page, len, slot, sizeof(slot) - 1);
    size_t token_len = at != NULL ? strlen(d->token) : 0;
    size_t head = at != NULL ? (size_t)(at - page) + sizeof(slot) - 1 : len;
    char *out = malloc(len + token_len + 1);

    if (out == NULL)
        return NULL;
    memcpy(out, page, head);
    memcpy(out + head, d->token, token_len);
    memcpy(out + head + token_len, page + head, len - head);
    *out_len = len + token_len;
    return out;
}

static mhd_result send_page(struct dashboard *d, struct MHD_Connection *conn)
{
    const struct static_file *file = &static_files[0];
    char err[512];
    char *read = NULL, *page;
    size_t len = *file->len;

    if (d->web_root != NULL) {
        read = read_file(d->web_root, file->file, &len, err, sizeof(err));
        if (read == NULL) {
            log_warn("dashboard: --web-root: %s", err);
            return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
        }
    }
    page = page_with_token(d, read != NULL ? read : (const char *)file->data, len, &len);
    free(read);
    if (page == NULL)
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "dashboard: out of memory");
    return send_reply(conn, MHD_HTTP_OK, owned_response(page, len), file->content_type, false);
}

static mhd_result page_root(struct dashboard *d, struct MHD_Connection *conn)
{
    const char *given = arg(conn, "token");
    char name[TOKEN_COOKIE_NAME_BYTES];
    char cookie[TOKEN_COOKIE_NAME_BYTES + DASHBOARD_MAX_TOKEN_CHARS + 64];

    if (given != NULL) {
        if (!token_matches(d, given))
            return send_html(conn, MHD_HTTP_UNAUTHORIZED, page_wrong_token);
        /* HttpOnly: pages on other ports of this host share the cookie jar
         * and must not read it. Strict: no other site's request carries
         * it. The redirect takes the token out of the address bar and
         * history. */
        cookie_name(d, name, sizeof(name));
        snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; HttpOnly; SameSite=Strict", name,
                 d->token);
        return send_reply(
            conn, MHD_HTTP_SEE_OTHER,
            with_header(with_header(static_response("", 0), MHD_HTTP_HEADER_SET_COOKIE, cookie),
                        MHD_HTTP_HEADER_LOCATION, "/"),
            "text/plain; charset=utf-8", false);
    }
    if (!token_matches(d, cookie_token(d, conn)))
        return send_html(conn, MHD_HTTP_UNAUTHORIZED, page_no_token);
    return send_page(d, conn);
}

/* ---- rewrite rules ---- */

/* A JSON request body being read: the connection's context from the first
 * call of on_request() (the head, checked) to the last (the body is
 * complete), when the handler of kind runs. */
enum upload_kind {
    UPLOAD_RULE_ADD,
    UPLOAD_RULE_UPDATE,
    UPLOAD_RULES_REORDER,
    UPLOAD_INTERCEPT_FILTER, /* dashinteract.h from here on */
    UPLOAD_RESUME,
    UPLOAD_REPLAY,
    UPLOAD_HAR,
};

struct upload {
    enum upload_kind kind;
    int64_t id; /* UPLOAD_RULE_UPDATE: the rule; UPLOAD_RESUME, UPLOAD_REPLAY: the flow */
    char *data; /* Content-Length bytes, at most DASHBOARD_MAX_JSON_BODY_BYTES
                   (DASHINTERACT_MAX_JSON_BODY_BYTES for intercept and replay,
                   DASHBOARD_MAX_HAR_BYTES for a HAR) */
    size_t len;
    size_t cap;
    bool is_too_large;   /* more came than Content-Length said */
    struct dashboard *d; /* UPLOAD_HAR: whose is_importing to clear when freed */
};

static void upload_free(struct upload *up)
{
    if (up == NULL)
        return;
    if (up->kind == UPLOAD_HAR) {
        pthread_mutex_lock(&up->d->lock);
        up->d->is_importing = false;
        pthread_mutex_unlock(&up->d->lock);
    }
    free(up->data);
    free(up);
}

static void upload_append(struct upload *up, const char *data, size_t len)
{
    if (up->is_too_large || len > up->cap - up->len) {
        up->is_too_large = true;
        return;
    }
    memcpy(up->data + up->len, data, len);
    up->len += len;
}

/* "application/json", with or without parameters, in any case. */
static bool is_json_type(const char *type)
{
    static const char want[] = "application/json";
    size_t n = strlen(want);

    if (type == NULL || strncasecmp(type, want, n) != 0)
        return false;
    type += n;
    while (*type == ' ' || *type == '\t')
        type++;
    return *type == '\0' || *type == ';';
}

static mhd_result send_rules_off(struct MHD_Connection *conn)
{
    return send_error(conn, MHD_HTTP_NOT_FOUND, "rewrite rules are off in this tapwire");
}

/*
 * The head of a request whose JSON body a rules change needs: refuses what
 * cannot be one before reading any of it (chunked: 411, too long: 413, not
 * JSON: 415), else makes *out the context to read it into and answers
 * nothing yet, so that libmicrohttpd reads the body (sending 100 Continue
 * when the client waits for it).
 */
static mhd_result expect_json(struct dashboard *d, struct MHD_Connection *conn,
                              enum upload_kind kind, int64_t id, struct upload **out)
{
    const char *length = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long n = 0;
    bool is_rules = kind <= UPLOAD_RULES_REORDER;
    size_t max = is_rules             ? DASHBOARD_MAX_JSON_BODY_BYTES
                 : kind == UPLOAD_HAR ? DASHBOARD_MAX_HAR_BYTES
                                      : DASHINTERACT_MAX_JSON_BODY_BYTES;
    struct upload *up;
    bool is_busy = false;

    if (is_rules && d->rules == NULL)
        return send_rules_off(conn);
    if (header(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
        return send_error(conn, MHD_HTTP_LENGTH_REQUIRED,
                          "send the JSON body with a Content-Length, not chunked");
    if (length != NULL) {
        char *end;

        errno = 0;
        n = strtoull(length, &end, 10);
        if (length[0] < '0' || length[0] > '9' || *end != '\0' || errno != 0)
            return send_error(conn, MHD_HTTP_BAD_REQUEST, "bad Content-Length");
    }
    if (n > max)
        return send_error(conn, HTTP_CONTENT_TOO_LARGE,
                          is_rules             ? "the JSON body is larger than 64 KiB"
                          : kind == UPLOAD_HAR ? "the HAR file is larger than 32 MiB"
                                               : "the JSON body is larger than 4 MiB");
    if (!is_json_type(header(conn, MHD_HTTP_HEADER_CONTENT_TYPE)))
        return send_error(conn, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                          "the body must be JSON (Content-Type: application/json)");
    if (kind == UPLOAD_HAR) {
        pthread_mutex_lock(&d->lock);
        is_busy = d->is_importing;
        d->is_importing = true;
        pthread_mutex_unlock(&d->lock);
        if (is_busy)
            return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                              "another HAR import is under way; try again when it is done");
    }
    up = calloc(1, sizeof(*up));
    if (up == NULL || (up->data = malloc((size_t)n + 1)) == NULL) {
        free(up);
        if (kind == UPLOAD_HAR) {
            pthread_mutex_lock(&d->lock);
            d->is_importing = false;
            pthread_mutex_unlock(&d->lock);
        }
        return MHD_NO;
    }
    up->d = d;
    up->kind = kind;
    up->id = id;
    up->cap = (size_t)n;
    *out = up;
    return MHD_YES;
}

/* RULESTORE_* as an HTTP answer; err is the message for a person (the
 * parser's "column N: ..." for a bad spec). */
static mhd_result send_rules_error(struct MHD_Connection *conn, int rc, const char *err)
{
    if (rc == RULESTORE_INVALID)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, err);
    if (rc == RULESTORE_NOT_FOUND)
        return send_error(conn, MHD_HTTP_NOT_FOUND, err);
    log_warn("dashboard: rules: %s", err);
    return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
}

/* What flows changed by the rule call it: its name= when it has one, else
 * "#ID" (the label the rulebook gives the dashboard's rules). */
static json_t *rule_label_json(const struct rulestore_row *row)
{
    struct rule_set *set = NULL;
    char fallback[32], err[256];
    json_t *label;

    snprintf(fallback, sizeof(fallback), "#%lld", (long long)row->id);
    if (rules_parse_spec(row->spec, strlen(row->spec), fallback, &set, err, sizeof(err)) == 0 &&
        rules_set_count(set) == 1 && rules_set_get(set, 0)->has_name)
        label = jstr(rules_set_get(set, 0)->label);
    else
        label = jstr(fallback);
    rules_set_unref(set);
    return label;
}

static json_t *rule_row_json(const struct rulestore_row *row)
{
    json_t *obj = json_object();

    if (obj != NULL &&
        !(jset(obj, "id", json_integer(row->id)) && jset(obj, "label", rule_label_json(row)) &&
          jset(obj, "position", json_integer(row->position)) &&
          jset(obj, "enabled", json_boolean(row->is_enabled)) &&
          jset(obj, "spec", jstr(row->spec)) &&
          /* unix ms, like every other time in the API */
          jset(obj, "created_at", json_integer(row->created_at * 1000)))) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* The lines of text as JSON strings, blank lines left out. */
static bool append_lines(json_t *array, const char *text)
{
    while (text != NULL && *text != '\0') {
        size_t n = strcspn(text, "\n");

        if (n > 0 && !jappend(array, jtext(text, n)))
            return false;
        text += n;
        if (*text == '\n')
            text++;
    }
    return true;
}

/* GET /api/rules: the dashboard's rules in order, and the read-only rules
 * of --rules and --rule. */
static mhd_result api_rules_list(struct dashboard *d, struct MHD_Connection *conn)
{
    struct rulestore_row *rows = NULL;
    size_t count = 0, i;
    char *static_text = NULL;
    json_t *root = json_object();
    json_t *list = json_array();
    json_t *lines = json_array();
    char err[512];
    mhd_result ret = MHD_NO;
    int rc;

    if (root == NULL || list == NULL || lines == NULL ||
        json_object_set(root, "rules", list) != 0 || json_object_set(root, "static", lines) != 0 ||
        !jset(root, "available", json_boolean(d->rules != NULL)))
        goto out;
    if (d->rules != NULL) {
        rc = rulebook_db_list(d->rules, &rows, &count, err, sizeof(err));
        if (rc != 0) {
            ret = send_rules_error(conn, rc, err);
            goto out;
        }
        static_text = rulebook_static_rules_text(d->rules);
        if (static_text == NULL) {
            ret = send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "dashboard: out of memory");
            goto out;
        }
    }
    for (i = 0; i < count; i++)
        if (!jappend(list, rule_row_json(&rows[i])))
            goto out;
    if (!append_lines(lines, static_text))
        goto out;
    ret = send_json(conn, MHD_HTTP_OK, root);
    root = NULL;
out:
    json_decref(lines);
    json_decref(list);
    json_decref(root);
    free(static_text);
    rulestore_rows_free(rows, count);
    return ret;
}

/* spec and enabled of a rule in body; NULL, or why they are unusable. */
static const char *rule_fields(json_t *body, bool is_enabled_required, const char **spec,
                               bool *is_enabled)
{
    json_t *s = json_object_get(body, "spec");
    json_t *e = json_object_get(body, "enabled");

    if (!json_is_string(s))
        return "spec must be a string: one rule in the syntax of tapwire-rules(5)";
    /* jansson keeps \u0000; the rules API takes C strings. */
    if (strlen(json_string_value(s)) != json_string_length(s))
        return "spec holds a NUL character: write \\x00 in a double-quoted word";
    if (e == NULL && is_enabled_required)
        return "enabled (true or false) is missing";
    if (e != NULL && !json_is_boolean(e))
        return "enabled must be true or false";
    *spec = json_string_value(s);
    if (e != NULL)
        *is_enabled = json_is_true(e);
    return NULL;
}

static mhd_result api_rule_add(struct dashboard *d, struct MHD_Connection *conn, json_t *body)
{
    const char *spec = NULL;
    bool is_enabled = true;
    const char *why = rule_fields(body, false, &spec, &is_enabled);
    char err[RULES_ERROR_BYTES + 128];
    int64_t id = 0;
    int rc;

    if (why != NULL)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, why);
    rc = rulebook_db_add(d->rules, spec, is_enabled, &id, err, sizeof(err));
    if (rc != 0)
        return send_rules_error(conn, rc, err);
    log_info("dashboard: rule #%" PRId64 " added", id);
    return send_json(conn, MHD_HTTP_CREATED, json_pack("{s:I}", "id", (json_int_t)id));
}

static mhd_result api_rule_update(struct dashboard *d, struct MHD_Connection *conn, int64_t id,
                                  json_t *body)
{
    const char *spec = NULL;
    bool is_enabled = true;
    const char *why = rule_fields(body, true, &spec, &is_enabled);
    char err[RULES_ERROR_BYTES + 128];
    int rc;

    if (why != NULL)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, why);
    rc = rulebook_db_update(d->rules, id, spec, is_enabled, err, sizeof(err));
    if (rc != 0)
        return send_rules_error(conn, rc, err);
    log_info("dashboard: rule #%" PRId64 " changed", id);
    return send_json(conn, MHD_HTTP_OK, json_pack("{s:I}", "id", (json_int_t)id));
}

static mhd_result api_rule_delete(struct dashboard *d, struct MHD_Connection *conn, int64_t id)
{
    char err[512];
    int rc;

    if (d->rules == NULL)
        return send_rules_off(conn);
    rc = rulebook_db_delete(d->rules, id, err, sizeof(err));
    if (rc != 0)
        return send_rules_error(conn, rc, err);
    log_info("dashboard: rule #%" PRId64 " deleted", id);
    return send_reply(conn, MHD_HTTP_NO_CONTENT, static_response("", 0), NULL, false);
}

/* {"ids": [...]}: every rule id once, in the new order. Answers with the
 * list as GET /api/rules gives it. */
static mhd_result api_rules_reorder(struct dashboard *d, struct MHD_Connection *conn, json_t *body)
{
    json_t *array = json_object_get(body, "ids");
    int64_t *ids = NULL;
    size_t count, i;
    char err[512];
    mhd_result ret;
    int rc;

    if (!json_is_array(array) || json_array_size(array) > RULES_MAX_RULES)
        return send_error(conn, MHD_HTTP_BAD_REQUEST,
                          "ids must be an array of every rule id in the new order");
    count = json_array_size(array);
    ids = calloc(count > 0 ? count : 1, sizeof(ids[0]));
    if (ids == NULL)
        return MHD_NO;
    for (i = 0; i < count; i++) {
        json_t *v = json_array_get(array, i);

        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            ret = send_error(conn, MHD_HTTP_BAD_REQUEST, "ids must be rule ids (numbers)");
            goto out;
        }
        ids[i] = json_integer_value(v);
    }
    rc = rulebook_db_reorder(d->rules, ids, count, err, sizeof(err));
    if (rc != 0) {
        ret = send_rules_error(conn, rc, err);
        goto out;
    }
    log_info("dashboard: rules reordered");
    ret = api_rules_list(d, conn);
out:
    free(ids);
    return ret;
}

/* ---- intercept and replay (dashinteract) ---- */

static void set_request_deadline(struct dashboard *d, struct MHD_Connection *conn, bool is_waiting);

/* One call into dashinteract; body (may be NULL: none was sent) is
 * borrowed. */
static mhd_result api_interact(struct dashboard *d, struct MHD_Connection *conn,
                               enum upload_kind kind, int64_t id, json_t *body)
{
    json_t *reply = NULL;
    unsigned status;

    if (kind == UPLOAD_INTERCEPT_FILTER)
        status = dashinteract_set_filter(d->intercept, body, &reply);
    else if (kind == UPLOAD_RESUME)
        status = dashinteract_resume(d->intercept, id, body, &reply);
    else
        status = dashinteract_replay(d->replay, id, body, &reply);
    return send_json(conn, status, reply);
}

/* Whether the request announces a body (Content-Length above 0, or chunked). */
static bool has_body(struct MHD_Connection *conn)
{
    const char *length = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);

    return (length != NULL && strspn(length, "0") != strlen(length)) ||
           header(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* The intercept and replay endpoints under /api; rest is the path after
 * "/api". Sets *handled false for a path not theirs (and answers nothing). */
static mhd_result route_interact(struct dashboard *d, struct MHD_Connection *conn, const char *rest,
                                 const char *method, struct upload **upload, bool *handled)
{
    bool is_read = is_method(method, "GET") || is_method(method, "HEAD");
    bool is_post = is_method(method, "POST");
    json_t *reply = NULL;
    unsigned status;
    size_t n;
    int64_t id;

    *handled = true;
    if (strcmp(rest, "/intercept") == 0 || strncmp(rest, "/intercepted", 12) == 0) {
        if (d->intercept == NULL)
            return send_error(conn, MHD_HTTP_NOT_FOUND, "intercept is off in this tapwire");
        if (strcmp(rest, "/intercept") == 0) {
            if (is_read) {
                status = dashinteract_filter(d->intercept, &reply);
                return send_json(conn, status, reply);
            }
            if (is_method(method, "PUT"))
                return expect_json(d, conn, UPLOAD_INTERCEPT_FILTER, 0, upload);
            return send_not_allowed(conn, "GET, HEAD, PUT");
        }
        if (strcmp(rest, "/intercepted") == 0) {
            if (!is_read)
                return send_not_allowed(conn, "GET, HEAD");
            status = dashinteract_list(d->intercept, &reply);
            return send_json(conn, status, reply);
        }
        if (strcmp(rest, "/intercepted/resume-all") == 0) {
            if (!is_post)
                return send_not_allowed(conn, "POST");
            status = dashinteract_resume_all(d->intercept, &reply);
            return send_json(conn, status, reply);
        }
        return send_error(conn, MHD_HTTP_NOT_FOUND, "no such API endpoint");
    }
    if (strcmp(rest, "/replay") == 0) {
        if (d->replay == NULL)
            return send_error(conn, MHD_HTTP_NOT_FOUND, "replay is off in this tapwire");
        return is_post ? expect_json(d, conn, UPLOAD_REPLAY, 0, upload)
                       : send_not_allowed(conn, "POST");
    }
    if (strncmp(rest, "/flows/", 7) != 0)
        goto not_ours;
    n = strspn(rest + 7, "0123456789");
    if (!parse_id(rest + 7, n, &id))
        goto not_ours;
    rest += 7 + n;
    if (strcmp(rest, "/resume") != 0 && strcmp(rest, "/drop") != 0 && strcmp(rest, "/replay") != 0)
        goto not_ours;
    if (!is_post)
        return send_not_allowed(conn, "POST");
    if (strcmp(rest, "/replay") == 0) {
        if (d->replay == NULL)
            return send_error(conn, MHD_HTTP_NOT_FOUND, "replay is off in this tapwire");
        if (has_body(conn))
            return expect_json(d, conn, UPLOAD_REPLAY, id, upload);
        /* The request is in whole; the replay may take the origin's time. */
        set_request_deadline(d, conn, false);
        return api_interact(d, conn, UPLOAD_REPLAY, id, NULL);
    }
    if (d->intercept == NULL)
        return send_error(conn, MHD_HTTP_NOT_FOUND, "intercept is off in this tapwire");
    if (strcmp(rest, "/drop") == 0) {
        status = dashinteract_drop(d->intercept, id, &reply);
        return send_json(conn, status, reply);
    }
    return has_body(conn) ? expect_json(d, conn, UPLOAD_RESUME, id, upload)
                          : api_interact(d, conn, UPLOAD_RESUME, id, NULL);
not_ours:
    *handled = false;
    return MHD_YES;
}

/* Whether url is one of the intercept and replay endpoints that take a
 * JSON body. */
static bool is_interact_upload(const char *url)
{
    size_t n;

    if (strcmp(url, "/api/intercept") == 0 || strcmp(url, "/api/replay") == 0)
        return true;
    if (strncmp(url, "/api/flows/", 11) != 0)
        return false;
    n = strspn(url + 11, "0123456789");
    return n > 0 && (strcmp(url + 11 + n, "/resume") == 0 || strcmp(url + 11 + n, "/replay") == 0);
}

/* ---- HAR import ---- */

/* Imported flows go to the store in batches of this many. */
struct har_import {
    struct dashboard *d;
    struct flow *batch[FLOWSTORE_BATCH_FLOWS];
    size_t count;
    char err[512];
};

static int import_flush(struct har_import *im)
{
    int rc = 0;

    if (im->count > 0)
        rc = flowstore_write(im->d->flows, im->batch, im->count, im->err, sizeof(im->err));
    im->count = 0;
    return rc;
}

static int import_flow(void *arg, struct flow *flow)
{
    struct har_import *im = arg;

    im->batch[im->count++] = flow;
    return im->count == FLOWSTORE_BATCH_FLOWS ? import_flush(im) : 0;
}

/*
 * POST /api/har: the flows of a HAR 1.2 file into the store, marked
 * imported (harimport.h). 200 {"imported", "skipped", "first_skipped"};
 * 400 when it is not a HAR file. The flows are written before the answer,
 * oldest first, and reach open dashboards as live flows.
 */
static mhd_result api_har_import(struct dashboard *d, struct MHD_Connection *conn,
                                 const struct upload *up)
{
    struct har_import *im = calloc(1, sizeof(*im));
    struct harimport_result result;
    char err[512];
    mhd_result ret;
    int rc;
    size_t i;

    if (up->is_too_large)
        return send_error(conn, HTTP_CONTENT_TOO_LARGE, "the HAR file is larger than 32 MiB");
    if (im == NULL)
        return MHD_NO;
    im->d = d;
    rc = harimport_parse(up->data, up->len, d->capture_limit, import_flow, im, &result, err,
                         sizeof(err));
    if (im->err[0] != '\0' || (rc == 0 && import_flush(im) != 0)) {
        log_warn("dashboard: HAR import: %s", im->err);
        ret = send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, im->err);
        goto out;
    }
    if (rc != 0) {
        ret = send_error(conn, MHD_HTTP_BAD_REQUEST, err);
        goto out;
    }
    log_info("dashboard: HAR import: %zu flow(s) imported, %zu entr%s skipped%s%s", result.imported,
             result.skipped, result.skipped == 1 ? "y" : "ies", result.skipped > 0 ? ": " : "",
             result.first_skipped);
    ret = send_json(conn, MHD_HTTP_OK,
                    json_pack("{s:I,s:I,s:s}", "imported", (json_int_t)result.imported, "skipped",
                              (json_int_t)result.skipped, "first_skipped", result.first_skipped));
out:
    /* A failed parse may leave flows gathered for a batch never written. */
    for (i = 0; i < im->count; i++)
        flow_free(im->batch[i]);
    free(im);
    return ret;
}

/* The last call for a request with a body: up holds all of it. */
static mhd_result api_upload(struct dashboard *d, struct MHD_Connection *conn,
                             const struct upload *up)
{
    json_error_t jerr;
    json_t *body;
    char why[256];
    mhd_result ret;

    if (up->kind == UPLOAD_HAR)
        return api_har_import(d, conn, up);
    if (up->is_too_large)
        return send_error(conn, HTTP_CONTENT_TOO_LARGE, "the JSON body is larger than it said");
    body = json_loadb(up->data, up->len, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL || !json_is_object(body)) {
        if (body == NULL)
            snprintf(why, sizeof(why), "the body is not JSON: %s", jerr.text);
        else
            snprintf(why, sizeof(why), "the body must be a JSON object");
        json_decref(body);
        return send_error(conn, MHD_HTTP_BAD_REQUEST, why);
    }
    switch (up->kind) {
    case UPLOAD_RULE_ADD:
        ret = api_rule_add(d, conn, body);
        break;
    case UPLOAD_RULE_UPDATE:
        ret = api_rule_update(d, conn, up->id, body);
        break;
    case UPLOAD_INTERCEPT_FILTER:
    case UPLOAD_RESUME:
    case UPLOAD_REPLAY:
        ret = api_interact(d, conn, up->kind, up->id, body);
        break;
    case UPLOAD_RULES_REORDER:
    default:
        ret = api_rules_reorder(d, conn, body);
        break;
    }
    json_decref(body);
    return ret;
}

/* /api/rules...; rest is what follows "/rules". */
static mhd_result route_rules(struct dashboard *d, struct MHD_Connection *conn, const char *rest,
                              const char *method, struct upload **upload)
{
    bool is_read = is_method(method, "GET") || is_method(method, "HEAD");
    size_t n;
    int64_t id;

    if (rest[0] == '\0') {
        if (is_read)
            return api_rules_list(d, conn);
        if (is_method(method, "POST"))
            return expect_json(d, conn, UPLOAD_RULE_ADD, 0, upload);
        return send_not_allowed(conn, "GET, HEAD, POST");
    }
    if (strcmp(rest, "/reorder") == 0)
        return is_method(method, "POST") ? expect_json(d, conn, UPLOAD_RULES_REORDER, 0, upload)
                                         : send_not_allowed(conn, "POST");
    n = strspn(rest + 1, "0123456789");
    if (rest[0] != '/' || rest[1 + n] != '\0' || !parse_id(rest + 1, n, &id))
        return send_error(conn, MHD_HTTP_NOT_FOUND, "no such rule");
    if (is_method(method, "PUT"))
        return expect_json(d, conn, UPLOAD_RULE_UPDATE, id, upload);
    if (is_method(method, "DELETE"))
        return api_rule_delete(d, conn, id);
    return send_not_allowed(conn, "PUT, DELETE");
}

/* ---- the SQL console ---- */

static json_t *sql_cell_json(const struct sqlconsole_cell *cell)
{
    switch (cell->type) {
    case SQLCONSOLE_INTEGER:
        return json_integer((json_int_t)cell->integer);
    case SQLCONSOLE_REAL:
        /* JSON has no Inf or NaN (SELECT 1e999 makes one): jansson refuses them. */
        return isfinite(cell->real) ? json_real(cell->real)
                                    : jstr(cell->real > 0   ? "Inf"
                                           : cell->real < 0 ? "-Inf"
                                                            : "NaN");
    case SQLCONSOLE_TEXT:
    case SQLCONSOLE_BLOB:
        return jtext(cell->text, cell->text_len);
    default:
        return json_null();
    }
}

static json_t *sql_result_json(const struct sqlconsole_result *result)
{
    json_t *obj = json_object();
    json_t *columns = json_array();
    json_t *rows = json_array();
    bool ok = obj != NULL && columns != NULL && rows != NULL;
    size_t i, j;

    for (i = 0; ok && i < result->column_count; i++)
        ok = jappend(columns, jstr(result->columns[i]));
    for (i = 0; ok && i < result->row_count; i++) {
        json_t *row = json_array();

        ok = row != NULL;
        for (j = 0; ok && j < result->column_count; j++)
            ok = jappend(row, sql_cell_json(&result->cells[i * result->column_count + j]));
        if (ok)
            ok = jappend(rows, row);
        else
            json_decref(row);
    }
    if (ok) {
        ok = jset(obj, "columns", columns); /* taken, even when it fails */
        columns = NULL;
        ok = jset(obj, "rows", rows) && ok;
        rows = NULL;
    }
    ok = ok && jset(obj, "truncated", json_boolean(result->is_truncated)) &&
         jset(obj, "max_rows", json_integer(SQLCONSOLE_MAX_ROWS)) &&
         jset(obj, "elapsed_ms", json_integer((json_int_t)result->elapsed_ms));
    json_decref(columns);
    json_decref(rows);
    if (!ok) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* GET /api/sql?q=SELECT...: one read-only statement (sqlconsole). A
 * refusal or an SQL error is the user's to fix: 400 with SQLite's words. */
static mhd_result api_sql(struct dashboard *d, struct MHD_Connection *conn)
{
    const char *sql = arg(conn, "q");
    struct sqlconsole_result *result = NULL;
    char err[SQLCONSOLE_ERROR_BYTES] = "";
    mhd_result ret;
    int rc;

    if (d->sql == NULL)
        return send_error(
            conn, MHD_HTTP_NOT_FOUND,
            "the SQL console needs a database file (tapwire runs with --db :memory:)");
    if (sql == NULL)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "the query is missing: /api/sql?q=SELECT...");
    rc = sqlconsole_query(d->sql, sql, &result, err, sizeof(err));
    if (rc == SQLCONSOLE_BUSY)
        return send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, err);
    if (rc != 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, err);
    ret = send_json(conn, MHD_HTTP_OK, sql_result_json(result));
    sqlconsole_result_free(result);
    return ret;
}

/* GET /api/sql/examples: the saved queries, [{"name", "sql"}]. */
static mhd_result api_sql_examples(struct MHD_Connection *conn)
{
    const struct sqlconsole_example *ex;
    json_t *list = json_array();
    bool ok = list != NULL;

    for (ex = sqlconsole_examples; ok && ex->name != NULL; ex++)
        ok = jappend(list, json_pack("{s:s,s:s}", "name", ex->name, "sql", ex->sql));
    if (!ok) {
        json_decref(list);
        list = NULL;
    }
    return send_json(conn, MHD_HTTP_OK, list);
}

/* Bytes as a JSON string of hex digits (NULL when out of memory). */
static json_t *hex_json(const unsigned char *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *hex = malloc(len * 2 + 1);
    json_t *out = NULL;

    if (hex == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        hex[i * 2] = digits[data[i] >> 4];
        hex[i * 2 + 1] = digits[data[i] & 15];
    }
    hex[len * 2] = '\0';
    out = jsontext_str(hex);
    free(hex);
    return out;
}

/* One WebSocket message as JSON: its payload as text when it is UTF-8,
 * else as hex; the page shows either as text, never as markup. */
static json_t *ws_message_json(const struct flow_ws_message *m, size_t seq)
{
    json_t *obj = json_object();
    bool ok = obj != NULL;

    ok = ok && jsontext_set(obj, "seq", json_integer((json_int_t)seq));
    ok =
        ok && jsontext_set(obj, "direction", jsontext_str(m->is_from_client ? "client" : "server"));
    ok = ok && jsontext_set(obj, "time_us", json_integer(m->time_us));
    ok = ok && jsontext_set(obj, "opcode", json_integer(m->opcode));
    ok = ok && jsontext_set(obj, "type", jsontext_str(wsframe_opcode_name(m->opcode)));
    ok = ok && jsontext_set(obj, "size", json_integer((json_int_t)m->size));
    ok = ok && jsontext_set(obj, "captured", json_integer((json_int_t)m->len));
    ok = ok && jsontext_set(obj, "compressed", json_boolean(m->flags & FLOW_WS_COMPRESSED));
    ok = ok && jsontext_set(obj, "decoded", json_boolean(m->flags & FLOW_WS_DECODED));
    ok = ok && jsontext_set(obj, "truncated", json_boolean(m->flags & FLOW_WS_TRUNCATED));
    if (ok && m->opcode == WSFRAME_CLOSE)
        ok = jsontext_set(obj, "close_code",
                          json_integer(m->len >= 2 ? m->data[0] << 8 | m->data[1] : 1005));
    if (ok && m->opcode != WSFRAME_BINARY && flow_is_text(m->data, m->len) &&
        !(m->opcode == WSFRAME_CLOSE && m->len >= 2)) {
        ok = jsontext_set(obj, "text", jsontext_n(m->len > 0 ? (const char *)m->data : "", m->len));
    } else if (ok && m->opcode == WSFRAME_CLOSE) {
        ok = jsontext_set(obj, "text", jsontext_n((const char *)m->data + 2, m->len - 2));
    } else if (ok) {
        ok = jsontext_set(obj, "hex", hex_json(m->data, m->len));
    }
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* The gRPC messages of one body (grpcmsg.h): each with its compressed flag,
 * length and the captured bytes, as text when UTF-8 and not compressed,
 * else as hex (at most DASHBOARD_MAX_GRPC_BYTES of each). */
static json_t *grpc_messages_json(const unsigned char *body, size_t len)
{
    struct grpcmsg *m = calloc(DASHBOARD_MAX_GRPC_MESSAGES, sizeof(*m));
    json_t *list = json_array();
    size_t rest = 0, n;
    bool ok = m != NULL && list != NULL;

    n = ok ? grpcmsg_split(body, len, m, DASHBOARD_MAX_GRPC_MESSAGES, &rest) : 0;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *obj = json_object();
        size_t shown =
            m[i].captured < DASHBOARD_MAX_GRPC_BYTES ? m[i].captured : DASHBOARD_MAX_GRPC_BYTES;
        ok = obj != NULL && jsontext_append(list, obj);
        ok = ok && jsontext_set(obj, "compressed", json_boolean(m[i].is_compressed));
        ok = ok && jsontext_set(obj, "length", json_integer(m[i].length));
        ok = ok && jsontext_set(obj, "captured", json_integer((json_int_t)m[i].captured));
        if (ok && !m[i].is_compressed && flow_is_text(m[i].data, shown))
            ok = jsontext_set(obj, "text", jsontext_n((const char *)m[i].data, shown));
        else if (ok)
            ok = jsontext_set(obj, "hex", hex_json(m[i].data, shown));
    }
    free(m);
    if (!ok) {
        json_decref(list);
        return NULL;
    }
    return list;
}

/* GET /api/flows/ID/grpc: a gRPC flow's messages, both ways, from the
 * captured bodies (the last one may be cut at the capture limit). */
static mhd_result api_grpc(struct dashboard *d, struct MHD_Connection *conn, int64_t id)
{
    struct flowstore_record *rec;
    unsigned char *bodies[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};
    json_t *root = NULL;
    char err[512];
    mhd_result ret = MHD_NO;
    const char *type;

    rec = find_flow(d, conn, id, &ret);
    if (rec == NULL)
        return ret;
    type =
        rec->request_content_type != NULL ? rec->request_content_type : rec->response_content_type;
    if (type == NULL || !grpcmsg_is_grpc(type, strlen(type))) {
        ret = send_error(conn, MHD_HTTP_NOT_FOUND, "not a gRPC flow");
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        if (flowstore_get_body(d->flows, id, i == 0 ? FLOWSTORE_REQUEST : FLOWSTORE_RESPONSE,
                               &bodies[i], &lens[i], err, sizeof(err)) != 0) {
            log_warn("dashboard: %s", err);
            ret = send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
            goto out;
        }
    }
    root = json_object();
    if (root == NULL || !jsontext_set(root, "request", grpc_messages_json(bodies[0], lens[0])) ||
        !jsontext_set(root, "response", grpc_messages_json(bodies[1], lens[1])))
        goto out;
    ret = send_json(conn, MHD_HTTP_OK, root);
    root = NULL;
out:
    json_decref(root);
    free(bodies[0]);
    free(bodies[1]);
    flowstore_record_free(rec);
    return ret;
}

/* GET /api/flows/ID/messages[?from=SEQ]: a WebSocket flow's messages. */
static mhd_result api_ws_messages(struct dashboard *d, struct MHD_Connection *conn, int64_t id)
{
    const char *from_arg = arg(conn, "from");
    int64_t from = 0;
    struct flow_ws ws;
    json_t *root = NULL, *list = NULL;
    char err[512];

    if (from_arg != NULL && !parse_id(from_arg, strlen(from_arg), &from) && strcmp(from_arg, "0"))
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "from must be a message number");
    if (flowstore_get_ws_messages(d->flows, id, from, &ws, err, sizeof(err)) != 0) {
        log_warn("dashboard: %s", err);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    root = json_object();
    list = json_array();
    bool ok = root != NULL && list != NULL;
    for (size_t i = 0; ok && i < ws.count; i++)
        ok = jsontext_append(list, ws_message_json(&ws.items[i], (size_t)from + i));
    if (ok) {
        ok = jsontext_set(root, "messages", list);
        list = NULL;
    }
    flow_ws_clear(&ws);
    if (!ok) {
        json_decref(list);
        json_decref(root);
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    return send_json(conn, MHD_HTTP_OK, root);
}

/* ---- routing ---- */

static mhd_result route_api(struct dashboard *d, struct MHD_Connection *conn, const char *path,
                            const char *method, struct upload **upload)
{
    bool is_read = is_method(method, "GET") || is_method(method, "HEAD");
    bool is_delete = is_method(method, "DELETE");
    const char *given = header(conn, TOKEN_HEADER);
    int64_t id;

    if (given != NULL) {
        if (!token_matches(d, given))
            return send_error(conn, MHD_HTTP_UNAUTHORIZED, "wrong " TOKEN_HEADER);
    } else if (!is_read) {
        /* A cross-site form carries the cookie; only our script sends the header. */
        return send_error(conn,
                          token_matches(d, cookie_token(d, conn)) ? MHD_HTTP_FORBIDDEN
                                                                  : MHD_HTTP_UNAUTHORIZED,
                          "changes need the " TOKEN_HEADER " header");
    } else if (!token_matches(d, cookie_token(d, conn))) {
        return send_error(conn, MHD_HTTP_UNAUTHORIZED,
                          "the dashboard token is missing: open the URL printed at startup");
    }

    bool is_interact = false;
    mhd_result sent = route_interact(d, conn, path, method, upload, &is_interact);
    if (is_interact)
        return sent;
    if (strcmp(path, "/flows") == 0) {
        if (is_read)
            return api_list(d, conn);
        if (is_delete)
            return api_clear(d, conn);
        return send_not_allowed(conn, "GET, HEAD, DELETE");
    }
    if (strncmp(path, "/flows/", 7) == 0) {
        const char *rest = path + 7;
        size_t n = strspn(rest, "0123456789");

        if (!parse_id(rest, n, &id))
            return send_error(conn, MHD_HTTP_NOT_FOUND, "no such flow");
        rest += n;
        if (rest[0] == '\0') {
            if (is_read)
                return api_detail(d, conn, id);
            if (is_delete)
                return api_delete(d, conn, id);
            return send_not_allowed(conn, "GET, HEAD, DELETE");
        }
        if (strcmp(rest, "/request/body") == 0)
            return is_read ? api_body(d, conn, id, true) : send_not_allowed(conn, "GET, HEAD");
        if (strcmp(rest, "/response/body") == 0)
            return is_read ? api_body(d, conn, id, false) : send_not_allowed(conn, "GET, HEAD");
        if (strcmp(rest, "/har") == 0)
            return is_read ? api_flow_har(d, conn, id) : send_not_allowed(conn, "GET, HEAD");
        if (strcmp(rest, "/messages") == 0)
            return is_read ? api_ws_messages(d, conn, id) : send_not_allowed(conn, "GET, HEAD");
        if (strcmp(rest, "/grpc") == 0)
            return is_read ? api_grpc(d, conn, id) : send_not_allowed(conn, "GET, HEAD");
        return send_error(conn, MHD_HTTP_NOT_FOUND, "no such API endpoint");
    }
    if (strcmp(path, "/rules") == 0 || strncmp(path, "/rules/", 7) == 0)
        return route_rules(d, conn, path + 6, method, upload);
    if (strcmp(path, "/har") == 0) {
        if (is_read)
            return api_har(d, conn);
        if (is_method(method, "POST"))
            return expect_json(d, conn, UPLOAD_HAR, 0, upload);
        return send_not_allowed(conn, "GET, HEAD, POST");
    }
    if (strcmp(path, "/events") == 0)
        return is_read ? api_events(d, conn) : send_not_allowed(conn, "GET, HEAD");
    if (strcmp(path, "/stats") == 0)
        return is_read ? send_json(conn, MHD_HTTP_OK, stats_json(d, true))
                       : send_not_allowed(conn, "GET, HEAD");
    if (strcmp(path, "/sql") == 0)
        return is_read ? api_sql(d, conn) : send_not_allowed(conn, "GET, HEAD");
    if (strcmp(path, "/sql/examples") == 0)
        return is_read ? api_sql_examples(conn) : send_not_allowed(conn, "GET, HEAD");
    return send_error(conn, MHD_HTTP_NOT_FOUND, "no such API endpoint");
}

/* Requests that may carry a body: the rules changes (route_rules() checks
 * the rest before reading it). */
static bool may_have_body(const char *url, const char *method)
{
    return ((is_method(method, "POST") || is_method(method, "PUT")) &&
            (strcmp(url, "/api/rules") == 0 || strncmp(url, "/api/rules/", 11) == 0 ||
             is_interact_upload(url))) ||
           (is_method(method, "POST") && strcmp(url, "/api/har") == 0);
}

/* The first call for a request: answers it, or (a rules change) sets
 * *upload to read its body into. */
static mhd_result route(struct dashboard *d, struct MHD_Connection *conn, const char *url,
                        const char *method, struct upload **upload)
{
    bool is_read = is_method(method, "GET") || is_method(method, "HEAD");
    bool is_change = is_method(method, "POST") || is_method(method, "PUT") ||
                     is_method(method, "PATCH") || is_method(method, "DELETE");
    const char *length = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
    size_t i;

    if (!is_own_host(d, conn))
        return send_error(conn, HTTP_MISDIRECTED_REQUEST,
                          "this dashboard answers only to its own address: use the URL printed "
                          "at startup");
    if (is_change && !is_same_origin(conn))
        return send_error(conn, MHD_HTTP_FORBIDDEN, "cross-origin request refused");
    /* Only the rules changes take a body: refuse others before reading one. */
    if (!may_have_body(url, method) && ((length != NULL && strspn(length, "0") != strlen(length)) ||
                                        header(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL))
        return send_error(conn, HTTP_CONTENT_TOO_LARGE, "request bodies are not accepted");
    if (strncmp(url, "/api/", 5) == 0)
        return route_api(d, conn, url + 4, method, upload);
    if (!is_read)
        return send_not_allowed(conn, "GET, HEAD");
    if (strcmp(url, "/") == 0)
        return page_root(d, conn);
    for (i = 1; i < sizeof(static_files) / sizeof(static_files[0]); i++)
        if (strcmp(url, static_files[i].path) == 0)
            return send_static(d, conn, &static_files[i]);
    if (strcmp(url, "/ca") == 0)
        return send_reply(conn, MHD_HTTP_OK, static_response(d->ca_page, d->ca_page_len),
                          "text/html; charset=utf-8", false);
    if (strcmp(url, "/ca.pem") == 0)
        return send_reply(conn, MHD_HTTP_OK,
                          with_header(static_response(d->ca_pem, d->ca_pem_len),
                                      "Content-Disposition",
                                      "attachment; filename=\"tapwire-ca.pem\""),
                          "application/x-pem-file", false);
    if (strcmp(url, "/ca.crt") == 0)
        return send_reply(conn, MHD_HTTP_OK,
                          with_header(static_response(d->ca_der, d->ca_der_len),
                                      "Content-Disposition",
                                      "attachment; filename=\"tapwire-ca.crt\""),
                          "application/x-x509-ca-cert", false);
    return send_error(conn, MHD_HTTP_NOT_FOUND, "not found");
}

/* The connection context of a request that has been answered. */
static int answered;

/* is_waiting: a request is due (the connection is new or was answered),
 * else it has arrived whole and the deadline is off while it is answered;
 * a live event stream can so last as long as it needs. */
static void set_request_deadline(struct dashboard *d, struct MHD_Connection *conn, bool is_waiting)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct dash_conn *c = info != NULL ? info->socket_context : NULL;

    if (c == NULL)
        return;
    pthread_mutex_lock(&d->lock);
    c->deadline_ms = is_waiting ? clock_mono_ms() + DASHBOARD_REQUEST_TIMEOUT_MS : 0;
    pthread_mutex_unlock(&d->lock);
}

static mhd_result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **con_cls)
{
    struct upload *up = NULL;
    mhd_result ret;

    /* Most requests are answered on the first call, before any body is
     * read (route() refuses those that announce one); bytes that come
     * anyway are dropped. */
    if (*con_cls == &answered) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*con_cls == NULL) {
        ret = route(cls, conn, url, method, &up);
        *con_cls = up != NULL ? (void *)up : (void *)&answered;
        if (up == NULL) /* else the deadline runs on until the body is in */
            set_request_deadline(cls, conn, false);
        return ret;
    }
    /* A rules change reading its body: a piece, or (size 0) the end. */
    up = *con_cls;
    if (*upload_data_size > 0) {
        upload_append(up, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    set_request_deadline(cls, conn, false);
    ret = api_upload(cls, conn, up);
    upload_free(up);
    *con_cls = &answered;
    return ret;
}

/* A request ended, answered or not (the client may leave mid-body). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    if (*con_cls != NULL && *con_cls != &answered)
        upload_free(*con_cls);
    *con_cls = NULL;
    set_request_deadline(cls, conn, true); /* for the next request on the connection */
}

/* Tracks each connection for the watchdog. The socket is dup()ed so that
 * the watchdog's shutdown() can never hit a descriptor number that
 * libmicrohttpd has closed and the process reused. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct dashboard *d = cls;
    struct dash_conn *c;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

        *socket_context = NULL;
        c = calloc(1, sizeof(*c));
        if (c == NULL || info == NULL ||
            (c->fd = fcntl(info->connect_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            /* Not watched: only the idle timeout bounds this one. */
            log_warn("dashboard: cannot watch a new connection: %s", strerror(errno));
            free(c);
            return;
        }
        pthread_mutex_lock(&d->lock);
        c->deadline_ms = clock_mono_ms() + DASHBOARD_REQUEST_TIMEOUT_MS;
        c->next = d->conns;
        if (d->conns != NULL)
            d->conns->prev = c;
        d->conns = c;
        pthread_mutex_unlock(&d->lock);
        *socket_context = c;
        return;
    }
    c = *socket_context;
    if (c == NULL)
        return;
    pthread_mutex_lock(&d->lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&d->lock);
    close(c->fd);
    free(c);
    *socket_context = NULL;
}

/* Cuts connections whose request is overdue: shutdown() makes their
 * libmicrohttpd thread see the end of the stream and close. */
static void *watchdog_main(void *arg)
{
    struct dashboard *d = arg;

    pthread_mutex_lock(&d->lock);
    while (!d->is_stopping) {
        int64_t now = clock_mono_ms();
        struct timespec until;

        for (struct dash_conn *c = d->conns; c != NULL; c = c->next) {
            if (c->deadline_ms != 0 && now >= c->deadline_ms) {
                shutdown(c->fd, SHUT_RDWR);
                c->deadline_ms = 0;
                log_debug("dashboard: closed a connection that sent no whole request within %d ms",
                          DASHBOARD_REQUEST_TIMEOUT_MS);
            }
        }
        deadline_in(&until, DASHBOARD_WATCHDOG_PERIOD_MS);
        pthread_cond_timedwait(&d->cond, &d->lock, &until);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* libmicrohttpd's messages: kept as the reason while starting, afterwards
 * only for debugging (a client going away is not news). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct dashboard *d = cls;
    char line[256];
    size_t n;

    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    bool is_starting;

    pthread_mutex_lock(&d->lock);
    is_starting = d->is_starting;
    if (is_starting)
        snprintf(d->start_error, sizeof(d->start_error), "%s", line);
    pthread_mutex_unlock(&d->lock);
    /* While starting, the reason goes into dashboard_start()'s error, which
     * the caller prints: logging it here too printed it twice. */
    if (!is_starting)
        log_debug("dashboard: %s", line);
}

/* ---- start and stop ---- */

static bool is_token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '~' || c == '-';
}

static int set_token(struct dashboard *d, const char *token, char *err, size_t err_len)
{
    unsigned char random[DASHBOARD_TOKEN_RANDOM_BYTES];
    size_t i;

    if (token != NULL) {
        size_t len = strlen(token);

        /* The token travels in a cookie, a header and a URL: keep it to
         * characters that need no escaping in any of them. */
        if (len == 0 || len > DASHBOARD_MAX_TOKEN_CHARS) {
            errmsg_set(err, err_len, "the dashboard token must have 1 to %d characters",
                       DASHBOARD_MAX_TOKEN_CHARS);
            return -1;
        }
        for (i = 0; i < len; i++) {
            if (!is_token_char(token[i])) {
                errmsg_set(err, err_len,
                           "the dashboard token may only hold letters, digits and . _ ~ -");
                return -1;
            }
        }
        memcpy(d->token, token, len + 1);
        return 0;
    }
    if (RAND_bytes(random, sizeof(random)) != 1) {
        ERR_clear_error();
        errmsg_set(err, err_len, "cannot make a random dashboard token");
        return -1;
    }
    for (i = 0; i < sizeof(random); i++)
        snprintf(d->token + 2 * i, 3, "%02x", random[i]);
    OPENSSL_cleanse(random, sizeof(random));
    return 0;
}

static int init_sync(struct dashboard *d)
{
    pthread_condattr_t attr;
    int rc;

    d->has_lock = pthread_mutex_init(&d->lock, NULL) == 0;
    if (!d->has_lock || pthread_condattr_init(&attr) != 0)
        return -1;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&d->cond, &attr);
    pthread_condattr_destroy(&attr);
    d->has_cond = rc == 0;
    return d->has_cond ? 0 : -1;
}

int dashboard_start(const struct dashboard_options *opts, struct flowstore *flows,
                    const struct ca *ca, struct dashboard **out, char *err, size_t err_len)
{
    struct dashboard *d = NULL;
    struct addrinfo hints, *addr = NULL;
    const union MHD_DaemonInfo *info;
    unsigned int flags;
    int64_t newest = 0;
    int rc;
    int ret = -1;

    *out = NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    d->flows = flows;
    d->ca = ca;
    d->rules = opts->rules;
    d->certs = opts->certs;
    d->capture_limit = opts->capture_limit;
    d->intercept = opts->intercept;
    d->replay = opts->replay;
    if (init_sync(d) != 0) {
        errmsg_set(err, err_len, "cannot create a mutex");
        goto out;
    }
    if (set_token(d, opts->token, err, err_len) != 0)
        goto out;
    snprintf(d->url_host, sizeof(d->url_host), strchr(opts->host, ':') != NULL ? "[%s]" : "%s",
             opts->host);
    if (opts->web_root != NULL && (d->web_root = strdup(opts->web_root)) == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (capage_pem_der(ca, &d->ca_pem, &d->ca_pem_len, &d->ca_der, &d->ca_der_len, err, err_len) !=
        0)
        goto out;
    d->ca_page = capage_html(ca, &d->ca_page_len);
    if (d->ca_page == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (flowstore_newest_id(flows, &newest, err, err_len) != 0)
        goto out;
    d->newest_id = newest;
    if (opts->db_path != NULL && opts->db_path[0] != '\0' &&
        strcmp(opts->db_path, ":memory:") != 0 &&
        sqlconsole_open(opts->db_path, &d->sql, err, err_len) != 0) {
        errmsg_prefix(err, err_len, "SQL console: ");
        goto out;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(opts->host, "0", &hints, &addr);
    if (rc != 0) {
        errmsg_set(err, err_len, "dashboard address %s: %s", opts->host, gai_strerror(rc));
        goto out;
    }
    if (addr->ai_family == AF_INET)
        ((struct sockaddr_in *)addr->ai_addr)->sin_port = htons(opts->port);
    else
        ((struct sockaddr_in6 *)addr->ai_addr)->sin6_port = htons(opts->port);

    /* poll(), not select(): the proxy's own connections can push this
     * process's descriptors past FD_SETSIZE. */
    flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (MHD_is_feature_supported(MHD_FEATURE_POLL) == MHD_YES)
        flags |= MHD_USE_POLL;
    if (addr->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    atomic_store(&d->port, opts->port);
    pthread_mutex_lock(&d->lock);
    d->is_starting = true;
    pthread_mutex_unlock(&d->lock);
    d->daemon = MHD_start_daemon(
        /* The logger first: messages about earlier options would go to
         * libmicrohttpd's own stderr logger, a second copy of the error. */
        flags, opts->port, NULL, NULL, on_request, d, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, d,
        MHD_OPTION_SOCK_ADDR, addr->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)DASHBOARD_MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)DASHBOARD_MAX_CONNECTIONS_PER_CLIENT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)DASHBOARD_CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed, d,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, d, MHD_OPTION_END);
    pthread_mutex_lock(&d->lock);
    d->is_starting = false;
    pthread_mutex_unlock(&d->lock);
    if (d->daemon == NULL) {
        errmsg_set(err, err_len, "cannot start the dashboard on %s:%u: %s", d->url_host,
                   (unsigned)opts->port,
                   d->start_error[0] != '\0' ? d->start_error : "libmicrohttpd refused");
        goto out;
    }
    info = MHD_get_daemon_info(d->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        errmsg_set(err, err_len, "cannot tell which port it is listening on");
        goto out;
    }
    atomic_store(&d->port, info->port);
    flowstore_set_body_decoder(flows, codec_decode_content);
    if (pthread_create(&d->watchdog, NULL, watchdog_main, d) != 0) {
        errmsg_set(err, err_len, "cannot start the request watchdog thread");
        goto out;
    }
    d->has_watchdog = true;
    flowstore_set_written_callback(flows, on_flows_written, d);
    d->is_callback_set = true;
    *out = d;
    d = NULL;
    ret = 0;
out:
    if (addr != NULL)
        freeaddrinfo(addr);
    dashboard_stop(d);
    return ret;
}

void dashboard_stop(struct dashboard *d)
{
    if (d == NULL)
        return;
    if (d->is_callback_set)
        flowstore_set_written_callback(d->flows, NULL, NULL);
    if (d->has_cond) {
        pthread_mutex_lock(&d->lock);
        d->is_stopping = true;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
    }
    if (d->has_watchdog)
        pthread_join(d->watchdog, NULL);
    /* Joins every connection thread; the streams above end at once. */
    if (d->daemon != NULL)
        MHD_stop_daemon(d->daemon);
    if (d->has_cond)
        pthread_cond_destroy(&d->cond);
    if (d->has_lock)
        pthread_mutex_destroy(&d->lock);
    /* After MHD_stop_daemon(): no request can be using it. */
    sqlconsole_close(d->sql);
    OPENSSL_cleanse(d->token, sizeof(d->token));
    free(d->web_root);
    free(d->ca_pem);
    free(d->ca_der);
    free(d->ca_page);
    free(d);
}

uint16_t dashboard_port(const struct dashboard *dashboard)
{
    return (uint16_t)atomic_load(&dashboard->port);
}

int dashboard_address(const struct dashboard *dashboard, struct sockaddr_storage *out)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(dashboard->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    socklen_t len = sizeof(*out);

    if (info == NULL || info->listen_fd < 0 ||
        getsockname(info->listen_fd, (struct sockaddr *)out, &len) != 0)
        return -1;
    return 0;
}

const char *dashboard_token(const struct dashboard *dashboard)
{
    return dashboard->token;
}

int dashboard_url(const struct dashboard *dashboard, char *out, size_t out_len)
{
    int n = snprintf(out, out_len, "http://%s:%u/?token=%s", dashboard->url_host,
                     (unsigned)atomic_load(&dashboard->port), dashboard->token);

    return n < 0 || (size_t)n >= out_len ? -1 : n;
}
