/*
 * upstream: connecting out, and telling the user why it failed.
 *
 * The TLS client completes the handshake even when verification fails
 * (SSL_VERIFY_NONE with the hostname check configured on the verify params),
 * then reads the verdict with SSL_get_verify_result(). That way the caller
 * gets the upstream certificate for its records and a precise reason for the
 * 502 page, and no application data ever goes to an unverified peer because
 * the SSL is only handed out on success (or when --insecure says so).
 * Sessions are cached per context so repeat connections resume; a session is
 * only cached after it verified, and it is keyed by the name it verified
 * against, so resumption can never turn a failure into a success.
 * This module must not log: it returns reasons, the caller decides.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "upstream.h"

#include "buf.h"
#include "clock.h"
#include "errmsg.h"
#include "selfconn.h"
#include "stream.h"

#include "tlsserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define SESSION_CACHE_ENTRIES 256
#define SESSION_KEY_BYTES 640 /* sni|verify_name|port with two 255-byte names */
#define HOST_BYTES 256
#define LISTED_NAMES_MAX 10  /* names shown in a hostname mismatch reason */
#define SHOWN_NAME_BYTES 128 /* one name as shown to a person */
#define SAN_ITEM_BYTES 300   /* one "DNS:name" in a flow's list of names */

/* Named once so that clang-format does not read "STACK_OF(X509) *p" as a
 * multiplication. */
typedef STACK_OF(X509) cert_stack;

struct cached_session {
    char *key;            /* owned */
    SSL_SESSION *session; /* one reference, owned */
    unsigned long long last_used;
};

/* Per-SSL_CTX state, owned by the SSL_CTX through ex_data and freed with it. */
struct upstream_state {
    bool is_insecure;
    pthread_mutex_t lock; /* guards everything below */
    unsigned long long clock;
    struct cached_session sessions[SESSION_CACHE_ENTRIES];
};

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int ctx_state_index = -1; /* SSL_CTX -> struct upstream_state */
static int ssl_key_index = -1;   /* SSL -> malloc'd session cache key */

static void set_status(struct upstream_error *err, enum upstream_status status, const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));

static void set_status(struct upstream_error *err, enum upstream_status status, const char *fmt,
                       ...)
{
    va_list ap;

    err->status = status;
    va_start(ap, fmt);
    vsnprintf(err->reason, sizeof err->reason, fmt, ap);
    va_end(ap);
}

int upstream_error_http_status(const struct upstream_error *err)
{
    if (err == NULL)
        return 502;
    switch (err->status) {
    case UPSTREAM_TIMEOUT:
        return 504; /* RFC 9110 15.6.5: the upstream did not answer in time */
    case UPSTREAM_SELF:
        return 508; /* RFC 5842 7.2 Loop Detected: the request would come back to us */
    case UPSTREAM_BLOCKED:
        return 403;
    default:
        return 502;
    }
}

/* Fills err for the address the guard refused. */
static void set_refused(struct upstream_error *err, enum destguard_verdict verdict,
                        const char *endpoint, const struct sockaddr *addr)
{
    char text[INET6_ADDRSTRLEN] = "?";

    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, text, sizeof text);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, text, sizeof text);
    if (verdict == DESTGUARD_SELF)
        set_status(err, UPSTREAM_SELF,
                   "refusing to connect to %s (%s): that is tapwire itself (its proxy or "
                   "dashboard port)",
                   endpoint, text);
    else
        set_status(err, UPSTREAM_BLOCKED,
                   "refusing to connect to %s (%s): a loopback or private address "
                   "(--block-private)",
                   endpoint, text);
}

/* ---- TCP ---- */

/* Copies host without the brackets of an IPv6 literal ("[::1]"). */
static bool host_without_brackets(const char *host, char *out, size_t out_len)
{
    size_t n = strlen(host);
    struct in6_addr a6;

    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= out_len)
            return false;
        memcpy(out, host + 1, n - 2);
        out[n - 2] = '\0';
        return inet_pton(AF_INET6, out, &a6) == 1;
    }
    if (n == 0 || n >= out_len)
        return false;
    memcpy(out, host, n + 1);
    return true;
}

