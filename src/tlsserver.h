/*
 * tlsserver: the client-facing TLS side. Reads the ClientHello's SNI and ALPN
 * from the socket without consuming it (MSG_PEEK), so the upstream handshake
 * can happen first and the client can still be handled as plain HTTP or raw
 * bytes when it is not speaking TLS; then serves a minted leaf.
 * The ClientHello reader is hand-written because it must work before any TLS
 * object exists and on bytes that may not be TLS at all; it is a bounded,
 * allocation-free walk over the record and handshake headers (RFC 8446 4.1.2).
 */
#ifndef TAPWIRE_TLSSERVER_H
#define TAPWIRE_TLSSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#define TLSSERVER_MAX_HELLO_BYTES 16384 /* a ClientHello larger than this is refused */
#define TLSSERVER_MAX_ALPN 8

struct client_hello {
    bool has_sni;
    char sni[256]; /* host_name, NUL-terminated */
    size_t alpn_count;
    char alpn[TLSSERVER_MAX_ALPN][32]; /* offered protocols, in order */
};

enum tlsserver_hello_result {
    TLSSERVER_HELLO_COMPLETE = 1, /* *out filled */
    TLSSERVER_HELLO_INCOMPLETE = 0,
    TLSSERVER_HELLO_NOT_TLS = -1,   /* first bytes are not a TLS handshake record */
    TLSSERVER_HELLO_MALFORMED = -2, /* TLS, but not a well-formed ClientHello */
    TLSSERVER_HELLO_TOO_LARGE = -3, /* a ClientHello above TLSSERVER_MAX_HELLO_BYTES */
};

/* Parses a ClientHello from the first len bytes a client sent (one or more
 * handshake records). Never reads past len. */
enum tlsserver_hello_result tlsserver_parse_client_hello(const uint8_t *buf, size_t len,
                                                         struct client_hello *out);

/* Quick test on the first bytes: could this be a TLS handshake record?
 * (needs at least 3 bytes; returns false with fewer). */
bool tlsserver_looks_like_tls(const uint8_t *buf, size_t len);

/*
 * Creates the server SSL_CTX (TLS 1.2 and 1.3, no compression, no
 * renegotiation, ALPN callback selecting http/1.1 when offered and nothing
 * otherwise, session tickets on). keylog_path may be NULL (SSLKEYLOGFILE).
 * Returns NULL with err on failure.
 */
SSL_CTX *tlsserver_ctx_new(const char *keylog_path, char *err, size_t err_len);

/*
 * Creates an SSL for fd serving leaf (with ca_cert as chain) and key and runs
 * the server handshake, bounded by timeout_ms. Returns the SSL (caller frees
 * with SSL_free() after SSL_shutdown()) or NULL with err.
 */
SSL *tlsserver_accept(SSL_CTX *ctx, int fd, X509 *leaf, X509 *ca_cert, EVP_PKEY *key,
                      int timeout_ms, char *err, size_t err_len);
/* The same, selecting alpn ("h2", "http/1.1"; a string that outlives the
 * SSL; NULL: "http/1.1") when the client offers it. */
SSL *tlsserver_accept_alpn(SSL_CTX *ctx, int fd, X509 *leaf, X509 *ca_cert, EVP_PKEY *key,
                           const char *alpn, int timeout_ms, char *err, size_t err_len);

/*
 * Key log (SSLKEYLOGFILE, NSS format) shared by both TLS sides. Opens path
 * once per process for appending (created 0600); later calls keep the first
 * file. Returns 0, or -1 with err.
 */
int tlsserver_keylog_open(const char *path, char *err, size_t err_len);
/* SSL_CTX_set_keylog_callback() callback: appends line to the open key log,
 * one write per line so lines never interleave; does nothing if none is open. */
void tlsserver_keylog_line(const SSL *ssl, const char *line);

#endif
