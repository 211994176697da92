/*
 * clientcert: see clientcert.h. The callback runs on connection threads at
 * once; it only reads the loaded list and hands OpenSSL new references.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* FNM_CASEFOLD */
#endif

#include "clientcert.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "errmsg.h"
#include "keyfile.h"

struct clientcert_entry {
    char *glob; /* NULL: every origin */
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) * chain; /* may be empty */
};

struct clientcert {
    size_t count;
    struct clientcert_entry entries[];
};

static void entry_clear(struct clientcert_entry *e)
{
    free(e->glob);
    X509_free(e->cert);
    EVP_PKEY_free(e->key);
    sk_X509_pop_free(e->chain, X509_free);
}

/* The certificates and the one key of the PEM text in bio, into e. */
static int read_pem(BIO *bio, const char *path, struct clientcert_entry *e, char *err,
                    size_t err_len)
{
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
    char ebuf[256];
    int rc = -1;

    if (infos == NULL) {
        errmsg_set(err, err_len, "--client-cert %s: not PEM: %s", path,
                   errmsg_ssl_reason(ERR_peek_last_error(), ebuf, sizeof(ebuf)));
        goto out;
    }
    e->chain = sk_X509_new_null();
    if (e->chain == NULL)
        goto out;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);

        if (info->x509 != NULL) {
            if (e->cert == NULL)
                e->cert = info->x509;
            else if (sk_X509_push(e->chain, info->x509) == 0)
                goto out;
            info->x509 = NULL;
        }
        if (info->x_pkey != NULL && info->x_pkey->dec_pkey != NULL) {
            if (e->key != NULL) {
                errmsg_set(err, err_len, "--client-cert %s holds more than one private key", path);
                goto out;
            }
            e->key = info->x_pkey->dec_pkey;
            info->x_pkey->dec_pkey = NULL;
        }
    }
    if (e->cert == NULL || e->key == NULL) {
        errmsg_set(err, err_len, "--client-cert %s wants a PEM certificate and its private key",
                   path);
        goto out;
    }
    if (X509_check_private_key(e->cert, e->key) != 1) {
        errmsg_set(err, err_len, "--client-cert %s: the private key is not the certificate's",
                   path);
        goto out;
    }
    rc = 0;
out:
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    ERR_clear_error();
    return rc;
}

static int load_one(const char *spec, struct clientcert_entry *e, char *err, size_t err_len)
{
    const char *eq = strchr(spec, '=');
    const char *path = eq != NULL ? eq + 1 : spec;
    BIO *bio = NULL;
    int rc = -1;

    if (eq != NULL) {
        e->glob = strndup(spec, (size_t)(eq - spec));
        if (e->glob == NULL || e->glob[0] == '\0' || path[0] == '\0') {
            errmsg_set(err, err_len, "--client-cert wants [GLOB=]FILE, not '%s'", spec);
            goto out;
        }
    }
    bio = keyfile_read(path, "--client-cert", true, err, err_len);
    if (bio == NULL)
        goto out;
    rc = read_pem(bio, path, e, err, err_len);
out:
    BIO_free(bio);
    return rc;
}

int clientcert_load(const char *const *specs, size_t count, struct clientcert **out, char *err,
                    size_t err_len)
{
    struct clientcert *certs = calloc(1, sizeof(*certs) + count * sizeof(certs->entries[0]));
    int rc = -1;

    *out = NULL;
    if (certs == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        certs->count++;
        if (load_one(specs[i], &certs->entries[i], err, err_len) < 0)
            goto out;
    }
    *out = certs;
    certs = NULL;
    rc = 0;
out:
    clientcert_free(certs);
    return rc;
}

void clientcert_free(struct clientcert *certs)
{
    if (certs == NULL)
        return;
    for (size_t i = 0; i < certs->count; i++)
        entry_clear(&certs->entries[i]);
    free(certs);
}

int clientcert_find(const struct clientcert *certs, const char *name)
{
    if (certs == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < certs->count; i++)
        if (certs->entries[i].glob == NULL ||
            fnmatch(certs->entries[i].glob, name, FNM_CASEFOLD) == 0)
            return (int)i;
    return -1;
}

X509 *clientcert_certificate(const struct clientcert *certs, size_t i)
{
    return i < certs->count ? certs->entries[i].cert : NULL;
}

/* The origin's name as this connection knows it: the SNI it sent, else the
 * host or address its certificate is checked against. */
static int origin_name(SSL *ssl, char *out, size_t out_len)
{
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    const char *host = param != NULL ? X509_VERIFY_PARAM_get0_host(param, 0) : NULL;
    char *ip = param != NULL ? X509_VERIFY_PARAM_get1_ip_asc(param) : NULL;
    const char *name = sni != NULL ? sni : host != NULL ? host : ip;
    int rc = -1;

    if (name != NULL && strlen(name) < out_len) {
        strcpy(out, name);
        rc = 0;
    }
    OPENSSL_free(ip);
    return rc;
}

/* SSL_CTX_set_cert_cb(): on a client, called when the origin sends a
 * CertificateRequest. 1 in every case: no match means no certificate, and
 * the origin decides whether it wants to go on without one. */
static int on_certificate_request(SSL *ssl, void *arg)
{
    const struct clientcert *certs = arg;
    char name[256];
    int i;

    if (origin_name(ssl, name, sizeof(name)) < 0)
        return 1;
    i = clientcert_find(certs, name);
    if (i >= 0) {
        const struct clientcert_entry *e = &certs->entries[i];
        if (SSL_use_cert_and_key(ssl, e->cert, e->key, e->chain, 1) != 1)
            ERR_clear_error();
    }
    return 1;
}

void clientcert_attach(SSL_CTX *ctx, const struct clientcert *certs)
{
    if (certs != NULL && certs->count > 0)
        SSL_CTX_set_cert_cb(ctx, on_certificate_request, (void *)certs);
}