/* "host:port", with the brackets an IPv6 address needs there. */
static void format_endpoint(const char *host, uint16_t port, char *out, size_t out_len)
{
    if (strchr(host, ':') != NULL)
        snprintf(out, out_len, "[%s]:%u", host, (unsigned)port);
    else
        snprintf(out, out_len, "%s:%u", host, (unsigned)port);
}

/* One nonblocking connect bounded by timeout_ms. Returns 0 with *fd_out set
 * (still nonblocking), or the errno that describes the failure (ETIMEDOUT
 * when the time ran out). */
static int connect_one(const struct addrinfo *ai, int timeout_ms, int *fd_out)
{
    long long deadline = clock_mono_ms() + timeout_ms;
    int fd, e = 0;
    int so_error = 0;
    socklen_t so_len = sizeof so_error;

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0)
        return errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        selfconn_note(fd);
        goto out;
    }
    /* A nonblocking connect interrupted by a signal still goes on. */
    if (errno != EINPROGRESS && errno != EINTR) {
        e = errno;
        goto out;
    }
    /* Before the handshake ends: a transparent listener that gets this
     * connection back (a redirect loop) must find it noted. */
    selfconn_note(fd);
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
        long long remaining = deadline - clock_mono_ms();
        int n;

        /* Even with no time left, look once: a loopback connect is done
         * by the time we get here. */
        n = poll(&pfd, 1, remaining > 0 ? (int)remaining : 0);
        if (n > 0)
            break;
        if (n == 0) {
            e = ETIMEDOUT;
            goto out;
        }
        if (errno != EINTR) {
            e = errno;
            goto out;
        }
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len) < 0)
        e = errno;
    else
        e = so_error;
out:
    if (e != 0)
        close(fd);
    else
        *fd_out = fd;
    return e;
}

int upstream_connect_tcp(const char *host, uint16_t port, int timeout_ms,
                         const struct destguard *guard, struct upstream_error *err)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    const struct addrinfo *ai;
    char name[HOST_BYTES];
    char endpoint[HOST_BYTES + 16];
    char service[8];
    long long start = clock_mono_ms();
    long long deadline = start + timeout_ms;
    size_t count = 0, tried = 0;
    int fd = -1, ret = -1;
    int gai, one = 1, flags;
    bool was_refused = false, was_timed_out = false;
    int other_errno = 0;
    enum destguard_verdict refusal = DESTGUARD_ALLOW;
    const struct addrinfo *refused_ai = NULL;

    set_status(err, UPSTREAM_OK, "%s", "");
    if (host == NULL || !host_without_brackets(host, name, sizeof name)) {
        set_status(err, UPSTREAM_DNS_FAILED, "cannot resolve host %.*s: invalid host name",
                   HOST_BYTES, host != NULL ? host : "");
        goto out;
    }
    format_endpoint(name, port, endpoint, sizeof endpoint);
    snprintf(service, sizeof service, "%u", (unsigned)port);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    /* getaddrinfo() is bounded by the resolver's own timeouts, not ours;
     * whatever it spends is taken from the connect budget below. */
    gai = getaddrinfo(name, service, &hints, &res);
    if (gai != 0) {
        set_status(err, UPSTREAM_DNS_FAILED, "cannot resolve host %s: %s", name,
                   gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        goto out;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next)
        count++;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next, tried++) {
        long long remaining = deadline - clock_mono_ms();
        enum destguard_verdict verdict = destguard_check(guard, ai->ai_addr);
        int e;

        /* Checked on the address about to be connected to, so no spelling
         * of the name and no DNS answer can get around it. Self outranks
         * private in what the user is told. */
        if (verdict != DESTGUARD_ALLOW) {
            if (refusal != DESTGUARD_SELF) {
                refusal = verdict;
                refused_ai = ai;
            }
            continue;
        }
        if (remaining <= 0) {
            was_timed_out = true;
            break;
        }
        /* Split what is left among the addresses still to try, so that one
         * black-holed address (often an IPv6 one) cannot use up the budget. */
        e = connect_one(ai, (int)(remaining / (long long)(count - tried)), &fd);
        if (e == ECONNREFUSED)
            was_refused = true;
        else if (e == ETIMEDOUT)
            was_timed_out = true;
        else if (e != 0 && other_errno == 0)
            other_errno = e;
    }
    if (fd < 0) {
        /* Refused means a host answered, which is the most useful thing to
         * say; a timeout says more than "network unreachable" on IPv6. */
        if (refused_ai != NULL && !was_refused && !was_timed_out && other_errno == 0)
            set_refused(err, refusal, endpoint, refused_ai->ai_addr);
        else if (was_refused)
            set_status(err, UPSTREAM_REFUSED, "connection refused by %s", endpoint);
        else if (was_timed_out)
            set_status(err, UPSTREAM_TIMEOUT, "timed out connecting to %s after %lld ms", endpoint,
                       clock_mono_ms() - start);
        else
            set_status(err, UPSTREAM_UNREACHABLE, "cannot connect to %s: %s", endpoint,
                       strerror(other_errno != 0 ? other_errno : EHOSTUNREACH));
        goto out;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        set_status(err, UPSTREAM_UNREACHABLE, "cannot set up the connection to %s: %s", endpoint,
                   strerror(errno));
        goto out;
    }
    ret = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    if (res != NULL)
        freeaddrinfo(res);
    return ret;
}

