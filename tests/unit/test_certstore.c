/*
 * Unit tests for certstore and db: where a leaf comes from (memory, SQLite,
 * minting), when a stored leaf is not served, LRU eviction, schema
 * migration, and concurrent lookups.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

#include "ca.h"
#include "certstore.h"
#include "db.h"
#include "log.h"
#include "testutil.h"

#define THREADS 8
#define GETS_PER_THREAD 200
#define THREAD_NAMES 20

static char dir[64];
static char db_path[128];
static struct ca *ca;
/* Directories a test made besides dir; removed by teardown() even when a
 * fatal assertion ended the test early. */
static char other_dirs[2][64];
static int other_dir_count;

static void make_dir(char *out, size_t out_len)
{
    snprintf(out, out_len, "/tmp/tapwire-test-certstore-XXXXXX");
    if (mkdtemp(out) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

static const char *make_other_dir(void)
{
    char *out = other_dirs[other_dir_count++];

    make_dir(out, sizeof(other_dirs[0]));
    return out;
}

/* Every test starts with a new data directory: a new CA and no database.
 * Run by CUnit around each test, so a failed test still cleans up. */
static void setup(void)
{
    char err[512] = "";

    make_dir(dir, sizeof(dir));
    snprintf(db_path, sizeof(db_path), "%s/%s", dir, DB_FILE);
    if (ca_load_or_create(dir, &ca, err, sizeof(err)) != 0) {
        fprintf(stderr, "ca_load_or_create: %s\n", err);
        abort();
    }
}

static void teardown(void)
{
    ca_free(ca);
    ca = NULL;
    testutil_remove_dir(dir);
    while (other_dir_count > 0)
        testutil_remove_dir(other_dirs[--other_dir_count]);
}

static struct certstore *open_store(const struct ca *with_ca, size_t memory_entries)
{
    struct certstore *store = NULL;
    char err[512] = "";

    if (certstore_open(db_path, with_ca, memory_entries, &store, err, sizeof(err)) != 0)
        fprintf(stderr, "certstore_open: %s\n", err);
    return store;
}

/* A leaf for name as for an origin that passed verification (verified) or
 * not. */
static X509 *get_as(struct certstore *store, const char *name, bool verified)
{
    struct ca_names names;
    char err[512] = "";
    X509 *cert;

    memset(&names, 0, sizeof(names));
    if (ca_names_add(&names, name) != 0)
        return NULL;
    cert = certstore_get(store, &names, verified, err, sizeof(err));
    if (cert == NULL)
        fprintf(stderr, "certstore_get(%s): %s\n", name, err);
    ca_names_clear(&names);
    return cert;
}

static X509 *get(struct certstore *store, const char *name)
{
    return get_as(store, name, true);
}

static bool stats_are(struct certstore *store, unsigned long memory_hits, unsigned long db_hits,
                      unsigned long minted)
{
    struct certstore_stats st;

    certstore_stats(store, &st);
    if (st.memory_hits == memory_hits && st.db_hits == db_hits && st.minted == minted)
        return true;
    fprintf(stderr, "stats: memory %lu db %lu minted %lu, expected %lu %lu %lu\n", st.memory_hits,
            st.db_hits, st.minted, memory_hits, db_hits, minted);
    return false;
}

static bool is_signed_by(X509 *leaf, const struct ca *by)
{
    bool ok = X509_verify(leaf, X509_get0_pubkey(ca_cert(by))) == 1;

    ERR_clear_error();
    return ok;
}

/* Runs one statement on the database behind the store's back. */
static void sql(const char *statement)
{
    sqlite3 *db = NULL;

    CU_ASSERT_FATAL(sqlite3_open(db_path, &db) == SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, statement, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void set_not_after(const char *names_key, long long not_after)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;

    CU_ASSERT_FATAL(sqlite3_open(db_path, &db) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_prepare_v2(db, "UPDATE certs SET not_after = ?1 WHERE names_key = ?2",
                                       -1, &stmt, NULL) == SQLITE_OK);
    sqlite3_bind_int64(stmt, 1, not_after);
    sqlite3_bind_text(stmt, 2, names_key, -1, SQLITE_STATIC);
    CU_ASSERT_EQUAL(sqlite3_step(stmt), SQLITE_DONE);
    CU_ASSERT_EQUAL(sqlite3_changes(db), 1);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

static long long query_int(const char *statement)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    long long value = -1;

    CU_ASSERT_FATAL(sqlite3_open(db_path, &db) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_prepare_v2(db, statement, -1, &stmt, NULL) == SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name)
{
    char from[512], to[512], buf[8192];
    FILE *in, *out;
    size_t n;

    snprintf(from, sizeof(from), "%s/%s", from_dir, name);
    snprintf(to, sizeof(to), "%s/%s", to_dir, name);
    in = fopen(from, "rb");
    out = fopen(to, "wb");
    CU_ASSERT_FATAL(in != NULL && out != NULL);
    n = fread(buf, 1, sizeof(buf), in);
    CU_ASSERT_FATAL(n > 0 && fwrite(buf, 1, n, out) == n);
    fclose(in);
    fclose(out);
}

static void test_first_get_mints_and_second_is_memory_hit(void)
{
    struct certstore *store;
    X509 *a, *b;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT(stats_are(store, 0, 0, 1));
    CU_ASSERT(is_signed_by(a, ca));
    CU_ASSERT_EQUAL(X509_check_host(a, "example.com", 0, 0, NULL), 1);
    b = get(store, "example.com");
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(stats_are(store, 1, 0, 1));
    CU_ASSERT_PTR_EQUAL(a, b);
    X509_free(b);
    X509_free(a);
    certstore_close(store);
}

static void test_returned_leaf_outlives_store(void)
{
    struct certstore *store;
    X509 *a;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    certstore_close(store);
    /* the caller's reference keeps the leaf alive (ASan would object) */
    CU_ASSERT_EQUAL(X509_check_host(a, "example.com", 0, 0, NULL), 1);
    X509_free(a);
}

static void test_name_order_and_case_share_one_entry(void)
{
    struct certstore *store;
    struct ca_names one, two;
    char err[256];
    X509 *a, *b;

    memset(&one, 0, sizeof(one));
    memset(&two, 0, sizeof(two));
    ca_names_add(&one, "WWW.example.com");
    ca_names_add(&one, "example.com");
    ca_names_add(&two, "example.com");
    ca_names_add(&two, "www.example.com");
    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = certstore_get(store, &one, true, err, sizeof(err));
    b = certstore_get(store, &two, true, err, sizeof(err));
    CU_ASSERT_FATAL(a != NULL && b != NULL);
    CU_ASSERT(stats_are(store, 1, 0, 1));
    X509_free(b);
    X509_free(a);
    ca_names_clear(&one);
    ca_names_clear(&two);
    certstore_close(store);
}

static void test_restart_serves_same_leaf_from_db(void)
{
    struct certstore *store;
    X509 *a, *b;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    certstore_close(store);

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    b = get(store, "example.com");
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(stats_are(store, 0, 1, 0));
    CU_ASSERT_EQUAL(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)), 0);
    CU_ASSERT_EQUAL(X509_cmp(a, b), 0);
    X509_free(b);
    b = get(store, "example.com");
    CU_ASSERT(stats_are(store, 1, 1, 0));
    X509_free(b);
    X509_free(a);
    certstore_close(store);
}

static void test_leaf_near_expiry_in_db_is_minted_again(void)
{
    struct certstore *store;
    X509 *a, *b;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    certstore_close(store);
    /* an hour left: not expired yet, but within the renewal margin */
    set_not_after("example.com", (long long)time(NULL) + 3600);

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    b = get(store, "example.com");
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(stats_are(store, 0, 0, 1));
    CU_ASSERT_NOT_EQUAL(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)), 0);
    CU_ASSERT(query_int("SELECT not_after FROM certs WHERE names_key = 'example.com'") >
              (long long)time(NULL) + 100 * 86400);
    X509_free(b);
    X509_free(a);
    certstore_close(store);
}

