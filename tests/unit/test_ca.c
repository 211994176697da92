/*
 * Unit tests for ca: CA creation and loading in a temporary data directory,
 * refusal of damaged or exposed files, leaf minting checked with OpenSSL's
 * own verifier, and the name set helpers.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "testutil.h"

static char shared_dir[64];
static struct ca *shared_ca;
/* Directories of the running test, removed by test_teardown() even when a
 * fatal assertion ended the test early. */
static char test_dirs[2][64];
static int test_dir_count;

static void make_dir(char *out, size_t out_len)
{
    snprintf(out, out_len, "/tmp/tapwire-test-ca-XXXXXX");
    if (mkdtemp(out) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

/* The data directories are flat, so one level of unlinking empties them. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static const char *new_dir(void)
{
    char *out = test_dirs[test_dir_count++];

    make_dir(out, sizeof(test_dirs[0]));
    return out;
}

static void test_teardown(void)
{
    while (test_dir_count > 0)
        remove_dir(test_dirs[--test_dir_count]);
}

static void file_path(char *out, size_t out_len, const char *dir, const char *name)
{
    snprintf(out, out_len, "%s/%s", dir, name);
}

static size_t read_all(const char *path, unsigned char *buf, size_t len)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    if (f == NULL)
        return 0;
    n = fread(buf, 1, len, f);
    fclose(f);
    return n;
}

static void write_all(const char *path, const char *data)
{
    FILE *f = fopen(path, "wb");

    CU_ASSERT_FATAL(f != NULL);
    fputs(data, f);
    fclose(f);
}

static mode_t file_mode(const char *dir, const char *name)
{
    char path[512];
    struct stat st;

    file_path(path, sizeof(path), dir, name);
    if (stat(path, &st) != 0)
        return (mode_t)-1;
    return st.st_mode & 07777;
}

static bool file_exists(const char *dir, const char *name)
{
    char path[512];
    struct stat st;

    file_path(path, sizeof(path), dir, name);
    return lstat(path, &st) == 0;
}

static int suite_init(void)
{
    char err[512];

    make_dir(shared_dir, sizeof(shared_dir));
    if (ca_load_or_create(shared_dir, &shared_ca, err, sizeof(err)) != 0) {
        fprintf(stderr, "ca_load_or_create: %s\n", err);
        return -1;
    }
    return 0;
}

static int suite_cleanup(void)
{
    ca_free(shared_ca);
    remove_dir(shared_dir);
    return 0;
}

static void names_set(struct ca_names *names, const char *const *list, size_t count)
{
    size_t i;

    memset(names, 0, sizeof(*names));
    for (i = 0; i < count; i++)
        CU_ASSERT_FATAL(ca_names_add(names, list[i]) == 0);
}

static X509 *mint(const char *const *list, size_t count)
{
    struct ca_names names;
    char err[256] = "";
    X509 *leaf;

    names_set(&names, list, count);
    leaf = ca_mint_leaf(shared_ca, &names, err, sizeof(err));
    if (leaf == NULL)
        fprintf(stderr, "ca_mint_leaf: %s\n", err);
    ca_names_clear(&names);
    return leaf;
}

/* X509_verify_cert with a store holding only the CA, as a TLS client
 * checking a server would (purpose sslserver), for host or ip. */
static int verify_leaf(X509 *leaf, X509 *ca, const char *host, const char *ip)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_VERIFY_PARAM *param;
    int ok = -1;

    if (store == NULL || ctx == NULL || X509_STORE_add_cert(store, ca) != 1 ||
        X509_STORE_CTX_init(ctx, store, leaf, NULL) != 1)
        goto out;
    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    if (host != NULL && X509_VERIFY_PARAM_set1_host(param, host, 0) != 1)
        goto out;
    if (ip != NULL && X509_VERIFY_PARAM_set1_ip_asc(param, ip) != 1)
        goto out;
    ok = X509_verify_cert(ctx);
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return ok;
}

static void test_first_run_creates_files_with_private_key_modes(void)
{
    CU_ASSERT_EQUAL(file_mode(shared_dir, CA_CERT_FILE), 0644);
    CU_ASSERT_EQUAL(file_mode(shared_dir, CA_KEY_FILE), 0600);
    CU_ASSERT_EQUAL(file_mode(shared_dir, CA_LEAF_KEY_FILE), 0600);
}

static void test_first_run_leaves_no_temporary_files(void)
{
    DIR *d = opendir(shared_dir);
    struct dirent *de;
    int count = 0;

    CU_ASSERT_FATAL(d != NULL);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.')
            count++;
    }
    closedir(d);
    CU_ASSERT_EQUAL(count, 3);
}

