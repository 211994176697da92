/*
 * Unit tests for grpcmsg: length-prefixed gRPC messages, also cut at the
 * capture limit, the gRPC content types, and a failed call's status.
 */
#include <CUnit/Basic.h>
#include <string.h>

#include "grpcmsg.h"
#include "testutil.h"

static void test_splits_messages_and_their_flags(void)
{
    static const uint8_t body[] = {0, 0, 0,   0,   2,   'h', 'i', 1, 0, 0,
                                   0, 3, 'a', 'b', 'c', 0,   0,   0, 0, 0};
    struct grpcmsg m[4];
    size_t rest = 9;
    size_t n = grpcmsg_split(body, sizeof(body), m, 4, &rest);

    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(rest, 0);
    CU_ASSERT_FALSE(m[0].is_compressed);
    CU_ASSERT_EQUAL(m[0].length, 2);
    CU_ASSERT_EQUAL(memcmp(m[0].data, "hi", 2), 0);
    CU_ASSERT_TRUE(m[1].is_compressed);
    CU_ASSERT_EQUAL(m[1].captured, 3);
    CU_ASSERT_EQUAL(m[2].length, 0);
}

static void test_a_cut_body_ends_with_a_short_message_or_rest(void)
{
    static const uint8_t body[] = {0, 0, 0, 0, 10, 'x', 'y'};
    struct grpcmsg m[2];
    size_t rest = 0;

    CU_ASSERT_EQUAL(grpcmsg_split(body, sizeof(body), m, 2, &rest), 1);
    CU_ASSERT_EQUAL(m[0].length, 10);
    CU_ASSERT_EQUAL(m[0].captured, 2);
    CU_ASSERT_EQUAL(grpcmsg_split(body, 3, m, 2, &rest), 0);
    CU_ASSERT_EQUAL(rest, 3);
    /* A prefix claiming 4 GiB is split, never read past the body. */
    static const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff, 'z'};
    CU_ASSERT_EQUAL(grpcmsg_split(huge, sizeof(huge), m, 2, &rest), 1);
    CU_ASSERT_EQUAL(m[0].captured, 1);
}

static void test_knows_grpc_content_types(void)
{
    CU_ASSERT_TRUE(grpcmsg_is_grpc("application/grpc", 16));
    CU_ASSERT_TRUE(grpcmsg_is_grpc("application/grpc+proto", 22));
    CU_ASSERT_TRUE(grpcmsg_is_grpc("Application/GRPC; charset=x", 27));
    CU_ASSERT_FALSE(grpcmsg_is_grpc("application/grpcx", 17));
    CU_ASSERT_FALSE(grpcmsg_is_grpc("application/json", 16));
    CU_ASSERT_FALSE(grpcmsg_is_grpc(NULL, 0));
}

static void test_a_failed_call_says_its_status_and_message(void)
{
    struct message_field items[] = {{"grpc-status", 11, "7", 1},
                                    {"grpc-message", 12, "no%20entry%0Afor you", 20}};
    struct message_fields fields = {items, 2};
    char why[128];
    int status = 0;

    CU_ASSERT_TRUE(grpcmsg_failed(&fields, &status, why, sizeof(why)));
    CU_ASSERT_EQUAL(status, 7);
    CU_ASSERT_STRING_EQUAL(why, "grpc-status 7 (PERMISSION_DENIED): no entry?for you");
    items[0].value = "0";
    CU_ASSERT_FALSE(grpcmsg_failed(&fields, &status, why, sizeof(why)));
    items[0].value = "x";
    CU_ASSERT_FALSE(grpcmsg_failed(&fields, &status, why, sizeof(why)));
    fields.count = 0;
    CU_ASSERT_FALSE(grpcmsg_failed(&fields, &status, why, sizeof(why)));
}

#define ADD(s, t) CU_add_test(s, #t, t)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("grpcmsg", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_splits_messages_and_their_flags) ||
        !ADD(suite, test_a_cut_body_ends_with_a_short_message_or_rest) ||
        !ADD(suite, test_knows_grpc_content_types) ||
        !ADD(suite, test_a_failed_call_says_its_status_and_message))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
