/*
 * libFuzzer target for the rules parser: rule text comes from files, the
 * command line and the dashboard's API, so it is treated as hostile. After
 * every parse the contract the rest of tapwire relies on is checked (a
 * violation traps, so the fuzzer reports it like a crash):
 *
 * fuzz-sources: src/rules.c src/regexsearch.c src/buf.c src/errmsg.c
 * fuzz-sources: src/filter.c src/codec.c src/flow.c src/http1.c src/message.c
 * fuzz-libs: libpcre2-8 zlib libbrotlidec libbrotlienc libzstd
 *
 *  - all or nothing: a set on success, NULL and a message naming the line
 *    on failure;
 *  - every parsed rule formats to one line of valid UTF-8 that parses back
 *    to the same rule and formats to the same line (the dashboard stores
 *    and shows that line);
 *  - applying the rules to a small exchange never produces a request-target
 *    with a space or control byte, a header value with CR, LF or NUL, or a
 *    body past its bound; an action found for it (mock, block, map-remote,
 *    match= decided on a flow of the exchange) is a request rule, a mock's
 *    fields carry no CR or LF and no framing, and a map-remote target is a
 *    request-target.
 */
#include "flow.h"
#include "rules.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_INPUT_BYTES 4096 /* longer texts only repeat what short ones test */
#define SUBJECT_BYTES 128    /* body subject taken from the input */
#define BODY_MAX_OUT 4096

/* Strict UTF-8 (RFC 3629), what a JSON string to the dashboard needs. */
static bool is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t more = c < 0x80                 ? 0
                      : c >= 0xc2 && c <= 0xdf ? 1
                      : c >= 0xe0 && c <= 0xef ? 2
                      : c >= 0xf0 && c <= 0xf4 ? 3
                                               : 9;
        uint32_t cp = c & (0x7f >> more);

        if (more == 9 || n - i - 1 < more)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += more + 1;
    }
    return true;
}

