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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/x509.h>
#include "ca.h"

#define CERTSTORE_MEMORY_ENTRIES 1024
/* Rows kept in the certs table: beyond it the least recently used leaves
 * are dropped, a batch at a time (at most CERTSTORE_PRUNE_BATCH_ROWS), so a
 * client sending endless new names cannot grow the database. */
#define CERTSTORE_MAX_STORED_LEAVES 10000
#define CERTSTORE_PRUNE_BATCH_ROWS 512
/* A leaf served from memory records its use in the table at most this
 * often: enough for the LRU order, without a write per handshake. */
#define CERTSTORE_TOUCH_INTERVAL_S 3600

struct certstore;

/* Opens the store on the database at db_path (see db_open()). The store
 * borrows ca, which must outlive it. Returns 0 and *out, or -1 with err. */
int certstore_open(const char *db_path, const struct ca *ca, size_t memory_entries,
                   struct certstore **out, char *err, size_t err_len);
void certstore_close(struct certstore *store);

/* Sets the most rows the certs table keeps (default
 * CERTSTORE_MAX_STORED_LEAVES, at least 1); the excess goes at the next
 * store. For tests. */
void certstore_set_max_stored(struct certstore *store, size_t max_leaves);

/*
 * Returns a leaf for names: from memory, else from SQLite, else freshly minted
 * (and then kept in memory). The leaf is written to SQLite only when
 * is_origin_verified: a name whose origin failed verification (or was not
 * verified, --insecure) is whatever a client chose to send, and must not
 * fill the disk. The caller owns one reference (X509_free()).
 * NULL with err set on failure. A database failure is not fatal: the leaf is
 * minted and served, and the error is logged once until the database works
 * again.
 */
X509 *certstore_get(struct certstore *store, const struct ca_names *names, bool is_origin_verified,
                    char *err, size_t err_len);

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
