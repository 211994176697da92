/*
 * certstore: the minted-certificate cache. A bounded in-memory LRU in front of
 * the certs table in SQLite, keyed by the canonical name set, so a repeat
 * visit or a restart mints nothing. An entry expired (or within a day of it)
 * or minted by another CA than the current one is minted again.
 * Thread safety: all functions may be called from any thread; one mutex guards
 * the LRU, another the SQLite connection (never held together, so a memory
 * hit never waits for the disk), and minting happens outside both.
 */
#ifndef TAPWIRE_CERTSTORE_H
#define TAPWIRE_CERTSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/x509.h>
#include "ca.h"

#define CERTSTORE_MEMORY_ENTRIES 1024

struct certstore;

/* Opens the store on the database at db_path (see db_open()). The store
 * borrows ca, which must outlive it. Returns 0 and *out, or -1 with err. */
int certstore_open(const char *db_path, const struct ca *ca, size_t memory_entries,
                   struct certstore **out, char *err, size_t err_len);
void certstore_close(struct certstore *store);

/*
 * Returns a leaf for names: from memory, else from SQLite, else freshly minted
 * (and then stored in both). The caller owns one reference (X509_free()).
 * NULL with err set on failure. A database failure is not fatal: the leaf is
 * minted and served, and the error is logged once.
 */
X509 *certstore_get(struct certstore *store, const struct ca_names *names, char *err,
                    size_t err_len);

/* Counters for tests, logs and benchmarks. */
struct certstore_stats {
    unsigned long memory_hits;
    unsigned long db_hits;
    unsigned long minted;
    /* Time the connection threads spent on misses that minted: the
     * database lookup that missed, the mint and storing the leaf. What a
     * new host costs the proxy on top of a known one, before TLS. */
    uint64_t mint_us_total;
};
void certstore_stats(struct certstore *store, struct certstore_stats *out);

#endif