int upstream_check_numeric(const char *host, uint16_t port, const struct destguard *guard,
                           struct upstream_error *err)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char name[HOST_BYTES];
    char endpoint[HOST_BYTES + 16];
    char service[8];
    int ret = 0;

    set_status(err, UPSTREAM_OK, "%s", "");
    if (guard == NULL || host == NULL || !host_without_brackets(host, name, sizeof name))
        goto out;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(name, service, &hints, &res) != 0)
        goto out; /* a name: checked when connecting */
    format_endpoint(name, port, endpoint, sizeof endpoint);
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        enum destguard_verdict verdict = destguard_check(guard, ai->ai_addr);

        if (verdict != DESTGUARD_ALLOW) {
            set_refused(err, verdict, endpoint, ai->ai_addr);
            ret = -1;
            goto out;
        }
    }
out:
    if (res != NULL)
        freeaddrinfo(res);
    return ret;
}

/* ---- session cache ---- */

static void free_state(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct upstream_state *st = ptr;
    size_t i;

    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (st == NULL)
        return;
    for (i = 0; i < SESSION_CACHE_ENTRIES; i++) {
        free(st->sessions[i].key);
        SSL_SESSION_free(st->sessions[i].session);
    }
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static void free_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void init_indexes(void)
{
    ctx_state_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_state);
    ssl_key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_key);
}

static void clear_entry(struct cached_session *c)
{
    free(c->key);
    SSL_SESSION_free(c->session);
    c->key = NULL;
    c->session = NULL;
    c->last_used = 0;
}

/* Takes ownership of session when it returns true. */
static bool cache_put(struct upstream_state *st, const char *key, SSL_SESSION *session)
{
    struct cached_session *slot = NULL;
    bool is_stored = false;
    size_t i;

    if (pthread_mutex_lock(&st->lock) != 0)
        return false;
    for (i = 0; i < SESSION_CACHE_ENTRIES; i++) {
        struct cached_session *c = &st->sessions[i];

        if (c->key != NULL && strcmp(c->key, key) == 0) {
            slot = c;
            break;
        }
        if (slot == NULL ||
            (slot->key != NULL && (c->key == NULL || c->last_used < slot->last_used)))
            slot = c;
    }
    if (slot->key == NULL || strcmp(slot->key, key) != 0) {
        char *copy = strdup(key);

        if (copy == NULL)
            goto out;
        clear_entry(slot);
        slot->key = copy;
    }
    SSL_SESSION_free(slot->session);
    slot->session = session;
    slot->last_used = ++st->clock;
    is_stored = true;
out:
    pthread_mutex_unlock(&st->lock);
    return is_stored;
}

/* Returns a session reference for key (caller frees) or NULL. TLS 1.3
 * tickets are taken out of the cache: RFC 8446 C.4 asks clients not to reuse
 * one, and the connection that uses it brings fresh ones. */
