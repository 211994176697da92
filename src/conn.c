/*
 * conn: one client connection, from its first byte to its close.
 *
 * CONNECT is answered with 200 at once; then the first bytes the client sends
 * are peeked (not read), so they can still go to OpenSSL unchanged:
 *   - a TLS ClientHello: connect upstream with the client's SNI and ALPN
 *     (restricted to http/1.1), verify the origin honestly, mint a leaf from
 *     the origin's names and finish the client's handshake with it. When the
 *     origin fails verification the client still gets a leaf for the name it
 *     asked for, and every request on it gets an error page naming the
 *     reason: the origin's content is never presented as trusted.
 *   - an HTTP request: proxied as plain HTTP to the CONNECT target;
 *   - anything else: relayed raw.
 * Hosts matching --ignore-host are relayed untouched without peeking.
 */
#include "conn.h"

#include "clock.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "dashboard.h"
#include "exchange.h"
#include "flowstore.h"
#include "stacktrim.h"
#include "http1.h"
#include "log.h"
#include "rules.h"
#include "stream.h"
#include "tlsserver.h"
#include "upstream.h"

#define CONN_IN_MAX_BYTES (HTTP1_MAX_HEAD_BYTES + STREAM_READ_CHUNK_BYTES)
#define CONN_PEEK_RETRY_NS 2000000L
/* Quiet this long, a kept-alive connection releases its buffers and stack
 * (see wait_next_request). */
#define CONN_IDLE_GRACE_MS 200

enum conn_mode { MODE_PROXY, MODE_TUNNEL_PLAIN, MODE_TUNNEL_TLS };

struct conn {
    const struct proxy_env *env;
    const struct config *cfg;
    char client_name[INET6_ADDRSTRLEN + 10];
    struct stream client;
    struct stream upstream;
    struct exchange_timeouts t;
    /* The request being served; 4 KiB of field slots, so allocated on the
     * first request and freed while the connection idles. */
    struct http1_head *head;

    /* where upstream is connected */
    char up_host[256];
    uint16_t up_port;
    bool up_tls;

    /* inside a CONNECT tunnel */
    char tunnel_host[256];
    uint16_t tunnel_port;
    bool has_sni;
    char sni[256];
    bool offer_http11;
    struct upstream_error tunnel_error; /* status != OK: each request gets an error page */

    /* What flows record about TLS on both sides; strings owned. */
    struct flow_tls tls_info;
    bool client_is_tls;
    /* Set when the upstream was just opened: the next flow gets these. */
    int64_t opened_at_us, connected_at_us, tls_done_at_us;
    char verify_note[UPSTREAM_ERROR_BYTES + 16]; /* --insecure: what verification found */
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void tls_info_clear_upstream(struct flow_tls *t)
{
    free(t->cert_subject);
    free(t->cert_issuer);
    free(t->cert_sans);
    free(t->verification);
    t->cert_subject = t->cert_issuer = t->cert_sans = t->verification = NULL;
    t->cert_not_after = 0;
    t->upstream_version[0] = t->upstream_cipher[0] = '\0';
}

static char *name_text(const X509_NAME *name)
{
    char *out = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return NULL;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char *data;
        long n = BIO_get_mem_data(bio, &data);
        out = strndup(data, (size_t)n);
    }
    BIO_free(bio);
    return out;
}

static char *sans_text(X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    char *out = NULL;
    size_t len = 0, cap = 0;
    if (!names)
        return NULL;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        char item[300];
        item[0] = '\0';
        if (gn->type == GEN_DNS) {
            snprintf(item, sizeof(item), "DNS:%.*s", ASN1_STRING_length(gn->d.dNSName),
                     (const char *)ASN1_STRING_get0_data(gn->d.dNSName));
        } else if (gn->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "";
            int n = ASN1_STRING_length(gn->d.iPAddress);
            const unsigned char *d = ASN1_STRING_get0_data(gn->d.iPAddress);
            if (n == 4 || n == 16)
                inet_ntop(n == 4 ? AF_INET : AF_INET6, d, ip, sizeof(ip));
            snprintf(item, sizeof(item), "IP:%s", ip);
        }
        size_t il = strlen(item);
        if (il == 0)
            continue;
        if (len + il + 3 > cap) {
            size_t ncap = cap ? cap * 2 : 256;
            while (ncap < len + il + 3)
                ncap *= 2;
            char *n2 = realloc(out, ncap);
            if (!n2)
                break;
            out = n2;
            cap = ncap;
        }
        if (len > 0) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, item, il);
        len += il;
        out[len] = '\0';
    }
    GENERAL_NAMES_free(names);
    return out;
}

