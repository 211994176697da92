#include <stdlib.h>
#include <string.h>

#include "reverse.h"
#include "testutil.h"

static void test_url_gives_origin_authority_and_prefix(void)
{
    struct reverse_target rt = {0};
    char err[256];

    CU_ASSERT_EQUAL_FATAL(reverse_parse_url("https://api.test", &rt, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(rt.is_tls);
    CU_ASSERT_STRING_EQUAL(rt.host, "api.test");
    CU_ASSERT_EQUAL(rt.port, 443);
    CU_ASSERT_STRING_EQUAL(rt.authority, "api.test");
    CU_ASSERT_STRING_EQUAL(rt.prefix, "");

    CU_ASSERT_EQUAL_FATAL(reverse_parse_url("http://[::1]:8080/v1//", &rt, err, sizeof(err)), 0);
    CU_ASSERT_FALSE(rt.is_tls);
    CU_ASSERT_STRING_EQUAL(rt.host, "::1");
    CU_ASSERT_EQUAL(rt.port, 8080);
    CU_ASSERT_STRING_EQUAL(rt.authority, "[::1]:8080");
    CU_ASSERT_STRING_EQUAL(rt.prefix, "/v1");

    /* The default port is left out of the Host, however it was written. */
    CU_ASSERT_EQUAL_FATAL(reverse_parse_url("http://a.test:80/", &rt, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(rt.authority, "a.test");
}

static void test_url_refuses_what_it_cannot_mean(void)
{
    const char *bad[] = {"ftp://a.test",         "a.test",           "http://",
                         "http://a.test/x?y=1",  "http://a.test/#f", "http://u:p@a.test",
                         "http://a.test/sp ace", "http://a.test:0",  "https://a.test:99999"};
    struct reverse_target rt;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(reverse_parse_url(bad[i], &rt, err, sizeof(err)), -1);
        CU_ASSERT_NOT_EQUAL(err[0], '\0');
    }
}

static void check_mapped(const char *prefix, const char *target, const char *expected)
{
    struct reverse_target rt = {0};
    char *out;

    strcpy(rt.prefix, prefix);
    out = reverse_map_target(&rt, target, strlen(target));
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(out, expected);
    free(out);
}

static void test_target_gets_the_prefix_in_front(void)
{
    check_mapped("", "/x?y", "/x?y");
    check_mapped("", "*", "*");
    check_mapped("/api", "/x?y", "/api/x?y");
    check_mapped("/api", "/", "/api/");
    check_mapped("/api", "*", "/api/");
}

static const char *value_of(const struct message_fields *f, const char *name, size_t *count)
{
    const char *v = NULL;

    *count = 0;
    for (size_t i = 0; i < f->count; i++)
        if (message_field_is(&f->items[i], name)) {
            (*count)++;
            v = f->items[i].value;
        }
    return v;
}

static void test_forwarded_fields_append_for_and_replace_the_rest(void)
{
    const struct message_field in_items[] = {
        {"Host", 4, "rev.test:8443", 13},
        {"X-Forwarded-For", 15, "198.51.100.1", 12},
        {"x-forwarded-proto", 17, "gopher", 6},
        {"Accept", 6, "*/*", 3},
        {"X-Forwarded-For", 15, "198.51.100.2", 12},
        {"X-Forwarded-Host", 16, "evil.test", 9},
    };
    struct message_fields in = {in_items, 6}, out;
    struct reverse_forwarded fw;
    size_t n;
    const char *v;

    CU_ASSERT_EQUAL_FATAL(reverse_forwarded_fields(&in, "127.0.0.1", true, &fw, &out), 0);
    v = value_of(&out, "X-Forwarded-For", &n);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(v, "198.51.100.1, 198.51.100.2, 127.0.0.1");
    v = value_of(&out, "X-Forwarded-Proto", &n);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(v, "https");
    v = value_of(&out, "X-Forwarded-Host", &n);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(v, "rev.test:8443");
    CU_ASSERT_PTR_NOT_NULL(value_of(&out, "Accept", &n));
    CU_ASSERT_STRING_EQUAL(out.items[0].name, "Host"); /* order kept */
    CU_ASSERT_EQUAL(out.count, 5);
    reverse_forwarded_free(&fw);

    /* No Host (HTTP/1.0), plain: no X-Forwarded-Host, Proto "http". */
    struct message_fields none = {in_items + 3, 1};
    CU_ASSERT_EQUAL_FATAL(reverse_forwarded_fields(&none, "::1", false, &fw, &out), 0);
    CU_ASSERT_PTR_NULL(value_of(&out, "X-Forwarded-Host", &n));
    CU_ASSERT_STRING_EQUAL(value_of(&out, "X-Forwarded-For", &n), "::1");
    CU_ASSERT_STRING_EQUAL(value_of(&out, "X-Forwarded-Proto", &n), "http");
    reverse_forwarded_free(&fw);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("reverse", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "the URL gives the origin, its Host and the prefix",
                     test_url_gives_origin_authority_and_prefix) ||
        !CU_add_test(s, "the URL refuses what it cannot mean",
                     test_url_refuses_what_it_cannot_mean) ||
        !CU_add_test(s, "the target gets the prefix in front",
                     test_target_gets_the_prefix_in_front) ||
        !CU_add_test(s, "X-Forwarded-For appends, -Proto and -Host replace",
                     test_forwarded_fields_append_for_and_replace_the_rest)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
