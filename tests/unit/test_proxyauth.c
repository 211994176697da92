/* Unit tests for proxy credentials (src/proxyauth.c). */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http1.h"
#include "proxyauth.h"
#include "testutil.h"

static struct proxyauth *auth_of(const char *pair)
{
    struct proxyauth *a = NULL;
    char err[256];

    CU_ASSERT_FATAL(proxyauth_new(pair, &a, err, sizeof(err)) == 0);
    return a;
}

static void test_basic_accepts_the_pair_and_nothing_else(void)
{
    struct proxyauth *a = auth_of("alice:s3cret");
    /* base64("alice:s3cret") = YWxpY2U6czNjcmV0 */
    const char *good = "Basic YWxpY2U6czNjcmV0";

    CU_ASSERT_TRUE(proxyauth_check_basic(a, good, strlen(good)));
    CU_ASSERT_TRUE(proxyauth_check_basic(a, "basic   YWxpY2U6czNjcmV0", 24));
    /* alice:s3cres */
    CU_ASSERT_FALSE(proxyauth_check_basic(a, "Basic YWxpY2U6czNjcmVz", 22));
    /* alice:s3cre */
    CU_ASSERT_FALSE(proxyauth_check_basic(a, "Basic YWxpY2U6czNjcmU=", 22));
    CU_ASSERT_FALSE(proxyauth_check_basic(a, "Bearer YWxpY2U6czNjcmV0", 23));
    CU_ASSERT_FALSE(proxyauth_check_basic(a, "BasicYWxpY2U6czNjcmV0", 21));
    CU_ASSERT_FALSE(proxyauth_check_basic(a, "Basic ", 6));
    CU_ASSERT_FALSE(proxyauth_check_basic(a, "Basic YWxpY2U6czNjcmV0=", 23));
    CU_ASSERT_FALSE(proxyauth_check_basic(NULL, good, strlen(good)));
    proxyauth_free(a);
}

static void test_pair_check_is_rfc1929_shaped(void)
{
    struct proxyauth *a = auth_of("alice:s3cret");

    CU_ASSERT_TRUE(proxyauth_check_pair(a, (const unsigned char *)"alice", 5,
                                        (const unsigned char *)"s3cret", 6));
    CU_ASSERT_FALSE(proxyauth_check_pair(a, (const unsigned char *)"alice", 5,
                                         (const unsigned char *)"s3cre", 5));
    CU_ASSERT_FALSE(proxyauth_check_pair(a, (const unsigned char *)"bob", 3,
                                         (const unsigned char *)"s3cret", 6));
    CU_ASSERT_FALSE(
        proxyauth_check_pair(a, (const unsigned char *)"", 0, (const unsigned char *)"s3cret", 6));
    proxyauth_free(a);
    /* "a:b" + "c" must not pass for "a" + "b:c". */
    a = auth_of("a:b:c");
    CU_ASSERT_TRUE(
        proxyauth_check_pair(a, (const unsigned char *)"a", 1, (const unsigned char *)"b:c", 3));
    CU_ASSERT_FALSE(
        proxyauth_check_pair(a, (const unsigned char *)"a:b", 3, (const unsigned char *)"c", 1));
    proxyauth_free(a);
}

static void test_bad_pairs_are_refused_at_start(void)
{
    struct proxyauth *a = NULL;
    char err[256];
    const char *bad[] = {"nocolon", ":pass", "user:", "us\ter:pass", ""};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(proxyauth_new(bad[i], &a, err, sizeof(err)), -1);
        CU_ASSERT_PTR_NULL(a);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "--proxy-auth"));
    }
}

