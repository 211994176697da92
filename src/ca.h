/*
 * ca: the proxy's own certificate authority and leaf minting.
 *
 * Owns the CA certificate and key and the one leaf key shared by every minted
 * certificate (so minting costs one signature, and a cached certificate stays
 * usable across restarts). Files live in the data directory: ca-cert.pem
 * (0644), ca-key.pem and leaf-key.pem (0600). A corrupt or unreadable file is
 * an error for the caller to report; it is never silently replaced.
 * Thread safety: after ca_load_or_create(), ca_mint_leaf() may be called from
 * any thread concurrently (the struct is read-only after loading).
 */
#ifndef TAPWIRE_CA_H
#define TAPWIRE_CA_H

#include <stddef.h>
#include <openssl/x509.h>

#define CA_CERT_FILE "ca-cert.pem"
#define CA_KEY_FILE "ca-key.pem"
#define CA_LEAF_KEY_FILE "leaf-key.pem"
#define CA_VALIDITY_DAYS 3650
#define CA_LEAF_VALIDITY_DAYS 197                /* Chromium refuses long-lived leaves */
#define CA_LEAF_BACKDATE_SECONDS (2 * 24 * 3600) /* clock skew on clients */
#define CA_MAX_NAMES 128                         /* names copied into one leaf */
#define CA_MAX_NAME_BYTES 255

/* A set of names for a leaf: DNS names and IP addresses (textual, v4 or v6).
 * The first name becomes the subject CN. */
struct ca_names {
    char *names[CA_MAX_NAMES]; /* owned: free with ca_names_clear() */
    size_t count;
};

struct ca;

/*
 * Loads the CA from data_dir, creating it (and the leaf key) on first run.
 * Returns 0 and *out (free with ca_free()), or -1 with err filled in.
 */
int ca_load_or_create(const char *data_dir, struct ca **out, char *err, size_t err_len);
void ca_free(struct ca *ca);

/* Borrowed pointers, valid while ca lives. */
X509 *ca_cert(const struct ca *ca);
EVP_PKEY *ca_leaf_key(const struct ca *ca);
const char *ca_cert_path(const struct ca *ca);
/* SHA-256 of the CA certificate (DER), hex, identifies the CA in caches. */
const char *ca_fingerprint(const struct ca *ca);

/* Adds name (DNS or IP literal) unless already present (case-insensitive).
 * Returns 0, or -1 when full or the name is empty/too long/has bad bytes. */
int ca_names_add(struct ca_names *names, const char *name);
/* Adds the upstream certificate's subject CN and every DNS and IP SAN;
 * names that are not plausible host names or IPs (e.g. a CN "Example Inc")
 * are skipped. Returns 0, or -1 when the set filled up (what fit is kept and
 * usable). */
int ca_names_add_from_cert(struct ca_names *names, X509 *upstream);
void ca_names_clear(struct ca_names *names);
/* Canonical cache key: names lowercased, sorted, joined by ','. Returns the
 * length written, or -1 if out_len is too small. */
int ca_names_key(const struct ca_names *names, char *out, size_t out_len);

/*
 * Mints a leaf for names signed by the CA, with the shared leaf key: random
 * serial, serverAuth, validity now-backdate .. now+CA_LEAF_VALIDITY_DAYS.
 * Returns a new X509 (caller frees with X509_free()) or NULL with err set.
 */
X509 *ca_mint_leaf(const struct ca *ca, const struct ca_names *names, char *err, size_t err_len);

#endif