static SSL_SESSION *cache_take(struct upstream_state *st, const char *key)
{
    SSL_SESSION *session = NULL;
    size_t i;

    if (pthread_mutex_lock(&st->lock) != 0)
        return NULL;
    for (i = 0; i < SESSION_CACHE_ENTRIES; i++) {
        struct cached_session *c = &st->sessions[i];
        time_t expires;

        if (c->key == NULL || strcmp(c->key, key) != 0)
            continue;
        expires =
            (time_t)SSL_SESSION_get_time(c->session) + (time_t)SSL_SESSION_get_timeout(c->session);
        if (!SSL_SESSION_is_resumable(c->session) || expires < time(NULL)) {
            clear_entry(c);
        } else if (SSL_SESSION_get_protocol_version(c->session) == TLS1_3_VERSION) {
            session = c->session;
            c->session = NULL;
            clear_entry(c);
        } else if (SSL_SESSION_up_ref(c->session) == 1) {
            session = c->session;
            c->last_used = ++st->clock;
        }
        break;
    }
    pthread_mutex_unlock(&st->lock);
    return session;
}

/* SSL_CTX_sess_set_new_cb(): called at the end of a TLS 1.2 handshake and
 * whenever a TLS 1.3 ticket arrives. Returns 1 when we kept the reference. */
static int remember_session(SSL *ssl, SSL_SESSION *session)
{
    struct upstream_state *st = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_state_index);
    const char *key = SSL_get_ex_data(ssl, ssl_key_index);

    if (st == NULL || key == NULL)
        return 0;
    /* In TLS 1.2 this runs before upstream_tls_connect() has judged the
     * certificate; a session that failed must never be resumed as if the
     * failure had not happened. */
    if (!st->is_insecure && SSL_get_verify_result(ssl) != X509_V_OK)
        return 0;
    return cache_put(st, key, session) ? 1 : 0;
}

/* ---- TLS context ---- */

static void state_destroy(struct upstream_state *st)
{
    free_state(NULL, st, NULL, 0, 0, NULL);
}

SSL_CTX *upstream_ctx_new(const struct upstream_tls_options *opts, char *err, size_t err_len)
{
    SSL_CTX *ctx = NULL;
    SSL_CTX *ret = NULL;
    struct upstream_state *st = NULL;
    const char *const *f;
    char ebuf[256];

    if (pthread_once(&index_once, init_indexes) != 0 || ctx_state_index < 0 || ssl_key_index < 0) {
        errmsg_set(err, err_len, "cannot register upstream TLS state with OpenSSL");
        goto out;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        errmsg_set(err, err_len, "cannot create upstream TLS context: %s",
                   errmsg_ssl_reason(ERR_peek_error(), ebuf, sizeof ebuf));
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        errmsg_set(err, err_len, "cannot set minimum TLS version: %s",
                   errmsg_ssl_reason(ERR_peek_error(), ebuf, sizeof ebuf));
        goto out;
    }
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        errmsg_set(err, err_len, "cannot load the system trust store: %s",
                   errmsg_ssl_reason(ERR_peek_error(), ebuf, sizeof ebuf));
        goto out;
    }
    for (f = opts != NULL ? opts->extra_ca_files : NULL; f != NULL && *f != NULL; f++) {
        /* Opening it ourselves gives "No such file or directory" instead of
         * OpenSSL's less direct "system lib". */
        FILE *fp = fopen(*f, "r");

        if (fp == NULL) {
            errmsg_set(err, err_len, "cannot read upstream CA file %s: %s", *f, strerror(errno));
            goto out;
        }
        fclose(fp);
        ERR_clear_error();
        if (SSL_CTX_load_verify_locations(ctx, *f, NULL) != 1) {
            errmsg_set(err, err_len, "cannot load upstream CA file %s: %s", *f,
                       errmsg_ssl_reason(ERR_peek_error(), ebuf, sizeof ebuf));
            goto out;
        }
    }
    /* Idle upstream connections in a keep-alive pool should not pin their
     * 2 x 16 KiB record buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* One recv(2) per record rather than two (see tlsserver.c). */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* OpenSSL's internal store is never consulted on the client side; our
     * own bounded cache, keyed by name, is. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, remember_session);

    st = calloc(1, sizeof *st);
    if (st == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        st = NULL;
        errmsg_set(err, err_len, "cannot create the upstream session cache lock");
        goto out;
    }
    st->is_insecure = opts != NULL && opts->insecure;
    if (SSL_CTX_set_ex_data(ctx, ctx_state_index, st) != 1) {
        errmsg_set(err, err_len, "cannot attach upstream TLS state: %s",
                   errmsg_ssl_reason(ERR_peek_error(), ebuf, sizeof ebuf));
        goto out;
    }
    st = NULL; /* the SSL_CTX owns it now */
    if (opts != NULL && opts->keylog_path != NULL) {
        if (tlsserver_keylog_open(opts->keylog_path, err, err_len) != 0)
            goto out;
        SSL_CTX_set_keylog_callback(ctx, tlsserver_keylog_line);
    }
    ret = ctx;
    ctx = NULL;
