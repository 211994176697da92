/*
 * ca: the proxy's certificate authority and leaf minting.
 *
 * Key type: ECDSA P-256 for the CA and for the shared leaf key. One P-256
 * signature costs tens of microseconds (an RSA-2048 one about a millisecond),
 * so minting a leaf, which is one signature by the CA key, stays under a
 * millisecond, and the signature every TLS handshake makes with the leaf key
 * is cheap as well. Every current browser, curl and mobile OS accepts P-256.
 * A CA or leaf key of another type that a user put in the data directory is
 * accepted too. (Measured with OpenSSL 3.0: about 0.5 ms per mint, most of it
 * X509_set_pubkey() running the generic provider encoder and decoder for the
 * leaf's public key, not the signature; certstore keeps mints rare.)
 *
 * This module never replaces a file it did not just create: anything odd in
 * the data directory (a missing half, a corrupt file, a key that does not
 * match) is reported for a person to resolve, because a silently regenerated
 * CA would make every browser that trusts the old one fail.
 *
 * After loading, struct ca is read-only: everything minting needs (issuer
 * name, constant extensions, digest) is prepared once, so ca_mint_leaf() can
 * run on many threads at once without locks.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "ca.h"
#include "errmsg.h"
#include "keyfile.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/conf.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define CA_SERIAL_BYTES 16
#define CA_CN_MAX_BYTES 64 /* ub-common-name, RFC 5280 appendix A.1 */
#define CA_LEAF_EXTS 5     /* basicConstraints, keyUsage, EKU, SKID, AKID */

struct ca {
    X509 *cert;
    EVP_PKEY *key;
    EVP_PKEY *leaf_key;
    EVP_PKEY *leaf_pub; /* what minted leaves carry as their key; see leaf_public_key() */
    const EVP_MD *md;   /* NULL for EdDSA CA keys, which hash internally */
    X509_NAME *issuer;
    X509_EXTENSION *leaf_exts[CA_LEAF_EXTS];
    size_t leaf_ext_count;
    char *cert_path;
    char fingerprint[2 * SHA256_DIGEST_LENGTH + 1];
};

/* Appends ": <reason>" from the OpenSSL error queue (the last error is the
 * most specific one) and empties the queue. */
static void append_ssl_err(char *err, size_t err_len)
{
    unsigned long e = ERR_peek_last_error();

    if (e != 0) {
        const char *reason = ERR_reason_error_string(e);

        if (reason != NULL)
            errmsg_append(err, err_len, ": %s", reason);
        else
            errmsg_append(err, err_len, ": OpenSSL error %lx", e);
    }
    ERR_clear_error();
}

static char *path_join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);

    if (p != NULL)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* lstat, not stat: a dangling symlink counts as present, so it is reported
 * as unreadable instead of being replaced by a new file. */
static int file_exists(const char *path, bool *exists, char *err, size_t err_len)
{
    struct stat st;

    if (lstat(path, &st) == 0) {
        *exists = true;
        return 0;
    }
    if (errno == ENOENT) {
        *exists = false;
        return 0;
    }
    errmsg_set(err, err_len, "cannot access %s: %s", path, strerror(errno));
    return -1;
}

