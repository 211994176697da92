/*
 * Unit tests for upstream: a test PKI made here with the OpenSSL API, an
 * origin thread on 127.0.0.1 (ephemeral port) serving a chosen certificate
 * through tlsserver_accept(), and assertions on the exact reasons a person
 * would read on the 502 page. Every wait is bounded; every thread is joined.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "upstream.h"

#include "tlsserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define WAIT_MS 5000

/* ---- test PKI ---- */

static long next_serial = 1;

/* The PKI is made in a suite initialiser, where CUnit assertions cannot run,
 * so these helpers report failure by returning false/NULL instead. */
static bool add_ext_conf(X509 *cert, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    bool is_added = ext != NULL && X509_add_ext(cert, ext, -1) == 1;

    X509_EXTENSION_free(ext);
    return is_added;
}

/* issuer NULL makes a self-signed certificate: a CA when san is NULL, else
 * a self-signed leaf. san "" means no SAN extension. Dates are
 * "YYYYMMDDHHMMSSZ", or NULL for "valid now". */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san, const char *not_before, const char *not_after)
{
    X509 *cert = X509_new();
    bool is_ca = issuer == NULL && san == NULL;
    bool ok = cert != NULL;
    X509V3_CTX v3;
    X509_NAME *name;

    if (!ok)
        return NULL;
    ok = ok && X509_set_version(cert, X509_VERSION_3) == 1;
    ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(cert), next_serial++) == 1;
    if (not_before != NULL)
        ok = ok && ASN1_TIME_set_string(X509_getm_notBefore(cert), not_before) == 1;
    else
        ok = ok && X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL;
    if (not_after != NULL)
        ok = ok && ASN1_TIME_set_string(X509_getm_notAfter(cert), not_after) == 1;
    else
        ok = ok && X509_gmtime_adj(X509_getm_notAfter(cert), 86400) != NULL;
    ok = ok && X509_set_pubkey(cert, key) == 1;
    name = X509_get_subject_name(cert);
    ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                                          -1, 0) == 1;
    ok = ok &&
         X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name) == 1;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : cert, cert, NULL, NULL, 0);
    ok = ok && add_ext_conf(cert, &v3, NID_subject_key_identifier, "hash");
    if (is_ca) {
        ok = ok && add_ext_conf(cert, &v3, NID_basic_constraints, "critical,CA:TRUE");
        ok = ok && add_ext_conf(cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        if (issuer != NULL)
            ok = ok && add_ext_conf(cert, &v3, NID_authority_key_identifier, "keyid");
        ok = ok && add_ext_conf(cert, &v3, NID_basic_constraints, "CA:FALSE");
        ok = ok && add_ext_conf(cert, &v3, NID_ext_key_usage, "serverAuth");
        if (san[0] != '\0')
            ok = ok && add_ext_conf(cert, &v3, NID_subject_alt_name, san);
    }
    ok = ok && X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(cert);
        cert = NULL;
    }
    return cert;
}

static struct {
    EVP_PKEY *ca_key, *evil_key, *leaf_key;
    X509 *ca, *evil_ca;
    X509 *good, *expired, *not_yet, *other, *evil_leaf, *self_signed, *many, *cn_only;
    char ca_path[64];
} pki;

