/*
 * tlsserver: the client-facing TLS side.
 *
 * Two halves. The ClientHello reader works on bytes the caller peeked from
 * the socket; it never allocates, never trusts a length it has not checked
 * against the bytes that remain, and does not depend on any other tapwire
 * module so that the fuzz target can link it alone. The server half builds
 * the SSL_CTX and runs the handshake with a minted leaf, turning failures into
 * a sentence a person can act on ("client rejected our certificate: ...").
 * The key log (SSLKEYLOGFILE) lives here too and is shared with upstream.c.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "tlsserver.h"
#include "errmsg.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#define TLS_RECORD_HEADER_BYTES 5
#define TLS_MAX_RECORD_BYTES 16384 /* RFC 8446 5.1: 2^14 for plaintext */
#define TLS_HANDSHAKE_HEADER_BYTES 4
#define TLS_CONTENT_HANDSHAKE 22
#define TLS_HANDSHAKE_CLIENT_HELLO 1
#define TLS_EXT_SERVER_NAME 0
#define TLS_EXT_ALPN 16
#define TLS_SNI_HOST_NAME 0
#define TLS_RANDOM_BYTES 32
#define TLS_MAX_SESSION_ID_BYTES 32
#define TLS_MAX_HOST_NAME_BYTES 255

/* Stateful server cache for TLS 1.2 clients that do not take tickets. */
#define TLSSERVER_SESSION_CACHE_ENTRIES 4096

#define KEYLOG_LINE_BYTES 512 /* longest NSS key log line is about 230 bytes */

/* ---- ClientHello reader ---- */

/* A cursor over bytes whose length is known; every read checks it. */
struct reader {
    const uint8_t *p;
    size_t left;
};

static bool read_u8(struct reader *r, uint8_t *v)
{
    if (r->left < 1)
        return false;
    *v = r->p[0];
    r->p += 1;
    r->left -= 1;
    return true;
}