static void test_ca_cert_is_critical_ca_for_signing_certs(void)
{
    X509 *cert = ca_cert(shared_ca);
    BASIC_CONSTRAINTS *bc = NULL;
    X509_NAME *subject = X509_get_subject_name(cert);
    char cn[128] = "", org[128] = "";
    int crit = -1;
    int idx;

    bc = X509_get_ext_d2i(cert, NID_basic_constraints, &crit, NULL);
    CU_ASSERT_FATAL(bc != NULL);
    CU_ASSERT(bc->ca != 0);
    CU_ASSERT_EQUAL(crit, 1);
    BASIC_CONSTRAINTS_free(bc);

    idx = X509_get_ext_by_NID(cert, NID_key_usage, -1);
    CU_ASSERT_FATAL(idx >= 0);
    CU_ASSERT_EQUAL(X509_EXTENSION_get_critical(X509_get_ext(cert, idx)), 1);
    CU_ASSERT_EQUAL(X509_get_key_usage(cert), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    CU_ASSERT_PTR_NOT_NULL(X509_get0_subject_key_id(cert));

    X509_NAME_get_text_by_NID(subject, NID_commonName, cn, sizeof(cn));
    X509_NAME_get_text_by_NID(subject, NID_organizationName, org, sizeof(org));
    CU_ASSERT_EQUAL(strlen(cn), strlen("tapwire CA ") + 8);
    CU_ASSERT_EQUAL(strncmp(cn, "tapwire CA ", strlen("tapwire CA ")), 0);
    CU_ASSERT_STRING_EQUAL(org, "tapwire");
    CU_ASSERT_EQUAL(X509_get_version(cert), X509_VERSION_3);
    CU_ASSERT_EQUAL(X509_check_issued(cert, cert), X509_V_OK);
    CU_ASSERT_EQUAL(X509_verify(cert, X509_get0_pubkey(cert)), 1);
    CU_ASSERT(EVP_PKEY_is_a(X509_get0_pubkey(cert), "EC"));
    CU_ASSERT(EVP_PKEY_is_a(ca_leaf_key(shared_ca), "EC"));
    CU_ASSERT_EQUAL(EVP_PKEY_get_bits(ca_leaf_key(shared_ca)), 256);
}

static void test_ca_serial_is_positive_and_128_bits(void)
{
    const ASN1_INTEGER *serial = X509_get0_serialNumber(ca_cert(shared_ca));
    BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);

    CU_ASSERT_FATAL(bn != NULL);
    CU_ASSERT(!BN_is_negative(bn));
    CU_ASSERT_EQUAL(BN_num_bytes(bn), 16);
    BN_free(bn);
}

static void test_ca_validity_covers_ten_years(void)
{
    int days = 0, secs = 0;

    CU_ASSERT(X509_cmp_current_time(X509_get0_notBefore(ca_cert(shared_ca))) < 0);
    CU_ASSERT_FATAL(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(ca_cert(shared_ca))));
    CU_ASSERT(days >= CA_VALIDITY_DAYS - 1 && days <= CA_VALIDITY_DAYS);
}

static void test_reload_gives_same_ca_and_leaf_key(void)
{
    struct ca *again = NULL;
    char err[512] = "";

    CU_ASSERT_FATAL(ca_load_or_create(shared_dir, &again, err, sizeof(err)) == 0);
    CU_ASSERT_STRING_EQUAL(ca_fingerprint(again), ca_fingerprint(shared_ca));
    CU_ASSERT_EQUAL(EVP_PKEY_eq(ca_leaf_key(again), ca_leaf_key(shared_ca)), 1);
    CU_ASSERT_EQUAL(X509_cmp(ca_cert(again), ca_cert(shared_ca)), 0);
    ca_free(again);
}

static void test_fingerprint_is_sha256_of_cert_der(void)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    unsigned int len = 0;
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    unsigned int i;

    CU_ASSERT_FATAL(X509_digest(ca_cert(shared_ca), EVP_sha256(), md, &len) == 1);
    for (i = 0; i < len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    CU_ASSERT_STRING_EQUAL(ca_fingerprint(shared_ca), hex);
}