out:
    state_destroy(st);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return ret;
}

/* ---- TLS handshake ---- */

static void describe_handshake_failure(const char *shown, int ssl_error, int sys_errno,
                                       struct upstream_error *err)
{
    unsigned long e = ERR_peek_error();
    char ebuf[256];

    if (ssl_error == SSL_ERROR_ZERO_RETURN ||
        (ssl_error == SSL_ERROR_SYSCALL && e == 0 && sys_errno == 0) ||
        (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING))
        set_status(err, UPSTREAM_TLS_FAILED,
                   "TLS handshake with %s failed: the server closed the connection", shown);
    else if (ssl_error == SSL_ERROR_SYSCALL && e == 0)
        set_status(err, UPSTREAM_TLS_FAILED, "TLS handshake with %s failed: %s", shown,
                   strerror(sys_errno));
    else
        set_status(err, UPSTREAM_TLS_FAILED, "TLS handshake with %s failed: %s", shown,
                   errmsg_ssl_reason(e, ebuf, sizeof ebuf));
}

/* Bounded appending to a reason; output that does not fit is cut off. */
struct text {
    char *buf;
    size_t size;
    size_t used;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->used + 1 >= t->size)
        return;
    va_start(ap, fmt);
    n = vsnprintf(t->buf + t->used, t->size - t->used, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    t->used += (size_t)n < t->size - t->used ? (size_t)n : t->size - t->used - 1;
}

/* Certificate text comes from the server and ends up on an HTML page and in
 * logs: keep printable ASCII only. */
void upstream_cert_text(const unsigned char *p, size_t n, char *out, size_t out_size)
{
    size_t i;

    if (n > out_size - 1)
        n = out_size - 1;
    for (i = 0; i < n; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    out[n] = '\0';
}

static void text_add_untrusted(struct text *t, const unsigned char *p, size_t n)
{
    char shown[SHOWN_NAME_BYTES];

    upstream_cert_text(p, n, shown, sizeof shown);
    text_add(t, "%s", shown);
}

/* XN_FLAG_RFC2253 already escapes control bytes, quotes and non-ASCII
 * (\0A, \", \C3\A9); the pass through upstream_cert_text() keeps that true
 * whatever the flags or the library version. */
char *upstream_cert_name(const X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    char *out = NULL;
    long n;

    if (bio == NULL || name == NULL || X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0)
        goto out;
    n = BIO_get_mem_data(bio, &data);
    if (n < 0)
        n = 0;
    out = malloc((size_t)n + 1);
    if (out != NULL)
        upstream_cert_text((const unsigned char *)data, (size_t)n, out, (size_t)n + 1);
out:
    BIO_free(bio);
    return out;
}

static void text_add_name(struct text *t, const X509_NAME *name)
{
    char *text = upstream_cert_name(name);

    if (text == NULL)
        text_add(t, "?");
    else if (text[0] == '\0')
        text_add(t, "(empty)");
    else
        text_add(t, "%.*s", SHOWN_NAME_BYTES - 1, text);
    free(text);
}

/* One SAN as "DNS:name" or "IP:address", at most SAN_ITEM_BYTES - 1 bytes;
 * "" for other kinds. */
static void san_item(const GENERAL_NAME *gn, char *item, size_t item_len)
{
    item[0] = '\0';
    if (gn->type == GEN_DNS) {
        char shown[SAN_ITEM_BYTES - 4];

        upstream_cert_text(ASN1_STRING_get0_data(gn->d.dNSName),
                           (size_t)ASN1_STRING_length(gn->d.dNSName), shown, sizeof shown);
        snprintf(item, item_len, "DNS:%s", shown);
    } else if (gn->type == GEN_IPADD) {
        char ip[INET6_ADDRSTRLEN] = "";
        int n = ASN1_STRING_length(gn->d.iPAddress);
        const unsigned char *d = ASN1_STRING_get0_data(gn->d.iPAddress);

        if (n == 4 || n == 16)
            inet_ntop(n == 4 ? AF_INET : AF_INET6, d, ip, sizeof(ip));
        snprintf(item, item_len, "IP:%s", ip);
    }
}

char *upstream_cert_sans(X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    struct buf out = BUF_INIT(BUF_UNBOUNDED_BYTES);

    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        char item[SAN_ITEM_BYTES];

        san_item(sk_GENERAL_NAME_value(names, i), item, sizeof(item));
        if (item[0] == '\0')
            continue;
        /* Out of memory: the names listed so far. */
        if ((out.len > 0 && buf_str(&out, ", ") != 0) || buf_str(&out, item) != 0)
            break;
    }
    GENERAL_NAMES_free(names);
    return out.data;
}

