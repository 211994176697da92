/*
 * Unit tests for buf: bytes put come back in order and NUL-terminated, the
 * bound is exact (max bytes fit, one more does not), a failed put adds
 * nothing and every later put fails the same way, and an empty put
 * allocates nothing.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "testutil.h"

static void test_puts_append_in_order_and_stay_nul_terminated(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);

    CU_ASSERT_EQUAL(buf_str(&b, "Host: "), 0);
    CU_ASSERT_EQUAL(buf_put(&b, "a\0b", 3), 0);
    CU_ASSERT_EQUAL(b.len, 9);
    CU_ASSERT_EQUAL(memcmp(b.data, "Host: a\0b", 9), 0);
    CU_ASSERT_EQUAL(b.data[b.len], '\0');
    CU_ASSERT_FALSE(b.has_failed);
    buf_free(&b);
    CU_ASSERT_PTR_NULL(b.data);
    CU_ASSERT_EQUAL(b.len, 0);
}

static void test_grows_past_the_first_allocation(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);
    char chunk[100];
    size_t i;

    for (i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)('a' + i % 26);
    for (i = 0; i < 50; i++)
        CU_ASSERT_EQUAL_FATAL(buf_put(&b, chunk, sizeof(chunk)), 0);
    CU_ASSERT_EQUAL(b.len, 5000);
    CU_ASSERT_TRUE(b.cap >= 5000);
    CU_ASSERT_EQUAL(memcmp(b.data + 4900, chunk, sizeof(chunk)), 0);
    CU_ASSERT_EQUAL(b.data[5000], '\0');
    buf_free(&b);
}

static void test_max_bytes_fit_and_one_more_does_not(void)
{
    struct buf b = BUF_INIT(10);

    CU_ASSERT_EQUAL(buf_put(&b, "0123456", 7), 0);
    CU_ASSERT_EQUAL(buf_put(&b, "789", 3), 0);
    CU_ASSERT_EQUAL(b.len, 10);
    CU_ASSERT_EQUAL(b.cap, 10); /* never allocated past the bound */
    CU_ASSERT_STRING_EQUAL(b.data, "0123456789");
    CU_ASSERT_EQUAL(buf_put(&b, "x", 1), BUF_OVER_MAX);
    CU_ASSERT_TRUE(b.has_failed);
    CU_ASSERT_TRUE(b.is_over_max);
    CU_ASSERT_EQUAL(b.len, 10);
    CU_ASSERT_STRING_EQUAL(b.data, "0123456789");
    buf_free(&b);
}

static void test_put_past_max_adds_nothing_and_later_puts_fail(void)
{
    struct buf b = BUF_INIT(8);

    CU_ASSERT_EQUAL(buf_str(&b, "abc"), 0);
    CU_ASSERT_EQUAL(buf_str(&b, "defghi"), BUF_OVER_MAX); /* 9 > 8: none of it */
    CU_ASSERT_EQUAL(b.len, 3);
    CU_ASSERT_STRING_EQUAL(b.data, "abc");
    /* It would fit now, but a builder that lost a piece must not go on. */
    CU_ASSERT_EQUAL(buf_str(&b, "d"), BUF_OVER_MAX);
    CU_ASSERT_EQUAL(b.len, 3);
    buf_free(&b);
    CU_ASSERT_FALSE(b.has_failed);
    CU_ASSERT_EQUAL(b.max, 8);
    CU_ASSERT_EQUAL(buf_str(&b, "again"), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "again");
    buf_free(&b);
}

static void test_huge_put_fails_without_overflow(void)
{
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);

    CU_ASSERT_EQUAL(buf_str(&b, "x"), 0);
    CU_ASSERT_EQUAL(buf_put(&b, "y", SIZE_MAX), BUF_OVER_MAX);
    CU_ASSERT_EQUAL(b.len, 1);
    buf_free(&b);
}

static void test_empty_put_allocates_nothing(void)
{
    struct buf b = BUF_INIT(4);
    struct buf zero = BUF_INIT(0);

    CU_ASSERT_EQUAL(buf_put(&b, "", 0), 0);
    CU_ASSERT_PTR_NULL(b.data);
    CU_ASSERT_EQUAL(buf_put(&zero, "", 0), 0);
    CU_ASSERT_EQUAL(buf_put(&zero, "a", 1), BUF_OVER_MAX);
    CU_ASSERT_PTR_NULL(zero.data);
    buf_free(&b);
    buf_free(&zero);
}

/* Registers fn under its name without the "test_" prefix. */
#define ADD(suite, fn) (CU_add_test(suite, #fn + 5, fn) != NULL)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("buf", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_puts_append_in_order_and_stay_nul_terminated) ||
        !ADD(suite, test_grows_past_the_first_allocation) ||
        !ADD(suite, test_max_bytes_fit_and_one_more_does_not) ||
        !ADD(suite, test_put_past_max_adds_nothing_and_later_puts_fail) ||
        !ADD(suite, test_huge_put_fails_without_overflow) ||
        !ADD(suite, test_empty_put_allocates_nothing))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