static int pki_init(void)
{
    FILE *f;
    int fd;

    pki.ca_key = EVP_EC_gen("P-256");
    pki.evil_key = EVP_EC_gen("P-256");
    pki.leaf_key = EVP_EC_gen("P-256");
    if (pki.ca_key == NULL || pki.evil_key == NULL || pki.leaf_key == NULL)
        return -1;
    pki.ca = make_cert("tapwire upstream test CA", pki.ca_key, NULL, NULL, NULL, NULL, NULL);
    pki.evil_ca = make_cert("Evil CA", pki.evil_key, NULL, NULL, NULL, NULL, NULL);
    if (pki.ca == NULL || pki.evil_ca == NULL)
        return -1;
    pki.good = make_cert("good.test", pki.leaf_key, pki.ca, pki.ca_key,
                         "DNS:good.test,DNS:alt.test,IP:127.0.0.1,IP:::1", NULL, NULL);
    pki.expired = make_cert("good.test", pki.leaf_key, pki.ca, pki.ca_key,
                            "DNS:good.test,IP:127.0.0.1", "20230101000000Z", "20240131120000Z");
    pki.not_yet = make_cert("good.test", pki.leaf_key, pki.ca, pki.ca_key, "DNS:good.test",
                            "20990101000000Z", "21000101000000Z");
    pki.other =
        make_cert("other.test", pki.leaf_key, pki.ca, pki.ca_key, "DNS:other.test", NULL, NULL);
    pki.evil_leaf = make_cert("good.test", pki.leaf_key, pki.evil_ca, pki.evil_key, "DNS:good.test",
                              NULL, NULL);
    pki.self_signed = make_cert("good.test", pki.leaf_key, NULL, NULL, "DNS:good.test", NULL, NULL);
    pki.many = make_cert("n1.test", pki.leaf_key, pki.ca, pki.ca_key,
                         "DNS:n1.test,DNS:n2.test,DNS:n3.test,DNS:n4.test,DNS:n5.test,"
                         "DNS:n6.test,DNS:n7.test,DNS:n8.test,DNS:n9.test,DNS:n10.test,"
                         "DNS:n11.test,DNS:n12.test,IP:10.0.0.13",
                         NULL, NULL);
    pki.cn_only = make_cert("legacy.test", pki.leaf_key, pki.ca, pki.ca_key, "", NULL, NULL);
    if (pki.good == NULL || pki.expired == NULL || pki.not_yet == NULL || pki.other == NULL ||
        pki.evil_leaf == NULL || pki.self_signed == NULL || pki.many == NULL || pki.cn_only == NULL)
        return -1;

    snprintf(pki.ca_path, sizeof pki.ca_path, "/tmp/upstream-test-ca-XXXXXX");
    fd = mkstemp(pki.ca_path);
    if (fd < 0)
        return -1;
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    if (PEM_write_X509(f, pki.ca) != 1) {
        fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int pki_clean(void)
{
    X509 *certs[] = {pki.ca,    pki.evil_ca,   pki.good,        pki.expired, pki.not_yet,
                     pki.other, pki.evil_leaf, pki.self_signed, pki.many,    pki.cn_only};
    size_t i;

    for (i = 0; i < sizeof certs / sizeof certs[0]; i++)
        X509_free(certs[i]);
    EVP_PKEY_free(pki.ca_key);
    EVP_PKEY_free(pki.evil_key);
    EVP_PKEY_free(pki.leaf_key);
    if (pki.ca_path[0] != '\0')
        unlink(pki.ca_path);
    memset(&pki, 0, sizeof pki);
    return 0;
}

/* ---- origin server thread ---- */

enum origin_mode {
    ORIGIN_TLS,    /* serve the certificate, send "hello\n", read until EOF */
    ORIGIN_SILENT, /* accept and never speak */
    ORIGIN_PLAIN,  /* answer in plain HTTP */
};

struct origin {
    enum origin_mode mode;
    int family;
    int listen_fd;
    uint16_t port;
    SSL_CTX *ctx;
    X509 *leaf;
    X509 *chain; /* may be NULL */
    int connections;
    pthread_t thread;
    char sni_seen[256]; /* of the last TLS connection; "" when none was sent */
    int handshakes_ok;
};

static void serve_tls(struct origin *o, int fd)
{
    char err[256];
    char buf[64];
    const char *sni;
    SSL *ssl =
        tlsserver_accept(o->ctx, fd, o->leaf, o->chain, pki.leaf_key, WAIT_MS, err, sizeof err);

    if (ssl == NULL)
        return;
    o->handshakes_ok++;
    sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(o->sni_seen, sizeof o->sni_seen, "%s", sni != NULL ? sni : "");
    if (SSL_write(ssl, "hello\n", 6) == 6) {
        while (SSL_read(ssl, buf, sizeof buf) > 0)
            ;
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
}

static void *origin_main(void *arg)
{
    struct origin *o = arg;
    struct timeval tv = {.tv_sec = WAIT_MS / 1000, .tv_usec = 0};
    static const char plain[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    int i;

    for (i = 0; i < o->connections; i++) {
        struct pollfd pfd = {.fd = o->listen_fd, .events = POLLIN, .revents = 0};
        char buf[256];
        int fd;

        if (poll(&pfd, 1, WAIT_MS) != 1)
            break;
        fd = accept(o->listen_fd, NULL, NULL);
        if (fd < 0)
            break;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (o->mode == ORIGIN_TLS) {
            serve_tls(o, fd);
        } else if (o->mode == ORIGIN_PLAIN) {
            if (read(fd, buf, sizeof buf) > 0 && write(fd, plain, sizeof plain - 1) < 0)
                perror("origin write");
        } else {
            /* Silent: wait (bounded) for the client to give up and close. */
            while (read(fd, buf, sizeof buf) > 0)
                ;
        }
        close(fd);
    }
    return NULL;
}

static void origin_start_family(struct origin *o, int family, enum origin_mode mode, X509 *leaf,
                                X509 *chain, int connections, int max_version)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256] = "";

    memset(o, 0, sizeof *o);
    memset(&ss, 0, sizeof ss);
    o->mode = mode;
    o->family = family;
    o->leaf = leaf;
    o->chain = chain;
    o->connections = connections;
    o->listen_fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(o->listen_fd >= 0);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_loopback;
        len = sizeof *sin6;
    }
    CU_ASSERT_FATAL(bind(o->listen_fd, (struct sockaddr *)&ss, len) == 0);
    CU_ASSERT_FATAL(listen(o->listen_fd, 64) == 0);
    CU_ASSERT_FATAL(getsockname(o->listen_fd, (struct sockaddr *)&ss, &len) == 0);
    o->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
    o->ctx = tlsserver_ctx_new(NULL, err, sizeof err);
    CU_ASSERT_FATAL(o->ctx != NULL);
    if (max_version != 0)
        CU_ASSERT_FATAL(SSL_CTX_set_max_proto_version(o->ctx, max_version) == 1);
    CU_ASSERT_FATAL(pthread_create(&o->thread, NULL, origin_main, o) == 0);
}

static void origin_start(struct origin *o, enum origin_mode mode, X509 *leaf, X509 *chain,
                         int connections)
{
    origin_start_family(o, AF_INET, mode, leaf, chain, connections, 0);
}

static void origin_stop(struct origin *o)
{
    CU_ASSERT(pthread_join(o->thread, NULL) == 0);
    close(o->listen_fd);
    SSL_CTX_free(o->ctx);
}

/* ---- client side ---- */

static SSL_CTX *client_ctx(bool is_insecure)
{
    const char *files[] = {pki.ca_path, NULL};
    struct upstream_tls_options opts = {.extra_ca_files = files, .insecure = is_insecure};
    char err[256] = "";
    SSL_CTX *ctx;

    ctx = upstream_ctx_new(&opts, err, sizeof err);
    if (ctx == NULL)
        fprintf(stderr, "upstream_ctx_new: %s\n", err);
    CU_ASSERT_FATAL(ctx != NULL);
    return ctx;
}

struct attempt {
    SSL *ssl;
    X509 *peer;
    struct upstream_error err;
    bool is_reused;
    char greeting[16];
    const unsigned char *alpn;
    size_t alpn_len;
    int timeout_ms;
    long long elapsed_ms;
};

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connects, runs upstream_tls_connect(), and on success reads the origin's
 * greeting (which also takes in TLS 1.3 tickets) and closes cleanly. */
static void attempt(SSL_CTX *ctx, const char *host, uint16_t port, const char *sni,
                    const char *verify_name, struct attempt *a)
{
    struct upstream_error cerr;
    int fd = upstream_connect_tcp(host, port, WAIT_MS, NULL, &cerr);
    long long start;

    if (fd < 0)
        fprintf(stderr, "connect: %s\n", cerr.reason);
    CU_ASSERT_FATAL(fd >= 0);
    start = mono_ms();
    a->ssl = upstream_tls_connect(ctx, fd, sni, verify_name, a->alpn, a->alpn_len,
                                  a->timeout_ms != 0 ? a->timeout_ms : WAIT_MS, &a->peer, &a->err);
    a->elapsed_ms = mono_ms() - start;
    if (a->ssl != NULL) {
        int n;

        a->is_reused = SSL_session_reused(a->ssl) == 1;
        n = SSL_read(a->ssl, a->greeting, sizeof a->greeting - 1);
        a->greeting[n > 0 ? n : 0] = '\0';
        SSL_shutdown(a->ssl);
    }
    close(fd);
}

static void attempt_free(struct attempt *a)
{
    SSL_free(a->ssl);
    X509_free(a->peer);
    a->ssl = NULL;
    a->peer = NULL;
}

/* One connection to an origin serving leaf (with our CA as chain). */
static void attempt_once(bool is_insecure, X509 *leaf, X509 *chain, const char *sni,
                         const char *verify_name, struct attempt *a)
{
    SSL_CTX *ctx = client_ctx(is_insecure);
    struct origin o;

    origin_start(&o, ORIGIN_TLS, leaf, chain, 1);
    attempt(ctx, "127.0.0.1", o.port, sni, verify_name, a);
    origin_stop(&o);
    SSL_CTX_free(ctx);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void print_reason(const char *what, const struct attempt *a)
{
    printf("\n      [%s] status=%d reason=\"%s\" ", what, (int)a->err.status, a->err.reason);
}

/* ---- verification tests ---- */

static void test_good_certificate_verifies_by_name(void)
{
    struct attempt a = {0};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;

    origin_start(&o, ORIGIN_TLS, pki.good, pki.ca, 1);
    attempt(ctx, "127.0.0.1", o.port, "good.test", "good.test", &a);
    origin_stop(&o);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "");
    CU_ASSERT_STRING_EQUAL(a.greeting, "hello\n");
    CU_ASSERT_STRING_EQUAL(o.sni_seen, "good.test");
    CU_ASSERT_PTR_NOT_NULL(a.peer);
    CU_ASSERT(a.peer != NULL && X509_cmp(a.peer, pki.good) == 0);
    attempt_free(&a);
    SSL_CTX_free(ctx);
}

static void test_second_san_verifies(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.good, pki.ca, "alt.test", "alt.test", &a);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    attempt_free(&a);
}

