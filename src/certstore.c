/*
 * certstore: minted leaves, cached in memory (LRU) over the certs table.
 *
 * Two locks, never held together: lru_lock guards the hash map, the LRU list
 * and the counters; db_lock guards the SQLite connection and its prepared
 * statements. A memory hit therefore never waits behind a disk read or a WAL
 * checkpoint of another thread's miss. Minting and PEM work happen outside
 * both locks; two threads missing the same names may both mint, and the
 * last insert wins, which is cheaper than making one wait for the other.
 *
 * A cached leaf is only served while it is good for the current CA and the
 * current leaf key: a new CA (another fingerprint) or a new leaf-key.pem
 * (another public key) makes every older entry worthless, and one close to
 * expiry is renewed before clients start refusing it.
 *
 * The table is bounded too: only leaves for verified origins are written,
 * and beyond max_stored rows the least recently used go (last_used_us).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "certstore.h"

#include "clock.h"
#include "errmsg.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "db.h"
#include "log.h"

#define CERTSTORE_RENEW_MARGIN_SECONDS (24 * 3600) /* renew a leaf this close to expiry */

struct entry {
    struct entry *hash_next;
    struct entry *newer; /* towards lru_newest */
    struct entry *older; /* towards lru_oldest */
    size_t hash;
    int64_t not_after;
    int64_t touched_us; /* last_used_us written to the table; 0: not stored */
    X509 *cert;         /* one reference owned by the entry */
    char key[];
};

struct certstore {
    const struct ca *ca;

    pthread_mutex_t lru_lock;
    bool has_lru_lock;
    struct entry **buckets;
    size_t bucket_mask; /* bucket count - 1; the count is a power of two */
    struct entry *lru_newest;
    struct entry *lru_oldest;
    size_t count;
    size_t capacity;
    struct certstore_stats stats;

    pthread_mutex_t db_lock;
    bool has_db_lock;
    sqlite3 *db;
    sqlite3_stmt *select_stmt;
    sqlite3_stmt *insert_stmt;
    sqlite3_stmt *touch_stmt;
    sqlite3_stmt *count_stmt;
    sqlite3_stmt *prune_stmt;
    size_t stored;     /* rows in certs, or more: a replaced row counts again */
    size_t max_stored; /* CERTSTORE_MAX_STORED_LEAVES unless a test set it */
    /* Logged already; quiet until the same kind of statement works again.
     * Reads and writes apart: on a full disk lookups still work, and each
     * of them must not re-arm the warning for the next failing store. */
    bool is_read_failing;
    bool is_write_failing;
    char *db_path;
};

/* FNV-1a: keys are short ASCII strings and the map is private. */
static size_t hash_key(const char *key)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *key != '\0'; key++) {
        h ^= (unsigned char)*key;
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

/* Called with db_lock held. Logs the first failure of a run of failures:
 * a broken database must not flood the log once per handshake. */
static void db_failed(struct certstore *store, int rc, const char *what, bool is_write)
{
    bool *is_failing = is_write ? &store->is_write_failing : &store->is_read_failing;

    if (!*is_failing) {
        int primary = rc & 0xff;

        log_warn("certstore: database %s: %s: %s%s; minted certificates are served without "
                 "being stored",
                 store->db_path, what, sqlite3_errmsg(store->db),
                 primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB
                     ? " (the file is corrupt; move it away while tapwire is stopped)"
                     : "");
        *is_failing = true;
    }
}

static void db_succeeded(struct certstore *store, bool is_write)
{
    if (is_write)
        store->is_write_failing = false;
    else
        store->is_read_failing = false;
}

/* Expired rows and rows of another CA can never be served again; dropping
 * them at start keeps the table bounded by what the current CA minted in
 * one leaf lifetime. */
static void purge_stale_rows(struct certstore *store, time_t now)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    rc = sqlite3_prepare_v2(store->db,
                            "DELETE FROM certs WHERE not_after < ?1 OR ca_fingerprint <> ?2", -1,
                            &stmt, NULL);
    if (rc != SQLITE_OK) {
        db_failed(store, rc, "purging old certificates", true);
        goto out;
    }
    if ((rc = sqlite3_bind_int64(stmt, 1, (sqlite3_int64)now)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(stmt, 2, ca_fingerprint(store->ca), -1, SQLITE_STATIC)) !=
            SQLITE_OK) {
        db_failed(store, rc, "purging old certificates", true);
        goto out;
    }
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        db_failed(store, rc, "purging old certificates", true);
        goto out;
    }
out:
    sqlite3_finalize(stmt);
}

