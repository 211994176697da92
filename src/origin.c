/*
 * origin: see origin.h. The connection's TLS facts are recorded here rather
 * than by whoever asked for the connection: they belong to the connection,
 * and every flow that reuses it reports the same ones.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "origin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

/* The ALPN list offered: RFC 7301 3.1, one length byte before each name. */
static size_t alpn_offer(const struct origin_target *target, unsigned char *out)
{
    size_t n = 0;

    if (target->offers_h2) {
        memcpy(out + n, "\x02h2", 3);
        n += 3;
    }
    if (target->offers_http11) {
        memcpy(out + n, "\x08http/1.1", 9);
        n += 9;
    }
    /* Last, so that an origin that honours the client's order stays on
     * HTTP/1.1 when it speaks both. */
    if (target->accepts_h2_only && !target->offers_h2) {
        memcpy(out + n, "\x02h2", 3);
        n += 3;
    }
    return n;
}

static bool chose(SSL *ssl, const char *proto)
{
    const unsigned char *alpn = NULL;
    unsigned int len = 0;

    SSL_get0_alpn_selected(ssl, &alpn, &len);
    return len == strlen(proto) && memcmp(alpn, proto, len) == 0;
}

static void tls_facts_clear(struct origin_tls *t)
{
    free(t->cert_subject);
    free(t->cert_issuer);
    free(t->cert_sans);
    free(t->verification);
    memset(t, 0, sizeof(*t));
}

static void tls_facts_record(struct origin_tls *t, SSL *ssl, X509 *peer, const char *verification)
{
    struct tm tm;

    tls_facts_clear(t);
    if (ssl != NULL) {
        snprintf(t->version, sizeof(t->version), "%s", SSL_get_version(ssl));
        snprintf(t->cipher, sizeof(t->cipher), "%s", SSL_get_cipher_name(ssl));
    }
    if (peer != NULL) {
        t->cert_subject = upstream_cert_name(X509_get_subject_name(peer));
        t->cert_issuer = upstream_cert_name(X509_get_issuer_name(peer));
        t->cert_sans = upstream_cert_sans(peer);
        if (ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm) == 1)
            t->cert_not_after = (int64_t)timegm(&tm);
    }
    t->verification = verification != NULL ? strdup(verification) : NULL;
}

/* TCP to the target, or through the upstream proxy when one applies: a
 * CONNECT for TLS and raw relays, the proxy itself for plain HTTP. A numeric
 * destination is judged by the guard first either way; a name is resolved
 * by the proxy. */
static int connect_tcp(const struct origin_settings *settings, const struct origin_target *target,
                       struct upstream_error *err)
{
    bool is_tunnel = target->is_tls || !target->is_plain_http;

    if (!upstreamproxy_applies(settings->proxy, target->host))
        return upstream_connect_tcp(target->host, target->port, settings->timeout_ms,
                                    settings->guard, err);
    if (upstream_check_numeric(target->host, target->port, settings->guard, err) < 0)
        return -1;
    return upstreamproxy_connect(settings->proxy, target->host, target->port, is_tunnel,
                                 settings->timeout_ms, settings->cancel_fd, err);
}

void origin_init(struct origin *o, int cancel_fd)
{
    memset(o, 0, sizeof(*o));
    stream_clear(&o->stream, cancel_fd);
}

int origin_open(struct origin *o, const struct origin_settings *settings,
                const struct origin_target *target, struct upstream_error *err, X509 **peer)
{
    SSL *ssl = NULL;
    X509 *cert = NULL;
    int fd = -1;
    int rc = -1;

    memset(err, 0, sizeof(*err));
    origin_close(o);
    o->is_h2 = false;
    o->is_http11_chosen = false;
    o->insecure_note[0] = '\0';
    o->opened_at_us = clock_wall_us();
    o->connected_at_us = o->tls_done_at_us = 0;
    fd = connect_tcp(settings, target, err);
    if (fd < 0)
        goto out;
    o->is_proxied_http = target->is_plain_http && !target->is_tls &&
                         upstreamproxy_applies(settings->proxy, target->host);
    o->connected_at_us = clock_wall_us();
    if (target->is_tls) {
        unsigned char alpn[16];
        size_t alpn_len = alpn_offer(target, alpn);
        ssl = upstream_tls_connect(settings->tls_ctx, fd, target->sni, target->verify_name,
                                   alpn_len > 0 ? alpn : NULL, alpn_len, settings->timeout_ms,
                                   &cert, err);
        o->tls_done_at_us = clock_wall_us();
        if (ssl == NULL) {
            tls_facts_record(&o->tls, NULL, cert, err->reason);
            goto out;
        }
        if (err->reason[0] != '\0')
            snprintf(o->insecure_note, sizeof(o->insecure_note), "--insecure: %s", err->reason);
        tls_facts_record(&o->tls, ssl, cert, err->reason[0] != '\0' ? o->insecure_note : "ok");
    }
    if (stream_init(&o->stream, fd, settings->in_max_bytes, settings->cancel_fd) < 0) {
        snprintf(err->reason, sizeof(err->reason), "cannot set up the upstream socket");
        err->status = UPSTREAM_UNREACHABLE;
        goto out;
    }
    fd = -1; /* the stream's now */
    if (ssl != NULL) {
        o->is_h2 = chose(ssl, "h2");
        o->is_http11_chosen = chose(ssl, "http/1.1");
        stream_attach_tls(&o->stream, ssl);
    }
    ssl = NULL;
    snprintf(o->host, sizeof(o->host), "%s", target->host);
    o->port = target->port;
    o->is_tls = target->is_tls;
    rc = 0;
out:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    if (peer != NULL && cert != NULL) {
        X509_up_ref(cert);
        *peer = cert;
    }
    X509_free(cert);
    return rc;
}

bool origin_is_open_to(const struct origin *o, const char *host, uint16_t port, bool is_tls)
{
    return stream_is_open(&o->stream) && o->port == port && o->is_tls == is_tls &&
           strcasecmp(o->host, host) == 0;
}

bool origin_take_open_times(struct origin *o, int64_t *connected_at_us, int64_t *tls_done_at_us)
{
    if (o->opened_at_us == 0)
        return false;
    *connected_at_us = o->connected_at_us;
    *tls_done_at_us = o->tls_done_at_us;
    o->opened_at_us = 0;
    return true;
}

void origin_close(struct origin *o)
{
    stream_close(&o->stream);
}

void origin_free(struct origin *o)
{
    origin_close(o);
    tls_facts_clear(&o->tls);
}