static void test_fully_qualified_name_verifies_without_root_dot(void)
{
    struct attempt a = {0};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;

    origin_start(&o, ORIGIN_TLS, pki.good, pki.ca, 1);
    attempt(ctx, "127.0.0.1", o.port, "good.test.", "good.test.", &a);
    origin_stop(&o);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    CU_ASSERT_STRING_EQUAL(o.sni_seen, "good.test");
    attempt_free(&a);
    SSL_CTX_free(ctx);
}

static void test_ip_literal_verifies_against_ip_san_without_sni(void)
{
    struct attempt a = {0};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;

    origin_start(&o, ORIGIN_TLS, pki.good, pki.ca, 1);
    attempt(ctx, "127.0.0.1", o.port, "127.0.0.1", "127.0.0.1", &a);
    origin_stop(&o);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "");
    /* RFC 6066 3: no IP literals in SNI. */
    CU_ASSERT_STRING_EQUAL(o.sni_seen, "");
    attempt_free(&a);
    SSL_CTX_free(ctx);
}

static void test_bracketed_ipv6_literal_connects_and_verifies(void)
{
    struct attempt a = {0};
    SSL_CTX *ctx;
    struct origin o;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};

    /* Some CI containers have no ::1; nothing to test there. */
    if (probe < 0 || bind(probe, (struct sockaddr *)&sin6, sizeof sin6) != 0) {
        if (probe >= 0)
            close(probe);
        printf("(skipped: no IPv6 loopback) ");
        return;
    }
    close(probe);
    ctx = client_ctx(false);
    origin_start_family(&o, AF_INET6, ORIGIN_TLS, pki.good, pki.ca, 2, 0);
    attempt(ctx, "[::1]", o.port, "[::1]", "[::1]", &a);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    attempt_free(&a);
    memset(&a, 0, sizeof a);
    attempt(ctx, "::1", o.port, NULL, "0:0::1", &a);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    attempt_free(&a);
    origin_stop(&o);
    SSL_CTX_free(ctx);
}