static void test_cert_path_is_in_data_dir(void)
{
    char path[512];

    file_path(path, sizeof(path), shared_dir, CA_CERT_FILE);
    CU_ASSERT_STRING_EQUAL(ca_cert_path(shared_ca), path);
}

static void test_corrupt_cert_is_error_and_file_unchanged(void)
{
    static const char garbage[] = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                                  "-----END CERTIFICATE-----\n";
    const char *dir = new_dir();
    char path[512], err[512] = "";
    unsigned char buf[256];
    struct ca *ca = NULL;
    size_t n;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_CERT_FILE);
    write_all(path, garbage);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(ca);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "corrupt"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "move it away"));
    n = read_all(path, buf, sizeof(buf));
    CU_ASSERT_EQUAL(n, strlen(garbage));
    CU_ASSERT_EQUAL(memcmp(buf, garbage, strlen(garbage)), 0);
}

static void test_key_readable_by_others_is_refused(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_KEY_FILE);
    CU_ASSERT_FATAL(chmod(path, 0644) == 0);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(ca);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "chmod 600"));
    CU_ASSERT_EQUAL(file_mode(dir, CA_KEY_FILE), 0644);
}

/* A key file another user owns is that user's to rewrite, mode 0600 or
 * not. Making one takes root; elsewhere the test has nothing to check. */
static void test_key_owned_by_another_user_is_refused(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_KEY_FILE);
    if (chown(path, geteuid() == 65534 ? 65533 : 65534, (gid_t)-1) != 0) {
        fprintf(stderr, "(not root: cannot give a file to another user; skipped) ");
        return;
    }
    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(ca);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "owned by another user"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "chown"));
}

static void test_leaf_key_readable_by_others_is_refused(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_LEAF_KEY_FILE);
    CU_ASSERT_FATAL(chmod(path, 0640) == 0);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "chmod 600"));
}

static void test_cert_without_key_is_error_and_nothing_created(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_KEY_FILE);
    CU_ASSERT_FATAL(unlink(path) == 0);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing"));
    CU_ASSERT(!file_exists(dir, CA_KEY_FILE));
    CU_ASSERT(file_exists(dir, CA_CERT_FILE));
}

static void test_key_without_cert_is_error(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_CERT_FILE);
    CU_ASSERT_FATAL(unlink(path) == 0);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT(!file_exists(dir, CA_CERT_FILE));
}

static void test_key_of_another_ca_is_error(void)
{
    const char *dir = new_dir();
    const char *other = new_dir();
    char path[512], other_path[512], err[512] = "";
    unsigned char key[4096];
    struct ca *ca = NULL;
    size_t n;
    int fd;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    CU_ASSERT_FATAL(ca_load_or_create(other, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_KEY_FILE);
    file_path(other_path, sizeof(other_path), other, CA_KEY_FILE);
    n = read_all(other_path, key, sizeof(key));
    CU_ASSERT_FATAL(n > 0);
    fd = open(path, O_WRONLY | O_TRUNC);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, key, n) == (ssize_t)n);
    close(fd);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "does not match"));
}

static void test_missing_leaf_key_is_created_for_existing_ca(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL, *again = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    file_path(path, sizeof(path), dir, CA_LEAF_KEY_FILE);
    CU_ASSERT_FATAL(unlink(path) == 0);

    CU_ASSERT_FATAL(ca_load_or_create(dir, &again, err, sizeof(err)) == 0);
    CU_ASSERT_STRING_EQUAL(ca_fingerprint(again), ca_fingerprint(ca));
    CU_ASSERT_NOT_EQUAL(EVP_PKEY_eq(ca_leaf_key(again), ca_leaf_key(ca)), 1);
    CU_ASSERT_EQUAL(file_mode(dir, CA_LEAF_KEY_FILE), 0600);
    ca_free(again);
    ca_free(ca);
}

static void test_leaf_key_without_ca_is_error(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;

    CU_ASSERT_FATAL(ca_load_or_create(dir, &ca, err, sizeof(err)) == 0);
    ca_free(ca);
    ca = NULL;
    file_path(path, sizeof(path), dir, CA_CERT_FILE);
    CU_ASSERT_FATAL(unlink(path) == 0);
    file_path(path, sizeof(path), dir, CA_KEY_FILE);
    CU_ASSERT_FATAL(unlink(path) == 0);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT(!file_exists(dir, CA_CERT_FILE));
}