/* Records the origin's TLS facts for the flows of this connection. */
static void record_upstream_tls(struct conn *c, SSL *ssl, X509 *peer, const char *verification)
{
    struct flow_tls *t = &c->tls_info;
    tls_info_clear_upstream(t);
    if (ssl) {
        snprintf(t->upstream_version, sizeof(t->upstream_version), "%s", SSL_get_version(ssl));
        snprintf(t->upstream_cipher, sizeof(t->upstream_cipher), "%s", SSL_get_cipher_name(ssl));
    }
    if (peer) {
        t->cert_subject = name_text(X509_get_subject_name(peer));
        t->cert_issuer = name_text(X509_get_issuer_name(peer));
        t->cert_sans = sans_text(peer);
        struct tm tm;
        if (ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm) == 1)
            t->cert_not_after = (int64_t)timegm(&tm);
    }
    t->verification = dup_or_null(verification);
}

static void record_client_tls(struct conn *c, SSL *ssl)
{
    struct flow_tls *t = &c->tls_info;
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    snprintf(t->client_sni, sizeof(t->client_sni), "%s", c->has_sni ? c->sni : "");
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    snprintf(t->client_alpn, sizeof(t->client_alpn), "%.*s", (int)alpn_len,
             alpn ? (const char *)alpn : "");
    snprintf(t->client_version, sizeof(t->client_version), "%s", SSL_get_version(ssl));
    snprintf(t->client_cipher, sizeof(t->client_cipher), "%s", SSL_get_cipher_name(ssl));
    c->client_is_tls = true;
}

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

/* A new flow for the exchange starting now, or NULL when capture is off. */
static struct flow *flow_start(struct conn *c, const char *scheme, const char *method,
                               const char *host, uint16_t port, const char *target)
{
    if (!c->env->flows)
        return NULL;
    struct flow *f = flow_new(c->cfg->capture_limit);
    if (!f)
        return NULL;
    f->timings.start = clock_wall_us();
    copy_text(f->client_addr, sizeof(f->client_addr), c->client_name);
    copy_text(f->scheme, sizeof(f->scheme), scheme);
    copy_text(f->method, sizeof(f->method), method);
    copy_text(f->host, sizeof(f->host), host);
    f->port = port;
    f->target = dup_or_null(target);
    f->is_tls = c->client_is_tls || strcmp(scheme, "https") == 0;
    return f;
}

/* Hands the flow to the store (which owns it from here), with the facts of
 * the connection the exchange actually used: its TLS details, and its
 * connect and handshake times when it was opened for this exchange. */
static void flow_finish(struct conn *c, struct flow *f, int status, const char *error)
{
    if (!f)
        return;
    if (f->is_tls)
        flow_tls_copy(&f->tls, &c->tls_info);
    if (c->opened_at_us) {
        f->timings.connected = c->connected_at_us;
        f->timings.tls_done = c->tls_done_at_us;
        c->opened_at_us = 0;
    }
    if (status && !f->status)
        f->status = status;
    if (error && error[0] && !f->error)
        f->error = strdup(error);
    if (!f->timings.done)
        f->timings.done = clock_wall_us();
    flowstore_submit(c->env->flows, f);
}

static void format_peer(const struct sockaddr_storage *peer, char *out, size_t len)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%u", addr, port);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%u", addr, port);
    } else {
        snprintf(out, len, "unknown");
    }
}

/* Host names as they may appear in a request target: DNS characters, or an
 * IPv6 literal (already without brackets). */