static void test_wrong_name_is_hostname_mismatch(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.good, pki.ca, "wrong.test", "wrong.test", &a);
    print_reason("mismatch", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "hostname mismatch: wrong.test is not among the names "
                                         "the certificate is valid for: good.test, alt.test, "
                                         "127.0.0.1, ::1");
    CU_ASSERT_EQUAL(upstream_error_http_status(&a.err), 502);
    /* The caller still gets the certificate for its records. */
    CU_ASSERT(a.peer != NULL && X509_cmp(a.peer, pki.good) == 0);
    attempt_free(&a);
}

static void test_wrong_ip_is_hostname_mismatch(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.good, pki.ca, NULL, "10.1.2.3", &a);
    print_reason("ip mismatch", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT(starts_with(a.err.reason, "hostname mismatch: 10.1.2.3 is not among"));
    attempt_free(&a);
}

static void test_other_names_certificate_is_mismatch(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.other, pki.ca, "good.test", "good.test", &a);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "hostname mismatch: good.test is not among the names "
                                         "the certificate is valid for: other.test");
    attempt_free(&a);
}

static void test_mismatch_lists_at_most_ten_names(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.many, pki.ca, "x.test", "x.test", &a);
    print_reason("many names", &a);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason,
                           "hostname mismatch: x.test is not among the names the certificate is "
                           "valid for: n1.test, n2.test, n3.test, n4.test, n5.test, n6.test, "
                           "n7.test, n8.test, n9.test, n10.test, ... (3 more)");
    attempt_free(&a);
}

static void test_mismatch_without_san_lists_common_name(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.cn_only, pki.ca, "x.test", "x.test", &a);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "hostname mismatch: x.test is not among the names the "
                                         "certificate is valid for: legacy.test");
    attempt_free(&a);
}

static void test_expired_certificate_gives_its_date(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.expired, pki.ca, "good.test", "good.test", &a);
    print_reason("expired", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT(starts_with(a.err.reason, "certificate expired on "));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err.reason, "2024"));
    CU_ASSERT_STRING_EQUAL(a.err.reason, "certificate expired on 2024-01-31 12:00:00 UTC");
    CU_ASSERT_PTR_NOT_NULL(a.peer);
    attempt_free(&a);
}

static void test_not_yet_valid_certificate_gives_its_date(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.not_yet, pki.ca, "good.test", "good.test", &a);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "certificate not valid before 2099-01-01 00:00:00 UTC");
    attempt_free(&a);
}

static void test_untrusted_issuer_is_named(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.evil_leaf, NULL, "good.test", "good.test", &a);
    print_reason("untrusted", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason,
                           "unable to get local issuer certificate (issuer: CN=Evil CA)");
    attempt_free(&a);
}

static void test_untrusted_root_in_chain_is_named(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.evil_leaf, pki.evil_ca, "good.test", "good.test", &a);
    print_reason("untrusted root sent", &a);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason,
                           "self-signed certificate in certificate chain (issuer: CN=Evil CA)");
    attempt_free(&a);
}

static void test_self_signed_leaf_is_named(void)
{
    struct attempt a = {0};

    attempt_once(false, pki.self_signed, NULL, "good.test", "good.test", &a);
    print_reason("self-signed", &a);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "self-signed certificate (issuer: CN=good.test)");
    attempt_free(&a);
}

static void test_insecure_returns_connection_with_warning(void)
{
    struct attempt a = {0};

    attempt_once(true, pki.good, pki.ca, "wrong.test", "wrong.test", &a);
    print_reason("insecure", &a);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    CU_ASSERT(starts_with(a.err.reason, "not verified: hostname mismatch: wrong.test"));
    CU_ASSERT_STRING_EQUAL(a.greeting, "hello\n");
    attempt_free(&a);

    memset(&a, 0, sizeof a);
    attempt_once(true, pki.evil_leaf, NULL, "good.test", "good.test", &a);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "not verified: unable to get local issuer certificate "
                                         "(issuer: CN=Evil CA)");
    attempt_free(&a);
}

static void test_insecure_with_valid_certificate_has_no_warning(void)
{
    struct attempt a = {0};

    attempt_once(true, pki.good, pki.ca, "good.test", "good.test", &a);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_OK);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "");
    attempt_free(&a);
}

static void test_alpn_is_offered(void)
{
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    struct attempt a = {.alpn = alpn, .alpn_len = sizeof alpn - 1};
    const unsigned char *proto = NULL;
    unsigned int proto_len = 0;

    attempt_once(false, pki.good, pki.ca, "good.test", "good.test", &a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a.ssl);
    SSL_get0_alpn_selected(a.ssl, &proto, &proto_len);
    CU_ASSERT(proto_len == 8 && memcmp(proto, "http/1.1", 8) == 0);
    attempt_free(&a);
}

/* ---- handshake failures ---- */

static void test_silent_server_times_out_with_504(void)
{
    struct attempt a = {.timeout_ms = 300};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;
    int fd;

    origin_start(&o, ORIGIN_SILENT, NULL, NULL, 1);
    fd = upstream_connect_tcp("127.0.0.1", o.port, WAIT_MS, NULL, &a.err);
    CU_ASSERT_FATAL(fd >= 0);
    {
        long long start = mono_ms();

        a.ssl =
            upstream_tls_connect(ctx, fd, "good.test", "good.test", NULL, 0, 300, &a.peer, &a.err);
        a.elapsed_ms = mono_ms() - start;
    }
    close(fd);
    origin_stop(&o);
    print_reason("timeout", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_PTR_NULL(a.peer);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_TIMEOUT);
    CU_ASSERT_STRING_EQUAL(a.err.reason, "TLS handshake with good.test timed out after 300 ms");
    CU_ASSERT(a.elapsed_ms >= 290 && a.elapsed_ms < 1000);
    CU_ASSERT_EQUAL(upstream_error_http_status(&a.err), 504);
    SSL_CTX_free(ctx);
}