static void test_dangling_symlink_is_not_replaced(void)
{
    const char *dir = new_dir();
    char path[512], err[512] = "";
    struct ca *ca = NULL;
    struct stat st;

    file_path(path, sizeof(path), dir, CA_CERT_FILE);
    CU_ASSERT_FATAL(symlink("/nonexistent/tapwire-ca.pem", path) == 0);

    CU_ASSERT_EQUAL(ca_load_or_create(dir, &ca, err, sizeof(err)), -1);
    CU_ASSERT_FATAL(lstat(path, &st) == 0);
    CU_ASSERT(S_ISLNK(st.st_mode));
}

static void test_leaf_has_names_as_dns_and_ip_sans(void)
{
    static const char *const list[] = {"www.example.com", "example.com", "10.1.1.1", "::1"};
    static const unsigned char v4[4] = {10, 1, 1, 1};
    static const unsigned char v6[16] = {[15] = 1};
    X509 *leaf = mint(list, 4);
    GENERAL_NAMES *gens;
    const GENERAL_NAME *gen;

    CU_ASSERT_FATAL(leaf != NULL);
    gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    CU_ASSERT_FATAL(gens != NULL);
    CU_ASSERT_FATAL(sk_GENERAL_NAME_num(gens) == 4);

    gen = sk_GENERAL_NAME_value(gens, 0);
    CU_ASSERT_EQUAL(gen->type, GEN_DNS);
    CU_ASSERT_STRING_EQUAL((const char *)ASN1_STRING_get0_data(gen->d.dNSName), "www.example.com");
    gen = sk_GENERAL_NAME_value(gens, 1);
    CU_ASSERT_EQUAL(gen->type, GEN_DNS);
    CU_ASSERT_STRING_EQUAL((const char *)ASN1_STRING_get0_data(gen->d.dNSName), "example.com");
    gen = sk_GENERAL_NAME_value(gens, 2);
    CU_ASSERT_EQUAL(gen->type, GEN_IPADD);
    CU_ASSERT_EQUAL(ASN1_STRING_length(gen->d.iPAddress), 4);
    CU_ASSERT_EQUAL(memcmp(ASN1_STRING_get0_data(gen->d.iPAddress), v4, 4), 0);
    gen = sk_GENERAL_NAME_value(gens, 3);
    CU_ASSERT_EQUAL(gen->type, GEN_IPADD);
    CU_ASSERT_EQUAL(ASN1_STRING_length(gen->d.iPAddress), 16);
    CU_ASSERT_EQUAL(memcmp(ASN1_STRING_get0_data(gen->d.iPAddress), v6, 16), 0);
    GENERAL_NAMES_free(gens);
    X509_free(leaf);
}

static void test_leaf_is_short_lived_server_cert_named_by_first_name(void)
{
    static const char *const list[] = {"www.example.com", "example.com"};
    X509 *leaf = mint(list, 2);
    BASIC_CONSTRAINTS *bc;
    const ASN1_OCTET_STRING *akid;
    char cn[128] = "";
    int crit = -1;
    int days = 0, secs = 0;
    int idx;

    CU_ASSERT_FATAL(leaf != NULL);
    X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn));
    CU_ASSERT_STRING_EQUAL(cn, "www.example.com");
    CU_ASSERT_EQUAL(
        X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(ca_cert(shared_ca))), 0);
    CU_ASSERT_EQUAL(X509_get_version(leaf), X509_VERSION_3);

    CU_ASSERT(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE);
    CU_ASSERT_EQUAL(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER);
    CU_ASSERT_EQUAL(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
    idx = X509_get_ext_by_NID(leaf, NID_key_usage, -1);
    CU_ASSERT_FATAL(idx >= 0);
    CU_ASSERT_EQUAL(X509_EXTENSION_get_critical(X509_get_ext(leaf, idx)), 1);
    bc = X509_get_ext_d2i(leaf, NID_basic_constraints, &crit, NULL);
    CU_ASSERT_FATAL(bc != NULL);
    CU_ASSERT_EQUAL(bc->ca, 0);
    CU_ASSERT_EQUAL(crit, 1);
    BASIC_CONSTRAINTS_free(bc);

    CU_ASSERT_PTR_NOT_NULL(X509_get0_subject_key_id(leaf));
    akid = X509_get0_authority_key_id(leaf);
    CU_ASSERT_FATAL(akid != NULL);
    CU_ASSERT_EQUAL(ASN1_OCTET_STRING_cmp(akid, X509_get0_subject_key_id(ca_cert(shared_ca))), 0);
    CU_ASSERT_EQUAL(EVP_PKEY_eq(X509_get0_pubkey(leaf), ca_leaf_key(shared_ca)), 1);

    CU_ASSERT(X509_cmp_current_time(X509_get0_notBefore(leaf)) < 0);
    CU_ASSERT_FATAL(
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)));
    CU_ASSERT(days < 200);
    CU_ASSERT_FATAL(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(leaf)));
    CU_ASSERT(days >= CA_LEAF_VALIDITY_DAYS - 1 && days <= CA_LEAF_VALIDITY_DAYS);
    X509_free(leaf);
}