static void test_expired_leaf_in_db_is_minted_again(void)
{
    struct certstore *store;
    X509 *a, *b;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    certstore_close(store);
    set_not_after("example.com", 1000);

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    b = get(store, "example.com");
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(stats_are(store, 0, 0, 1));
    CU_ASSERT_NOT_EQUAL(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)), 0);
    X509_free(b);
    X509_free(a);
    certstore_close(store);
}

static void test_leaf_of_another_ca_is_minted_again(void)
{
    struct certstore *mine, *theirs;
    struct ca *other = NULL;
    const char *other_dir = make_other_dir();
    char err[512] = "";
    X509 *a, *b;

    CU_ASSERT_FATAL(ca_load_or_create(other_dir, &other, err, sizeof(err)) == 0);
    ca_free(other);
    /* The same leaf key in both, so only the CA tells the leaves apart. */
    copy_file(dir, other_dir, CA_LEAF_KEY_FILE);
    CU_ASSERT_FATAL(ca_load_or_create(other_dir, &other, err, sizeof(err)) == 0);
    CU_ASSERT_FATAL(EVP_PKEY_eq(ca_leaf_key(other), ca_leaf_key(ca)) == 1);
    /* Both open at once, so the row of the first is in the table when the
     * second looks (a store opened later would purge it at start). */
    mine = open_store(ca, 16);
    theirs = open_store(other, 16);
    CU_ASSERT_FATAL(mine != NULL && theirs != NULL);
    a = get(mine, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    b = get(theirs, "example.com");
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(stats_are(theirs, 0, 0, 1));
    CU_ASSERT(is_signed_by(b, other));
    CU_ASSERT(!is_signed_by(b, ca));
    X509_free(b);
    X509_free(a);
    certstore_close(theirs);
    certstore_close(mine);

    /* and after a restart with the other CA */
    mine = open_store(ca, 16);
    CU_ASSERT_FATAL(mine != NULL);
    a = get(mine, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT(stats_are(mine, 0, 0, 1));
    CU_ASSERT(is_signed_by(a, ca));
    X509_free(a);
    certstore_close(mine);
    ca_free(other);
}

static void test_leaf_with_replaced_leaf_key_is_minted_again(void)
{
    struct certstore *store;
    struct ca *reloaded = NULL;
    char path[512], err[512] = "";
    X509 *a;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    X509_free(a);
    certstore_close(store);
    snprintf(path, sizeof(path), "%s/%s", dir, CA_LEAF_KEY_FILE);
    CU_ASSERT_FATAL(unlink(path) == 0);
    CU_ASSERT_FATAL(ca_load_or_create(dir, &reloaded, err, sizeof(err)) == 0);

    store = open_store(reloaded, 16);
    CU_ASSERT_FATAL(store != NULL);
    a = get(store, "example.com");
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT(stats_are(store, 0, 0, 1));
    CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(a), ca_leaf_key(reloaded)), 1);
    X509_free(a);
    certstore_close(store);
    ca_free(reloaded);
}