static bool same_list(char *const *a, size_t a_n, char *const *b, size_t b_n)
{
    if (a_n != b_n)
        return false;
    for (size_t i = 0; i < a_n; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

static bool same_bytes(const char *a, size_t a_len, const char *b, size_t b_len)
{
    if ((a == NULL) != (b == NULL) || a_len != b_len)
        return false;
    return a == NULL || a_len == 0 || memcmp(a, b, a_len) == 0;
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* What the canonical line must preserve: everything but the default label
 * and the id. */
static void check_same_rule(const struct rule *a, const struct rule *b)
{
    CHECK(a->phase == b->phase && a->target == b->target && a->action == b->action);
    CHECK(a->is_regex == b->is_regex && a->is_icase == b->is_icase);
    CHECK(a->is_enabled == b->is_enabled && a->has_name == b->has_name);
    CHECK(!a->has_name || strcmp(a->label, b->label) == 0);
    CHECK(strcmp(a->header_name, b->header_name) == 0);
    CHECK(same_list(a->hosts, a->host_count, b->hosts, b->host_count));
    CHECK(same_list(a->methods, a->method_count, b->methods, b->method_count));
    CHECK(same_list(a->types, a->type_count, b->types, b->type_count));
    CHECK(same_str(a->path_prefix, b->path_prefix) && same_str(a->path_regex, b->path_regex));
    CHECK(a->status_count == b->status_count);
    for (size_t i = 0; i < a->status_count; i++)
        CHECK(a->statuses[i].lo == b->statuses[i].lo && a->statuses[i].hi == b->statuses[i].hi);
    CHECK(a->has_pattern == b->has_pattern);
    CHECK(same_bytes(a->pattern, a->pattern_len, b->pattern, b->pattern_len));
    CHECK(same_bytes(a->replacement, a->replacement_len, b->replacement, b->replacement_len));
    CHECK(same_str(a->match_text, b->match_text));
    CHECK(a->answer_status == b->answer_status && a->is_close == b->is_close);
    CHECK(a->is_map_local == b->is_map_local);
    CHECK(same_list(a->answer_fields, a->answer_field_count, b->answer_fields,
                    b->answer_field_count));
    CHECK(same_bytes(a->answer_body, a->answer_body_len, b->answer_body, b->answer_body_len));
    CHECK(same_str(a->remote_url, b->remote_url));
}

static void check_action(const struct rule_set *set, struct rules_ctx *ctx)
{
    const struct rule *r = rules_find_action(set, ctx);
    char *target;

    if (r == NULL)
        return;
    CHECK(r->phase == RULES_REQUEST && r->target >= RULES_TARGET_MOCK);
    for (size_t i = 0; i < r->answer_field_count; i++) {
        const char *f = r->answer_fields[i];

        CHECK(strpbrk(f, "\r\n") == NULL);
        CHECK(strncasecmp(f, "Content-Length:", 15) != 0 &&
              strncasecmp(f, "Transfer-Encoding:", 18) != 0);
    }
    CHECK(r->answer_body_len <= RULES_MAX_ANSWER_BODY_BYTES);
    if (r->target != RULES_TARGET_MAP_REMOTE)
        return;
    target = rules_remote_target(r, ctx->target);
    if (target != NULL) {
        CHECK(target[0] == '/');
        for (const char *p = target; *p != '\0'; p++)
            CHECK(*p > 0x20 && *p < 0x7f);
        free(target);
    }
}

static void check_round_trip(const struct rule *r)
{
    char err[RULES_ERROR_BYTES];
    struct rule_set *again = NULL;
    char *line = rules_format(r);
    char *line2;

    CHECK(line != NULL);
    CHECK(strchr(line, '\n') == NULL && strchr(line, '\r') == NULL);
    CHECK(is_utf8((const unsigned char *)line, strlen(line)));
    CHECK(rules_parse_spec(line, strlen(line), "again", &again, err, sizeof(err)) == 0);
    CHECK(rules_set_count(again) == 1);
    check_same_rule(r, rules_set_get(again, 0));
    line2 = rules_format(rules_set_get(again, 0));
    CHECK(line2 != NULL && strcmp(line, line2) == 0);
    free(line2);
    free(line);
    rules_set_unref(again);
}

static void check_apply(const struct rule_set *set, const uint8_t *data, size_t size)
{
    static const char *const names[] = {"Host", "User-Agent", "Cookie", "Accept-Language",
                                        "Content-Type"};
    static const char *const values[] = {"www.google.com", "curl/8.0", "a=1; b=2", "en-US,en",
                                         "text/html; charset=utf-8"};
    struct rules_header in[5];
    struct rules_headers out;
    struct rules_ctx ctx;
    struct flow *flow = flow_new(0);
    char *target = NULL;
    unsigned char *body = NULL;
    size_t body_len = 0;
    size_t subject_len = size < SUBJECT_BYTES ? size : SUBJECT_BYTES;

    for (size_t i = 0; i < 5; i++)
        in[i] = (struct rules_header){names[i], strlen(names[i]), values[i], strlen(values[i])};
    /* The exchange as match= sees it, as rewrite.c makes it. */
    CHECK(flow != NULL);
    snprintf(flow->scheme, sizeof(flow->scheme), "https");
    snprintf(flow->method, sizeof(flow->method), "POST");
    snprintf(flow->host, sizeof(flow->host), "www.google.com");
    flow->port = 443;
    flow->target = strdup("/search?q=cybersecurity&hl=en");
    flow->request_headers = strdup("Host: www.google.com\r\nUser-Agent: curl/8.0\r\n"
                                   "Content-Type: text/html; charset=utf-8\r\n");
    CHECK(flow->target != NULL && flow->request_headers != NULL);
    for (int phase = 0; phase < 2; phase++) {
        CHECK(rules_ctx_init(&ctx, "POST", "www.google.com", "/search?q=cybersecurity&hl=en") == 0);
        ctx.flow = flow;
        if (phase == 1) {
            rules_ctx_set_response(&ctx, 200, "text/html");
            flow->status = 200;
            flow->response_headers = strdup("Content-Type: text/html\r\n");
        }
        CHECK(rules_apply_url(set, &ctx, &target) == 0);
        if (target != NULL) {
            CHECK(target[0] == '/');
            for (const char *p = target; *p != '\0'; p++)
                CHECK(*p > 0x20 && *p < 0x7f);
            CHECK(strlen(target) <= RULES_MAX_TARGET_BYTES);
            free(target);
            target = NULL;
        }
        CHECK(rules_apply_headers(set, &ctx, in, 5, &out) == 0);
        for (size_t i = 0; i < out.count; i++)
            for (size_t k = 0; k < out.fields[i].value_len; k++)
                CHECK(out.fields[i].value[k] != '\r' && out.fields[i].value[k] != '\n' &&
                      out.fields[i].value[k] != '\0');
        rules_headers_free(&out);
        if (phase == 0)
            check_action(set, &ctx);
        (void)rules_wants_body(set, &ctx);
        CHECK(rules_apply_body(set, &ctx, data, subject_len, BODY_MAX_OUT, &body, &body_len) == 0);
        CHECK(body == NULL || body_len <= BODY_MAX_OUT);
        free(body);
        body = NULL;
        free(rules_ctx_summary(&ctx));
        rules_ctx_free(&ctx);
    }
    flow_free(flow);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[RULES_ERROR_BYTES];
    struct rule_set *set = (struct rule_set *)1;
    int rc;

    if (size > MAX_INPUT_BYTES)
        return 0;
    err[0] = '\0';
    rc = rules_parse_text((const char *)data, size, "fuzz", &set, err, sizeof(err));
    CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        CHECK(set == NULL);
        CHECK(strncmp(err, "line ", 5) == 0 || strcmp(err, "out of memory") == 0);
        return 0;
    }
    CHECK(set != NULL);
    for (size_t i = 0; i < rules_set_count(set); i++)
        check_round_trip(rules_set_get(set, i));
    check_apply(set, data, size);
    rules_set_unref(set);
    return 0;
}