static void test_plain_http_server_is_tls_failure(void)
{
    struct attempt a = {0};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;
    int fd;

    origin_start(&o, ORIGIN_PLAIN, NULL, NULL, 1);
    fd = upstream_connect_tcp("127.0.0.1", o.port, WAIT_MS, NULL, &a.err);
    CU_ASSERT_FATAL(fd >= 0);
    a.ssl =
        upstream_tls_connect(ctx, fd, "good.test", "good.test", NULL, 0, WAIT_MS, &a.peer, &a.err);
    close(fd);
    origin_stop(&o);
    print_reason("plain", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_TLS_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason,
                           "TLS handshake with good.test failed: wrong version number");
    CU_ASSERT_EQUAL(upstream_error_http_status(&a.err), 502);
    SSL_CTX_free(ctx);
}

static void test_server_closing_is_tls_failure(void)
{
    struct attempt a = {0};
    SSL_CTX *ctx = client_ctx(false);
    int lfd, fd, sfd;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CU_ASSERT_FATAL(listen(lfd, 1) == 0);
    CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
    fd = upstream_connect_tcp("127.0.0.1", ntohs(sin.sin_port), WAIT_MS, NULL, &a.err);
    CU_ASSERT_FATAL(fd >= 0);
    sfd = accept(lfd, NULL, NULL);
    CU_ASSERT_FATAL(sfd >= 0);
    close(sfd);
    a.ssl =
        upstream_tls_connect(ctx, fd, "good.test", "good.test", NULL, 0, WAIT_MS, &a.peer, &a.err);
    close(fd);
    close(lfd);
    print_reason("closed", &a);
    CU_ASSERT_PTR_NULL(a.ssl);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_TLS_FAILED);
    CU_ASSERT(starts_with(a.err.reason, "TLS handshake with good.test failed: "));
    SSL_CTX_free(ctx);
}

/* ---- session resumption ---- */

static void check_resumption(int max_version)
{
    struct attempt a = {0}, b = {0}, c = {0};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;

    origin_start_family(&o, AF_INET, ORIGIN_TLS, pki.good, pki.ca, 3, max_version);
    attempt(ctx, "127.0.0.1", o.port, "good.test", "good.test", &a);
    attempt(ctx, "127.0.0.1", o.port, "good.test", "good.test", &b);
    /* Another name must not ride on a session verified for good.test. */
    attempt(ctx, "127.0.0.1", o.port, "alt.test", "alt.test", &c);
    origin_stop(&o);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    CU_ASSERT_FALSE(a.is_reused);
    CU_ASSERT_PTR_NOT_NULL(b.ssl);
    CU_ASSERT_TRUE(b.is_reused);
    CU_ASSERT_EQUAL(b.err.status, UPSTREAM_OK);
    CU_ASSERT(b.peer != NULL && X509_cmp(b.peer, pki.good) == 0);
    CU_ASSERT_PTR_NOT_NULL(c.ssl);
    CU_ASSERT_FALSE(c.is_reused);
    attempt_free(&a);
    attempt_free(&b);
    attempt_free(&c);
    SSL_CTX_free(ctx);
}

static void test_tls13_session_is_resumed_for_the_same_name(void)
{
    check_resumption(0);
}

static void test_tls12_session_is_resumed_for_the_same_name(void)
{
    check_resumption(TLS1_2_VERSION);
}

static void test_failed_verification_is_not_resumed(void)
{
    struct attempt a = {0}, b = {0};
    SSL_CTX *ctx = client_ctx(false);
    struct origin o;

    origin_start_family(&o, AF_INET, ORIGIN_TLS, pki.good, pki.ca, 2, TLS1_2_VERSION);
    attempt(ctx, "127.0.0.1", o.port, "wrong.test", "wrong.test", &a);
    attempt(ctx, "127.0.0.1", o.port, "wrong.test", "wrong.test", &b);
    origin_stop(&o);
    CU_ASSERT_EQUAL(a.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_EQUAL(b.err.status, UPSTREAM_VERIFY_FAILED);
    CU_ASSERT_STRING_EQUAL(a.err.reason, b.err.reason);
    attempt_free(&a);
    attempt_free(&b);
    SSL_CTX_free(ctx);
}

#define CONCURRENT_CLIENTS 8
#define CONNECTIONS_PER_CLIENT 4

struct client_job {
    SSL_CTX *ctx;
    uint16_t port;
    int verified;
    int reused;
};

/* No CUnit assertions here: they are not thread-safe. */
static void *client_main(void *arg)
{
    struct client_job *job = arg;
    int i;

    for (i = 0; i < CONNECTIONS_PER_CLIENT; i++) {
        struct upstream_error err;
        SSL *ssl;
        int fd = upstream_connect_tcp("127.0.0.1", job->port, WAIT_MS, NULL, &err);
        char buf[16];

        if (fd < 0)
            continue;
        ssl = upstream_tls_connect(job->ctx, fd, "good.test", "good.test", NULL, 0, WAIT_MS, NULL,
                                   &err);
        if (ssl != NULL) {
            job->verified += err.status == UPSTREAM_OK;
            job->reused += SSL_session_reused(ssl) == 1;
            (void)SSL_read(ssl, buf, sizeof buf);
            SSL_shutdown(ssl);
            SSL_free(ssl);
        }
        close(fd);
    }
    return NULL;
}

static void test_concurrent_connections_share_the_cache(void)
{
    SSL_CTX *ctx = client_ctx(false);
    struct client_job jobs[CONCURRENT_CLIENTS];
    pthread_t threads[CONCURRENT_CLIENTS];
    struct origin o;
    int i, verified = 0, reused = 0;

    origin_start(&o, ORIGIN_TLS, pki.good, pki.ca, CONCURRENT_CLIENTS * CONNECTIONS_PER_CLIENT);
    for (i = 0; i < CONCURRENT_CLIENTS; i++) {
        jobs[i] = (struct client_job){.ctx = ctx, .port = o.port};
        CU_ASSERT_FATAL(pthread_create(&threads[i], NULL, client_main, &jobs[i]) == 0);
    }
    for (i = 0; i < CONCURRENT_CLIENTS; i++) {
        CU_ASSERT(pthread_join(threads[i], NULL) == 0);
        verified += jobs[i].verified;
        reused += jobs[i].reused;
    }
    origin_stop(&o);
    CU_ASSERT_EQUAL(verified, CONCURRENT_CLIENTS * CONNECTIONS_PER_CLIENT);
    CU_ASSERT(reused > 0);
    SSL_CTX_free(ctx);
}

/* ---- TCP ---- */

static void test_closed_port_is_refused_with_502(void)
{
    struct upstream_error err;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    char want[64];
    int s = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port;

    CU_ASSERT_FATAL(s >= 0);
    CU_ASSERT_FATAL(bind(s, (struct sockaddr *)&sin, sizeof sin) == 0);
    CU_ASSERT_FATAL(getsockname(s, (struct sockaddr *)&sin, &len) == 0);
    port = ntohs(sin.sin_port);
    close(s);
    CU_ASSERT_EQUAL(upstream_connect_tcp("127.0.0.1", port, WAIT_MS, NULL, &err), -1);
    printf("\n      [refused] status=%d reason=\"%s\" ", (int)err.status, err.reason);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_REFUSED);
    snprintf(want, sizeof want, "connection refused by 127.0.0.1:%u", (unsigned)port);
    CU_ASSERT_STRING_EQUAL(err.reason, want);
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
}