/* Lists the DNS and IP SANs of cert, or its CN when it has none. */
static void text_add_cert_names(struct text *t, X509 *cert)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    const X509_NAME *subject = X509_get_subject_name(cert);
    size_t listed = 0, more = 0;
    int i;

    for (i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        char ip[INET6_ADDRSTRLEN];
        const unsigned char *p;
        int len;

        if (gn->type != GEN_DNS && gn->type != GEN_IPADD)
            continue;
        if (listed == LISTED_NAMES_MAX) {
            more++;
            continue;
        }
        text_add(t, "%s", listed > 0 ? ", " : "");
        p = ASN1_STRING_get0_data(gn->d.ia5);
        len = ASN1_STRING_length(gn->d.ia5);
        if (gn->type == GEN_DNS)
            text_add_untrusted(t, p, (size_t)len);
        else if (len == 4 && inet_ntop(AF_INET, p, ip, sizeof ip) != NULL)
            text_add(t, "%s", ip);
        else if (len == 16 && inet_ntop(AF_INET6, p, ip, sizeof ip) != NULL)
            text_add(t, "%s", ip);
        else
            text_add(t, "(bad IP address)");
        listed++;
    }
    for (i = -1; listed == 0 && subject != NULL;) {
        const ASN1_STRING *cn;

        i = X509_NAME_get_index_by_NID(subject, NID_commonName, i);
        if (i < 0)
            break;
        cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
        text_add_untrusted(t, ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
        listed++;
    }
    if (listed == 0)
        text_add(t, "(no names)");
    if (more > 0)
        text_add(t, ", ... (%zu more)", more);
    GENERAL_NAMES_free(sans);
}

static void text_add_time(struct text *t, const ASN1_TIME *when)
{
    struct tm tm;
    char buf[64];

    if (when == NULL || ASN1_TIME_to_tm(when, &tm) != 1 ||
        strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        text_add(t, "(unreadable date)");
    else
        text_add(t, "%s", buf);
}

/* The chain as verified (it includes the trust anchor when one was found),
 * else as the server sent it. */
static cert_stack *chain_of(SSL *ssl)
{
    cert_stack *chain = SSL_get0_verified_chain(ssl);

    return chain != NULL && sk_X509_num(chain) > 0 ? chain : SSL_get_peer_cert_chain(ssl);
}

/* The certificate whose validity period is the problem: the leaf when it is,
 * else the first one in the chain. */
static X509 *find_out_of_date(SSL *ssl, X509 *leaf, bool is_expired)
{
    cert_stack *chain = chain_of(ssl);
    int i;

    for (i = -1; i < (chain != NULL ? sk_X509_num(chain) : 0); i++) {
        X509 *c = i < 0 ? leaf : sk_X509_value(chain, i);

        if (is_expired && X509_cmp_current_time(X509_get0_notAfter(c)) < 0)
            return c;
        if (!is_expired && X509_cmp_current_time(X509_get0_notBefore(c)) > 0)
            return c;
    }
    return leaf;
}

static void text_add_whose(struct text *t, X509 *cert, X509 *leaf)
{
    if (X509_cmp(cert, leaf) == 0)
        return;
    text_add(t, " (");
    text_add_name(t, X509_get_subject_name(cert));
    text_add(t, ")");
}

/* Turns a verification result into the sentence for the 502 page. */
static void describe_verify_error(SSL *ssl, X509 *leaf, long code, const char *name, char *out,
                                  size_t out_len)
{
    struct text t = {out, out_len, 0};
    cert_stack *chain;
    X509 *c;

    out[0] = '\0';
    switch (code) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        text_add(&t, "hostname mismatch: %s is not among the names the certificate is valid for: ",
                 name);
        text_add_cert_names(&t, leaf);
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        c = find_out_of_date(ssl, leaf, true);
        text_add(&t, "certificate expired on ");
        text_add_time(&t, X509_get0_notAfter(c));
        text_add_whose(&t, c, leaf);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        c = find_out_of_date(ssl, leaf, false);
        text_add(&t, "certificate not valid before ");
        text_add_time(&t, X509_get0_notBefore(c));
        text_add_whose(&t, c, leaf);
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        /* The top of the chain we could build names the issuer nobody
         * trusts (for a self-signed one, itself). */
        chain = chain_of(ssl);
        c = chain != NULL && sk_X509_num(chain) > 0 ? sk_X509_value(chain, sk_X509_num(chain) - 1)
                                                    : leaf;
        text_add(&t, "%s (issuer: ", X509_verify_cert_error_string(code));
        text_add_name(&t, X509_get_issuer_name(c));
        text_add(&t, ")");
        break;
    default:
        text_add(&t, "%s", X509_verify_cert_error_string(code));
        break;
    }
}