static bool read_u16(struct reader *r, uint16_t *v)
{
    if (r->left < 2)
        return false;
    *v = (uint16_t)((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    r->left -= 2;
    return true;
}

static bool skip_bytes(struct reader *r, size_t n)
{
    if (r->left < n)
        return false;
    r->p += n;
    r->left -= n;
    return true;
}

/* Splits off a vector with a one- or two-byte length prefix into *sub. */
static bool read_vector(struct reader *r, size_t prefix_bytes, struct reader *sub)
{
    size_t n;

    if (r->left < prefix_bytes)
        return false;
    n = prefix_bytes == 1 ? r->p[0] : (size_t)((r->p[0] << 8) | r->p[1]);
    if (r->left - prefix_bytes < n)
        return false;
    sub->p = r->p + prefix_bytes;
    sub->left = n;
    r->p += prefix_bytes + n;
    r->left -= prefix_bytes + n;
    return true;
}

static bool is_host_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* Copies a host_name into out->sni, lowercased, without its one permitted
 * trailing dot (a fully qualified name names the same host). Rejects what
 * could not be a DNS name: empty labels, bytes outside [A-Za-z0-9.-_]. */
static bool copy_host_name(const struct reader *name, struct client_hello *out)
{
    size_t n = name->left;
    size_t i;

    if (n == 0 || n > TLS_MAX_HOST_NAME_BYTES)
        return false;
    if (name->p[n - 1] == '.')
        n--;
    if (n == 0)
        return false;
    for (i = 0; i < n; i++) {
        uint8_t c = name->p[i];

        if (!is_host_char(c))
            return false;
        if (c == '.' && (i == 0 || name->p[i - 1] == '.' || i == n - 1))
            return false;
        out->sni[i] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
    }
    out->sni[n] = '\0';
    out->has_sni = true;
    return true;
}

/* RFC 6066 section 3. Every entry is walked so a bad length anywhere is
 * caught; the first host_name wins (a second one is forbidden anyway). */
static bool parse_server_name(struct reader *data, struct client_hello *out)
{
    struct reader list;

    if (!read_vector(data, 2, &list) || data->left != 0 || list.left == 0)
        return false;
    while (list.left > 0) {
        uint8_t type;
        struct reader name;

        if (!read_u8(&list, &type) || !read_vector(&list, 2, &name))
            return false;
        if (type == TLS_SNI_HOST_NAME && !out->has_sni && !copy_host_name(&name, out))
            return false;
    }
    return true;
}

/* RFC 7301 section 3.1: protocol_name_list<2..2^16-1>, names <1..2^8-1>.
 * Names that do not fit a slot (32 bytes with the NUL, or holding a NUL) are
 * skipped rather than truncated: a truncated name would be a different one. */
static bool parse_alpn(struct reader *data, struct client_hello *out)
{
    struct reader list;

    if (!read_vector(data, 2, &list) || data->left != 0 || list.left < 2)
        return false;
    while (list.left > 0) {
        struct reader name;

        if (!read_vector(&list, 1, &name) || name.left == 0)
            return false;
        if (out->alpn_count < TLSSERVER_MAX_ALPN && name.left < sizeof out->alpn[0] &&
            memchr(name.p, '\0', name.left) == NULL) {
            memcpy(out->alpn[out->alpn_count], name.p, name.left);
            out->alpn[out->alpn_count][name.left] = '\0';
            out->alpn_count++;
        }
    }
    return true;
}

/* Walks a reassembled ClientHello body (RFC 8446 4.1.2; the TLS 1.2 layout
 * is the same up to the optional extensions block). */
static enum tlsserver_hello_result parse_hello_body(const uint8_t *body, size_t len,
                                                    struct client_hello *out)
{
    struct reader r = {body, len};
    struct reader v;
    struct reader exts;
    uint16_t legacy_version;
    uint64_t seen[65536 / 64];

    if (!read_u16(&r, &legacy_version) || (legacy_version >> 8) != 3)
        return TLSSERVER_HELLO_MALFORMED;
    if (!skip_bytes(&r, TLS_RANDOM_BYTES))
        return TLSSERVER_HELLO_MALFORMED;
    if (!read_vector(&r, 1, &v) || v.left > TLS_MAX_SESSION_ID_BYTES)
        return TLSSERVER_HELLO_MALFORMED;
    if (!read_vector(&r, 2, &v) || v.left < 2 || v.left % 2 != 0)
        return TLSSERVER_HELLO_MALFORMED;
    if (!read_vector(&r, 1, &v) || v.left < 1)
        return TLSSERVER_HELLO_MALFORMED;
    if (r.left == 0)
        return TLSSERVER_HELLO_COMPLETE; /* no extensions: legal before TLS 1.3 */
    if (!read_vector(&r, 2, &exts) || r.left != 0)
        return TLSSERVER_HELLO_MALFORMED;

    /* RFC 8446 4.2: at most one extension of each type. A bitmap keeps the
     * check linear however many extensions an attacker packs in. */
    memset(seen, 0, sizeof seen);
    while (exts.left > 0) {
        uint16_t type;
        struct reader data;

        if (!read_u16(&exts, &type) || !read_vector(&exts, 2, &data))
            return TLSSERVER_HELLO_MALFORMED;
        if (seen[type / 64] & (UINT64_C(1) << (type % 64)))
            return TLSSERVER_HELLO_MALFORMED;
        seen[type / 64] |= UINT64_C(1) << (type % 64);
        if (type == TLS_EXT_SERVER_NAME && !parse_server_name(&data, out))
            return TLSSERVER_HELLO_MALFORMED;
        if (type == TLS_EXT_ALPN && !parse_alpn(&data, out))
            return TLSSERVER_HELLO_MALFORMED;
    }
    return TLSSERVER_HELLO_COMPLETE;
}

/* Checks as much of a record header as is present, so that garbage is
 * refused as soon as it is seen instead of after waiting for more bytes. */
static enum tlsserver_hello_result check_record_header(const uint8_t *h, size_t avail,
                                                       size_t *record_len)
{
    if (avail >= 1 && h[0] != TLS_CONTENT_HANDSHAKE)
        return TLSSERVER_HELLO_MALFORMED;
    if (avail >= 2 && h[1] != 3)
        return TLSSERVER_HELLO_MALFORMED;
    if (avail >= 3 && (h[2] < 1 || h[2] > 4))
        return TLSSERVER_HELLO_MALFORMED;
    if (avail < TLS_RECORD_HEADER_BYTES)
        return TLSSERVER_HELLO_INCOMPLETE;
    *record_len = (size_t)((h[3] << 8) | h[4]);
    /* RFC 8446 5.1: no empty handshake fragments, none above 2^14. */
    if (*record_len == 0 || *record_len > TLS_MAX_RECORD_BYTES)
        return TLSSERVER_HELLO_MALFORMED;
    return TLSSERVER_HELLO_COMPLETE;
}

enum tlsserver_hello_result tlsserver_parse_client_hello(const uint8_t *buf, size_t len,
                                                         struct client_hello *out)
{
    uint8_t msg[TLSSERVER_MAX_HELLO_BYTES]; /* the handshake message, reassembled */
    size_t have = 0;
    size_t need = TLS_HANDSHAKE_HEADER_BYTES;
    bool knows_length = false;
    size_t pos = 0;

    memset(out, 0, sizeof *out);
    if (len < 1)
        return TLSSERVER_HELLO_INCOMPLETE;
    if (buf[0] != TLS_CONTENT_HANDSHAKE)
        return TLSSERVER_HELLO_NOT_TLS;
    if (len < 2)
        return TLSSERVER_HELLO_INCOMPLETE;
    if (buf[1] != 3)
        return TLSSERVER_HELLO_NOT_TLS;

    /* RFC 8446 5.1: a handshake message may be split over several records
     * and its header may itself be split. Every fragment goes into msg; the
     * partial last record is used too so that an oversized or wrong message
     * is refused without waiting for bytes that will never fit. */
    while (have < need) {
        enum tlsserver_hello_result hr;
        size_t record_len = 0;
        size_t avail = len - pos;
        size_t frag_avail;
        size_t used = 0;

        hr = check_record_header(buf + pos, avail, &record_len);
        if (hr != TLSSERVER_HELLO_COMPLETE)
            return hr;
        frag_avail = avail - TLS_RECORD_HEADER_BYTES;
        if (frag_avail > record_len)
            frag_avail = record_len;
        while (used < frag_avail && have < need) {
            size_t take = need - have;

            if (take > frag_avail - used)
                take = frag_avail - used;
            memcpy(msg + have, buf + pos + TLS_RECORD_HEADER_BYTES + used, take);
            have += take;
            used += take;
            if (!knows_length && have == TLS_HANDSHAKE_HEADER_BYTES) {
                size_t body_len = ((size_t)msg[1] << 16) | ((size_t)msg[2] << 8) | msg[3];

                if (msg[0] != TLS_HANDSHAKE_CLIENT_HELLO)
                    return TLSSERVER_HELLO_MALFORMED;
                /* Well-formed may still be more than we read: say so, the
                 * log must not call a big hello broken. */
                if (body_len > sizeof msg - TLS_HANDSHAKE_HEADER_BYTES)
                    return TLSSERVER_HELLO_TOO_LARGE;
                need = TLS_HANDSHAKE_HEADER_BYTES + body_len;
                knows_length = true;
            }
        }
        if (frag_avail < record_len)
            return TLSSERVER_HELLO_INCOMPLETE;
        /* A client's first flight is the ClientHello alone (RFC 8446 4.1.2);
         * more handshake bytes in its last record are not something we
         * would know how to forward faithfully. */
        if (used < record_len)
            return TLSSERVER_HELLO_MALFORMED;
        pos += TLS_RECORD_HEADER_BYTES + record_len;
    }
    return parse_hello_body(msg + TLS_HANDSHAKE_HEADER_BYTES, need - TLS_HANDSHAKE_HEADER_BYTES,
                            out);
}

bool tlsserver_looks_like_tls(const uint8_t *buf, size_t len)
{
    return len >= 3 && buf[0] == TLS_CONTENT_HANDSHAKE && buf[1] == 0x03 && buf[2] <= 0x04;
}

/* ---- key log ---- */

/* One file for the whole process, shared by both TLS sides. The mutex also
 * keeps lines whole; each line goes out in a single write(2) on an O_APPEND
 * descriptor, so another process appending to the same file cannot split it
 * either. */
static pthread_mutex_t keylog_lock = PTHREAD_MUTEX_INITIALIZER;
static int keylog_fd = -1;

int tlsserver_keylog_open(const char *path, char *err, size_t err_len)
{
    int rc = -1;

    if (pthread_mutex_lock(&keylog_lock) != 0) {
        errmsg_set(err, err_len, "cannot lock the key log");
        return -1;
    }
    if (keylog_fd < 0) {
        keylog_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (keylog_fd < 0) {
            errmsg_set(err, err_len, "cannot open key log file %s: %s", path, strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    pthread_mutex_unlock(&keylog_lock);
    return rc;
}

void tlsserver_keylog_line(const SSL *ssl, const char *line)
{
    char buf[KEYLOG_LINE_BYTES];
    size_t n = strlen(line);

    (void)ssl;
    /* A line that does not fit is dropped whole: a truncated secret would
     * only make the decrypting tool fail in a confusing way. */
    if (n + 1 > sizeof buf)
        return;
    memcpy(buf, line, n);
    buf[n++] = '\n';
    if (pthread_mutex_lock(&keylog_lock) != 0)
        return;
    if (keylog_fd >= 0) {
        ssize_t w;

        do {
            w = write(keylog_fd, buf, n);
        } while (w < 0 && errno == EINTR);
        /* A failed write loses one line of a debugging aid; the connection
         * it belongs to must not fail because of it. */
    }
    pthread_mutex_unlock(&keylog_lock);
}

/* ---- server context ---- */

/* The protocol the session chose for this client (the one the origin
 * chose: tlsserver_accept_alpn()), "http/1.1" unless told, is the only one
 * we select. When the client does not offer it, NOACK lets the handshake
 * finish without ALPN and the client falls back to HTTP/1.1 (RFC 7301
 * section 3.2 would allow a fatal alert; being lenient keeps h2-only probes
 * from looking broken). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    const char *wanted = SSL_get_app_data(ssl);
    size_t wanted_len;
    unsigned int i = 0;

    (void)arg;
    if (wanted == NULL)
        wanted = "http/1.1";
    wanted_len = strlen(wanted);
    while (i < inlen) {
        unsigned int n = in[i];

        if (n > inlen - i - 1)
            break;
        if (n == wanted_len && memcmp(in + i + 1, wanted, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *tlsserver_ctx_new(const char *keylog_path, char *err, size_t err_len)
{
    SSL_CTX *ctx = NULL;
    SSL_CTX *ret = NULL;
    char ebuf[256];

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        errmsg_set(err, err_len, "cannot create server TLS context: %s",
                   errmsg_ssl_reason(ERR_peek_last_error(), ebuf, sizeof ebuf));
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        errmsg_set(err, err_len, "cannot set minimum TLS version: %s",
                   errmsg_ssl_reason(ERR_peek_last_error(), ebuf, sizeof ebuf));
        goto out;
    }
    /* Compression invites CRIME; renegotiation is an attack surface we do
     * not need; our cipher order is chosen for clients we intercept. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    /* An idle keep-alive connection should not pin 2 x 16 KiB of record
     * buffers: the budget is 64 KiB per idle intercepted connection. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Read whole records (and whatever follows) in one recv(2) instead of
     * a 5-byte header and then the rest: half the reads per request. The
     * stream layer checks SSL_has_pending() before it polls. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, TLSSERVER_SESSION_CACHE_ENTRIES);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (keylog_path != NULL) {
        if (tlsserver_keylog_open(keylog_path, err, err_len) != 0)
            goto out;
        SSL_CTX_set_keylog_callback(ctx, tlsserver_keylog_line);
    }
    ret = ctx;
    ctx = NULL;
out:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return ret;
}

/* ---- server handshake ---- */

static bool is_certificate_alert(int alert)
{
    return alert == SSL_AD_BAD_CERTIFICATE || alert == SSL_AD_UNSUPPORTED_CERTIFICATE ||
           alert == SSL_AD_CERTIFICATE_REVOKED || alert == SSL_AD_CERTIFICATE_EXPIRED ||
           alert == SSL_AD_CERTIFICATE_UNKNOWN || alert == SSL_AD_UNKNOWN_CA;
}

/* Turns a failed server handshake into a sentence. The first queued error is
 * the cause; an alert from the client arrives as reason 1000 + alert code. */
static void describe_client_failure(int ssl_error, int sys_errno, char *err, size_t err_len)
{
    unsigned long e = ERR_peek_error();
    char ebuf[256];
    int reason = ERR_GET_REASON(e);

    if (ssl_error == SSL_ERROR_ZERO_RETURN ||
        (ssl_error == SSL_ERROR_SYSCALL && e == 0 && sys_errno == 0) ||
        (ERR_GET_LIB(e) == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        errmsg_set(err, err_len, "client closed during TLS handshake");
    } else if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
        errmsg_set(err, err_len, "client connection failed during TLS handshake: %s",
                   strerror(sys_errno));
    } else if (ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET &&
               is_certificate_alert(reason - SSL_AD_REASON_OFFSET)) {
        /* The usual cause: the browser does not trust our CA yet. */
        errmsg_set(err, err_len, "client rejected our certificate: %s",
                   errmsg_ssl_reason(e, ebuf, sizeof ebuf));
    } else if (ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET) {
        errmsg_set(err, err_len, "client aborted the TLS handshake: %s",
                   errmsg_ssl_reason(e, ebuf, sizeof ebuf));
    } else {
        errmsg_set(err, err_len, "TLS handshake with client failed: %s",
                   errmsg_ssl_reason(e, ebuf, sizeof ebuf));
    }
}

SSL *tlsserver_accept(SSL_CTX *ctx, int fd, X509 *leaf, X509 *ca_cert, EVP_PKEY *key,
                      int timeout_ms, char *err, size_t err_len)
{
    return tlsserver_accept_alpn(ctx, fd, leaf, ca_cert, key, NULL, timeout_ms, err, err_len);
}

SSL *tlsserver_accept_alpn(SSL_CTX *ctx, int fd, X509 *leaf, X509 *ca_cert, EVP_PKEY *key,
                           const char *alpn, int timeout_ms, char *err, size_t err_len)
{
    SSL *ssl = NULL;
    SSL *ret = NULL;
    char ebuf[256];
    int ssl_error, sys_errno;

    errmsg_set(err, err_len, "%s", "");
    ERR_clear_error();
    ssl = SSL_new(ctx);
    if (ssl == NULL) {
        errmsg_set(err, err_len, "cannot create TLS session: %s",
                   errmsg_ssl_reason(ERR_peek_last_error(), ebuf, sizeof ebuf));
        goto out;
    }
    if (SSL_set_fd(ssl, fd) != 1 || SSL_use_certificate(ssl, leaf) != 1 ||
        SSL_use_PrivateKey(ssl, key) != 1 ||
        (ca_cert != NULL && SSL_add1_chain_cert(ssl, ca_cert) != 1)) {
        errmsg_set(err, err_len, "cannot set up the TLS session for the client: %s",
                   errmsg_ssl_reason(ERR_peek_last_error(), ebuf, sizeof ebuf));
        goto out;
    }
    /* A static string: the select callback reads it during the handshake. */
    SSL_set_app_data(ssl, (void *)alpn);
    SSL_set_accept_state(ssl);
    switch (stream_tls_handshake(ssl, fd, timeout_ms, &ssl_error, &sys_errno)) {
    case STREAM_HANDSHAKE_DONE:
        ret = ssl;
        ssl = NULL;
        break;
    case STREAM_HANDSHAKE_TIMEOUT:
        errmsg_set(err, err_len, "client TLS handshake timed out after %d ms", timeout_ms);
        break;
    case STREAM_HANDSHAKE_FAILED:
        describe_client_failure(ssl_error, sys_errno, err, err_len);
        break;
    }
out:
    SSL_free(ssl);
    ERR_clear_error();
    return ret;
}