static void test_unresolvable_host_is_dns_failure(void)
{
    struct upstream_error err;

    CU_ASSERT_EQUAL(upstream_connect_tcp("nonexistent.invalid", 443, WAIT_MS, NULL, &err), -1);
    printf("\n      [dns] status=%d reason=\"%s\" ", (int)err.status, err.reason);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_DNS_FAILED);
    CU_ASSERT(starts_with(err.reason, "cannot resolve host nonexistent.invalid: "));
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
    CU_ASSERT_EQUAL(upstream_connect_tcp("[not-an-ip]", 443, WAIT_MS, NULL, &err), -1);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_DNS_FAILED);
    CU_ASSERT_EQUAL(upstream_connect_tcp("", 443, WAIT_MS, NULL, &err), -1);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_DNS_FAILED);
}

static void test_connected_socket_is_blocking_with_nodelay(void)
{
    struct upstream_error err;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int fd, flags, nodelay = 0;
    socklen_t optlen = sizeof nodelay;

    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CU_ASSERT_FATAL(listen(lfd, 1) == 0);
    CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
    fd = upstream_connect_tcp("localhost", ntohs(sin.sin_port), WAIT_MS, NULL, &err);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_OK);
    flags = fcntl(fd, F_GETFL);
    CU_ASSERT(flags >= 0 && (flags & O_NONBLOCK) == 0);
    CU_ASSERT((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    CU_ASSERT_EQUAL(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &optlen), 0);
    CU_ASSERT_NOT_EQUAL(nodelay, 0);
    close(fd);
    close(lfd);
}

static void test_http_status_is_504_only_for_timeouts(void)
{
    struct upstream_error err = {.reason = ""};

    err.status = UPSTREAM_TIMEOUT;
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 504);
    err.status = UPSTREAM_DNS_FAILED;
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
    err.status = UPSTREAM_REFUSED;
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
    err.status = UPSTREAM_UNREACHABLE;
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
    err.status = UPSTREAM_TLS_FAILED;
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
    err.status = UPSTREAM_VERIFY_FAILED;
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 502);
}

static void test_guard_refuses_resolved_addresses(void)
{
    struct upstream_error err;
    struct destguard guard = {0};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int fd;
    uint16_t port;

    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CU_ASSERT_FATAL(listen(lfd, 4) == 0);
    CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
    port = ntohs(sin.sin_port);
    CU_ASSERT_FATAL(destguard_add_self(&guard, (struct sockaddr *)&sin) == 0);

    /* Numeric spellings the resolver takes, and a name: all are refused
     * once resolved, with 508. */
    const char *spellings[] = {"2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0",
                               "localhost"};
    for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        CU_ASSERT_EQUAL(upstream_connect_tcp(spellings[i], port, WAIT_MS, &guard, &err), -1);
        CU_ASSERT_EQUAL(err.status, UPSTREAM_SELF);
        CU_ASSERT_EQUAL(upstream_error_http_status(&err), 508);
        CU_ASSERT(strstr(err.reason, "tapwire itself") != NULL);
    }
    printf("\n      [self] reason=\"%s\" ", err.reason);
    /* Before any connection: only numbers, no DNS. */
    CU_ASSERT_EQUAL(upstream_check_numeric("0177.0.0.1", port, &guard, &err), -1);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_SELF);
    CU_ASSERT_EQUAL(upstream_check_numeric("[::ffff:127.0.0.1]", port, &guard, &err), -1);
    CU_ASSERT_EQUAL(upstream_check_numeric("localhost", port, &guard, &err), 0);
    CU_ASSERT_EQUAL(upstream_check_numeric("127.0.0.1", (uint16_t)(port + 1), &guard, &err), 0);
    CU_ASSERT_EQUAL(upstream_check_numeric("127.0.0.1", port, NULL, &err), 0);

    /* Another loopback port is fine, unless private addresses are blocked. */
    guard.self_count = 0;
    fd = upstream_connect_tcp("127.0.0.1", port, WAIT_MS, &guard, &err);
    CU_ASSERT(fd >= 0);
    if (fd >= 0)
        close(fd);
    guard.block_private = true;
    CU_ASSERT_EQUAL(upstream_connect_tcp("127.0.0.1", port, WAIT_MS, &guard, &err), -1);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_BLOCKED);
    CU_ASSERT_EQUAL(upstream_error_http_status(&err), 403);
    CU_ASSERT(strstr(err.reason, "--block-private") != NULL);
    CU_ASSERT_EQUAL(upstream_check_numeric("2130706433", port, &guard, &err), -1);
    CU_ASSERT_EQUAL(err.status, UPSTREAM_BLOCKED);
    close(lfd);
}

