/*
 * clientcert: the client certificates tapwire presents to origins that ask
 * for one (--client-cert [GLOB=]FILE, mutual-TLS APIs). Each FILE holds a
 * PEM certificate, its private key and optionally its chain; since it holds
 * a key it must be private (keyfile), as the CA key must. The first entry
 * whose GLOB matches the origin's name (the SNI sent, else the name or
 * address verified) is used; an entry without GLOB matches every origin.
 *
 * Hooked into the upstream SSL_CTX as its certificate callback, so a
 * certificate is offered only when an origin sends a CertificateRequest,
 * and nothing else of the TLS client changes. Read-only after loading.
 */
#ifndef TAPWIRE_CLIENTCERT_H
#define TAPWIRE_CLIENTCERT_H

#include <stddef.h>
#include <openssl/ssl.h>

struct clientcert;

/* Loads every spec of specs[count] ("[GLOB=]FILE"). Returns 0 with *out
 * (caller frees with clientcert_free(), after every SSL_CTX it was attached
 * to) or -1 with err naming the file. */
int clientcert_load(const char *const *specs, size_t count, struct clientcert **out, char *err,
                    size_t err_len);
void clientcert_free(struct clientcert *certs);

/* Which entry (0-based, in the order given) serves an origin named name,
 * or -1 for none. */
int clientcert_find(const struct clientcert *certs, const char *name);

/* The certificate of entry i, for people ("CN=..."): borrowed. */
X509 *clientcert_certificate(const struct clientcert *certs, size_t i);

/* Makes ctx (a client context) present the matching certificate when an
 * origin asks for one. */
void clientcert_attach(SSL_CTX *ctx, const struct clientcert *certs);

#endif
