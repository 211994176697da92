/*
 * upstream: connecting out. DNS, TCP with a timeout, and an honest TLS client:
 * the chain is verified against the trust store and the hostname (or IP) is
 * checked, and a failure is turned into a reason a person can read
 * ("hostname mismatch: the certificate is valid for a, b", "certificate
 * expired on <date>", "unable to get local issuer certificate").
 */
#ifndef TAPWIRE_UPSTREAM_H
#define TAPWIRE_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "destguard.h"

#define UPSTREAM_CONNECT_TIMEOUT_MS 10000
#define UPSTREAM_HANDSHAKE_TIMEOUT_MS 10000
#define UPSTREAM_ERROR_BYTES 512

enum upstream_status {
    UPSTREAM_OK = 0,
    UPSTREAM_DNS_FAILED,    /* 502 */
    UPSTREAM_REFUSED,       /* 502 */
    UPSTREAM_UNREACHABLE,   /* 502: other connect errors */
    UPSTREAM_TIMEOUT,       /* 504 */
    UPSTREAM_TLS_FAILED,    /* 502: handshake failed (protocol, alert, reset) */
    UPSTREAM_VERIFY_FAILED, /* 502: chain or hostname verification failed */
    UPSTREAM_SELF,          /* 508: every address is one of tapwire's own listeners */
    UPSTREAM_BLOCKED,       /* 403: every address is private and --block-private is on */
    UPSTREAM_PROXY_FAILED,  /* 502: the --upstream-proxy refused or failed the CONNECT */
};

struct upstream_error {
    enum upstream_status status;
    char reason[UPSTREAM_ERROR_BYTES]; /* for a person, no trailing newline */
};

/* HTTP status a client gets for this failure: 502, 504, 508 or 403. */
int upstream_error_http_status(const struct upstream_error *err);

/*
 * Resolves host and connects to port, trying each address until one answers,
 * bounded by timeout_ms overall. Addresses the guard refuses are skipped
 * (guard may be NULL: none are); when that leaves none, the failure is
 * UPSTREAM_SELF or UPSTREAM_BLOCKED. The socket is blocking with TCP_NODELAY
 * on. Returns the fd, or -1 with *err filled.
 */
int upstream_connect_tcp(const char *host, uint16_t port, int timeout_ms,
                         const struct destguard *guard, struct upstream_error *err);

/*
 * For a host that is a numeric address (any spelling getaddrinfo() takes
 * with AI_NUMERICHOST, "2130706433" and "0177.0.0.1" included): 0 when the
 * guard allows it, else -1 with *err as upstream_connect_tcp() would fill
 * it. A name gives 0 without a DNS query: its addresses are checked when
 * connecting. Lets a CONNECT be refused before it is answered.
 */
int upstream_check_numeric(const char *host, uint16_t port, const struct destguard *guard,
                           struct upstream_error *err);

struct upstream_tls_options {
    const char *const *extra_ca_files; /* --upstream-ca, NULL-terminated, may be NULL */
    bool insecure;                     /* --insecure: do not verify */
    const char *keylog_path;           /* SSLKEYLOGFILE or NULL */
};

/* Client SSL_CTX with the system trust store plus extra CA files; TLS >= 1.2.
 * NULL with err filled on failure (e.g. an unreadable CA file). */
SSL_CTX *upstream_ctx_new(const struct upstream_tls_options *opts, char *err, size_t err_len);

/*
 * TLS handshake on fd. sni may be NULL (then no SNI is sent). verify_name is
 * the name to check the certificate against (the SNI, else the CONNECT host;
 * an IP literal is checked against IP SANs). alpn is a wire-format protocol
 * list (may be NULL). Unless insecure, a verification failure gives
 * UPSTREAM_VERIFY_FAILED, and the handshake is still completed so that
 * *peer_cert_out (if not NULL) gets the upstream certificate for the caller's
 * records; no application data is sent in that case. On success returns the
 * SSL (caller owns: SSL_free()); on failure NULL with *err.
 * peer_cert_out, when not NULL, receives a new reference (X509_free()) or NULL.
 * With opts->insecure the SSL is returned even when verification fails; then
 * err->status is UPSTREAM_OK and err->reason says "not verified: <reason>" so
 * the caller can record the warning with the exchange (empty when it passed).
 */
SSL *upstream_tls_connect(SSL_CTX *ctx, int fd, const char *sni, const char *verify_name,
                          const unsigned char *alpn, size_t alpn_len, int timeout_ms,
                          X509 **peer_cert_out, struct upstream_error *err);

/*
 * Certificate text as the proxy records and shows it. It comes from the
 * origin and ends up on pages, in logs and in the dashboard, so every one
 * of these keeps printable ASCII only.
 */

/* n bytes of certificate text into out[out_size] (out_size > 0), every byte
 * that is not printable ASCII replaced by '?', cut to out_size - 1 bytes. */
void upstream_cert_text(const unsigned char *p, size_t n, char *out, size_t out_size);
/* name in RFC 2253 form ("CN=a,O=b"), sanitised as above. Caller frees;
 * NULL when it cannot be printed or out of memory. */
char *upstream_cert_name(const X509_NAME *name);
/* The DNS and IP subject alternative names of cert, "DNS:a, IP:1.2.3.4",
 * sanitised as above. Caller frees; NULL when it has none. */
char *upstream_cert_sans(X509 *cert);

#endif