/* Called with db_lock held (or before the store is shared). The exact row
 * count, or 0 after a logged error. */
static size_t count_rows(struct certstore *store)
{
    sqlite3_stmt *stmt = store->count_stmt;
    size_t count = 0;
    int rc;

    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 n = sqlite3_column_int64(stmt, 0);

        count = n > 0 ? (size_t)n : 0;
        db_succeeded(store, false);
    } else {
        db_failed(store, rc, "counting certificates", false);
    }
    sqlite3_reset(stmt);
    return count;
}

/* Called with db_lock held after a row was added. Past max_stored, drops
 * the least recently used rows down to a sixteenth below the cap, so the
 * next prune waits for that many new names; one statement deletes at most
 * CERTSTORE_PRUNE_BATCH_ROWS, so a connection thread never stalls on a
 * huge delete. */
static void prune_rows(struct certstore *store)
{
    sqlite3_stmt *stmt = store->prune_stmt;
    size_t slack = store->max_stored / 16;
    size_t excess;
    int rc;

    if (store->stored <= store->max_stored)
        return;
    store->stored = count_rows(store);
    if (store->stored <= store->max_stored)
        return;
    excess = store->stored - store->max_stored + slack;
    if (excess > CERTSTORE_PRUNE_BATCH_ROWS)
        excess = CERTSTORE_PRUNE_BATCH_ROWS;
    if ((rc = sqlite3_bind_int64(stmt, 1, (sqlite3_int64)excess)) != SQLITE_OK ||
        (rc = sqlite3_step(stmt)) != SQLITE_DONE) {
        db_failed(store, rc, "dropping least recently used certificates", true);
    } else {
        size_t gone = (size_t)sqlite3_changes(store->db);

        store->stored = gone < store->stored ? store->stored - gone : 0;
        db_succeeded(store, true);
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

void certstore_set_max_stored(struct certstore *store, size_t max_leaves)
{
    pthread_mutex_lock(&store->db_lock);
    store->max_stored = max_leaves > 0 ? max_leaves : 1;
    pthread_mutex_unlock(&store->db_lock);
}

int certstore_open(const char *db_path, const struct ca *ca, size_t memory_entries,
                   struct certstore **out, char *err, size_t err_len)
{
    struct certstore *store = NULL;
    size_t buckets = 1;
    int rc;
    int ret = -1;

    *out = NULL;
    store = calloc(1, sizeof(*store));
    if (store == NULL) {
        errmsg_set(err, err_len, "certstore: out of memory");
        goto out;
    }
    store->ca = ca;
    store->capacity = memory_entries;
    store->max_stored = CERTSTORE_MAX_STORED_LEAVES;
    if (pthread_mutex_init(&store->lru_lock, NULL) != 0) {
        errmsg_set(err, err_len, "certstore: cannot create a mutex");
        goto out;
    }
    store->has_lru_lock = true;
    if (pthread_mutex_init(&store->db_lock, NULL) != 0) {
        errmsg_set(err, err_len, "certstore: cannot create a mutex");
        goto out;
    }
    store->has_db_lock = true;

    /* About two buckets per entry keeps chains short without rehashing. */
    while (buckets < memory_entries * 2 && buckets <= SIZE_MAX / 4)
        buckets *= 2;
    store->buckets = calloc(buckets, sizeof(store->buckets[0]));
    store->db_path = strdup(db_path);
    if (store->buckets == NULL || store->db_path == NULL) {
        errmsg_set(err, err_len, "certstore: out of memory");
        goto out;
    }
    store->bucket_mask = buckets - 1;

    if (db_open(db_path, &store->db, err, err_len) != 0)
        goto out;
    rc = sqlite3_prepare_v2(store->db,
                            "SELECT ca_fingerprint, not_after, cert_pem FROM certs "
                            "WHERE names_key = ?1",
                            -1, &store->select_stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(store->db,
                                "INSERT OR REPLACE INTO certs "
                                "(names_key, ca_fingerprint, not_after, cert_pem, created_at, "
                                "last_used_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                -1, &store->insert_stmt, NULL);
    if (rc == SQLITE_OK)
        rc =
            sqlite3_prepare_v2(store->db, "UPDATE certs SET last_used_us = ?2 WHERE names_key = ?1",
                               -1, &store->touch_stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(store->db, "SELECT count(*) FROM certs", -1, &store->count_stmt,
                                NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(store->db,
                                "DELETE FROM certs WHERE names_key IN (SELECT names_key FROM certs "
                                "ORDER BY last_used_us LIMIT ?1)",
                                -1, &store->prune_stmt, NULL);
    if (rc != SQLITE_OK) {
        errmsg_set(err, err_len, "database %s: cannot prepare the certificate queries: %s", db_path,
                   sqlite3_errmsg(store->db));
        goto out;
    }
    purge_stale_rows(store, time(NULL));
    store->stored = count_rows(store);

    *out = store;
    store = NULL;
    ret = 0;
out:
    certstore_close(store);
    return ret;
}

void certstore_close(struct certstore *store)
{
    struct entry *e;

    if (store == NULL)
        return;
    e = store->lru_newest;
    while (e != NULL) {
        struct entry *older = e->older;

        X509_free(e->cert);
        free(e);
        e = older;
    }
    sqlite3_finalize(store->prune_stmt);
    sqlite3_finalize(store->count_stmt);
    sqlite3_finalize(store->touch_stmt);
    sqlite3_finalize(store->insert_stmt);
    sqlite3_finalize(store->select_stmt);
    sqlite3_close(store->db);
    if (store->has_db_lock)
        pthread_mutex_destroy(&store->db_lock);
    if (store->has_lru_lock)
        pthread_mutex_destroy(&store->lru_lock);
    free(store->db_path);
    free(store->buckets);
    free(store);
}

/* The rest of this section is called with lru_lock held. */

static struct entry *lru_find(struct certstore *store, const char *key, size_t hash)
{
    struct entry *e = store->buckets[hash & store->bucket_mask];

    while (e != NULL && (e->hash != hash || strcmp(e->key, key) != 0))
        e = e->hash_next;
    return e;
}

static void lru_unlink_list(struct certstore *store, struct entry *e)
{
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        store->lru_newest = e->older;
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        store->lru_oldest = e->newer;
    e->newer = NULL;
    e->older = NULL;
}

static void lru_push_newest(struct certstore *store, struct entry *e)
{
    e->older = store->lru_newest;
    e->newer = NULL;
    if (store->lru_newest != NULL)
        store->lru_newest->newer = e;
    store->lru_newest = e;
    if (store->lru_oldest == NULL)
        store->lru_oldest = e;
}

static void lru_remove(struct certstore *store, struct entry *e)
{
    struct entry **link = &store->buckets[e->hash & store->bucket_mask];

    while (*link != e)
        link = &(*link)->hash_next;
    *link = e->hash_next;
    lru_unlink_list(store, e);
    store->count--;
    X509_free(e->cert);
    free(e);
}

/* Stores cert (taking a reference of its own) as the newest entry, evicting
 * the oldest beyond capacity. Failing to cache is not an error: the caller
 * still has its certificate. */
static void lru_put(struct certstore *store, const char *key, size_t hash, X509 *cert,
                    int64_t not_after, int64_t touched_us)
{
    struct entry *e;
    size_t key_len;

    if (store->capacity == 0 || X509_up_ref(cert) != 1)
        return;
    e = lru_find(store, key, hash);
    if (e != NULL) {
        X509_free(e->cert);
        e->cert = cert;
        e->not_after = not_after;
        e->touched_us = touched_us;
        lru_unlink_list(store, e);
        lru_push_newest(store, e);
        return;
    }
    key_len = strlen(key);
    e = malloc(sizeof(*e) + key_len + 1);
    if (e == NULL) {
        X509_free(cert);
        return;
    }
    memcpy(e->key, key, key_len + 1);
    e->hash = hash;
    e->not_after = not_after;
    e->touched_us = touched_us;
    e->cert = cert;
    e->hash_next = store->buckets[hash & store->bucket_mask];
    store->buckets[hash & store->bucket_mask] = e;
    lru_push_newest(store, e);
    store->count++;
    if (store->count > store->capacity)
        lru_remove(store, store->lru_oldest);
}

static bool is_fresh(int64_t not_after, time_t now)
{
    return not_after - (int64_t)now > CERTSTORE_RENEW_MARGIN_SECONDS;
}

/* *touched_us: the entry's touched_us (0: not in the table). */
static X509 *memory_get(struct certstore *store, const char *key, size_t hash, time_t now,
                        int64_t *touched_us)
{
    X509 *cert = NULL;
    struct entry *e;

    pthread_mutex_lock(&store->lru_lock);
    e = lru_find(store, key, hash);
    if (e != NULL && !is_fresh(e->not_after, now)) {
        lru_remove(store, e);
        e = NULL;
    }
    if (e != NULL && X509_up_ref(e->cert) == 1) {
        cert = e->cert;
        *touched_us = e->touched_us;
        lru_unlink_list(store, e);
        lru_push_newest(store, e);
        store->stats.memory_hits++;
    }
    pthread_mutex_unlock(&store->lru_lock);
    return cert;
}

static void memory_put(struct certstore *store, const char *key, size_t hash, X509 *cert,
                       int64_t not_after, int64_t touched_us, bool is_from_db, int64_t mint_us)
{
    pthread_mutex_lock(&store->lru_lock);
    lru_put(store, key, hash, cert, not_after, touched_us);
    if (is_from_db) {
        store->stats.db_hits++;
    } else {
        store->stats.minted++;
        store->stats.mint_us_total += mint_us > 0 ? (uint64_t)mint_us : 0;
    }
    pthread_mutex_unlock(&store->lru_lock);
}

/* Copies out the PEM of a row still good for the current CA, or returns
 * NULL (no row, stale row, or a database error, which is logged). */
static char *db_lookup(struct certstore *store, const char *key, time_t now, int64_t *not_after,
                       size_t *pem_len)
{
    sqlite3_stmt *stmt = store->select_stmt;
    char *pem = NULL;
    int rc;

    pthread_mutex_lock(&store->db_lock);
    rc = sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        db_failed(store, rc, "looking up a certificate", false);
        goto out;
    }
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *fingerprint = (const char *)sqlite3_column_text(stmt, 0);
        const void *text = sqlite3_column_text(stmt, 2);
        int len = sqlite3_column_bytes(stmt, 2);

        *not_after = sqlite3_column_int64(stmt, 1);
        if (fingerprint != NULL && strcmp(fingerprint, ca_fingerprint(store->ca)) == 0 &&
            is_fresh(*not_after, now) && text != NULL && len > 0) {
            pem = malloc((size_t)len);
            if (pem != NULL) {
                memcpy(pem, text, (size_t)len);
                *pem_len = (size_t)len;
            }
        }
        db_succeeded(store, false);
    } else if (rc == SQLITE_DONE) {
        db_succeeded(store, false);
    } else {
        db_failed(store, rc, "looking up a certificate", false);
    }
out:
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    pthread_mutex_unlock(&store->db_lock);
    return pem;
}

/* A row is only as good as its certificate: it must parse and carry the
 * current leaf key, which changes if leaf-key.pem was recreated. */
static X509 *db_get(struct certstore *store, const char *key, time_t now, int64_t *not_after)
{
    BIO *bio = NULL;
    X509 *cert = NULL;
    char *pem;
    size_t pem_len = 0;

    pem = db_lookup(store, key, now, not_after, &pem_len);
    if (pem == NULL)
        goto out;
    ERR_clear_error();
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio != NULL)
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (cert == NULL) {
        ERR_clear_error();
        log_debug("certstore: unreadable certificate for %s in the database; minting again", key);
        goto out;
    }
    if (EVP_PKEY_eq(X509_get0_pubkey(cert), ca_leaf_key(store->ca)) != 1) {
        ERR_clear_error();
        X509_free(cert);
        cert = NULL;
    }
out:
    BIO_free(bio);
    free(pem);
    return cert;
}

static void memory_set_touched(struct certstore *store, const char *key, size_t hash,
                               int64_t touched_us)
{
    struct entry *e;

    pthread_mutex_lock(&store->lru_lock);
    e = lru_find(store, key, hash);
    if (e != NULL)
        e->touched_us = touched_us;
    pthread_mutex_unlock(&store->lru_lock);
}

/* Records a use of the row for key (the LRU order of the table). Returns 0,
 * or -1 after a logged error. */
static int db_touch(struct certstore *store, const char *key, int64_t now_us)
{
    sqlite3_stmt *stmt = store->touch_stmt;
    int rc;

    pthread_mutex_lock(&store->db_lock);
    if ((rc = sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 2, now_us)) != SQLITE_OK ||
        (rc = sqlite3_step(stmt)) != SQLITE_DONE)
        db_failed(store, rc, "recording a certificate's use", true);
    else
        db_succeeded(store, true);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    pthread_mutex_unlock(&store->db_lock);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Returns 0 when the row is written, else -1 (logged). */
static int db_put(struct certstore *store, const char *key, X509 *cert, int64_t not_after,
                  time_t now, int64_t now_us)
{
    sqlite3_stmt *stmt = store->insert_stmt;
    BIO *bio = NULL;
    char *pem;
    long pem_len;
    int rc = SQLITE_ERROR;

    ERR_clear_error();
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509(bio, cert) != 1 ||
        (pem_len = BIO_get_mem_data(bio, &pem)) <= 0 || pem_len > INT32_MAX) {
        ERR_clear_error();
        log_warn("certstore: cannot encode the certificate for %s; not storing it", key);
        goto out;
    }
    pthread_mutex_lock(&store->db_lock);
    if ((rc = sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(stmt, 2, ca_fingerprint(store->ca), -1, SQLITE_STATIC)) !=
            SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 3, not_after)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(stmt, 4, pem, (int)pem_len, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 5, (sqlite3_int64)now)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 6, now_us)) != SQLITE_OK) {
        db_failed(store, rc, "storing a certificate", true);
    } else if ((rc = sqlite3_step(stmt)) != SQLITE_DONE) {
        db_failed(store, rc, "storing a certificate", true);
    } else {
        db_succeeded(store, true);
        store->stored++;
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc == SQLITE_DONE)
        prune_rows(store);
    pthread_mutex_unlock(&store->db_lock);