static void test_file_holds_several_users_and_must_be_private(void)
{
    char dir[] = "/tmp/test_proxyauth.XXXXXX";
    char path[300];
    struct proxyauth *a = NULL;
    char err[256];
    FILE *f;

    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/users", dir);
    f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("# users\r\nalice:one\r\n\r\nbob:two\n", f);
    fclose(f);
    CU_ASSERT_FATAL(chmod(path, 0600) == 0);
    CU_ASSERT_EQUAL_FATAL(proxyauth_load_file(path, &a, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(proxyauth_check_pair(a, (const unsigned char *)"alice", 5,
                                        (const unsigned char *)"one", 3));
    CU_ASSERT_TRUE(
        proxyauth_check_pair(a, (const unsigned char *)"bob", 3, (const unsigned char *)"two", 3));
    CU_ASSERT_FALSE(
        proxyauth_check_pair(a, (const unsigned char *)"bob", 3, (const unsigned char *)"one", 3));
    proxyauth_free(a);
    a = NULL;
    CU_ASSERT_FATAL(chmod(path, 0640) == 0);
    CU_ASSERT_EQUAL(proxyauth_load_file(path, &a, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(a);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "chmod 600"));
    f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("alice:one\nbroken\n", f);
    fclose(f);
    CU_ASSERT_FATAL(chmod(path, 0600) == 0);
    CU_ASSERT_EQUAL(proxyauth_load_file(path, &a, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 2"));
    testutil_remove_dir(dir);
}

static void test_base64_is_strict(void)
{
    unsigned char out[16];

    CU_ASSERT_EQUAL(proxyauth_base64_decode("YQ==", 4, out, sizeof(out)), 1);
    CU_ASSERT_EQUAL(out[0], 'a');
    CU_ASSERT_EQUAL(proxyauth_base64_decode("YWI=", 4, out, sizeof(out)), 2);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("YWJj", 4, out, sizeof(out)), 3);
    CU_ASSERT_EQUAL(memcmp(out, "abc", 3), 0);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("", 0, out, sizeof(out)), 0);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("YQ", 2, out, sizeof(out)), -1);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("Y===", 4, out, sizeof(out)), -1);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("YQ==YWJj", 8, out, sizeof(out)), -1);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("YW J", 4, out, sizeof(out)), -1);
    CU_ASSERT_EQUAL(proxyauth_base64_decode("YWJjYWJj", 8, out, 5), -1);
}

static void test_strip_takes_every_proxy_authorization(void)
{
    static const char req[] = "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n"
                              "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\nAccept: */*\r\n"
                              "proxy-authorization: Basic eDp5\r\n\r\n";
    struct http1_head *head = malloc(sizeof(*head));
    struct http1_error err;
    struct proxyauth *a = auth_of("alice:s3cret");

    CU_ASSERT_FATAL(head != NULL);
    CU_ASSERT_FATAL(http1_parse_request(req, sizeof(req) - 1, head, &err) > 0);
    CU_ASSERT_TRUE(proxyauth_check_head(a, head));
    CU_ASSERT_EQUAL(proxyauth_strip(head), 2);
    CU_ASSERT_EQUAL(head->num_headers, 2);
    CU_ASSERT_EQUAL(strncmp(head->headers[0].name, "Host", 4), 0);
    CU_ASSERT_EQUAL(strncmp(head->headers[1].name, "Accept", 6), 0);
    CU_ASSERT_FALSE(proxyauth_check_head(a, head));
    proxyauth_free(a);
    free(head);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("proxyauth", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "Basic accepts the pair and nothing else",
                     test_basic_accepts_the_pair_and_nothing_else) ||
        !CU_add_test(s, "the pair check is RFC 1929 shaped", test_pair_check_is_rfc1929_shaped) ||
        !CU_add_test(s, "bad pairs are refused at start", test_bad_pairs_are_refused_at_start) ||
        !CU_add_test(s, "a file holds several users and must be private",
                     test_file_holds_several_users_and_must_be_private) ||
        !CU_add_test(s, "base64 is strict", test_base64_is_strict) ||
        !CU_add_test(s, "strip takes every Proxy-Authorization",
                     test_strip_takes_every_proxy_authorization)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