static bool is_valid_host(const char *host)
{
    size_t n = strlen(host);
    if (n == 0 || n > 253)
        return false;
    if (strchr(host, ':')) {
        struct in6_addr a;
        return inet_pton(AF_INET6, host, &a) == 1;
    }
    for (const char *p = host; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return false;
    return true;
}

static bool is_loopback_name(const char *host)
{
    return strcasecmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* The proxy must not connect to itself (a loop until the connection cap is
 * reached), nor to its dashboard: a page proxied through us must not reach
 * the dashboard from the user's browser. */
static bool is_self(const struct conn *c, const char *host, uint16_t port)
{
    bool ours = is_loopback_name(host) || strcasecmp(host, c->cfg->listen_host) == 0;
    if (port == c->cfg->listen_port && ours)
        return true;
    return c->cfg->dashboard_enabled && port == c->cfg->dashboard_port &&
           (ours || strcasecmp(host, c->cfg->dashboard_host) == 0);
}

static void log_exchange(const struct conn *c, const char *method, const char *url, int status,
                         uint64_t bytes, int64_t started_us, const char *error)
{
    double ms = (double)(clock_mono_us() - started_us) / 1000.0;
    const char *note = c->verify_note[0] ? c->verify_note : "";
    if (error && error[0])
        log_info("%s %s %s %d %lluB %.1fms error: %s%s%s", c->client_name, method, url, status,
                 (unsigned long long)bytes, ms, error, note[0] ? "; " : "", note);
    else
        log_info("%s %s %s %d %lluB %.1fms%s%s", c->client_name, method, url, status,
                 (unsigned long long)bytes, ms, note[0] ? " warning: " : "", note);
}

static int send_error(struct conn *c, int status, const char *reason, bool close)
{
    return exchange_send_error(&c->client, status, reason, close, c->t.io_ms);
}

/* Connects c->upstream to host:port, with TLS when tls. On failure returns
 * -1 with *err. peer (may be NULL) gets the origin's certificate. */
static int open_upstream(struct conn *c, const char *host, uint16_t port, bool tls,
                         const char *sni, const char *verify_name, struct upstream_error *err,
                         X509 **peer)
{
    SSL *ssl = NULL;
    X509 *cert = NULL;
    int rc = -1;
    memset(err, 0, sizeof(*err));
    stream_close(&c->upstream);
    c->opened_at_us = clock_wall_us();
    c->connected_at_us = c->tls_done_at_us = 0;
    int fd = upstream_connect_tcp(host, port, c->cfg->upstream_timeout_ms, err);
    if (fd < 0)
        goto out;
    c->connected_at_us = clock_wall_us();
    if (tls) {
        static const unsigned char alpn_http11[] = "\x08http/1.1";
        bool offer = c->offer_http11;
        ssl = upstream_tls_connect(c->env->upstream_ctx, fd, sni, verify_name,
                                   offer ? alpn_http11 : NULL, offer ? sizeof(alpn_http11) - 1 : 0,
                                   c->cfg->upstream_timeout_ms, &cert, err);
        c->tls_done_at_us = clock_wall_us();
        if (!ssl) {
            record_upstream_tls(c, NULL, cert, err->reason);
            close(fd);
            goto out;
        }
        if (err->reason[0]) {
            snprintf(c->verify_note, sizeof(c->verify_note), "--insecure: %s", err->reason);
            log_warn("%s: upstream %s:%u %s", c->client_name, host, port, c->verify_note);
        }
        record_upstream_tls(c, ssl, cert, err->reason[0] ? c->verify_note : "ok");
    }
    if (stream_init(&c->upstream, fd, CONN_IN_MAX_BYTES, c->env->cancel_fd) < 0) {
        snprintf(err->reason, sizeof(err->reason), "cannot set up the upstream socket");
        err->status = UPSTREAM_UNREACHABLE;
        SSL_free(ssl);
        close(fd);
        goto out;
    }
    if (ssl)
        stream_attach_tls(&c->upstream, ssl);
    snprintf(c->up_host, sizeof(c->up_host), "%s", host);
    c->up_port = port;
    c->up_tls = tls;
    rc = 0;
out:
    if (peer && cert) {
        X509_up_ref(cert);
        *peer = cert;
    }
    X509_free(cert);
    return rc;
}

/* Splits an absolute-form target (RFC 9112 3.2.2). *path gets a heap copy
 * of the origin-form target ("/" when empty); *authority the Host value. */
static int parse_absolute(const char *t, size_t len, bool *tls, char *host, size_t host_len,
                          uint16_t *port, char **authority, char **path)
{
    size_t p;
    if (len >= 7 && strncasecmp(t, "http://", 7) == 0) {
        *tls = false;
        p = 7;
    } else if (len >= 8 && strncasecmp(t, "https://", 8) == 0) {
        *tls = true;
        p = 8;
    } else {
        return -1;
    }
    size_t a = p;
    while (p < len && t[p] != '/' && t[p] != '?' && t[p] != '#')
        p++;
    size_t alen = p - a;
    if (alen == 0 || alen >= host_len || memchr(t + a, '@', alen))
        return -1;
    char auth[256];
    memcpy(auth, t + a, alen);
    auth[alen] = '\0';
    uint16_t default_port = *tls ? 443 : 80;
    char withport[272];
    bool has_port = auth[0] == '[' ? strstr(auth, "]:") != NULL : strchr(auth, ':') != NULL;
    snprintf(withport, sizeof(withport), has_port ? "%s" : "%s:%u", auth, default_port);
    if (config_parse_hostport(withport, host, host_len, port) < 0 || *port == 0 ||
        !is_valid_host(host))
        return -1;
    const char *rest = t + p;
    size_t rest_len = len - p;
    if (rest_len > 0 && rest[0] == '#')
        rest_len = 0;
    *path = malloc(rest_len + 2);
    *authority = strdup(auth);
    if (!*path || !*authority) {
        free(*path);
        free(*authority);
        return -1;
    }
    size_t o = 0;
    if (rest_len == 0 || rest[0] != '/')
        (*path)[o++] = '/';
    memcpy(*path + o, rest, rest_len);
    (*path)[o + rest_len] = '\0';
    return 0;
}

/* http://tapwire.invalid/: the CA and how to trust it, served by the proxy
 * itself so a phone that only has the proxy set can fetch the CA. The name
 * is reserved (RFC 6761), so it can never be a real site. */
static bool serve_local_page(struct conn *c, const struct http1_head *h, const char *path,
                             size_t head_len, int64_t started)
{
    struct dashboard_local_response resp = {0};
    char method[32], err[256], head[256];
    bool keep = false;
    snprintf(method, sizeof(method), "%.*s", (int)(h->method_len < 31 ? h->method_len : 31),
             h->method);
    bool is_head = strcmp(method, "HEAD") == 0;
    bool keep_alive = h->keep_alive && h->framing == HTTP1_BODY_NONE;
    stream_consume(&c->client, head_len);
    if (dashboard_serve_local(c->env->ca, method, path, &resp, err, sizeof(err)) < 0) {
        send_error(c, 500, err, true);
        log_exchange(c, method, path, 500, 0, started, err);
        goto out;
    }
    snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s", resp.status,
             resp.reason, resp.body_len, keep_alive ? "" : "Connection: close\r\n");
    if (stream_putstr(&c->client, head, c->t.io_ms) != STREAM_OK ||
        stream_putstr(&c->client, resp.headers ? resp.headers : "", c->t.io_ms) != STREAM_OK ||
        stream_putstr(&c->client, "\r\n", c->t.io_ms) != STREAM_OK ||
        (!is_head && stream_put(&c->client, resp.body, resp.body_len, c->t.io_ms) != STREAM_OK) ||
        stream_flush(&c->client, c->t.io_ms) != STREAM_OK)
        goto out;
    char url[300];
    snprintf(url, sizeof(url), "http://%s%s", DASHBOARD_LOCAL_HOST, path);
    log_exchange(c, method, url, resp.status, is_head ? 0 : resp.body_len, started, NULL);
    keep = keep_alive;
out:
    dashboard_local_response_free(&resp);
    return keep;
}

/*
 * Request-side rules before the head is built: the URL rules may replace
 * *path (the old one goes to *target_original), header rules give *req_mod.
 * Leaves rw->set NULL when there are no rules. Returns 0, or -1 when out of
 * memory.
 */
static int apply_request_rules(struct conn *c, struct rule_set **set, struct rules_ctx *ctx,
                               struct exchange_rules *rw, const char *method, const char *site,
                               char **path, char **target_original,
                               struct exchange_modified_head **req_mod)
{
    char *new_target = NULL;
    *set = rules_acquire(c->env->rules);
    if (!*set || rules_set_count(*set) == 0)
        return 0;
    if (rules_ctx_init(ctx, method, site, *path) < 0)
        return -1;
    *rw = (struct exchange_rules){.set = *set, .ctx = ctx, .limit = c->cfg->rewrite_limit};
    const struct http1_header *ct = http1_find_header(c->head, "Content-Type");
    if (ct) {
        char type[RULES_MAX_CONTENT_TYPE_BYTES];
        snprintf(type, sizeof(type), "%.*s", (int)ct->value_len, ct->value);
        rules_ctx_set_content_type(ctx, type);
    }
    if (rules_apply_url(*set, ctx, &new_target) < 0)
        return -1;
    if (new_target) {
        *target_original = *path;
        *path = new_target;
    }
    return exchange_apply_header_rules(rw, c->head, req_mod);
}

/* One exchange after the head was parsed. Returns true to keep serving. */
static bool serve_one(struct conn *c, enum conn_mode mode, size_t head_len, int64_t started)
{
    const struct http1_head *h = c->head;
    struct exchange_request req = {0};
    struct exchange_result res = {0};
    char *authority = NULL, *path = NULL, *url = NULL;
    char host[256];
    uint16_t port;
    bool tls;
    bool keep = false;
    struct flow *flow = NULL;
    struct rule_set *rule_set = NULL;
    struct rules_ctx rules_ctx;
    struct exchange_rules rw = {0};
    struct exchange_modified_head *req_mod = NULL;
    char *target_original = NULL;
    char method[32];
    snprintf(method, sizeof(method), "%.*s", (int)(h->method_len < 31 ? h->method_len : 31),
             h->method);

    if (mode == MODE_PROXY) {
        if (parse_absolute(h->target, h->target_len, &tls, host, sizeof(host), &port, &authority,
                           &path) < 0) {
            send_error(c, 400,
                       h->target_len > 0 && h->target[0] == '/'
                           ? "this is a proxy: send absolute-form requests "
                             "(GET http://host/path) or CONNECT"
                           : "invalid request target",
                       true);
            log_exchange(c, method, "-", 400, 0, started, "not a proxy request");
            goto out;
        }
        if (is_self(c, host, port)) {
            send_error(c, 508, "refusing to proxy a request to the proxy itself", true);
            log_exchange(c, method, "-", 508, 0, started, "request to the proxy itself");
            goto out;
        }
        if (!tls && dashboard_is_local_host(host)) {
            keep = serve_local_page(c, h, path, head_len, started);
            goto out;
        }
    } else {
        tls = mode == MODE_TUNNEL_TLS;
        snprintf(host, sizeof(host), "%s", c->tunnel_host);
        port = c->tunnel_port;
        if (h->target_len > 0 && (h->target[0] == '/' || h->target[0] == '*')) {
            path = strndup(h->target, h->target_len);
        } else {
            bool t2;
            char h2[256];
            uint16_t p2;
            if (parse_absolute(h->target, h->target_len, &t2, h2, sizeof(h2), &p2, &authority,
                               &path) < 0) {
                send_error(c, 400, "invalid request target", true);
                goto out;
            }
            free(authority);
            authority = NULL;
        }
        if (!path)
            goto out;
    }
    if (h->method_len == 7 && memcmp(h->method, "CONNECT", 7) == 0) {
        send_error(c, 400, "CONNECT inside a tunnel is not supported", true);
        goto out;
    }
    if (h->framing == HTTP1_BODY_CHUNKED && !exchange_has_only_chunked(h)) {
        send_error(c, 501, "transfer codings other than chunked are not supported", true);
        log_exchange(c, method, "-", 501, 0, started, "unsupported transfer coding");
        goto out;
    }
    {
        /* The URL as the client sees it: in a tunnel, the site is the one
         * named by Host (else SNI), not the address the tunnel goes to. */
        const struct http1_header *hh = mode == MODE_PROXY ? NULL : http1_find_header(h, "Host");
        char shown[300];
        bool v6 = strchr(host, ':') != NULL;
        if (authority)
            snprintf(shown, sizeof(shown), "%s", authority);
        else if (hh && hh->value_len > 0 && hh->value_len < sizeof(shown))
            snprintf(shown, sizeof(shown), "%.*s", (int)hh->value_len, hh->value);
        else if (port == (tls ? 443 : 80))
            snprintf(shown, sizeof(shown), "%s%s%s", v6 ? "[" : "", c->has_sni ? c->sni : host,
                     v6 ? "]" : "");
        else
            snprintf(shown, sizeof(shown), "%s%s%s:%u", v6 ? "[" : "",
                     c->has_sni ? c->sni : host, v6 ? "]" : "", port);
        size_t ulen = strlen(shown) + strlen(path) + 16;
        url = malloc(ulen);
        if (!url)
            goto out;
        snprintf(url, ulen, "%s://%s%s", tls ? "https" : "http", shown, path);
    }
    const char *site = mode == MODE_PROXY ? host : (c->has_sni ? c->sni : host);
    if (c->env->rules && apply_request_rules(c, &rule_set, &rules_ctx, &rw, method, site, &path,
                                             &target_original, &req_mod) < 0)
        goto out;
    const struct http1_head *sent = req_mod ? &req_mod->head : h;
    if (exchange_request_build(&req, sent, path, strlen(path), authority) < 0)
        goto out;
    flow = flow_start(c, tls ? "https" : "http", req.method, site, port, path);
    if (flow) {
        flow->request_version_minor = h->version_minor;
        flow->request_headers = exchange_headers_text(sent, &flow->request_facts);
        if (req_mod)
            flow->request_headers_original = exchange_headers_text(h, NULL);
        flow->target_original = target_original;
        target_original = NULL;
    }
    stream_consume(&c->client, head_len);
    h = NULL; /* its bytes are gone */

    if (c->tunnel_error.status != UPSTREAM_OK) {
        int status = upstream_error_http_status(&c->tunnel_error);
        bool close = req.framing != HTTP1_BODY_NONE || !req.keep_alive;
        keep = send_error(c, status, c->tunnel_error.reason, close) == STREAM_OK && !close;
        log_exchange(c, req.method, url, status, 0, started, c->tunnel_error.reason);
        flow_finish(c, flow, status, c->tunnel_error.reason);
        flow = NULL;
        goto out;
    }

    bool reused = stream_is_open(&c->upstream) && c->up_port == port && c->up_tls == tls &&
                  strcasecmp(c->up_host, host) == 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!reused) {
            struct upstream_error uerr;
            const char *sni = tls ? (mode == MODE_TUNNEL_TLS ? (c->has_sni ? c->sni : NULL) : host)
                                  : NULL;
            const char *verify_name = mode == MODE_TUNNEL_TLS && c->has_sni ? c->sni : host;
            if (open_upstream(c, host, port, tls, sni, verify_name, &uerr, NULL) < 0) {
                int status = upstream_error_http_status(&uerr);
                bool close = req.framing != HTTP1_BODY_NONE || !req.keep_alive;
                keep = send_error(c, status, uerr.reason, close) == STREAM_OK && !close;
                log_exchange(c, req.method, url, status, 0, started, uerr.reason);
                flow_finish(c, flow, status, uerr.reason);
                flow = NULL;
                goto out;
            }
        }
        int r = exchange_forward(&c->client, &c->upstream, &req, &c->t, rw.set ? &rw : NULL,
                                 flow, &res);
        if (r < 0 && res.upstream_stale && reused) {
            /* A kept-alive origin connection may have been closed by the
             * origin just before we used it; a request without a body is
             * safe to send again on a fresh one (RFC 9112 9.3.1). */
            reused = false;
            continue;
        }
        if (r < 0 && res.status == 0) {
            send_error(c, res.error_status, res.error, true);
            res.status = res.error_status;
            res.client_keep_alive = false;
        }
        break;
    }
    log_exchange(c, req.method, url, res.status, res.response_bytes, started, res.error);
    if (flow && rw.set) {
        /* rules: what changed the flow (its "modified" mark); notes: why a
         * matching rule did not apply. */
        if (rules_ctx.applied[0])
            flow->rules = strdup(rules_ctx.applied);
        if (rules_ctx.notes[0])
            flow->rules_notes = strdup(rules_ctx.notes);
    }
    flow_finish(c, flow, res.status, res.error);
    flow = NULL;
    if (!res.upstream_reusable)
        stream_close(&c->upstream);
    keep = res.client_keep_alive;