static void test_lru_evicts_least_recently_used(void)
{
    struct certstore *store;
    const char *order[] = {"a.example", "b.example", "c.example"};
    size_t i;
    X509 *x;

    store = open_store(ca, 2);
    CU_ASSERT_FATAL(store != NULL);
    for (i = 0; i < 3; i++) {
        x = get(store, order[i]);
        CU_ASSERT_FATAL(x != NULL);
        X509_free(x);
    }
    CU_ASSERT(stats_are(store, 0, 0, 3));
    x = get(store, "c.example");
    X509_free(x);
    CU_ASSERT(stats_are(store, 1, 0, 3));
    x = get(store, "a.example"); /* evicted: back from the database */
    CU_ASSERT_FATAL(x != NULL);
    X509_free(x);
    CU_ASSERT(stats_are(store, 1, 1, 3));
    certstore_close(store);
}

static void test_lru_hit_keeps_entry_from_eviction(void)
{
    struct certstore *store;
    X509 *x;

    store = open_store(ca, 2);
    CU_ASSERT_FATAL(store != NULL);
    X509_free(get(store, "a.example"));
    X509_free(get(store, "b.example"));
    X509_free(get(store, "a.example")); /* a is now the newest; b goes next */
    X509_free(get(store, "c.example"));
    CU_ASSERT(stats_are(store, 1, 0, 3));
    x = get(store, "a.example");
    CU_ASSERT_FATAL(x != NULL);
    X509_free(x);
    CU_ASSERT(stats_are(store, 2, 0, 3));
    x = get(store, "b.example");
    CU_ASSERT_FATAL(x != NULL);
    X509_free(x);
    CU_ASSERT(stats_are(store, 2, 1, 3));
    certstore_close(store);
}