static void test_leaf_verifies_against_ca_for_its_names_only(void)
{
    static const char *const list[] = {"www.example.com", "example.com", "10.1.1.1", "::1"};
    X509 *leaf = mint(list, 4);
    X509 *ca = ca_cert(shared_ca);

    CU_ASSERT_FATAL(leaf != NULL);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca, "example.com", NULL), 1);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca, "www.example.com", NULL), 1);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca, "other.org", NULL), 0);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca, NULL, "10.1.1.1"), 1);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca, NULL, "::1"), 1);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca, NULL, "10.1.1.2"), 0);
    X509_free(leaf);
}

static void test_leaf_does_not_verify_against_another_ca(void)
{
    static const char *const list[] = {"example.com"};
    const char *dir = new_dir();
    char err[512] = "";
    struct ca *other = NULL;
    X509 *leaf = mint(list, 1);

    CU_ASSERT_FATAL(leaf != NULL);
    CU_ASSERT_FATAL(ca_load_or_create(dir, &other, err, sizeof(err)) == 0);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca_cert(other), "example.com", NULL), 0);
    ca_free(other);
    X509_free(leaf);
}

static void test_wildcard_leaf_verifies_for_subdomain(void)
{
    static const char *const list[] = {"*.example.net"};
    X509 *leaf = mint(list, 1);

    CU_ASSERT_FATAL(leaf != NULL);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca_cert(shared_ca), "a.example.net", NULL), 1);
    CU_ASSERT_EQUAL(verify_leaf(leaf, ca_cert(shared_ca), "a.b.example.net", NULL), 0);
    X509_free(leaf);
}

static void test_long_first_name_truncates_cn_but_not_san(void)
{
    char name[CA_MAX_NAME_BYTES + 1];
    const char *list[1] = {name};
    char cn[128] = "";
    X509 *leaf;

    memset(name, 'a', 100);
    strcpy(name + 100, ".example.com");
    leaf = mint(list, 1);
    CU_ASSERT_FATAL(leaf != NULL);
    X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn));
    CU_ASSERT_EQUAL(strlen(cn), 64);
    CU_ASSERT_EQUAL(strncmp(cn, name, 64), 0);
    CU_ASSERT_EQUAL(X509_check_host(leaf, name, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL), 1);
    X509_free(leaf);
}

static void test_leaf_serials_are_random_and_positive(void)
{
    static const char *const list[] = {"example.com"};
    X509 *a = mint(list, 1);
    X509 *b = mint(list, 1);
    BIGNUM *bn;

    CU_ASSERT_FATAL(a != NULL && b != NULL);
    CU_ASSERT_NOT_EQUAL(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)), 0);
    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(a), NULL);
    CU_ASSERT_FATAL(bn != NULL);
    CU_ASSERT(!BN_is_negative(bn));
    CU_ASSERT_EQUAL(BN_num_bytes(bn), 16);
    BN_free(bn);
    X509_free(a);
    X509_free(b);
}

static void test_mint_without_names_is_error(void)
{
    struct ca_names names;
    char err[256] = "";

    memset(&names, 0, sizeof(names));
    CU_ASSERT_PTR_NULL(ca_mint_leaf(shared_ca, &names, err, sizeof(err)));
    CU_ASSERT_NOT_EQUAL(err[0], '\0');
}