out:
    flow_free(flow);
    if (rw.set)
        rules_ctx_free(&rules_ctx);
    rules_set_unref(rule_set);
    exchange_modified_head_free(req_mod);
    free(target_original);
    exchange_request_free(&req);
    free(authority);
    free(path);
    free(url);
    return keep;
}

static void handle_connect(struct conn *c, size_t head_len, int64_t started);

/*
 * Waits for the next request on a kept-alive connection. Returns false when
 * the connection should end (idle timeout, shutdown). A connection that
 * stays quiet for CONN_IDLE_GRACE_MS gives back what only a busy connection
 * needs: its stream buffers and the stack pages its thread touched (a TLS
 * handshake goes deep). A busy one keeps them, so back-to-back requests
 * cost no free/malloc and no madvise. The grace counts towards the idle
 * timeout.
 */
static bool wait_next_request(struct conn *c)
{
    int idle_ms = c->t.idle_ms;
    int grace_ms = idle_ms >= 0 && idle_ms < CONN_IDLE_GRACE_MS ? idle_ms : CONN_IDLE_GRACE_MS;
    int r = stream_wait_readable(&c->client, grace_ms);

    if (r != STREAM_TIMEOUT)
        return r == STREAM_OK;
    stream_release_idle(&c->client);
    stream_release_idle(&c->upstream);
    free(c->head);
    c->head = NULL;
    stacktrim_release();
    return stream_wait_readable(&c->client, idle_ms < 0 ? -1 : idle_ms - grace_ms) == STREAM_OK;
}