static void test_zero_memory_entries_uses_db_only(void)
{
    struct certstore *store;

    store = open_store(ca, 0);
    CU_ASSERT_FATAL(store != NULL);
    X509_free(get(store, "a.example"));
    X509_free(get(store, "a.example"));
    CU_ASSERT(stats_are(store, 0, 1, 1));
    certstore_close(store);
}

static void test_db_failure_still_serves_minted_leaf(void)
{
    struct certstore *store;
    X509 *x;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    sql("DROP TABLE certs");
    x = get(store, "a.example");
    CU_ASSERT_FATAL(x != NULL);
    CU_ASSERT_EQUAL(X509_check_host(x, "a.example", 0, 0, NULL), 1);
    X509_free(x);
    x = get(store, "b.example");
    CU_ASSERT_FATAL(x != NULL);
    X509_free(x);
    CU_ASSERT(stats_are(store, 0, 0, 2));
    certstore_close(store);
}

/* The table is an LRU too: past the cap the least recently used rows go,
 * and a lookup that found a row counts as a use. */
static void test_stored_leaves_are_capped_keeping_the_recently_used(void)
{
    struct certstore *store;

    store = open_store(ca, 0); /* every get reaches the table */
    CU_ASSERT_FATAL(store != NULL);
    certstore_set_max_stored(store, 4);
    X509_free(get(store, "a.example"));
    X509_free(get(store, "b.example"));
    X509_free(get(store, "c.example"));
    X509_free(get(store, "d.example"));
    X509_free(get(store, "a.example")); /* from the table: a is the newest use */
    CU_ASSERT(stats_are(store, 0, 1, 4));
    X509_free(get(store, "e.example"));
    X509_free(get(store, "f.example"));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs"), 4);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs WHERE names_key IN "
                              "('a.example', 'd.example', 'e.example', 'f.example')"),
                    4);
    for (int i = 0; i < 40; i++) {
        char name[32];

        snprintf(name, sizeof(name), "n%d.example", i);
        X509_free(get(store, name));
    }
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs"), 4);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs WHERE names_key = 'n39.example'"), 1);
    certstore_close(store);
}

/* A name whose origin failed verification is the client's choice: served
 * (and kept in memory) but never written; stored once it is verified. */
static void test_leaf_for_unverified_origin_is_not_stored(void)
{
    struct certstore *store;
    X509 *x;

    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    x = get_as(store, "random1.example", false);
    CU_ASSERT_FATAL(x != NULL);
    CU_ASSERT_EQUAL(X509_check_host(x, "random1.example", 0, 0, NULL), 1);
    X509_free(x);
    X509_free(get_as(store, "random2.example", false));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs"), 0);
    X509_free(get_as(store, "random1.example", false));
    CU_ASSERT(stats_are(store, 1, 0, 2));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs"), 0);
    X509_free(get_as(store, "random1.example", true)); /* from memory, now stored */
    CU_ASSERT(stats_are(store, 2, 0, 2));
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs WHERE names_key = 'random1.example'"), 1);
    certstore_close(store);
}

/* A full disk fails every store while lookups still work: the warning must
 * come once, not once per new host. */
static void test_failing_stores_are_logged_once(void)
{
    struct certstore *store;
    char log_path[160];
    char line[1024];
    int warnings = 0;
    FILE *f;
    int fd;

    snprintf(log_path, sizeof(log_path), "%s/log", dir);
    fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    sql("CREATE TRIGGER certs_full BEFORE INSERT ON certs "
        "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END");
    log_init(fd, LOG_INFO);
    for (int i = 0; i < 5; i++) {
        char name[32];

        snprintf(name, sizeof(name), "full%d.example", i);
        X509_free(get(store, name));
    }
    log_init(STDERR_FILENO, LOG_INFO);
    close(fd);
    CU_ASSERT(stats_are(store, 0, 0, 5));
    certstore_close(store);
    f = fopen(log_path, "r");
    CU_ASSERT_FATAL(f != NULL);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "storing a certificate") != NULL)
            warnings++;
    fclose(f);
    CU_ASSERT_EQUAL(warnings, 1);
}