static void test_names_add_rejects_empty_long_and_bad_bytes(void)
{
    struct ca_names names;
    char long_name[CA_MAX_NAME_BYTES + 2];
    char max_name[CA_MAX_NAME_BYTES + 1];

    memset(&names, 0, sizeof(names));
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    memset(max_name, 'a', sizeof(max_name) - 1);
    max_name[sizeof(max_name) - 1] = '\0';

    CU_ASSERT_EQUAL(ca_names_add(&names, ""), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, NULL), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, long_name), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, "exa mple.com"), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, "example.com/"), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, "ex\xc3\xa4mple.com"), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, "example.com\n"), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, "[::1]"), -1);
    CU_ASSERT_EQUAL(ca_names_add(&names, "example.com:443"), -1);
    CU_ASSERT_EQUAL(names.count, 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, max_name), 0);
    CU_ASSERT_EQUAL(names.count, 1);
    ca_names_clear(&names);
}

static void test_names_add_accepts_wildcards_underscores_and_ips(void)
{
    struct ca_names names;

    memset(&names, 0, sizeof(names));
    CU_ASSERT_EQUAL(ca_names_add(&names, "*.example.com"), 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, "_dmarc.example-1.com"), 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, "192.0.2.1"), 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, "2001:DB8:0:0:0:0:0:1"), 0);
    CU_ASSERT_FATAL(names.count == 4);
    /* IPv6 literals are kept in one canonical spelling. */
    CU_ASSERT_STRING_EQUAL(names.names[3], "2001:db8::1");
    CU_ASSERT_EQUAL(ca_names_add(&names, "2001:db8::0:1"), 0);
    CU_ASSERT_EQUAL(names.count, 4);
    ca_names_clear(&names);
    CU_ASSERT_EQUAL(names.count, 0);
}

static void test_names_add_dedupes_case_insensitively(void)
{
    struct ca_names names;

    memset(&names, 0, sizeof(names));
    CU_ASSERT_EQUAL(ca_names_add(&names, "Example.COM"), 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, "example.com"), 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, "EXAMPLE.com"), 0);
    CU_ASSERT_EQUAL(ca_names_add(&names, "www.example.com"), 0);
    CU_ASSERT_FATAL(names.count == 2);
    CU_ASSERT_STRING_EQUAL(names.names[0], "Example.COM");
    CU_ASSERT_STRING_EQUAL(names.names[1], "www.example.com");
    ca_names_clear(&names);
}

static void test_names_add_refuses_when_full(void)
{
    struct ca_names names;
    char name[32];
    int i;

    memset(&names, 0, sizeof(names));
    for (i = 0; i < CA_MAX_NAMES; i++) {
        snprintf(name, sizeof(name), "h%d.example.com", i);
        CU_ASSERT_EQUAL(ca_names_add(&names, name), 0);
    }
    CU_ASSERT_EQUAL(ca_names_add(&names, "one-more.example.com"), -1);
    CU_ASSERT_EQUAL(names.count, CA_MAX_NAMES);
    /* A name already present is still "added". */
    CU_ASSERT_EQUAL(ca_names_add(&names, "H0.example.com"), 0);
    ca_names_clear(&names);
}

static void test_names_key_is_lowercase_sorted_and_comma_joined(void)
{
    struct ca_names a, b;
    char key_a[256], key_b[256];

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    ca_names_add(&a, "WWW.example.com");
    ca_names_add(&a, "example.com");
    ca_names_add(&a, "10.1.1.1");
    ca_names_add(&a, "B.example.com");
    ca_names_add(&b, "b.example.com");
    ca_names_add(&b, "10.1.1.1");
    ca_names_add(&b, "www.EXAMPLE.com");
    ca_names_add(&b, "Example.com");

    CU_ASSERT_EQUAL(ca_names_key(&a, key_a, sizeof(key_a)),
                    (int)strlen("10.1.1.1,b.example.com,example.com,www.example.com"));
    CU_ASSERT_STRING_EQUAL(key_a, "10.1.1.1,b.example.com,example.com,www.example.com");
    CU_ASSERT(ca_names_key(&b, key_b, sizeof(key_b)) > 0);
    CU_ASSERT_STRING_EQUAL(key_a, key_b);
    /* the order the caller added the names in is left alone */
    CU_ASSERT_STRING_EQUAL(a.names[0], "WWW.example.com");
    ca_names_clear(&a);
    ca_names_clear(&b);
}