/* ---- context ---- */

static void test_unreadable_ca_file_is_named(void)
{
    const char *missing[] = {"/nonexistent/upstream-ca.pem", NULL};
    const char *garbage[] = {"/dev/null", NULL};
    struct upstream_tls_options opts = {.extra_ca_files = missing};
    char err[256] = "";

    CU_ASSERT_PTR_NULL(upstream_ctx_new(&opts, err, sizeof err));
    printf("\n      [ca file] \"%s\" ", err);
    CU_ASSERT_STRING_EQUAL(err, "cannot read upstream CA file /nonexistent/upstream-ca.pem: "
                                "No such file or directory");
    opts.extra_ca_files = garbage;
    CU_ASSERT_PTR_NULL(upstream_ctx_new(&opts, err, sizeof err));
    printf("\n      [ca file] \"%s\" ", err);
    CU_ASSERT(starts_with(err, "cannot load upstream CA file /dev/null: "));
}

static void test_keylog_records_upstream_secrets(void)
{
    char path[] = "/tmp/upstream-keylog-XXXXXX";
    int fd = mkstemp(path);
    const char *files[] = {NULL, NULL};
    struct upstream_tls_options opts = {.extra_ca_files = files, .keylog_path = path};
    char err[256] = "";
    char buf[4096];
    struct attempt a = {0};
    struct origin o;
    SSL_CTX *ctx;
    ssize_t n;

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    files[0] = pki.ca_path;
    ctx = upstream_ctx_new(&opts, err, sizeof err);
    CU_ASSERT_FATAL(ctx != NULL);
    origin_start(&o, ORIGIN_TLS, pki.good, pki.ca, 1);
    attempt(ctx, "127.0.0.1", o.port, "good.test", "good.test", &a);
    origin_stop(&o);
    CU_ASSERT_PTR_NOT_NULL(a.ssl);
    attempt_free(&a);
    SSL_CTX_free(ctx);
    fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unlink(path);
    CU_ASSERT_FATAL(n > 0);
    buf[n] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "CLIENT_HANDSHAKE_TRAFFIC_SECRET "));
    CU_ASSERT_EQUAL(buf[n - 1], '\n');
}

/* ---- certificate text ---- */

/* What the origin's certificate says reaches flows, pages and logs: only
 * printable ASCII comes out, whatever bytes the names hold. */
static void test_certificate_text_is_printable_ascii(void)
{
    static const unsigned char loopback[4] = {127, 0, 0, 1};
    static const char dns_bytes[] = "evil\r\n\"x\".test\x7f";
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    GENERAL_NAMES *sans = GENERAL_NAMES_new();
    GENERAL_NAME *dns = GENERAL_NAME_new();
    GENERAL_NAME *ip = GENERAL_NAME_new();
    ASN1_IA5STRING *dns_text = ASN1_IA5STRING_new();
    ASN1_OCTET_STRING *ip_bytes = ASN1_OCTET_STRING_new();
    char *subject, *list;

    CU_ASSERT_FATAL(cert != NULL && name != NULL && sans != NULL && dns != NULL && ip != NULL &&
                    dns_text != NULL && ip_bytes != NULL);
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                               (const unsigned char *)"a\"b\nc\x1b[31m", -1, -1,
                                               0) == 1);
    CU_ASSERT_FATAL(ASN1_STRING_set(dns_text, dns_bytes, (int)sizeof(dns_bytes) - 1) == 1);
    CU_ASSERT_FATAL(ASN1_OCTET_STRING_set(ip_bytes, loopback, sizeof(loopback)) == 1);
    GENERAL_NAME_set0_value(dns, GEN_DNS, dns_text);
    GENERAL_NAME_set0_value(ip, GEN_IPADD, ip_bytes);
    CU_ASSERT_FATAL(sk_GENERAL_NAME_push(sans, dns) > 0);
    CU_ASSERT_FATAL(sk_GENERAL_NAME_push(sans, ip) > 0);
    CU_ASSERT_FATAL(X509_add1_ext_i2d(cert, NID_subject_alt_name, sans, 0, X509V3_ADD_DEFAULT) ==
                    1);

    subject = upstream_cert_name(name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(subject);
    /* RFC 4514 escapes: the quote and the control bytes never appear raw. */
    CU_ASSERT_STRING_EQUAL(subject, "CN=a\\\"b\\0Ac\\1B[31m");
    list = upstream_cert_sans(cert);
    CU_ASSERT_PTR_NOT_NULL_FATAL(list);
    CU_ASSERT_STRING_EQUAL(list, "DNS:evil??\"x\".test?, IP:127.0.0.1");

    free(subject);
    free(list);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(name);
    X509_free(cert);
}