static int fsync_dir(const char *dir, char *err, size_t err_len)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = -1;

    if (fd < 0 || fsync(fd) != 0) {
        errmsg_set(err, err_len, "cannot sync directory %s: %s", dir, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/*
 * Creates path holding data with mode, never replacing anything: the bytes go
 * to a fresh temporary file (O_EXCL|O_NOFOLLOW, so a planted file or symlink
 * is never written through), are synced, and then the file is linked into
 * place. link(2), unlike rename(2), fails with EEXIST instead of replacing a
 * file another process created in the meantime.
 */
static int write_new_file(const char *dir, const char *path, const void *data, size_t len,
                          mode_t mode, char *err, size_t err_len)
{
    unsigned char rnd[4];
    char *tmp = NULL;
    size_t tmp_len;
    size_t off = 0;
    int fd = -1;
    int rc = -1;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        errmsg_set(err, err_len, "cannot create %s: no randomness", path);
        append_ssl_err(err, err_len);
        goto out;
    }
    tmp_len = strlen(path) + sizeof(".tmp-00000000");
    tmp = malloc(tmp_len);
    if (tmp == NULL) {
        errmsg_set(err, err_len, "cannot create %s: out of memory", path);
        goto out;
    }
    snprintf(tmp, tmp_len, "%s.tmp-%02x%02x%02x%02x", path, rnd[0], rnd[1], rnd[2], rnd[3]);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        errmsg_set(err, err_len, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL; /* not ours: nothing to unlink */
        goto out;
    }
    /* The umask may have narrowed mode: the certificate is public and meant
     * to be imported by other users and tools, so it gets exactly 0644. */
    if (fchmod(fd, mode) != 0) {
        errmsg_set(err, err_len, "cannot set mode of %s: %s", tmp, strerror(errno));
        goto out;
    }
    while (off < len) {
        ssize_t n = write(fd, (const char *)data + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errmsg_set(err, err_len, "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) {
        errmsg_set(err, err_len, "cannot sync %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        errmsg_set(err, err_len, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (link(tmp, path) != 0) {
        if (errno == EEXIST)
            errmsg_set(err, err_len, "%s appeared while tapwire was creating it; not replacing it",
                       path);
        else
            errmsg_set(err, err_len, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    unlink(tmp);
    free(tmp);
    tmp = NULL;
    if (fsync_dir(dir, err, err_len) != 0)
        goto out;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    return rc;
}

static int write_pem_key(const char *dir, const char *path, EVP_PKEY *key, char *err,
                         size_t err_len)
{
    BIO *bio = NULL;
    char *data;
    long len;
    int rc = -1;

    ERR_clear_error();
    bio = BIO_new(BIO_s_secmem());
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
        errmsg_set(err, err_len, "cannot encode key for %s", path);
        append_ssl_err(err, err_len);
        goto out;
    }
    len = BIO_get_mem_data(bio, &data);
    if (len <= 0) {
        errmsg_set(err, err_len, "cannot encode key for %s", path);
        goto out;
    }
    rc = write_new_file(dir, path, data, (size_t)len, 0600, err, err_len);
out:
    BIO_free(bio);
    return rc;
}

static int write_pem_cert(const char *dir, const char *path, X509 *cert, char *err, size_t err_len)
{
    BIO *bio = NULL;
    char *data;
    long len;
    int rc = -1;

    ERR_clear_error();
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509(bio, cert) != 1) {
        errmsg_set(err, err_len, "cannot encode certificate for %s", path);
        append_ssl_err(err, err_len);
        goto out;
    }
    len = BIO_get_mem_data(bio, &data);
    if (len <= 0) {
        errmsg_set(err, err_len, "cannot encode certificate for %s", path);
        goto out;
    }
    rc = write_new_file(dir, path, data, (size_t)len, 0644, err, err_len);
out:
    BIO_free(bio);
    return rc;
}

static EVP_PKEY *new_p256_key(char *err, size_t err_len)
{
    EVP_PKEY *key;

    ERR_clear_error();
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key == NULL) {
        errmsg_set(err, err_len, "cannot generate a P-256 key");
        append_ssl_err(err, err_len);
    }
    return key;
}

/* 16 random bytes with the top bit clear (a DER INTEGER serial must be
 * positive, RFC 5280 4.1.2.2) and the next bit set, so the serial is never
 * zero and always encodes to the same length. */
static int set_random_serial(X509 *x)
{
    unsigned char buf[CA_SERIAL_BYTES];
    BIGNUM *bn = NULL;
    int rc = -1;

    if (RAND_bytes(buf, sizeof(buf)) != 1)
        goto out;
    buf[0] = (unsigned char)((buf[0] & 0x7f) | 0x40);
    bn = BN_bin2bn(buf, sizeof(buf), NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto out;
    rc = 0;
out:
    BN_free(bn);
    return rc;
}

static const EVP_MD *digest_for(const EVP_PKEY *key)
{
    /* Ed25519 and Ed448 sign the message itself; X509_sign wants no digest. */
    if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
        return NULL;
    return EVP_sha256();
}

static int add_conf_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int rc = -1;

    if (ext == NULL)
        goto out;
    if (X509_add_ext(x, ext, -1) != 1)
        goto out;
    rc = 0;
out:
    X509_EXTENSION_free(ext);
    return rc;
}

static X509 *new_ca_cert(EVP_PKEY *key, char *err, size_t err_len)
{
    X509 *x = NULL;
    X509 *ret = NULL;
    X509_NAME *name = NULL;
    X509V3_CTX ctx;
    unsigned char rnd[4];
    char cn[sizeof("tapwire CA 00000000")];
    time_t now = time(NULL);

    ERR_clear_error();
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        goto fail;
    /* The random suffix tells two tapwire CAs apart in a browser's list. */
    snprintf(cn, sizeof(cn), "tapwire CA %02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    x = X509_new();
    name = X509_NAME_new();
    if (x == NULL || name == NULL)
        goto fail;
    if (X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_ASC,
                                   (const unsigned char *)"tapwire", -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC, (const unsigned char *)cn,
                                   -1, -1, 0) != 1)
        goto fail;
    if (X509_set_version(x, X509_VERSION_3) != 1 || set_random_serial(x) != 0 ||
        X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1 ||
        X509_set_pubkey(x, key) != 1)
        goto fail;
    /* Backdated like the leaves, so every leaf's validity lies within the
     * CA's even on a client whose clock is behind. */
    if (X509_time_adj_ex(X509_getm_notBefore(x), 0, -CA_LEAF_BACKDATE_SECONDS, &now) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), CA_VALIDITY_DAYS, 0, &now) == NULL)
        goto fail;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    /* pathlen:0: this CA signs leaves only, never another CA. */
    if (add_conf_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") != 0 ||
        add_conf_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
        add_conf_ext(x, &ctx, NID_subject_key_identifier, "hash") != 0)
        goto fail;
    if (X509_sign(x, key, digest_for(key)) <= 0)
        goto fail;
    ret = x;
    x = NULL;
    goto out;
fail:
    errmsg_set(err, err_len, "cannot create the CA certificate");
    append_ssl_err(err, err_len);
out:
    X509_NAME_free(name);
    X509_free(x);
    return ret;
}

/* First run: a new CA key and certificate. The key is written first; if the
 * process dies in between, the next start reports the half-made CA instead
 * of guessing. */
static int create_ca_files(const char *dir, const char *cert_path, const char *key_path, char *err,
                           size_t err_len)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int rc = -1;

    key = new_p256_key(err, err_len);
    if (key == NULL)
        goto out;
    cert = new_ca_cert(key, err, err_len);
    if (cert == NULL)
        goto out;
    if (write_pem_key(dir, key_path, key, err, err_len) != 0)
        goto out;
    if (write_pem_cert(dir, cert_path, cert, err, err_len) != 0)
        goto out;
    rc = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static int create_leaf_key_file(const char *dir, const char *path, char *err, size_t err_len)
{
    EVP_PKEY *key = new_p256_key(err, err_len);
    int rc = -1;

    if (key == NULL)
        goto out;
    rc = write_pem_key(dir, path, key, err, err_len);
out:
    EVP_PKEY_free(key);
    return rc;
}

/* Never prompts on the terminal for an encrypted key: tapwire runs
 * unattended, and an encrypted key is reported as unreadable instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

static X509 *load_cert(const char *path, char *err, size_t err_len)
{
    BIO *bio = keyfile_read(path, "CA certificate", false, err, err_len);
    X509 *x = NULL;

    if (bio == NULL)
        goto out;
    ERR_clear_error();
    x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    if (x == NULL) {
        errmsg_set(err, err_len, "CA certificate %s is unreadable or corrupt", path);
        append_ssl_err(err, err_len);
        errmsg_append(err, err_len, "; move it away to create a new CA");
    }
out:
    BIO_free(bio);
    return x;
}

static EVP_PKEY *load_key(const char *path, const char *what, const char *fix, char *err,
                          size_t err_len)
{
    BIO *bio = keyfile_read(path, what, true, err, err_len);
    EVP_PKEY *key = NULL;

    if (bio == NULL)
        goto out;
    ERR_clear_error();
    key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (key == NULL) {
        errmsg_set(err, err_len, "%s %s is unreadable, corrupt or encrypted", what, path);
        append_ssl_err(err, err_len);
        errmsg_append(err, err_len, "; %s", fix);
    }
out:
    BIO_free(bio);
    return key;
}

static int check_ca_cert(const struct ca *ca, const char *key_path, char *err, size_t err_len)
{
    int rc = -1;

    ERR_clear_error();
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        errmsg_set(err, err_len,
                   "CA key %s does not match CA certificate %s; restore the matching pair, "
                   "or move both away to create a new CA",
                   key_path, ca->cert_path);
        goto out;
    }
    if (X509_check_ca(ca->cert) == 0) {
        errmsg_set(err, err_len,
                   "%s is not a CA certificate; move it and %s away to create a new CA",
                   ca->cert_path, key_path);
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(ca->cert)) <= 0) {
        errmsg_set(err, err_len,
                   "CA certificate %s has expired; move it and %s away to create a new CA "
                   "(and trust the new one)",
                   ca->cert_path, key_path);
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    return rc;
}

static int add_leaf_ext(struct ca *ca, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext;

    if (ca->leaf_ext_count >= CA_LEAF_EXTS)
        return -1;
    ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (ext == NULL)
        return -1;
    ca->leaf_exts[ca->leaf_ext_count++] = ext;
    return 0;
}

/*
 * Builds what every leaf shares once, so that minting only sets the serial,
 * validity, names and signature. The SKID is the same for every leaf since
 * the key is shared (RFC 5280 4.2.1.2 method 1: SHA-1 of the public key).
 */
/*
 * The leaf key as minted certificates carry it. X509_set_pubkey() with an
 * OpenSSL 3 provider key encodes the key through the encoder framework and
 * decodes the result again (OSSL_ENCODER/OSSL_DECODER set-up, ~0.35 ms:
 * three quarters of a mint, measured), and every leaf that a TLS connection
 * then uses decodes it once more. A key held the pre-3.0 way (an EC_KEY in
 * an EVP_PKEY) is encoded directly and shared, already decoded, with every
 * leaf, so a mint is mostly its one ECDSA signature. The private half stays
 * the provider key that tlsserver signs with. Falls back to the key itself
 * when it is not EC (a leaf key a person put there by hand).
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static EVP_PKEY *leaf_public_key(EVP_PKEY *leaf_key)
{
    EVP_PKEY *legacy = NULL;
    EC_KEY *ec = NULL;

    if (!EVP_PKEY_is_a(leaf_key, "EC"))
        goto fallback;
    ec = EVP_PKEY_get1_EC_KEY(leaf_key);
    legacy = EVP_PKEY_new();
    if (ec == NULL || legacy == NULL || EVP_PKEY_assign_EC_KEY(legacy, ec) != 1)
        goto fail;
    return legacy;
fail:
    EC_KEY_free(ec);
    EVP_PKEY_free(legacy);
    ERR_clear_error();
fallback:
    return EVP_PKEY_up_ref(leaf_key) == 1 ? leaf_key : NULL;
}
#pragma GCC diagnostic pop

static int prepare_minting(struct ca *ca, char *err, size_t err_len)
{
    X509 *tmpl = NULL;
    X509V3_CTX ctx;
    unsigned char md[SHA256_DIGEST_LENGTH];
    unsigned int md_len = 0;
    const char *usage;
    int rc = -1;
    size_t i;

    ERR_clear_error();
    if (X509_digest(ca->cert, EVP_sha256(), md, &md_len) != 1 || md_len != sizeof(md)) {
        errmsg_set(err, err_len, "cannot hash CA certificate %s", ca->cert_path);
        append_ssl_err(err, err_len);
        goto out;
    }
    for (i = 0; i < md_len; i++)
        snprintf(ca->fingerprint + 2 * i, 3, "%02x", md[i]);

    ca->md = digest_for(ca->key);
    ca->issuer = X509_NAME_dup(X509_get_subject_name(ca->cert));
    ca->leaf_pub = leaf_public_key(ca->leaf_key);
    tmpl = X509_new();
    if (ca->issuer == NULL || ca->leaf_pub == NULL || tmpl == NULL ||
        X509_set_pubkey(tmpl, ca->leaf_pub) != 1)
        goto fail;
    X509V3_set_ctx(&ctx, ca->cert, tmpl, NULL, NULL, 0);

    /* keyEncipherment only matters for TLS 1.2 RSA key exchange; an ECDSA
     * leaf key only ever signs. */
    usage = EVP_PKEY_is_a(ca->leaf_key, "RSA") ? "critical,digitalSignature,keyEncipherment"
                                               : "critical,digitalSignature";
    if (add_leaf_ext(ca, &ctx, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_leaf_ext(ca, &ctx, NID_key_usage, usage) != 0 ||
        add_leaf_ext(ca, &ctx, NID_ext_key_usage, "serverAuth") != 0 ||
        add_leaf_ext(ca, &ctx, NID_subject_key_identifier, "hash") != 0)
        goto fail;
    /* A CA a user brought without a subjectKeyIdentifier is still named by
     * issuer and serial. */
    if (add_leaf_ext(ca, &ctx, NID_authority_key_identifier, "keyid:always") != 0) {
        ERR_clear_error();
        if (add_leaf_ext(ca, &ctx, NID_authority_key_identifier, "issuer:always") != 0)
            goto fail;
    }
    rc = 0;
    goto out;
fail:
    errmsg_set(err, err_len, "cannot prepare leaf extensions for CA %s", ca->cert_path);
    append_ssl_err(err, err_len);
out:
    X509_free(tmpl);
    return rc;
}

int ca_load_or_create(const char *data_dir, struct ca **out, char *err, size_t err_len)
{
    struct ca *ca = NULL;
    char *key_path = NULL;
    char *leaf_path = NULL;
    bool has_cert, has_key, has_leaf;
    int rc = -1;

    *out = NULL;
    ca = calloc(1, sizeof(*ca));
    if (ca == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    ca->cert_path = path_join(data_dir, CA_CERT_FILE);
    key_path = path_join(data_dir, CA_KEY_FILE);
    leaf_path = path_join(data_dir, CA_LEAF_KEY_FILE);
    if (ca->cert_path == NULL || key_path == NULL || leaf_path == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (file_exists(ca->cert_path, &has_cert, err, err_len) != 0 ||
        file_exists(key_path, &has_key, err, err_len) != 0 ||
        file_exists(leaf_path, &has_leaf, err, err_len) != 0)
        goto out;

    if (!has_cert && !has_key && has_leaf) {
        errmsg_set(err, err_len,
                   "%s exists without a CA (%s and %s are missing); move it away to "
                   "create a new CA",
                   leaf_path, ca->cert_path, key_path);
        goto out;
    }
    if (has_cert && !has_key) {
        errmsg_set(err, err_len,
                   "CA key %s is missing but CA certificate %s exists; restore the key, or "
                   "move the certificate away to create a new CA",
                   key_path, ca->cert_path);
        goto out;
    }
    if (!has_cert && has_key) {
        errmsg_set(err, err_len,
                   "CA certificate %s is missing but CA key %s exists; restore the "
                   "certificate, or move the key away to create a new CA",
                   ca->cert_path, key_path);
        goto out;
    }
    if (!has_cert && create_ca_files(data_dir, ca->cert_path, key_path, err, err_len) != 0)
        goto out;

    /* A CA just created is read back like any other, so one code path
     * checks what is on disk. */
    ca->cert = load_cert(ca->cert_path, err, err_len);
    if (ca->cert == NULL)
        goto out;
    ca->key = load_key(key_path, "CA key", "move it and " CA_CERT_FILE " away to create a new CA",
                       err, err_len);
    if (ca->key == NULL)
        goto out;
    if (check_ca_cert(ca, key_path, err, err_len) != 0)
        goto out;

    /* The leaf key alone can be replaced safely: certificates cached with
     * the old key are minted again (certstore compares public keys). */
    if (!has_leaf && create_leaf_key_file(data_dir, leaf_path, err, err_len) != 0)
        goto out;
    ca->leaf_key =
        load_key(leaf_path, "leaf key", "move it away to create a new one", err, err_len);
    if (ca->leaf_key == NULL)
        goto out;
    if (prepare_minting(ca, err, err_len) != 0)
        goto out;

    *out = ca;
    ca = NULL;
    rc = 0;
out:
    ca_free(ca);
    free(leaf_path);
    free(key_path);
    return rc;
}

void ca_free(struct ca *ca)
{
    size_t i;

    if (ca == NULL)
        return;
    for (i = 0; i < ca->leaf_ext_count; i++)
        X509_EXTENSION_free(ca->leaf_exts[i]);
    X509_NAME_free(ca->issuer);
    EVP_PKEY_free(ca->leaf_key);
    EVP_PKEY_free(ca->leaf_pub);
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    free(ca->cert_path);
    free(ca);
}

X509 *ca_cert(const struct ca *ca)
{
    return ca->cert;
}

EVP_PKEY *ca_leaf_key(const struct ca *ca)
{
    return ca->leaf_key;
}

const char *ca_cert_path(const struct ca *ca)
{
    return ca->cert_path;
}

const char *ca_fingerprint(const struct ca *ca)
{
    return ca->fingerprint;
}

static bool is_name_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '*' || c == '_' || c == ':' || c == '-';
}

enum add_result { ADD_OK = 0, ADD_INVALID = -1, ADD_FULL = -2 };

/* IP literals are stored in inet_ntop's form so that "::1" and "0::1" are
 * one name and one cache key. A ':' only ever appears in an IPv6 literal. */
static enum add_result add_name(struct ca_names *names, const char *name)
{
    unsigned char addr[16];
    char canon[INET6_ADDRSTRLEN];
    const char *value = name;
    char *copy;
    size_t len, i;

    if (names == NULL || name == NULL)
        return ADD_INVALID;
    len = strnlen(name, CA_MAX_NAME_BYTES + 1);
    if (len == 0 || len > CA_MAX_NAME_BYTES)
        return ADD_INVALID;
    for (i = 0; i < len; i++) {
        if (!is_name_byte((unsigned char)name[i]))
            return ADD_INVALID;
    }
    if (inet_pton(AF_INET6, name, addr) == 1) {
        if (inet_ntop(AF_INET6, addr, canon, sizeof(canon)) == NULL)
            return ADD_INVALID;
        value = canon;
    } else if (memchr(name, ':', len) != NULL) {
        return ADD_INVALID;
    } else if (inet_pton(AF_INET, name, addr) == 1) {
        if (inet_ntop(AF_INET, addr, canon, sizeof(canon)) == NULL)
            return ADD_INVALID;
        value = canon;
    }
    for (i = 0; i < names->count; i++) {
        if (strcasecmp(names->names[i], value) == 0)
            return ADD_OK;
    }
    if (names->count >= CA_MAX_NAMES)
        return ADD_FULL;
    copy = strdup(value);
    if (copy == NULL)
        return ADD_FULL;
    names->names[names->count++] = copy;
    return ADD_OK;
}

int ca_names_add(struct ca_names *names, const char *name)
{
    return add_name(names, name) == ADD_OK ? 0 : -1;
}

/* Copies len bytes of an ASN.1 string as a C string; false when it has an
 * embedded NUL (a classic trick to fool name checks) or does not fit. */
static bool asn1_to_name(const ASN1_STRING *s, char *out, size_t out_len)
{
    const unsigned char *data = ASN1_STRING_get0_data(s);
    int len = ASN1_STRING_length(s);

    if (data == NULL || len <= 0 || (size_t)len >= out_len || memchr(data, 0, (size_t)len))
        return false;
    memcpy(out, data, (size_t)len);
    out[len] = '\0';
    return true;
}

int ca_names_add_from_cert(struct ca_names *names, X509 *upstream)
{
    GENERAL_NAMES *gens = NULL;
    X509_NAME *subject;
    char buf[CA_MAX_NAME_BYTES + 1];
    bool is_full = false;
    int idx = -1;
    int i, n;

    if (names == NULL || upstream == NULL)
        return -1;
    subject = X509_get_subject_name(upstream);
    /* Only a CN made of host name bytes is copied; "Example Inc" is not a
     * name a client could have asked for. A host name in a BMPString or
     * UniversalString has NUL bytes and is skipped with the rest. */
    while ((idx = X509_NAME_get_index_by_NID(subject, NID_commonName, idx)) >= 0) {
        X509_NAME_ENTRY *entry = X509_NAME_get_entry(subject, idx);
        ASN1_STRING *s = entry != NULL ? X509_NAME_ENTRY_get_data(entry) : NULL;

        if (s != NULL && asn1_to_name(s, buf, sizeof(buf)) && add_name(names, buf) == ADD_FULL)
            is_full = true;
    }
    gens = X509_get_ext_d2i(upstream, NID_subject_alt_name, NULL, NULL);
    n = gens != NULL ? sk_GENERAL_NAME_num(gens) : 0;
    for (i = 0; i < n; i++) {
        const GENERAL_NAME *gen = sk_GENERAL_NAME_value(gens, i);
        bool has_name = false;

        if (gen->type == GEN_DNS) {
            has_name = asn1_to_name(gen->d.dNSName, buf, sizeof(buf));
        } else if (gen->type == GEN_IPADD) {
            int len = ASN1_STRING_length(gen->d.iPAddress);
            const unsigned char *ip = ASN1_STRING_get0_data(gen->d.iPAddress);

            if (len == 4)
                has_name = inet_ntop(AF_INET, ip, buf, sizeof(buf)) != NULL;
            else if (len == 16)
                has_name = inet_ntop(AF_INET6, ip, buf, sizeof(buf)) != NULL;
        }
        if (has_name && add_name(names, buf) == ADD_FULL)
            is_full = true;
    }
    GENERAL_NAMES_free(gens);
    return is_full ? -1 : 0;
}

void ca_names_clear(struct ca_names *names)
{
    size_t i;

    if (names == NULL)
        return;
    for (i = 0; i < names->count; i++) {
        free(names->names[i]);
        names->names[i] = NULL;
    }
    names->count = 0;
}

/* strcasecmp compares the lowercased bytes, so this order is the order of
 * the lowercased names the key is made of. */
static int compare_names(const void *a, const void *b)
{
    return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

int ca_names_key(const struct ca_names *names, char *out, size_t out_len)
{
    const char *sorted[CA_MAX_NAMES];
    size_t count = names->count < CA_MAX_NAMES ? names->count : CA_MAX_NAMES;
    size_t used = 0;
    size_t i, j;

    if (out == NULL || out_len == 0)
        return -1;
    memcpy(sorted, names->names, count * sizeof(sorted[0]));
    qsort(sorted, count, sizeof(sorted[0]), compare_names);
    for (i = 0; i < count; i++) {
        size_t len = strlen(sorted[i]);

        /* room for the separator, the name and the final NUL */
        if (used + (i > 0) + len + 1 > out_len)
            return -1;
        if (i > 0)
            out[used++] = ',';
        for (j = 0; j < len; j++) {
            unsigned char c = (unsigned char)sorted[i][j];

            out[used++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        }
    }
    out[used] = '\0';
    return (int)used;
}

static GENERAL_NAMES *names_to_san(const struct ca_names *names)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAMES *ret = NULL;
    size_t i;

    if (gens == NULL)
        goto out;
    for (i = 0; i < names->count; i++) {
        const char *name = names->names[i];
        unsigned char addr[16];
        int addr_len = 0;
        GENERAL_NAME *gen = GENERAL_NAME_new();
        ASN1_STRING *value;

        if (gen == NULL)
            goto out;
        if (inet_pton(AF_INET, name, addr) == 1)
            addr_len = 4;
        else if (inet_pton(AF_INET6, name, addr) == 1)
            addr_len = 16;
        /* RFC 5280 4.2.1.6: an IP address goes in as iPAddress (its network
         * bytes); clients do not match IPs against dNSName entries. */
        value = addr_len > 0 ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
        if (value == NULL || (addr_len > 0 ? ASN1_OCTET_STRING_set(value, addr, addr_len)
                                           : ASN1_STRING_set(value, name, -1)) != 1) {
            ASN1_STRING_free(value);
            GENERAL_NAME_free(gen);
            goto out;
        }
        GENERAL_NAME_set0_value(gen, addr_len > 0 ? GEN_IPADD : GEN_DNS, value);
        if (sk_GENERAL_NAME_push(gens, gen) <= 0) {
            GENERAL_NAME_free(gen);
            goto out;
        }
    }
    ret = gens;
    gens = NULL;
out:
    GENERAL_NAMES_free(gens);
    return ret;
}

X509 *ca_mint_leaf(const struct ca *ca, const struct ca_names *names, char *err, size_t err_len)
{
    X509 *x = NULL;
    X509 *ret = NULL;
    X509_NAME *subject = NULL;
    GENERAL_NAMES *san = NULL;
    time_t now = time(NULL);
    size_t cn_len;
    size_t i;

    if (names == NULL || names->count == 0 || names->count > CA_MAX_NAMES) {
        errmsg_set(err, err_len, "cannot mint a certificate: %s",
                   names == NULL || names->count == 0 ? "no names" : "too many names");
        goto out;
    }
    ERR_clear_error();
    x = X509_new();
    subject = X509_NAME_new();
    san = names_to_san(names);
    if (x == NULL || subject == NULL || san == NULL)
        goto fail;
    /* The SAN carries the full name; the CN is only for people reading the
     * certificate and is capped by RFC 5280. */
    cn_len = strlen(names->names[0]);
    if (cn_len > CA_CN_MAX_BYTES)
        cn_len = CA_CN_MAX_BYTES;
    if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_ASC,
                                   (const unsigned char *)names->names[0], (int)cn_len, -1, 0) != 1)
        goto fail;
    if (X509_set_version(x, X509_VERSION_3) != 1 || set_random_serial(x) != 0 ||
        X509_set_issuer_name(x, ca->issuer) != 1 || X509_set_subject_name(x, subject) != 1 ||
        X509_set_pubkey(x, ca->leaf_pub) != 1)
        goto fail;
    if (X509_time_adj_ex(X509_getm_notBefore(x), 0, -CA_LEAF_BACKDATE_SECONDS, &now) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), CA_LEAF_VALIDITY_DAYS, 0, &now) == NULL)
        goto fail;
    for (i = 0; i < ca->leaf_ext_count; i++) {
        if (X509_add_ext(x, ca->leaf_exts[i], -1) != 1)
            goto fail;
    }
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, san, 0, X509V3_ADD_DEFAULT) != 1)
        goto fail;
    if (X509_sign(x, ca->key, ca->md) <= 0)
        goto fail;
    ret = x;
    x = NULL;
    goto out;
fail:
    errmsg_set(err, err_len, "cannot mint a certificate for %s", names->names[0]);
    append_ssl_err(err, err_len);
out:
    GENERAL_NAMES_free(san);
    X509_NAME_free(subject);
    X509_free(x);
    return ret;
}