static void serve_requests(struct conn *c, enum conn_mode mode)
{
    for (;;) {
        struct http1_error perr = {0};
        /* Between requests a stopping proxy may end the connection at once. */
        c->client.cancel_fd = c->env->stop_fd;
        if (!wait_next_request(c)) {
            c->client.cancel_fd = c->env->cancel_fd;
            break;
        }
        if (c->head == NULL && (c->head = malloc(sizeof(*c->head))) == NULL) {
            c->client.cancel_fd = c->env->cancel_fd;
            send_error(c, 503, "out of memory", true);
            break;
        }
        int n = exchange_read_request(&c->client, &c->t, c->head, &perr);
        c->client.cancel_fd = c->env->cancel_fd;
        if (n == 0)
            break;
        int64_t started = clock_mono_us();
        if (n < 0) {
            send_error(c, perr.status, perr.message, true);
            log_exchange(c, "-", "-", perr.status, 0, started, perr.message);
            break;
        }
        if (mode == MODE_PROXY && c->head->method_len == 7 &&
            memcmp(c->head->method, "CONNECT", 7) == 0) {
            handle_connect(c, (size_t)n, started);
            break;
        }
        if (!serve_one(c, mode, (size_t)n, started))
            break;
    }
}

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

/* Peeks at what the client sends first inside a tunnel, without reading it. */
static enum first_bytes peek_first_bytes(struct conn *c, struct client_hello *hello)
{
    enum first_bytes kind = FIRST_GONE;
    unsigned char *buf = NULL;
    int64_t deadline = clock_mono_us() + (int64_t)c->cfg->header_timeout_ms * 1000;

