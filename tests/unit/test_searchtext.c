/*
 * Unit tests for searchtext: which texts may go into the trigram index,
 * where a long text is cut, and how a search becomes an FTS5 phrase.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "searchtext.h"

#define U(s) (const unsigned char *)(s), sizeof(s) - 1

static void test_utf8_is_told_from_binary(void)
{
    CU_ASSERT_TRUE(searchtext_is_utf8(U("")));
    CU_ASSERT_TRUE(searchtext_is_utf8(U("plain ascii\r\n")));
    CU_ASSERT_TRUE(searchtext_is_utf8(U("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80")));
    CU_ASSERT_FALSE(searchtext_is_utf8(U("nul\0inside")));
    CU_ASSERT_FALSE(searchtext_is_utf8(U("\x89PNG")));
    CU_ASSERT_FALSE(searchtext_is_utf8(U("\xc0\xaf")));         /* overlong '/' */
    CU_ASSERT_FALSE(searchtext_is_utf8(U("\xe0\x80\xaf")));     /* overlong */
    CU_ASSERT_FALSE(searchtext_is_utf8(U("\xed\xa0\x80")));     /* surrogate */
    CU_ASSERT_FALSE(searchtext_is_utf8(U("\xf4\x90\x80\x80"))); /* above U+10FFFF */
    CU_ASSERT_FALSE(searchtext_is_utf8(U("cut \xe2\x82")));     /* truncated */
    CU_ASSERT_FALSE(searchtext_is_utf8(U("\xa9 stray continuation")));
}

static void test_cut_ends_on_a_character_boundary(void)
{
    const unsigned char *s = (const unsigned char *)"ab\xe2\x82\xac"
                                                    "cd";

    CU_ASSERT_EQUAL(searchtext_cut(s, 7, 100), 7);
    CU_ASSERT_EQUAL(searchtext_cut(s, 7, 5), 5);
    CU_ASSERT_EQUAL(searchtext_cut(s, 7, 4), 2); /* inside the euro sign */
    CU_ASSERT_EQUAL(searchtext_cut(s, 7, 3), 2);
    CU_ASSERT_EQUAL(searchtext_cut(s, 7, 2), 2);
    CU_ASSERT_EQUAL(searchtext_cut(s, 7, 0), 0);
}

static void test_query_covers_the_needle_with_trigrams(void)
{
    char *q = searchtext_query("abcdefg", 7);

    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT_STRING_EQUAL(q, "\"abc\" AND \"def\" AND \"efg\"");
    free(q);
    q = searchtext_query("abcdef", 6);
    CU_ASSERT_STRING_EQUAL(q, "\"abc\" AND \"def\"");
    free(q);
    q = searchtext_query("abc", 3);
    CU_ASSERT_STRING_EQUAL(q, "\"abc\"");
    free(q);
    q = searchtext_query("say \"hi\"", 8); /* quotes doubled */
    CU_ASSERT_STRING_EQUAL(q, "\"say\" AND \" \"\"h\" AND \"hi\"\"\"");
    free(q);
    q = searchtext_query("\xc3\xa9t\xc3\xa9s", 6); /* characters, not bytes */
    CU_ASSERT_STRING_EQUAL(q, "\"\xc3\xa9t\xc3\xa9\" AND \"t\xc3\xa9s\"");
    free(q);
}

static void test_query_refuses_what_the_index_cannot_answer(void)
{
    CU_ASSERT_PTR_NULL(searchtext_query("ab", 2));
    CU_ASSERT_PTR_NULL(searchtext_query("\xc3\xa9\xc3\xa9", 4)); /* two characters */
    CU_ASSERT_PTR_NULL(searchtext_query("\x89PNG", 4));
    CU_ASSERT_PTR_NULL(searchtext_query("a\0bc", 4));
}

static void test_header_values_leave_out_the_names(void)
{
    char *v = searchtext_header_values("Host: a.test\r\nX-Marker:  zebra \r\nEmpty:\r\n");

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(v, "a.test\nzebra\n");
    free(v);
    v = searchtext_header_values(NULL);
    CU_ASSERT_STRING_EQUAL(v, "");
    free(v);
}

/* The byte-pair filter rules out a needle with a pair the body lacks,
 * never one the body holds, in either case. */
static void test_pairs_rule_out_only_what_is_absent(void)
{
    unsigned char bits[SEARCHTEXT_PAIRS_BYTES] = {0};
    unsigned char body[600];
    size_t i;

    for (i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(0x80 + (i * 13) % 0x7f);
    memcpy(body + 300, "Hello, World", 12);
    searchtext_pairs_add(bits, body, sizeof(body));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("Hello, World")));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("hELLO, wORLD")));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("lo, W")));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), body + 10, 200));
    CU_ASSERT_FALSE(searchtext_pairs_may_hold(bits, sizeof(bits), U("no-such-text")));
    CU_ASSERT_FALSE(searchtext_pairs_may_hold(bits, sizeof(bits), U("zz")));
    /* Nothing to rule out with: one byte, no filter, a filter of another size. */
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("q")));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(NULL, 0, U("no-such-text")));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits) - 1, U("no-such-text")));
    /* Pairs across two adds are not made up: each add is its own text. */
    memset(bits, 0, sizeof(bits));
    searchtext_pairs_add(bits, U("ab"));
    searchtext_pairs_add(bits, U("cd"));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("ab")));
    CU_ASSERT_FALSE(searchtext_pairs_may_hold(bits, sizeof(bits), U("bc")));
    /* Odd and even lengths: the last pair counts too. */
    memset(bits, 0, sizeof(bits));
    searchtext_pairs_add(bits, U("wxyz"));
    searchtext_pairs_add(bits, U("klm"));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("wxyz")));
    CU_ASSERT_TRUE(searchtext_pairs_may_hold(bits, sizeof(bits), U("klm")));
    CU_ASSERT_FALSE(searchtext_pairs_may_hold(bits, sizeof(bits), U("zk")));
}

int main(void)
{
    unsigned failures;
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("searchtext", NULL, NULL);
    if (!s || !CU_add_test(s, "utf8_is_told_from_binary", test_utf8_is_told_from_binary) ||
        !CU_add_test(s, "cut_ends_on_a_character_boundary",
                     test_cut_ends_on_a_character_boundary) ||
        !CU_add_test(s, "query_covers_the_needle_with_trigrams",
                     test_query_covers_the_needle_with_trigrams) ||
        !CU_add_test(s, "query_refuses_what_the_index_cannot_answer",
                     test_query_refuses_what_the_index_cannot_answer) ||
        !CU_add_test(s, "pairs_rule_out_only_what_is_absent",
                     test_pairs_rule_out_only_what_is_absent) ||
        !CU_add_test(s, "header_values_leave_out_the_names",
                     test_header_values_leave_out_the_names)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