/* Parses an IP literal, v4 or v6, with or without brackets, into canonical
 * text for X509_VERIFY_PARAM_set1_ip_asc(). */
static bool ip_literal(const char *name, char *out, size_t out_len)
{
    char bare[HOST_BYTES];
    unsigned char addr[sizeof(struct in6_addr)];

    if (!host_without_brackets(name, bare, sizeof bare))
        return false;
    if (inet_pton(AF_INET, bare, addr) == 1)
        return inet_ntop(AF_INET, addr, out, (socklen_t)out_len) != NULL;
    if (inet_pton(AF_INET6, bare, addr) == 1)
        return inet_ntop(AF_INET6, addr, out, (socklen_t)out_len) != NULL;
    return false;
}

/* Judges the peer. The hostname is checked again on the certificate itself:
 * a resumed session carries the verdict of its first connection, and this
 * keeps a name check from depending on how the session came about. */
static void judge_peer(SSL *ssl, X509 *peer, const char *name, char *out, size_t out_len)
{
    char ip[INET6_ADDRSTRLEN];
    long code = SSL_get_verify_result(ssl);

    out[0] = '\0';
    if (peer == NULL) {
        snprintf(out, out_len, "the server sent no certificate");
        return;
    }
    if (name == NULL) {
        snprintf(out, out_len, "no host name to check the certificate against");
        return;
    }
    if (code == X509_V_OK && ip_literal(name, ip, sizeof ip)) {
        if (X509_check_ip_asc(peer, ip, 0) != 1)
            code = X509_V_ERR_IP_ADDRESS_MISMATCH;
    } else if (code == X509_V_OK) {
        unsigned int flags = X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

        if (X509_check_host(peer, name, 0, flags, NULL) != 1)
            code = X509_V_ERR_HOSTNAME_MISMATCH;
    }
    if (code != X509_V_OK)
        describe_verify_error(ssl, peer, code, name, out, out_len);
}

/* Sets up SNI, ALPN, the name check and the session cache key on ssl.
 * Returns 0, or -1 with the OpenSSL error queue saying why. */
static int prepare_client(SSL *ssl, int fd, const char *sni, const char *name,
                          const unsigned char *alpn, size_t alpn_len, struct upstream_state *st)
{
    char ip[INET6_ADDRSTRLEN];
    char key[SESSION_KEY_BYTES];
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    unsigned port = 0;
    char *key_copy;
    SSL_SESSION *session;
    int n;

    if (SSL_set_fd(ssl, fd) != 1)
        return -1;
    /* RFC 6066 section 3: literal IP addresses are not permitted in SNI. */
    if (sni != NULL && !ip_literal(sni, ip, sizeof ip) && SSL_set_tlsext_host_name(ssl, sni) != 1)
        return -1;
    if (alpn != NULL &&
        (alpn_len > 0xffff || SSL_set_alpn_protos(ssl, alpn, (unsigned int)alpn_len) != 0))
        return -1;
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    if (name != NULL && ip_literal(name, ip, sizeof ip)) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) != 1)
            return -1;
    } else if (name != NULL) {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, name) != 1)
            return -1;
    }
    if (st == NULL)
        return 0;

    /* The key holds everything that went into the verdict: the name checked
     * and the SNI sent, plus the port, which tells services on one host
     * apart. A key too long to build just means no resumption. */
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0) {
        if (peer.ss_family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&peer)->sin_port);
        else if (peer.ss_family == AF_INET6)
            port = ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
    }
    n = snprintf(key, sizeof key, "%s|%s|%u", sni != NULL ? sni : "", name != NULL ? name : "",
                 port);
    if (n < 0 || (size_t)n >= sizeof key)
        return 0;
    key_copy = strdup(key);
    if (key_copy == NULL)
        return 0;
    if (SSL_set_ex_data(ssl, ssl_key_index, key_copy) != 1) {
        free(key_copy);
        return -1;
    }
    session = cache_take(st, key);
    if (session != NULL) {
        /* A session OpenSSL will not take is only a missed optimisation. */
        if (SSL_set_session(ssl, session) != 1)
            ERR_clear_error();
        SSL_SESSION_free(session);
    }
    return 0;
}

