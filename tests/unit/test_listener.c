/*
 * Unit tests for listener's start-up text: a specific address is shown as
 * given (IPv6 in brackets), a wildcard as the machine's own addresses (never
 * as 0.0.0.0, which no client can connect to), and a short buffer is cut
 * but stays a string.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <string.h>

#include "listener.h"
#include "testutil.h"

static void test_specific_address_is_shown_as_given(void)
{
    char out[128];

    CU_ASSERT_EQUAL(listener_reachable_addresses("127.0.0.1", 8080, out, sizeof(out)),
                    strlen("127.0.0.1:8080"));
    CU_ASSERT_STRING_EQUAL(out, "127.0.0.1:8080");
    listener_reachable_addresses("::1", 8080, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "[::1]:8080");
    listener_reachable_addresses("proxy.example", 3128, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "proxy.example:3128");
}

static void test_wildcard_is_shown_as_the_machines_addresses(void)
{
    char out[2048];

    listener_reachable_addresses("0.0.0.0", 8080, out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "127.0.0.1:8080"));
    CU_ASSERT_PTR_NULL(strstr(out, "0.0.0.0"));
    CU_ASSERT_PTR_NULL(strstr(out, "[")); /* 0.0.0.0 takes IPv4 only */
    listener_reachable_addresses("::", 8080, out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "127.0.0.1:8080"));
    CU_ASSERT_PTR_NULL(strstr(out, "[::]"));
}

static void test_short_buffer_is_cut_but_terminated(void)
{
    char out[8];

    memset(out, 'x', sizeof(out));
    CU_ASSERT_EQUAL(listener_reachable_addresses("127.0.0.1", 8080, out, sizeof(out)), 7);
    CU_ASSERT_EQUAL(out[7], '\0');
    memset(out, 'x', sizeof(out));
    listener_reachable_addresses("0.0.0.0", 8080, out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(memchr(out, '\0', sizeof(out)));
}

static void test_wildcard_spellings(void)
{
    CU_ASSERT_TRUE(listener_is_wildcard_host("0.0.0.0"));
    CU_ASSERT_TRUE(listener_is_wildcard_host("::"));
    CU_ASSERT_TRUE(listener_is_wildcard_host(""));
    CU_ASSERT_FALSE(listener_is_wildcard_host("127.0.0.1"));
    CU_ASSERT_FALSE(listener_is_wildcard_host("::1"));
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("listener", NULL, NULL);
    if (suite == NULL ||
        !CU_add_test(suite, "specific_address_is_shown_as_given",
                     test_specific_address_is_shown_as_given) ||
        !CU_add_test(suite, "wildcard_is_shown_as_the_machines_addresses",
                     test_wildcard_is_shown_as_the_machines_addresses) ||
        !CU_add_test(suite, "short_buffer_is_cut_but_terminated",
                     test_short_buffer_is_cut_but_terminated) ||
        !CU_add_test(suite, "wildcard_spellings", test_wildcard_spellings))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