static void test_names_key_reports_short_buffer(void)
{
    struct ca_names names;
    char key[16];

    memset(&names, 0, sizeof(names));
    ca_names_add(&names, "example.com");
    ca_names_add(&names, "www.example.com");
    CU_ASSERT_EQUAL(ca_names_key(&names, key, sizeof(key)), -1);
    CU_ASSERT_EQUAL(ca_names_key(&names, key, 12), -1);
    ca_names_clear(&names);
    ca_names_add(&names, "example.com");
    CU_ASSERT_EQUAL(ca_names_key(&names, key, 12), 11); /* exactly fits with its NUL */
    CU_ASSERT_STRING_EQUAL(key, "example.com");
    ca_names_clear(&names);
}

/* A self-signed stand-in for an origin's certificate. */
static X509 *make_upstream(const char *cn, const char *san)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_get_subject_name(x);
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    CU_ASSERT_FATAL(key != NULL && x != NULL);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_ASC,
                               (const unsigned char *)"Origin Inc", -1, -1, 0);
    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC, (const unsigned char *)cn, -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    if (san != NULL) {
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        CU_ASSERT_FATAL(ext != NULL);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    CU_ASSERT_FATAL(X509_sign(x, key, EVP_sha256()) > 0);
    EVP_PKEY_free(key);
    return x;
}

static void test_names_add_from_cert_copies_cn_and_all_sans(void)
{
    X509 *up =
        make_upstream("origin.example", "DNS:a.example,DNS:*.b.example,IP:192.0.2.7,IP:2001:db8::1,"
                                        "email:x@example.com,DNS:A.EXAMPLE");
    struct ca_names names;

    memset(&names, 0, sizeof(names));
    CU_ASSERT_EQUAL(ca_names_add(&names, "sni.example"), 0);
    CU_ASSERT_EQUAL(ca_names_add_from_cert(&names, up), 0);
    CU_ASSERT_FATAL(names.count == 6);
    CU_ASSERT_STRING_EQUAL(names.names[0], "sni.example");
    CU_ASSERT_STRING_EQUAL(names.names[1], "origin.example");
    CU_ASSERT_STRING_EQUAL(names.names[2], "a.example");
    CU_ASSERT_STRING_EQUAL(names.names[3], "*.b.example");
    CU_ASSERT_STRING_EQUAL(names.names[4], "192.0.2.7");
    CU_ASSERT_STRING_EQUAL(names.names[5], "2001:db8::1");
    ca_names_clear(&names);
    X509_free(up);
}