static void test_get_without_names_is_error(void)
{
    struct certstore *store;
    struct ca_names names;
    char err[256] = "";

    memset(&names, 0, sizeof(names));
    store = open_store(ca, 16);
    CU_ASSERT_FATAL(store != NULL);
    CU_ASSERT_PTR_NULL(certstore_get(store, &names, true, err, sizeof(err)));
    CU_ASSERT_NOT_EQUAL(err[0], '\0');
    certstore_close(store);
}

static void test_fresh_db_is_migrated_to_current_version(void)
{
    sqlite3 *db = NULL;
    char err[512] = "";
    struct stat st;

    CU_ASSERT(db_schema_version() >= 1);
    CU_ASSERT_FATAL(db_open(db_path, &db, err, sizeof(err)) == 0);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'certs'"), 1);
    CU_ASSERT_EQUAL(query_int("PRAGMA page_size"), DB_PAGE_SIZE);
    CU_ASSERT_FATAL(stat(db_path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* opening again finds nothing to do */
    CU_ASSERT_FATAL(db_open(db_path, &db, err, sizeof(err)) == 0);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
}

static void test_db_uses_wal_journal(void)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    char err[512] = "";

    CU_ASSERT_FATAL(db_open(db_path, &db, err, sizeof(err)) == 0);
    CU_ASSERT_FATAL(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_step(stmt) == SQLITE_ROW);
    CU_ASSERT_STRING_EQUAL((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    CU_ASSERT_FATAL(sqlite3_prepare_v2(db, "PRAGMA foreign_keys", -1, &stmt, NULL) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_step(stmt) == SQLITE_ROW);
    CU_ASSERT_EQUAL(sqlite3_column_int(stmt, 0), 1);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* A file made before 16 KiB pages keeps its 4 KiB ones (WAL pins the page
 * size) and opens and migrates as before. */
static void test_existing_db_keeps_its_page_size(void)
{
    sqlite3 *db = NULL;
    char err[512] = "";

    CU_ASSERT_FATAL(sqlite3_open(db_path, &db) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_exec(db,
                                 "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; "
                                 "CREATE TABLE before_us (x INTEGER);",
                                 NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    db = NULL;
    CU_ASSERT_FATAL(db_open(db_path, &db, err, sizeof(err)) == 0);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(query_int("PRAGMA page_size"), 4096);
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version());
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'before_us'"), 1);
}

static void test_db_newer_than_binary_is_refused(void)
{
    struct certstore *store = NULL;
    sqlite3 *db = NULL;
    char statement[64], err[512] = "";

    snprintf(statement, sizeof(statement), "PRAGMA user_version = %d", db_schema_version() + 1);
    sql(statement);
    CU_ASSERT_EQUAL(db_open(db_path, &db, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(db);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, db_path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "newer"));
    err[0] = '\0';
    CU_ASSERT_EQUAL(certstore_open(db_path, ca, 16, &store, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(store);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "newer"));
    /* and it was left alone */
    CU_ASSERT_EQUAL(query_int("PRAGMA user_version"), db_schema_version() + 1);
}

static void test_corrupt_db_is_reported_as_corrupt(void)
{
    sqlite3 *db = NULL;
    char err[512] = "";
    char junk[4096];
    FILE *f;

    memset(junk, 'x', sizeof(junk));
    f = fopen(db_path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    fwrite(junk, 1, sizeof(junk), f);
    fclose(f);
    CU_ASSERT_EQUAL(db_open(db_path, &db, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(db);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, db_path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "is corrupt"));
}

static void test_db_in_missing_directory_is_error(void)
{
    sqlite3 *db = NULL;
    char err[512] = "";

    CU_ASSERT_EQUAL(db_open("/nonexistent-tapwire-dir/tapwire.db", &db, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(db);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent-tapwire-dir/tapwire.db"));
}

struct worker {
    struct certstore *store;
    int seed;
    int failures;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    char name[64];
    int i;

    for (i = 0; i < GETS_PER_THREAD; i++) {
        X509 *x;

        snprintf(name, sizeof(name), "host%d.example.com", (i * 7 + w->seed) % THREAD_NAMES);
        x = get(w->store, name);
        if (x == NULL ||
            X509_check_host(x, name, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL) != 1)
            w->failures++;
        X509_free(x);
    }
    ERR_clear_error();
    return NULL;
}

static void test_concurrent_gets_return_leaves_for_the_asked_names(void)
{
    struct certstore *store;
    struct worker workers[THREADS];
    pthread_t threads[THREADS];
    struct certstore_stats st;
    int failures = 0;
    int i;

    /* smaller than the name count, so memory, database and minting all run */
    store = open_store(ca, 8);
    CU_ASSERT_FATAL(store != NULL);
    for (i = 0; i < THREADS; i++) {
        workers[i].store = store;
        workers[i].seed = i * 3;
        workers[i].failures = 0;
        CU_ASSERT_FATAL(pthread_create(&threads[i], NULL, worker_run, &workers[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        failures += workers[i].failures;
    }
    CU_ASSERT_EQUAL(failures, 0);
    certstore_stats(store, &st);
    CU_ASSERT_EQUAL(st.memory_hits + st.db_hits + st.minted, THREADS * GETS_PER_THREAD);
    CU_ASSERT(st.minted >= THREAD_NAMES);
    CU_ASSERT_EQUAL(query_int("SELECT count(*) FROM certs"), THREAD_NAMES);
    certstore_close(store);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("certstore", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "first_get_mints_and_second_is_memory_hit",
                     test_first_get_mints_and_second_is_memory_hit) ||
        !CU_add_test(suite, "returned_leaf_outlives_store", test_returned_leaf_outlives_store) ||
        !CU_add_test(suite, "name_order_and_case_share_one_entry",
                     test_name_order_and_case_share_one_entry) ||
        !CU_add_test(suite, "restart_serves_same_leaf_from_db",
                     test_restart_serves_same_leaf_from_db) ||
        !CU_add_test(suite, "leaf_near_expiry_in_db_is_minted_again",
                     test_leaf_near_expiry_in_db_is_minted_again) ||
        !CU_add_test(suite, "expired_leaf_in_db_is_minted_again",
                     test_expired_leaf_in_db_is_minted_again) ||
        !CU_add_test(suite, "leaf_of_another_ca_is_minted_again",
                     test_leaf_of_another_ca_is_minted_again) ||
        !CU_add_test(suite, "leaf_with_replaced_leaf_key_is_minted_again",
                     test_leaf_with_replaced_leaf_key_is_minted_again) ||
        !CU_add_test(suite, "lru_evicts_least_recently_used",
                     test_lru_evicts_least_recently_used) ||
        !CU_add_test(suite, "lru_hit_keeps_entry_from_eviction",
                     test_lru_hit_keeps_entry_from_eviction) ||
        !CU_add_test(suite, "zero_memory_entries_uses_db_only",
                     test_zero_memory_entries_uses_db_only) ||
        !CU_add_test(suite, "db_failure_still_serves_minted_leaf",
                     test_db_failure_still_serves_minted_leaf) ||
        !CU_add_test(suite, "get_without_names_is_error", test_get_without_names_is_error) ||
        !CU_add_test(suite, "stored_leaves_are_capped_keeping_the_recently_used",
                     test_stored_leaves_are_capped_keeping_the_recently_used) ||
        !CU_add_test(suite, "leaf_for_unverified_origin_is_not_stored",
                     test_leaf_for_unverified_origin_is_not_stored) ||
        !CU_add_test(suite, "failing_stores_are_logged_once",
                     test_failing_stores_are_logged_once) ||
        !CU_add_test(suite, "concurrent_gets_return_leaves_for_the_asked_names",
                     test_concurrent_gets_return_leaves_for_the_asked_names))
        goto fail;
    suite = CU_add_suite_with_setup_and_teardown("db", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "fresh_db_is_migrated_to_current_version",
                     test_fresh_db_is_migrated_to_current_version) ||
        !CU_add_test(suite, "db_uses_wal_journal", test_db_uses_wal_journal) ||
        !CU_add_test(suite, "existing_db_keeps_its_page_size",
                     test_existing_db_keeps_its_page_size) ||
        !CU_add_test(suite, "db_newer_than_binary_is_refused",
                     test_db_newer_than_binary_is_refused) ||
        !CU_add_test(suite, "corrupt_db_is_reported_as_corrupt",
                     test_corrupt_db_is_reported_as_corrupt) ||
        !CU_add_test(suite, "db_in_missing_directory_is_error",
                     test_db_in_missing_directory_is_error))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