    if (stream_buffered(&c->client) > 0) {
        /* The client did not wait for our 200: those bytes are already read,
         * so they cannot be handed to OpenSSL; plain protocols still work. */
        const unsigned char *d = (const unsigned char *)stream_data(&c->client);
        size_t n = stream_buffered(&c->client);
        if (tlsserver_looks_like_tls(d, n)) {
            log_info("%s: TLS sent before the CONNECT response; closing", c->client_name);
            goto out;
        }
        kind = looks_like_http(d, n) == 1 ? FIRST_HTTP : FIRST_RAW;
        goto out;
    }
    if (stream_wait_readable(&c->client, c->cfg->header_timeout_ms) != STREAM_OK)
        goto out;
    buf = malloc(CONN_PEEK_BYTES);
    if (!buf)
        goto out;
    for (;;) {
        ssize_t n = recv(c->client.fd, buf, CONN_PEEK_BYTES, MSG_PEEK);
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
                log_info("%s: malformed TLS ClientHello; closing", c->client_name);
                goto out;
            }
            if (r == TLSSERVER_HELLO_TOO_LARGE) {
                log_info("%s: TLS ClientHello larger than %d bytes; closing", c->client_name,
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
            if (n == CONN_PEEK_BYTES) {
                log_info("%s: TLS ClientHello too large; closing", c->client_name);
                goto out;
            }
        }
        if (clock_mono_us() > deadline) {
            log_info("%s: first bytes of the tunnel did not arrive in time", c->client_name);
            goto out;
        }
        /* Data is pending but incomplete: poll would return at once, so
         * wait a moment for the rest of the record. */
        struct timespec pause = {0, CONN_PEEK_RETRY_NS};
        nanosleep(&pause, NULL);
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

/* Connects and verifies the origin, then completes the client's handshake
 * with a leaf carrying the origin's names. Returns 0 or -1 (client gone). */
static int intercept_tls(struct conn *c, const struct client_hello *hello)
{
    struct ca_names names = {0};
    X509 *peer = NULL;
    X509 *leaf = NULL;
    SSL *ssl = NULL;
    char err[256];
    int rc = -1;

    c->has_sni = hello->has_sni;
    snprintf(c->sni, sizeof(c->sni), "%s", hello->has_sni ? hello->sni : "");
    c->offer_http11 = hello->alpn_count == 0 || offers_alpn(hello, "http/1.1");
    const char *name = c->has_sni ? c->sni : c->tunnel_host;

    if (open_upstream(c, c->tunnel_host, c->tunnel_port, true, c->has_sni ? c->sni : NULL, name,
                      &c->tunnel_error, &peer) < 0) {
        log_warn("%s: upstream %s:%u (%s): %s", c->client_name, c->tunnel_host, c->tunnel_port,
                 name, c->tunnel_error.reason);
        if (c->tunnel_error.status == UPSTREAM_OK)
            c->tunnel_error.status = UPSTREAM_TLS_FAILED;
    }
    /* The name the client asked for comes first: it becomes the CN. The
     * origin's names are copied only from a certificate that passed (or
     * that --insecure told us to accept). */
    if (ca_names_add(&names, name) < 0) {
        log_info("%s: cannot mint a certificate for '%s'", c->client_name, name);
        goto out;
    }
    if (c->tunnel_error.status == UPSTREAM_OK && peer)
        ca_names_add_from_cert(&names, peer);
    /* Only a verified origin's leaf is stored: any other name is whatever a
     * client chose to send, and would grow the database without bound. */
    bool is_verified = c->tunnel_error.status == UPSTREAM_OK && peer && !c->verify_note[0];
    leaf = certstore_get(c->env->certs, &names, is_verified, err, sizeof(err));
    if (!leaf) {
        log_error("%s: minting a certificate for %s failed: %s", c->client_name, name, err);
        goto out;
    }
    ssl = tlsserver_accept(c->env->server_ctx, c->client.fd, leaf, ca_cert(c->env->ca),
                           ca_leaf_key(c->env->ca), c->cfg->header_timeout_ms, err, sizeof(err));
    if (!ssl) {
        log_info("%s: TLS handshake with the client for %s failed: %s", c->client_name, name,
                 err);
        goto out;
    }
    stream_attach_tls(&c->client, ssl);
    record_client_tls(c, ssl);
    rc = 0;
out:
    X509_free(leaf);
    X509_free(peer);
    ca_names_clear(&names);
    return rc;
}

static void relay_raw(struct conn *c, const char *what, int64_t started)
{
    uint64_t up = 0, down = 0;
    struct upstream_error uerr = {0};
    char target[300];
    snprintf(target, sizeof(target), "%s:%u", c->tunnel_host, c->tunnel_port);
    if (!stream_is_open(&c->upstream) &&
        open_upstream(c, c->tunnel_host, c->tunnel_port, false, NULL, NULL, &uerr, NULL) < 0) {
        log_exchange(c, "CONNECT", target, upstream_error_http_status(&uerr), 0, started,
                     uerr.reason);
        return;
    }
    struct flow *flow = flow_start(c, "tcp", "CONNECT", c->tunnel_host, c->tunnel_port, NULL);
    int r = stream_relay(&c->client, &c->upstream, c->cfg->idle_timeout_ms, &up, &down);
    char note[128];
    snprintf(note, sizeof(note), "%s relay, %llu bytes up%s%s", what, (unsigned long long)up,
             r < 0 ? ", ended: " : "", r < 0 ? stream_status_text(r) : "");
    log_exchange(c, "CONNECT", target, 200, down, started, note);
    if (flow) {
        flow->kind = FLOW_TUNNEL;
        flow->bytes_up = up;
        flow->bytes_down = down;
        flow->error = r < 0 && r != STREAM_TIMEOUT ? strdup(note) : NULL;
        flow->rules = NULL;
    }
    flow_finish(c, flow, 200, NULL);
}

/*
 * Answers a CONNECT and sets up what runs inside the tunnel. Returns the
 * mode to serve requests in, or -1 when the tunnel is already over (refused,
 * relayed raw, closed). Kept out of line so that its buffers (the authority,
 * the parsed ClientHello) are not on the stack for the whole life of a
 * kept-alive tunnel: what an idle connection's thread keeps resident is the
 * depth of its stack while it waits (see stacktrim.h).
 */
static __attribute__((noinline)) int open_tunnel(struct conn *c, size_t head_len,
                                                 int64_t started)
{
    char authority[300];
    struct client_hello hello;
    const struct http1_head *h = c->head;
    size_t alen = h->target_len < sizeof(authority) - 1 ? h->target_len : sizeof(authority) - 1;
    memcpy(authority, h->target, alen);
    authority[alen] = '\0';
    stream_consume(&c->client, head_len);

    if (config_parse_hostport(authority, c->tunnel_host, sizeof(c->tunnel_host),
                              &c->tunnel_port) < 0 ||
        c->tunnel_port == 0 || !is_valid_host(c->tunnel_host)) {
        send_error(c, 400, "CONNECT wants host:port", true);
        log_exchange(c, "CONNECT", authority, 400, 0, started, "bad CONNECT target");
        return -1;
    }
    if (is_self(c, c->tunnel_host, c->tunnel_port)) {
        send_error(c, 508, "refusing to tunnel to the proxy itself", true);
        log_exchange(c, "CONNECT", authority, 508, 0, started, "tunnel to the proxy itself");
        return -1;
    }
    if (config_is_ignored_host(c->cfg, c->tunnel_host)) {
        struct upstream_error uerr;
        if (open_upstream(c, c->tunnel_host, c->tunnel_port, false, NULL, NULL, &uerr, NULL) < 0) {
            int status = upstream_error_http_status(&uerr);
            send_error(c, status, uerr.reason, true);
            log_exchange(c, "CONNECT", authority, status, 0, started, uerr.reason);
            return -1;
        }
        if (stream_putstr(&c->client, "HTTP/1.1 200 Connection established\r\n\r\n",
                          c->t.io_ms) != STREAM_OK)
            return -1;
        relay_raw(c, "ignored host", started);
        return -1;
    }
    if (stream_putstr(&c->client, "HTTP/1.1 200 Connection established\r\n\r\n", c->t.io_ms) !=
            STREAM_OK ||
        stream_flush(&c->client, c->t.io_ms) != STREAM_OK)
        return -1;

    switch (peek_first_bytes(c, &hello)) {
    case FIRST_TLS:
        /* Clients often CONNECT by address and name the site only in the
         * SNI, so --ignore-host is checked again once the SNI is known. */
        if (hello.has_sni && config_is_ignored_host(c->cfg, hello.sni)) {
            relay_raw(c, "ignored host", started);
            break;
        }
        return intercept_tls(c, &hello) == 0 ? MODE_TUNNEL_TLS : -1;
    case FIRST_HTTP:
        return MODE_TUNNEL_PLAIN;
    case FIRST_RAW:
        relay_raw(c, "raw", started);
        break;
    case FIRST_GONE:
        break;
    }
    return -1;
}

static void handle_connect(struct conn *c, size_t head_len, int64_t started)
{
    int mode = open_tunnel(c, head_len, started);

    if (mode >= 0)
        serve_requests(c, (enum conn_mode)mode);
}

void conn_serve(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->env = env;
    c->cfg = env->cfg;
    c->t.idle_ms = env->cfg->idle_timeout_ms;
    c->t.header_ms = env->cfg->header_timeout_ms;
    c->t.io_ms = env->cfg->io_timeout_ms;
    c->offer_http11 = true; /* absolute-form https://: we speak HTTP/1.1 */
    format_peer(peer, c->client_name, sizeof(c->client_name));
    stream_clear(&c->upstream, env->cancel_fd);
    if (stream_init(&c->client, fd, CONN_IN_MAX_BYTES, env->cancel_fd) < 0) {
        close(fd);
        goto out;
    }
    serve_requests(c, MODE_PROXY);
out:
    stream_close(&c->upstream);
    stream_close(&c->client);
    tls_info_clear_upstream(&c->tls_info);
    free(c->head);
    free(c);
}