/* A name may arrive fully qualified ("example.com."); certificates and SNI
 * (RFC 6066 section 3) spell it without the root's dot. */
static const char *without_root_dot(const char *name, char *buf, size_t buf_len)
{
    size_t n = name != NULL ? strlen(name) : 0;

    if (n < 2 || name[n - 1] != '.' || n > buf_len)
        return name;
    memcpy(buf, name, n - 1);
    buf[n - 1] = '\0';
    return buf;
}

SSL *upstream_tls_connect(SSL_CTX *ctx, int fd, const char *sni, const char *verify_name,
                          const unsigned char *alpn, size_t alpn_len, int timeout_ms,
                          X509 **peer_cert_out, struct upstream_error *err)
{
    struct upstream_state *st = NULL;
    char sni_buf[HOST_BYTES], name_buf[HOST_BYTES];
    const char *name;
    const char *shown;
    char verdict[UPSTREAM_ERROR_BYTES];
    char ebuf[256];
    SSL *ssl = NULL;
    SSL *ret = NULL;
    X509 *peer = NULL;
    int ssl_error, sys_errno;

    set_status(err, UPSTREAM_OK, "%s", "");
    if (peer_cert_out != NULL)
        *peer_cert_out = NULL;
    sni = without_root_dot(sni, sni_buf, sizeof sni_buf);
    name = without_root_dot(verify_name != NULL ? verify_name : sni, name_buf, sizeof name_buf);
    shown = name != NULL ? name : "the server";
    if (ctx_state_index >= 0)
        st = SSL_CTX_get_ex_data(ctx, ctx_state_index);
    ERR_clear_error();
    ssl = SSL_new(ctx);
    if (ssl == NULL || prepare_client(ssl, fd, sni, name, alpn, alpn_len, st) != 0) {
        set_status(err, UPSTREAM_TLS_FAILED, "cannot set up TLS to %s: %s", shown,
                   errmsg_ssl_reason(ERR_peek_error(), ebuf, sizeof ebuf));
        goto out;
    }
    SSL_set_connect_state(ssl);
    switch (stream_tls_handshake(ssl, fd, timeout_ms, &ssl_error, &sys_errno)) {
    case STREAM_HANDSHAKE_DONE:
        break;
    case STREAM_HANDSHAKE_TIMEOUT:
        set_status(err, UPSTREAM_TIMEOUT, "TLS handshake with %s timed out after %d ms", shown,
                   timeout_ms);
        goto out;
    case STREAM_HANDSHAKE_FAILED:
        describe_handshake_failure(shown, ssl_error, sys_errno, err);
        goto out;
    }
    peer = SSL_get1_peer_certificate(ssl);
    judge_peer(ssl, peer, name, verdict, sizeof verdict);
    if (verdict[0] == '\0') {
        ret = ssl;
    } else if (st != NULL && st->is_insecure) {
        set_status(err, UPSTREAM_OK, "not verified: %s", verdict);
        ret = ssl;
    } else {
        set_status(err, UPSTREAM_VERIFY_FAILED, "%s", verdict);
    }
out:
    if (peer == NULL && ssl != NULL)
        peer = SSL_get1_peer_certificate(ssl);
    if (peer_cert_out != NULL) {
        *peer_cert_out = peer;
        peer = NULL;
    }
    X509_free(peer);
    if (ret == NULL)
        SSL_free(ssl);
    ERR_clear_error();
    return ret;
}
