/* Unit tests for the client certificates presented to origins
 * (src/clientcert.c). The handshake itself is the integration test's. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "clientcert.h"
#include "testutil.h"

static char dir[] = "/tmp/test_clientcert.XXXXXX";

/* Writes a self-signed certificate for cn and, unless without_key, its
 * key (or another key when wrong_key) to dir/name with mode. */
static const char *write_pem(const char *name, const char *cn, bool without_key, bool wrong_key,
                             mode_t mode)
{
    static char path[300];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    EVP_PKEY *other = wrong_key ? EVP_EC_gen("P-256") : NULL;
    X509 *x = X509_new();
    FILE *f;

    CU_ASSERT_FATAL(key != NULL && x != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    CU_ASSERT_FATAL(X509_sign(x, key, EVP_sha256()) > 0);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    PEM_write_X509(f, x);
    if (!without_key)
        PEM_write_PrivateKey(f, other != NULL ? other : key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    chmod(path, mode);
    X509_free(x);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    return path;
}

static void test_the_first_matching_glob_wins(void)
{
    char a[320], b[320], err[256] = "";
    struct clientcert *certs = NULL;

    snprintf(a, sizeof(a), "api.*.example=%s", write_pem("a.pem", "a", false, false, 0600));
    snprintf(b, sizeof(b), "%s", write_pem("b.pem", "b", false, false, 0600));
    const char *specs[] = {a, b};
    CU_ASSERT_EQUAL_FATAL(clientcert_load(specs, 2, &certs, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(clientcert_find(certs, "api.eu.example"), 0);
    CU_ASSERT_EQUAL(clientcert_find(certs, "API.EU.EXAMPLE"), 0);
    CU_ASSERT_EQUAL(clientcert_find(certs, "www.example"), 1);
    CU_ASSERT_PTR_NOT_NULL(clientcert_certificate(certs, 1));
    CU_ASSERT_PTR_NULL(clientcert_certificate(certs, 2));
    clientcert_free(certs);
    const char *only[] = {a};
    CU_ASSERT_EQUAL_FATAL(clientcert_load(only, 1, &certs, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(clientcert_find(certs, "www.example"), -1);
    CU_ASSERT_EQUAL(clientcert_find(NULL, "api.eu.example"), -1);
    clientcert_free(certs);
}

static void expect_refused(const char *spec, const char *says)
{
    struct clientcert *certs = NULL;
    char err[256] = "";
    const char *specs[] = {spec};

    CU_ASSERT_EQUAL(clientcert_load(specs, 1, &certs, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(certs);
    if (strstr(err, says) == NULL)
        fprintf(stderr, "\n%s: '%s' does not say '%s'\n", spec, err, says);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, says));
}

static void test_bad_files_are_refused_at_start(void)
{
    char spec[320];

    expect_refused(write_pem("open.pem", "o", false, false, 0644), "chmod 600");
    expect_refused(write_pem("nokey.pem", "n", true, false, 0600), "private key");
    expect_refused(write_pem("wrong.pem", "w", false, true, 0600), "not the certificate's");
    snprintf(spec, sizeof(spec), "=%s", write_pem("e.pem", "e", false, false, 0600));
    expect_refused(spec, "[GLOB=]FILE");
    expect_refused("*.test=/nonexistent/client.pem", "unreadable");
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("clientcert", NULL, NULL);
    if (!s || !CU_add_test(s, "the first matching glob wins", test_the_first_matching_glob_wins) ||
        !CU_add_test(s, "bad files are refused at start", test_bad_files_are_refused_at_start)) {
        CU_cleanup_registry();
        return 1;
    }
    int rc = testutil_run();
    testutil_remove_dir(dir);
    return rc;
}
