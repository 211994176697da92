/*
 * Unit tests for ruleaction: the answer of a mock and of a block (status,
 * fields in order with the framing tapwire declares, body; no body for 204
 * and 304; Connection: close only when asked), block close, and what a
 * map-remote makes of a request (origin, target, Host, the note).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "ruleaction.h"
#include "rules.h"
#include "testutil.h"

static char err[RULES_ERROR_BYTES];

/* The first rule of spec (the set is kept in *set: caller unrefs). */
static const struct rule *rule_of(const char *spec, struct rule_set **set)
{
    *set = NULL;
    if (rules_parse_spec(spec, strlen(spec), "t", set, err, sizeof(err)) != 0) {
        fprintf(stderr, "parse %s: %s\n", spec, err);
        return NULL;
    }
    return rules_set_get(*set, 0);
}

static void test_mock_answer_fields_in_order_then_framing(void)
{
    struct rule_set *set;
    const struct rule *r = rule_of(
        "request mock name=m header='Content-Type: application/json' 201 '{\"ok\":1}'", &set);
    struct ruleaction_answer a;

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(ruleaction_answer(r, false, &a), 0);
    CU_ASSERT_EQUAL(a.status, 201);
    CU_ASSERT_STRING_EQUAL(a.reason_phrase, "Created");
    CU_ASSERT_FALSE(a.is_close);
    CU_ASSERT_FALSE(a.is_block);
    CU_ASSERT_STRING_EQUAL(a.why, "answered by rule m");
    CU_ASSERT_STRING_EQUAL(a.fields, "Content-Type: application/json\r\nContent-Length: 8\r\n");
    CU_ASSERT_EQUAL(a.body_len, 8);
    CU_ASSERT_NSTRING_EQUAL(a.body, "{\"ok\":1}", 8);
    ruleaction_answer_free(&a);
    CU_ASSERT_EQUAL_FATAL(ruleaction_answer(r, true, &a), 0);
    CU_ASSERT_STRING_EQUAL(a.fields, "Content-Type: application/json\r\nContent-Length: 8\r\n"
                                     "Connection: close\r\n");
    ruleaction_answer_free(&a);
    rules_set_unref(set);
}

static void test_no_body_for_204_and_304(void)
{
    struct rule_set *set;
    const struct rule *r = rule_of("request mock header='X-A: 1' 304", &set);
    struct ruleaction_answer a;

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(ruleaction_answer(r, false, &a), 0);
    CU_ASSERT_EQUAL(a.status, 304);
    CU_ASSERT_STRING_EQUAL(a.fields, "X-A: 1\r\n");
    CU_ASSERT_EQUAL(a.body_len, 0);
    ruleaction_answer_free(&a);
    rules_set_unref(set);
    r = rule_of("request block 204", &set);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(ruleaction_answer(r, false, &a), 0);
    CU_ASSERT_TRUE(a.is_block);
    CU_ASSERT_STRING_EQUAL(a.fields, "");
    CU_ASSERT_EQUAL(a.body_len, 0);
    ruleaction_answer_free(&a);
    rules_set_unref(set);
}

static void test_block_page_names_the_rule(void)
{
    struct rule_set *set;
    const struct rule *r = rule_of("request block name=ads host=ads.test", &set);
    struct ruleaction_answer a;
    const char *page = "403 Forbidden\n\ntapwire: blocked by rule ads\n";

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(ruleaction_answer(r, false, &a), 0);
    CU_ASSERT_EQUAL(a.status, 403);
    CU_ASSERT_TRUE(a.is_block);
    CU_ASSERT_STRING_EQUAL(a.why, "blocked by rule ads");
    CU_ASSERT_EQUAL(a.body_len, strlen(page));
    CU_ASSERT_NSTRING_EQUAL(a.body, page, strlen(page));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.fields, "Content-Type: text/plain; charset=utf-8\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.fields, "Content-Length: 44\r\n"));
    ruleaction_answer_free(&a);
    rules_set_unref(set);
}

static void test_block_close_has_no_answer(void)
{
    struct rule_set *set;
    const struct rule *r = rule_of("request block name=cut close", &set);
    struct ruleaction_answer a;

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(ruleaction_answer(r, false, &a), 0);
    CU_ASSERT_TRUE(a.is_close);
    CU_ASSERT_TRUE(a.is_block);
    CU_ASSERT_STRING_EQUAL(a.why, "connection closed by rule cut");
    CU_ASSERT_PTR_NULL(a.fields);
    ruleaction_answer_free(&a);
    rules_set_unref(set);
}

static void test_map_remote_rewrites_origin_target_and_host(void)
{
    struct rule_set *set;
    const struct rule *r =
        rule_of("request map-remote path=/api/ https://staging.test:8443/v2/", &set);
    struct message_field fields[] = {
        {"Host", 4, "www.test", 8},
        {"Accept", 6, "*/*", 3},
    };
    struct message req = {
        .method = "GET",
        .method_len = 3,
        .scheme = "http",
        .authority = "www.test",
        .authority_len = 8,
        .target = "/api/users?x=1",
        .target_len = 14,
        .version = 11,
        .fields = {fields, 2},
    };
    struct ruleaction_remote out;

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(
        ruleaction_map_remote(r, "http://www.test/api/users?x=1", &req, req.target, &out), 0);
    CU_ASSERT_TRUE(out.is_tls);
    CU_ASSERT_STRING_EQUAL(out.host, "staging.test");
    CU_ASSERT_EQUAL(out.port, 8443);
    CU_ASSERT_STRING_EQUAL(out.authority, "staging.test:8443");
    CU_ASSERT_STRING_EQUAL(out.target, "/v2/users?x=1");
    CU_ASSERT_STRING_EQUAL(out.note, "map-remote: asked for http://www.test/api/users?x=1, sent "
                                     "to https://staging.test:8443/v2/users?x=1");
    CU_ASSERT_STRING_EQUAL(out.req.scheme, "https");
    CU_ASSERT_NSTRING_EQUAL(out.req.authority, "staging.test:8443", out.req.authority_len);
    CU_ASSERT_NSTRING_EQUAL(out.req.target, "/v2/users?x=1", out.req.target_len);
    CU_ASSERT_EQUAL_FATAL(out.req.fields.count, 2);
    CU_ASSERT_NSTRING_EQUAL(out.req.fields.items[0].value, "staging.test:8443",
                            out.req.fields.items[0].value_len);
    CU_ASSERT_NSTRING_EQUAL(out.req.fields.items[1].value, "*/*", 3);
    /* The request given is untouched. */
    CU_ASSERT_NSTRING_EQUAL(fields[0].value, "www.test", 8);
    ruleaction_remote_free(&out);
    rules_set_unref(set);
}

#define ADD(suite, fn) (CU_add_test(suite, #fn + 5, fn) != NULL)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("ruleaction", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_mock_answer_fields_in_order_then_framing) ||
        !ADD(suite, test_no_body_for_204_and_304) || !ADD(suite, test_block_page_names_the_rule) ||
        !ADD(suite, test_block_close_has_no_answer) ||
        !ADD(suite, test_map_remote_rewrites_origin_target_and_host))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