out:
    BIO_free(bio);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* notAfter as unix seconds, without timegm(), which POSIX lacks. */
static int cert_not_after(X509 *cert, time_t now, int64_t *out)
{
    ASN1_TIME *from = ASN1_TIME_set(NULL, now);
    int days, secs;
    int rc = -1;

    if (from == NULL || ASN1_TIME_diff(&days, &secs, from, X509_get0_notAfter(cert)) != 1)
        goto out;
    *out = (int64_t)now + (int64_t)days * 86400 + secs;
    rc = 0;
out:
    ASN1_TIME_free(from);
    return rc;
}

static char *names_key_alloc(const struct ca_names *names)
{
    size_t len = 1;
    char *key;
    size_t i;

    for (i = 0; i < names->count; i++)
        len += strlen(names->names[i]) + 1;
    key = malloc(len);
    if (key != NULL && ca_names_key(names, key, len) < 0) {
        free(key);
        key = NULL;
    }
    return key;
}

X509 *certstore_get(struct certstore *store, const struct ca_names *names, bool is_origin_verified,
                    char *err, size_t err_len)
{
    X509 *cert = NULL;
    X509 *ret = NULL;
    char *key = NULL;
    time_t now = time(NULL);
    int64_t now_us = clock_wall_us();
    int64_t not_after = 0;
    int64_t touched_us = 0;
    bool is_from_db = false;
    int64_t started_us;
    size_t hash;

    if (names == NULL || names->count == 0 || names->count > CA_MAX_NAMES) {
        errmsg_set(err, err_len, "certstore: no names to look up");
        goto out;
    }
    key = names_key_alloc(names);
    if (key == NULL) {
        errmsg_set(err, err_len, "certstore: out of memory");
        goto out;
    }
    hash = hash_key(key);

    ret = memory_get(store, key, hash, now, &touched_us);
    if (ret != NULL) {
        /* Minted for an unverified origin and verified now: store it; in
         * the table already: record the use, now and then. */
        if (touched_us == 0 && is_origin_verified) {
            if (cert_not_after(ret, now, &not_after) == 0 &&
                db_put(store, key, ret, not_after, now, now_us) == 0)
                memory_set_touched(store, key, hash, now_us);
            ERR_clear_error();
        } else if (touched_us != 0 &&
                   now_us - touched_us > (int64_t)CERTSTORE_TOUCH_INTERVAL_S * 1000000) {
            if (db_touch(store, key, now_us) == 0)
                memory_set_touched(store, key, hash, now_us);
        }
        goto out;
    }

    started_us = clock_mono_us();
    cert = db_get(store, key, now, &not_after);
    if (cert != NULL) {
        is_from_db = true;
        if (db_touch(store, key, now_us) == 0)
            touched_us = now_us;
    } else {
        cert = ca_mint_leaf(store->ca, names, err, err_len);
        if (cert == NULL)
            goto out;
        ERR_clear_error();
        if (cert_not_after(cert, now, &not_after) != 0) {
            errmsg_set(err, err_len, "certstore: cannot read the validity of a minted certificate");
            ERR_clear_error();
            goto out;
        }
        if (is_origin_verified && db_put(store, key, cert, not_after, now, now_us) == 0)
            touched_us = now_us;
    }
    memory_put(store, key, hash, cert, not_after, touched_us, is_from_db,
               clock_mono_us() - started_us);
    ret = cert;
    cert = NULL;
out:
    X509_free(cert);
    free(key);
    return ret;
}

void certstore_stats(struct certstore *store, struct certstore_stats *out)
{
    pthread_mutex_lock(&store->lru_lock);
    *out = store->stats;
    pthread_mutex_unlock(&store->lru_lock);
}