int main(void)
{
    CU_pSuite verify, failures_suite, sessions, tcp, context, text;
    unsigned int failures;

    /* The origin may write to a client that already hung up. */
    signal(SIGPIPE, SIG_IGN);
    if (pki_init() != 0) {
        fprintf(stderr, "cannot create the test PKI\n");
        ERR_print_errors_fp(stderr);
        pki_clean();
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) {
        pki_clean();
        return 1;
    }
    verify = CU_add_suite("upstream_verify", NULL, NULL);
    failures_suite = CU_add_suite("upstream_handshake_failures", NULL, NULL);
    sessions = CU_add_suite("upstream_sessions", NULL, NULL);
    tcp = CU_add_suite("upstream_tcp", NULL, NULL);
    context = CU_add_suite("upstream_context", NULL, NULL);
    text = CU_add_suite("upstream_cert_text", NULL, NULL);
    if (verify == NULL || failures_suite == NULL || sessions == NULL || tcp == NULL ||
        context == NULL || text == NULL ||
        !CU_add_test(text, "certificate text is printable ASCII",
                     test_certificate_text_is_printable_ascii) ||
        !CU_add_test(verify, "good certificate verifies by name",
                     test_good_certificate_verifies_by_name) ||
        !CU_add_test(verify, "second SAN verifies", test_second_san_verifies) ||
        !CU_add_test(verify, "fully qualified name verifies without the root dot",
                     test_fully_qualified_name_verifies_without_root_dot) ||
        !CU_add_test(verify, "IP literal verifies against IP SAN, no SNI sent",
                     test_ip_literal_verifies_against_ip_san_without_sni) ||
        !CU_add_test(verify, "bracketed IPv6 literal connects and verifies",
                     test_bracketed_ipv6_literal_connects_and_verifies) ||
        !CU_add_test(verify, "wrong name is a hostname mismatch",
                     test_wrong_name_is_hostname_mismatch) ||
        !CU_add_test(verify, "wrong IP is a hostname mismatch",
                     test_wrong_ip_is_hostname_mismatch) ||
        !CU_add_test(verify, "certificate for other names is a mismatch",
                     test_other_names_certificate_is_mismatch) ||
        !CU_add_test(verify, "mismatch lists at most ten names",
                     test_mismatch_lists_at_most_ten_names) ||
        !CU_add_test(verify, "mismatch without SAN lists the CN",
                     test_mismatch_without_san_lists_common_name) ||
        !CU_add_test(verify, "expired certificate gives its date",
                     test_expired_certificate_gives_its_date) ||
        !CU_add_test(verify, "not-yet-valid certificate gives its date",
                     test_not_yet_valid_certificate_gives_its_date) ||
        !CU_add_test(verify, "untrusted issuer is named", test_untrusted_issuer_is_named) ||
        !CU_add_test(verify, "untrusted root in chain is named",
                     test_untrusted_root_in_chain_is_named) ||
        !CU_add_test(verify, "self-signed leaf is named", test_self_signed_leaf_is_named) ||
        !CU_add_test(verify, "insecure returns the connection with a warning",
                     test_insecure_returns_connection_with_warning) ||
        !CU_add_test(verify, "insecure with a valid certificate has no warning",
                     test_insecure_with_valid_certificate_has_no_warning) ||
        !CU_add_test(verify, "ALPN is offered", test_alpn_is_offered) ||
        !CU_add_test(failures_suite, "silent server times out with 504",
                     test_silent_server_times_out_with_504) ||
        !CU_add_test(failures_suite, "plain HTTP server is a TLS failure",
                     test_plain_http_server_is_tls_failure) ||
        !CU_add_test(failures_suite, "server closing is a TLS failure",
                     test_server_closing_is_tls_failure) ||
        !CU_add_test(sessions, "TLS 1.3 session is resumed for the same name",
                     test_tls13_session_is_resumed_for_the_same_name) ||
        !CU_add_test(sessions, "TLS 1.2 session is resumed for the same name",
                     test_tls12_session_is_resumed_for_the_same_name) ||
        !CU_add_test(sessions, "failed verification is not resumed",
                     test_failed_verification_is_not_resumed) ||
        !CU_add_test(sessions, "concurrent connections share the cache",
                     test_concurrent_connections_share_the_cache) ||
        !CU_add_test(tcp, "closed port is refused with 502",
                     test_closed_port_is_refused_with_502) ||
        !CU_add_test(tcp, "unresolvable host is a DNS failure",
                     test_unresolvable_host_is_dns_failure) ||
        !CU_add_test(tcp, "connected socket is blocking with TCP_NODELAY",
                     test_connected_socket_is_blocking_with_nodelay) ||
        !CU_add_test(tcp, "HTTP status is 504 only for timeouts",
                     test_http_status_is_504_only_for_timeouts) ||
        !CU_add_test(tcp, "the guard refuses resolved addresses",
                     test_guard_refuses_resolved_addresses) ||
        !CU_add_test(context, "unreadable CA file is named", test_unreadable_ca_file_is_named) ||
        !CU_add_test(context, "key log records upstream secrets",
                     test_keylog_records_upstream_secrets)) {
        CU_cleanup_registry();
        pki_clean();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    failures = CU_basic_run_tests() == CUE_SUCCESS ? 0 : 1;
    failures += CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    pki_clean();
    return failures == 0 ? 0 : 1;
}