static void test_names_add_from_cert_skips_cn_that_is_not_a_host(void)
{
    X509 *up = make_upstream("Origin Inc Server", "DNS:a.example");
    X509 *no_san = make_upstream("only-cn.example", NULL);
    struct ca_names names;

    memset(&names, 0, sizeof(names));
    CU_ASSERT_EQUAL(ca_names_add_from_cert(&names, up), 0);
    CU_ASSERT_FATAL(names.count == 1);
    CU_ASSERT_STRING_EQUAL(names.names[0], "a.example");
    ca_names_clear(&names);
    CU_ASSERT_EQUAL(ca_names_add_from_cert(&names, no_san), 0);
    CU_ASSERT_FATAL(names.count == 1);
    CU_ASSERT_STRING_EQUAL(names.names[0], "only-cn.example");
    ca_names_clear(&names);
    X509_free(no_san);
    X509_free(up);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite =
        CU_add_suite_with_setup_and_teardown("ca", suite_init, suite_cleanup, NULL, test_teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "first_run_creates_files_with_private_key_modes",
                     test_first_run_creates_files_with_private_key_modes) ||
        !CU_add_test(suite, "first_run_leaves_no_temporary_files",
                     test_first_run_leaves_no_temporary_files) ||
        !CU_add_test(suite, "ca_cert_is_critical_ca_for_signing_certs",
                     test_ca_cert_is_critical_ca_for_signing_certs) ||
        !CU_add_test(suite, "ca_serial_is_positive_and_128_bits",
                     test_ca_serial_is_positive_and_128_bits) ||
        !CU_add_test(suite, "ca_validity_covers_ten_years", test_ca_validity_covers_ten_years) ||
        !CU_add_test(suite, "reload_gives_same_ca_and_leaf_key",
                     test_reload_gives_same_ca_and_leaf_key) ||
        !CU_add_test(suite, "fingerprint_is_sha256_of_cert_der",
                     test_fingerprint_is_sha256_of_cert_der) ||
        !CU_add_test(suite, "cert_path_is_in_data_dir", test_cert_path_is_in_data_dir) ||
        !CU_add_test(suite, "corrupt_cert_is_error_and_file_unchanged",
                     test_corrupt_cert_is_error_and_file_unchanged) ||
        !CU_add_test(suite, "key_readable_by_others_is_refused",
                     test_key_readable_by_others_is_refused) ||
        !CU_add_test(suite, "key_owned_by_another_user_is_refused",
                     test_key_owned_by_another_user_is_refused) ||
        !CU_add_test(suite, "leaf_key_readable_by_others_is_refused",
                     test_leaf_key_readable_by_others_is_refused) ||
        !CU_add_test(suite, "cert_without_key_is_error_and_nothing_created",
                     test_cert_without_key_is_error_and_nothing_created) ||
        !CU_add_test(suite, "key_without_cert_is_error", test_key_without_cert_is_error) ||
        !CU_add_test(suite, "key_of_another_ca_is_error", test_key_of_another_ca_is_error) ||
        !CU_add_test(suite, "missing_leaf_key_is_created_for_existing_ca",
                     test_missing_leaf_key_is_created_for_existing_ca) ||
        !CU_add_test(suite, "leaf_key_without_ca_is_error", test_leaf_key_without_ca_is_error) ||
        !CU_add_test(suite, "dangling_symlink_is_not_replaced",
                     test_dangling_symlink_is_not_replaced) ||
        !CU_add_test(suite, "leaf_has_names_as_dns_and_ip_sans",
                     test_leaf_has_names_as_dns_and_ip_sans) ||
        !CU_add_test(suite, "leaf_is_short_lived_server_cert_named_by_first_name",
                     test_leaf_is_short_lived_server_cert_named_by_first_name) ||
        !CU_add_test(suite, "leaf_verifies_against_ca_for_its_names_only",
                     test_leaf_verifies_against_ca_for_its_names_only) ||
        !CU_add_test(suite, "leaf_does_not_verify_against_another_ca",
                     test_leaf_does_not_verify_against_another_ca) ||
        !CU_add_test(suite, "wildcard_leaf_verifies_for_subdomain",
                     test_wildcard_leaf_verifies_for_subdomain) ||
        !CU_add_test(suite, "long_first_name_truncates_cn_but_not_san",
                     test_long_first_name_truncates_cn_but_not_san) ||
        !CU_add_test(suite, "leaf_serials_are_random_and_positive",
                     test_leaf_serials_are_random_and_positive) ||
        !CU_add_test(suite, "mint_without_names_is_error", test_mint_without_names_is_error))
        goto fail;
    suite = CU_add_suite("ca_names", NULL, NULL);
    if (suite == NULL ||
        !CU_add_test(suite, "names_add_rejects_empty_long_and_bad_bytes",
                     test_names_add_rejects_empty_long_and_bad_bytes) ||
        !CU_add_test(suite, "names_add_accepts_wildcards_underscores_and_ips",
                     test_names_add_accepts_wildcards_underscores_and_ips) ||
        !CU_add_test(suite, "names_add_dedupes_case_insensitively",
                     test_names_add_dedupes_case_insensitively) ||
        !CU_add_test(suite, "names_add_refuses_when_full", test_names_add_refuses_when_full) ||
        !CU_add_test(suite, "names_key_is_lowercase_sorted_and_comma_joined",
                     test_names_key_is_lowercase_sorted_and_comma_joined) ||
        !CU_add_test(suite, "names_key_reports_short_buffer",
                     test_names_key_reports_short_buffer) ||
        !CU_add_test(suite, "names_add_from_cert_copies_cn_and_all_sans",
                     test_names_add_from_cert_copies_cn_and_all_sans) ||
        !CU_add_test(suite, "names_add_from_cert_skips_cn_that_is_not_a_host",
                     test_names_add_from_cert_skips_cn_that_is_not_a_host))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
