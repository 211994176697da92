/*
 * Unit tests for message: the protocol-neutral message, its field lookups,
 * what a proxy must not forward, and copies that own their bytes.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "testutil.h"

#define FIELD(n, v)                                                                                \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static void test_finds_fields_whatever_their_case(void)
{
    struct message_field items[] = {FIELD("Host", "a.test"), FIELD("content-TYPE", "text/plain")};
    struct message m = {.fields = {items, 2}};

    CU_ASSERT_PTR_EQUAL(message_find(&m, "Content-Type"), &items[1]);
    CU_ASSERT_PTR_EQUAL(message_find(&m, "HOST"), &items[0]);
    CU_ASSERT_PTR_NULL(message_find(&m, "Hos"));
    CU_ASSERT_PTR_NULL(message_find(NULL, "Host"));
}

static void test_fields_named_by_connection_are_hop_by_hop(void)
{
    struct message_field items[] = {FIELD("Connection", "keep-alive, X-Secret ,x-other"),
                                    FIELD("X-Secret", "1"),
                                    FIELD("x-OTHER", "2"),
                                    FIELD("X-Kept", "3"),
                                    FIELD("Proxy-Authorization", "Basic x"),
                                    FIELD("TE", "trailers")};
    struct message_fields all = {items, 6};

    CU_ASSERT_TRUE(message_is_hop_by_hop(&all, &items[0]));
    CU_ASSERT_TRUE(message_is_hop_by_hop(&all, &items[1]));
    CU_ASSERT_TRUE(message_is_hop_by_hop(&all, &items[2]));
    CU_ASSERT_FALSE(message_is_hop_by_hop(&all, &items[3]));
    CU_ASSERT_TRUE(message_is_hop_by_hop(&all, &items[4]));
    CU_ASSERT_TRUE(message_is_hop_by_hop(&all, &items[5]));
    /* Without the list only the fixed names count. */
    CU_ASSERT_FALSE(message_is_hop_by_hop(NULL, &items[1]));
    CU_ASSERT_TRUE(message_is_hop_by_hop(NULL, &items[5]));
}

static void test_a_copy_owns_everything_it_points_to(void)
{
    char method[] = "POST", target[] = "/x?y=1", name[] = "X-A", value[] = "one";
    char tname[] = "X-Sum", tvalue[] = "7";
    struct message_field items[] = {{name, 3, value, 3}};
    struct message_field trailers[] = {{tname, 5, tvalue, 1}};
    struct message src = {.method = method,
                          .method_len = 4,
                          .scheme = "https",
                          .authority = "a.test:8443",
                          .authority_len = 11,
                          .target = target,
                          .target_len = 6,
                          .version = 11,
                          .fields = {items, 1},
                          .trailers = {trailers, 1},
                          .body = MESSAGE_BODY_LENGTH,
                          .content_length = 5,
                          .keep_alive = true};
    struct message copy;

    CU_ASSERT_EQUAL_FATAL(message_copy(&copy, &src, NULL), 0);
    /* The originals change: the copy does not. */
    memset(method, 'Z', 4);
    memset(target, 'Z', 6);
    memset(value, 'Z', 3);
    memset(tvalue, 'Z', 1);
    CU_ASSERT_STRING_EQUAL(copy.method, "POST");
    CU_ASSERT_STRING_EQUAL(copy.target, "/x?y=1");
    CU_ASSERT_STRING_EQUAL(copy.scheme, "https");
    CU_ASSERT_EQUAL(copy.authority_len, 11);
    CU_ASSERT_EQUAL(strncmp(copy.authority, "a.test:8443", 11), 0);
    CU_ASSERT_EQUAL(copy.fields.count, 1);
    CU_ASSERT_EQUAL(strncmp(copy.fields.items[0].value, "one", 3), 0);
    CU_ASSERT_EQUAL(copy.trailers.count, 1);
    CU_ASSERT_EQUAL(strncmp(copy.trailers.items[0].value, "7", 1), 0);
    CU_ASSERT_EQUAL(copy.body, MESSAGE_BODY_LENGTH);
    CU_ASSERT_EQUAL(copy.content_length, 5);
    CU_ASSERT_TRUE(copy.keep_alive);
    CU_ASSERT_PTR_NULL(copy.reason);
    message_free(&copy);
    CU_ASSERT_PTR_NULL(copy.storage);
}

static void test_a_copy_can_take_new_fields(void)
{
    struct message_field old[] = {FIELD("A", "1"), FIELD("B", "2")};
    struct message_field fresh[] = {FIELD("C", "3")};
    struct message_fields replaced = {fresh, 1};
    struct message src = {.status = 200, .reason = "OK", .reason_len = 2, .fields = {old, 2}};
    struct message copy;

    CU_ASSERT_EQUAL_FATAL(message_copy(&copy, &src, &replaced), 0);
    CU_ASSERT_EQUAL(copy.status, 200);
    CU_ASSERT_STRING_EQUAL(copy.reason, "OK");
    CU_ASSERT_EQUAL(copy.fields.count, 1);
    CU_ASSERT_PTR_NOT_NULL(message_find(&copy, "C"));
    CU_ASSERT_PTR_NULL(message_find(&copy, "A"));
    message_free(&copy);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("message", NULL, NULL);
    if (!suite ||
        !CU_add_test(suite, "finds fields whatever their case",
                     test_finds_fields_whatever_their_case) ||
        !CU_add_test(suite, "fields named by Connection are hop-by-hop",
                     test_fields_named_by_connection_are_hop_by_hop) ||
        !CU_add_test(suite, "a copy owns everything it points to",
                     test_a_copy_owns_everything_it_points_to) ||
        !CU_add_test(suite, "a copy can take new fields", test_a_copy_can_take_new_fields)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
