/*
 * Unit tests for rules: the line syntax (good lines, bad lines and where
 * their errors point), the canonical form, filters, literal and regex
 * replacement, header actions and the injection checks, the bounds (output
 * size, PCRE2 limits, time budget) and the current-set holder under
 * threads. The rules table is test_rulestore.c's.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flow.h"
#include "rules.h"
#include "testutil.h"

#define THREADS 8
#define PUBLISHERS 2
#define PUBLISHES_PER_THREAD 300
#define ACQUIRES_PER_THREAD 3000

static char err[RULES_ERROR_BYTES];
static char dir[64];

/* ---- helpers ---- */

static struct rule_set *parse_ok(const char *text)
{
    struct rule_set *set = NULL;
    int rc = rules_parse_text(text, strlen(text), "t.rules", &set, err, sizeof(err));

    if (rc != 0)
        fprintf(stderr, "\nunexpected parse error: %s\n  in: %s\n", err, text);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(set);
    return set;
}

static const struct rule *only_rule(const struct rule_set *set)
{
    CU_ASSERT_EQUAL_FATAL(rules_set_count(set), 1);
    return rules_set_get(set, 0);
}

/* Parsing text fails, nothing is returned, and err is exactly want. */
static void expect_error(const char *text, const char *want)
{
    struct rule_set *set = (struct rule_set *)1;
    int rc = rules_parse_text(text, strlen(text), "t.rules", &set, err, sizeof(err));

    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NULL(set);
    if (rc != 0 && strcmp(err, want) != 0)
        fprintf(stderr, "\n  text: %s\n  want: %s\n  got:  %s\n", text, want, err);
    CU_ASSERT_STRING_EQUAL(err, want);
    if (rc == 0)
        rules_set_unref(set);
}

/* The target after the request-phase url rules; caller frees. */
static char *url_after(const struct rule_set *set, const char *method, const char *host,
                       const char *target, struct rules_ctx *keep)
{
    struct rules_ctx ctx;
    char *out = NULL;

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, method, host, target), 0);
    CU_ASSERT_EQUAL_FATAL(rules_apply_url(set, &ctx, &out), 0);
    if (out != NULL)
        CU_ASSERT_STRING_EQUAL(out, ctx.target);
    if (out == NULL) {
        CU_ASSERT_STRING_EQUAL(ctx.target, target);
        out = strdup(target);
    }
    if (keep != NULL) {
        *keep = ctx;
        keep->target = NULL;
    }
    rules_ctx_free(&ctx);
    return out;
}

/* The body after the body rules of ctx's phase, as a string; caller frees.
 * *changed says whether rules_apply_body() returned a new body. */
static char *body_after(const struct rule_set *set, struct rules_ctx *ctx, const char *in,
                        size_t max_out, bool *changed)
{
    unsigned char *out = NULL;
    size_t out_len = 0;
    char *s;

    CU_ASSERT_EQUAL_FATAL(
        rules_apply_body(set, ctx, (const unsigned char *)in, strlen(in), max_out, &out, &out_len),
        0);
    if (changed != NULL)
        *changed = out != NULL;
    if (out == NULL)
        return strdup(in);
    s = malloc(out_len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    memcpy(s, out, out_len);
    s[out_len] = '\0';
    free(out);
    return s;
}

static char *response_body_after(const struct rule_set *set, const char *host, const char *target,
                                 int status, const char *type, const char *in, bool *changed)
{
    struct rules_ctx ctx;
    char *out;

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", host, target), 0);
    rules_ctx_set_response(&ctx, status, type);
    out = body_after(set, &ctx, in, 0, changed);
    rules_ctx_free(&ctx);
    return out;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Header list from "Name: value" strings. */
static void make_fields(struct rules_header *out, const char *const *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(lines[i], ':');

        out[i].name = lines[i];
        out[i].name_len = (size_t)(colon - lines[i]);
        out[i].value = colon + 2;
        out[i].value_len = strlen(colon + 2);
    }
}

/* The list as "Name: value\n" lines, for comparing. Caller frees. */
static char *fields_text(const struct rules_header *f, size_t n)
{
    size_t len = 1;
    char *s, *p;

    for (size_t i = 0; i < n; i++)
        len += f[i].name_len + f[i].value_len + 3;
    s = p = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%.*s: %.*s\n", (int)f[i].name_len, f[i].name, (int)f[i].value_len,
                     f[i].value);
    *p = '\0';
    return s;
}

/* Applies the set's header rules of the request phase; returns the result
 * as text (the input's text when unchanged). */
static char *request_headers_after(const struct rule_set *set, const char *const *lines, size_t n,
                                   struct rules_ctx *ctx_out)
{
    struct rules_header in[16];
    struct rules_headers out;
    struct rules_ctx ctx;
    char *text;

    make_fields(in, lines, n);
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h.example", "/"), 0);
    CU_ASSERT_EQUAL_FATAL(rules_apply_headers(set, &ctx, in, n, &out), 0);
    text = out.fields != NULL ? fields_text(out.fields, out.count) : fields_text(in, n);
    rules_headers_free(&out);
    if (ctx_out != NULL) {
        *ctx_out = ctx;
        ctx_out->target = NULL;
    }
    rules_ctx_free(&ctx);
    return text;
}

/* ---- parsing ---- */

static void test_parses_textbook_url_rule(void)
{
    struct rule_set *set =
        parse_ok("request url host=www.google.com \"q=cybersecurity\" \"q=SEED+Labs\"\n");
    const struct rule *r = only_rule(set);

    CU_ASSERT_EQUAL(r->phase, RULES_REQUEST);
    CU_ASSERT_EQUAL(r->target, RULES_TARGET_URL);
    CU_ASSERT_EQUAL(r->host_count, 1);
    CU_ASSERT_STRING_EQUAL(r->hosts[0], "www.google.com");
    CU_ASSERT_STRING_EQUAL(r->pattern, "q=cybersecurity");
    CU_ASSERT_STRING_EQUAL(r->replacement, "q=SEED+Labs");
    CU_ASSERT_FALSE(r->is_regex);
    CU_ASSERT_FALSE(r->is_icase);
    CU_ASSERT_TRUE(r->is_enabled);
    CU_ASSERT_FALSE(r->has_name);
    CU_ASSERT_STRING_EQUAL(r->label, "t.rules:1");
    CU_ASSERT_EQUAL(r->line, 1);
    rules_set_unref(set);
}

static void test_parses_every_option(void)
{
    struct rule_set *set =
        parse_ok("response body regex icase disabled name=swap-1 host=*.example.org,example.org "
                 "path=/a/b path~'^/a/[0-9]+' method=GET,post status=200,4xx type=text/html,json "
                 "'(Ex)ample' '${1}cellent'");
    const struct rule *r = only_rule(set);

    CU_ASSERT_EQUAL(r->phase, RULES_RESPONSE);
    CU_ASSERT_EQUAL(r->target, RULES_TARGET_BODY);
    CU_ASSERT_TRUE(r->is_regex);
    CU_ASSERT_TRUE(r->is_icase);
    CU_ASSERT_FALSE(r->is_enabled);
    CU_ASSERT_TRUE(r->has_name);
    CU_ASSERT_STRING_EQUAL(r->label, "swap-1");
    CU_ASSERT_EQUAL_FATAL(r->host_count, 2);
    CU_ASSERT_STRING_EQUAL(r->hosts[0], "*.example.org");
    CU_ASSERT_STRING_EQUAL(r->hosts[1], "example.org");
    CU_ASSERT_STRING_EQUAL(r->path_prefix, "/a/b");
    CU_ASSERT_STRING_EQUAL(r->path_regex, "^/a/[0-9]+");
    CU_ASSERT_PTR_NOT_NULL(r->path_re);
    CU_ASSERT_EQUAL_FATAL(r->method_count, 2);
    CU_ASSERT_STRING_EQUAL(r->methods[1], "post");
    CU_ASSERT_EQUAL_FATAL(r->status_count, 2);
    CU_ASSERT_EQUAL(r->statuses[0].lo, 200);
    CU_ASSERT_EQUAL(r->statuses[0].hi, 200);
    CU_ASSERT_EQUAL(r->statuses[1].lo, 400);
    CU_ASSERT_EQUAL(r->statuses[1].hi, 499);
    CU_ASSERT_EQUAL_FATAL(r->type_count, 2);
    CU_ASSERT_STRING_EQUAL(r->types[0], "text/html");
    CU_ASSERT_PTR_NOT_NULL(r->re);
    CU_ASSERT_PTR_NOT_NULL(r->match_ctx);
    CU_ASSERT_EQUAL(r->repl_part_count, 2);
    rules_set_unref(set);
}

static void test_parses_header_actions(void)
{
    struct rule_set *set = parse_ok("request header User-Agent set \"tapwire-test\"\n"
                                    "request header Cookie remove\n"
                                    "request header Accept-Language replace \"en\" \"de\"\n"
                                    "response header Set-Cookie remove icase 'tracking'\n"
                                    "request header X-Empty set ''\n");
    const struct rule *r;

    CU_ASSERT_EQUAL_FATAL(rules_set_count(set), 5);
    r = rules_set_get(set, 0);
    CU_ASSERT_EQUAL(r->target, RULES_TARGET_HEADER);
    CU_ASSERT_STRING_EQUAL(r->header_name, "User-Agent");
    CU_ASSERT_EQUAL(r->action, RULES_HEADER_SET);
    CU_ASSERT_FALSE(r->has_pattern);
    CU_ASSERT_STRING_EQUAL(r->replacement, "tapwire-test");
    r = rules_set_get(set, 1);
    CU_ASSERT_EQUAL(r->action, RULES_HEADER_REMOVE);
    CU_ASSERT_FALSE(r->has_pattern);
    r = rules_set_get(set, 2);
    CU_ASSERT_EQUAL(r->action, RULES_HEADER_REPLACE);
    CU_ASSERT_STRING_EQUAL(r->pattern, "en");
    CU_ASSERT_STRING_EQUAL(r->replacement, "de");
    r = rules_set_get(set, 3);
    CU_ASSERT_EQUAL(r->phase, RULES_RESPONSE);
    CU_ASSERT_EQUAL(r->action, RULES_HEADER_REMOVE);
    CU_ASSERT_TRUE(r->has_pattern);
    CU_ASSERT_TRUE(r->is_icase);
    r = rules_set_get(set, 4);
    CU_ASSERT_EQUAL(r->replacement_len, 0);
    rules_set_unref(set);
}

static void test_quotes_and_escapes_decode(void)
{
    struct rule_set *set = parse_ok("request body \"a\\\"b\\\\c\\n\\r\\t\\x41\\x00z\" 'raw\\d\"'\n"
                                    "request body type=\"text/html; charset=utf-8\" it\"'s\" x\n");
    const struct rule *r = rules_set_get(set, 0);

    CU_ASSERT_EQUAL_FATAL(r->pattern_len, 11);
    CU_ASSERT_EQUAL(memcmp(r->pattern, "a\"b\\c\n\r\tA\0z", 11), 0);
    CU_ASSERT_STRING_EQUAL(r->replacement, "raw\\d\"");
    r = rules_set_get(set, 1);
    CU_ASSERT_EQUAL_FATAL(r->type_count, 1);
    CU_ASSERT_STRING_EQUAL(r->types[0], "text/html; charset=utf-8");
    CU_ASSERT_STRING_EQUAL(r->pattern, "it's");
    rules_set_unref(set);
}

static void test_comments_and_blank_lines_are_skipped(void)
{
    struct rule_set *set = parse_ok("\xef\xbb\xbf# rules for the lab\n"
                                    "\n"
                                    "   \t \r\n"
                                    "request body a b   # trailing comment\r\n"
                                    "request body path=/x#y '#' hash\n"
                                    "# the end");
    const struct rule *r;

    CU_ASSERT_EQUAL_FATAL(rules_set_count(set), 2);
    r = rules_set_get(set, 0);
    CU_ASSERT_STRING_EQUAL(r->replacement, "b");
    CU_ASSERT_EQUAL(r->line, 4);
    CU_ASSERT_STRING_EQUAL(r->label, "t.rules:4");
    r = rules_set_get(set, 1);
    CU_ASSERT_STRING_EQUAL(r->path_prefix, "/x#y");
    CU_ASSERT_STRING_EQUAL(r->pattern, "#");
    rules_set_unref(set);
}

static void test_unterminated_quote_names_line_and_column(void)
{
    expect_error("# one\n"
                 "request body a b\n"
                 "request url 'a' \"bcd\n",
                 "line 3, column 17: unterminated quote");
}

static void test_regex_error_names_line_and_column(void)
{
    /* The error offset inside a quoted, escaped pattern maps back to the
     * column in the line: PCRE2 reports the end of "(ab\x63", which is the
     * closing quote at column 27. */
    expect_error("request url regex \"(ab\\x63\" x\n", "line 1, column 27: regex error: "
                                                       "missing closing parenthesis");
    expect_error("request url path~'a)' x y", "line 1, column 20: regex error: "
                                              "unmatched closing parenthesis");
}

static void test_unknown_target_names_line(void)
{
    expect_error("request body a b\nrequest bdy a b\n",
                 "line 2, column 9: unknown target 'bdy' (expected url, header, body, mock, "
                 "map-local, block or map-remote)");
}

static void test_bad_lines_name_line_and_column(void)
{
    static const struct {
        const char *line;
        const char *err;
    } cases[] = {
        {"requst url a b",
         "line 1, column 1: unknown phase 'requst' (expected request or response)"},
        {"request", "line 1, column 8: missing target (url, header NAME, body, mock, map-local, "
                    "block or map-remote)"},
        {"request url a", "line 1, column 14: missing replacement"},
        {"request url", "line 1, column 12: missing pattern"},
        {"request url a b c", "line 1, column 17: unexpected 'c' after the replacement (quote "
                              "text that contains spaces)"},
        {"request url q=x y", "line 1, column 13: unknown option 'q' (quote a pattern that "
                              "contains '=' or '~')"},
        {"request url host~a a b", "line 1, column 17: option 'host' takes '=', not '~'"},
        {"request url host= a b", "line 1, column 18: empty value for host="},
        {"request url host=a,,b a b", "line 1, column 20: empty value in host="},
        {"request url host=a host=b a b", "line 1, column 20: option 'host' given twice (list "
                                          "globs with commas)"},
        {"request url regex regex a b", "line 1, column 19: 'regex' given twice"},
        {"request url status=200 a b", "line 1, column 1: status= is for response rules"},
        {"response url a b", "line 1, column 10: target 'url' is for request rules (a "
                             "response has no request-target)"},
        {"response body status=600 a b", "line 1, column 22: bad status '600' (expected a code "
                                         "like 404 or a class like 4xx)"},
        {"response body status=2xx,3x a b", "line 1, column 26: bad status '3x' (expected a "
                                            "code like 404 or a class like 4xx)"},
        {"request body method=G@T a b", "line 1, column 22: '@' cannot be part of a method"},
        {"request body name=a/b a b", "line 1, column 20: a name is made of letters, digits, "
                                      "'.', '_' and '-'"},
        {"request body path='/a b' a b", "line 1, column 22: a request-target never contains "
                                         "byte 0x20, so path= could never match"},
        {"request body '' x", "line 1, column 14: empty pattern"},
        {"request body \"a\\q\" x", "line 1, column 16: unknown escape '\\q' (inside '...' "
                                    "backslashes are literal, which suits regexes)"},
        {"request body \"a\\x4\" x", "line 1, column 16: \\x needs two hex digits"},
        {"request body a\x01 x", "line 1, column 15: control character 0x01 (write it as \\x01 "
                                 "inside \"...\")"},
        {"request header a:b set x", "line 1, column 17: ':' cannot be part of a header name"},
        {"request header Host", "line 1, column 20: missing header action (set, replace or "
                                "remove)"},
        {"request header Host delete", "line 1, column 21: unknown header action 'delete' "
                                       "(expected set, replace or remove)"},
        {"request header X set", "line 1, column 21: missing value"},
        {"request header X set a b", "line 1, column 24: unexpected 'b' after the value (quote "
                                     "text that contains spaces)"},
        {"request header X regex set a", "line 1, column 1: 'regex' needs a pattern"},
        {"request header X icase remove", "line 1, column 1: 'icase' needs a pattern"},
        {"request header X replace a", "line 1, column 27: missing replacement"},
        {"request header Content-Length set 5", "line 1, column 16: Content-Length is computed "
                                                "by tapwire for each hop and cannot be rewritten"},
        {"request header transfer-encoding remove", "line 1, column 16: transfer-encoding is "
                                                    "computed by tapwire for each hop and cannot "
                                                    "be rewritten"},
        {"request header X set \"a\\r\\nEvil: 1\"", "line 1, column 24: a header value cannot "
                                                    "contain CR or LF (it would start a new "
                                                    "header line)"},
        {"request header X replace regex a \"$0\\n\"", "line 1, column 37: a header value "
                                                       "cannot contain CR or LF (it would start "
                                                       "a new header line)"},
        {"request header X set \"a\\x00\"", "line 1, column 24: a header value cannot contain "
                                            "byte 0x00"},
        {"request url a 'b c'", "line 1, column 17: a request-target cannot contain a space "
                                "(write + or %20)"},
        {"request url a \"b\\x7f\"", "line 1, column 17: a request-target cannot contain byte "
                                     "0x7f (percent-encode it)"},
        {"request url regex '(a)' '$2'", "line 1, column 26: group 2 does not exist (the regex "
                                         "has 1)"},
        {"request url regex '(a)' '${x}'",
         "line 1, column 26: the regex has no group named 'x' (write "
         "$$ for a dollar sign)"},
        {"request url regex '(a)' '$x'", "line 1, column 26: the regex has no group named 'x' "
                                         "(write $$ for a dollar sign)"},
        {"request url regex '(a)' 'a$'", "line 1, column 27: '$' must be followed by a group "
                                         "number, {group} or $ (write $$ for a dollar sign)"},
        {"request url regex '(a)' '${1'", "line 1, column 26: '${' without a group and a "
                                          "closing '}'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].line, cases[i].err);
}

static void test_one_bad_line_rejects_whole_file(void)
{
    expect_error("request url a b\n"
                 "request body c d\n"
                 "request body regex '(' x\n"
                 "request body e f\n",
                 "line 3, column 22: regex error: missing closing parenthesis");
}

static void test_parse_spec_is_one_rule(void)
{
    struct rule_set *set = NULL;
    const char *spec = "request url a b";

    CU_ASSERT_EQUAL(rules_parse_spec(spec, strlen(spec), "api", &set, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(only_rule(set)->label, "api");
    rules_set_unref(set);
    CU_ASSERT_EQUAL(rules_parse_spec("# nothing", 9, "api", &set, err, sizeof(err)), -1);
    CU_ASSERT_STRING_EQUAL(err, "no rule (the text is blank or a comment)");
    CU_ASSERT_EQUAL(
        rules_parse_spec("request url a b\nrequest url c d", 31, "api", &set, err, sizeof(err)),
        -1);
    CU_ASSERT_STRING_EQUAL(err, "column 16: a rule is one line");
    CU_ASSERT_EQUAL(rules_parse_spec("request url 'a", 14, "api", &set, err, sizeof(err)), -1);
    CU_ASSERT_STRING_EQUAL(err, "column 13: unterminated quote");
}

static void test_parse_specs_labels_and_errors(void)
{
    const char *good[] = {"request url a b", "response body name=n x y"};
    const char *bad[] = {"request url a b", "request url a"};
    struct rule_set *set = NULL;

    CU_ASSERT_EQUAL_FATAL(rules_parse_specs(good, 2, &set, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rules_set_count(set), 2);
    CU_ASSERT_STRING_EQUAL(rules_set_get(set, 0)->label, "rule 1");
    CU_ASSERT_STRING_EQUAL(rules_set_get(set, 1)->label, "n");
    rules_set_unref(set);
    CU_ASSERT_EQUAL(rules_parse_specs(bad, 2, &set, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(set);
    CU_ASSERT_STRING_EQUAL(err, "rule 2: column 14: missing replacement");
}

static void test_format_round_trips(void)
{
    static const struct {
        const char *in;
        const char *canonical;
    } cases[] = {
        {"request url host=www.google.com \"q=cybersecurity\" q\"=SEED+Labs\"",
         "request url host=www.google.com 'q=cybersecurity' 'q=SEED+Labs'"},
        {"response body type=text/html icase host=example.org \"Example Domain\" \"Tapwire "
         "Domain\"",
         "response body icase host=example.org type=text/html 'Example Domain' 'Tapwire Domain'"},
        {"request header User-Agent set tapwire-test",
         "request header User-Agent set 'tapwire-test'"},
        {"request header Cookie remove", "request header Cookie remove"},
        {"request body method=POST,PUT secret [redacted] disabled name=r1",
         "request body disabled name=r1 method=POST,PUT 'secret' '[redacted]'"},
        {"response body status=4xx,200 path~'^/a b' path=/x \"it's\\n\" \"\\x01\\t\"",
         "response body path=/x path~'^/a b' status=4xx,200 \"it's\\n\" \"\\x01\\t\""},
        {"request url regex '([?&]q=)cybersecurity' '$1SEED+Labs'",
         "request url regex '([?&]q=)cybersecurity' '$1SEED+Labs'"},
        {"request body type='a\"b' x y", "request body type='a\"b' 'x' 'y'"},
        {"request body type=\"a'\\\"b\" x y", "request body type=\"a'\\\"b\" 'x' 'y'"},
        /* Valid UTF-8 stays readable; the escapes decode to the same bytes. */
        {"request body Stra\xc3\x9f"
         "e \"\\xc3\\x9f\"",
         "request body 'Stra\xc3\x9f"
         "e' '\xc3\x9f'"},
        {"request body \"\\xff\\x00\" \"\\\\\"", "request body \"\\xff\\x00\" '\\'"},
        {"request body regex '' \"\\\\\"", "request body regex '' '\\'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rule_set *a = parse_ok(cases[i].in), *b;
        char *first = rules_format(only_rule(a)), *second;

        CU_ASSERT_PTR_NOT_NULL_FATAL(first);
        if (strcmp(first, cases[i].canonical) != 0)
            fprintf(stderr, "\n  want: %s\n  got:  %s\n", cases[i].canonical, first);
        CU_ASSERT_STRING_EQUAL(first, cases[i].canonical);
        b = parse_ok(first);
        second = rules_format(only_rule(b));
        CU_ASSERT_STRING_EQUAL(second, first);
        CU_ASSERT_EQUAL(only_rule(b)->pattern_len, only_rule(a)->pattern_len);
        CU_ASSERT_EQUAL(only_rule(b)->replacement_len, only_rule(a)->replacement_len);
        if (only_rule(a)->pattern_len > 0)
            CU_ASSERT_EQUAL(
                memcmp(only_rule(b)->pattern, only_rule(a)->pattern, only_rule(a)->pattern_len), 0);
        free(first);
        free(second);
        rules_set_unref(a);
        rules_set_unref(b);
    }
}

static void test_load_file_errors_name_the_file(void)
{
    char path[128];
    struct rule_set *set = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "%s/lab.rules", dir);
    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("request url a b\nrequest url 'c d\n", f);
    fclose(f);
    CU_ASSERT_EQUAL(rules_load_file(path, &set, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(set);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ": line 2, column 13: unterminated quote"));

    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("request url a b\n", f);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(rules_load_file(path, &set, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(only_rule(set)->label, "lab.rules:1");
    rules_set_unref(set);
    unlink(path);

    CU_ASSERT_EQUAL(rules_load_file(path, &set, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot open rules file"));
}

/* ---- actions and match= ---- */

static void test_mock_block_map_remote_parse(void)
{
    struct rule_set *set = parse_ok(
        "request mock path=/api header='Content-Type: application/json' header=\"X-A: 1\" 201 "
        "'{\"ok\":true}'\n"
        "request block host=ads.example\n"
        "request block host=t.example 451\n"
        "request block close name=cut\n"
        "request map-remote host=api.example https://staging.example:8443/v2\n"
        "request map-remote path=/api/ http://127.0.0.1:3000/\n");
    const struct rule *r;

    CU_ASSERT_EQUAL_FATAL(rules_set_count(set), 6);
    r = rules_set_get(set, 0);
    CU_ASSERT_EQUAL(r->target, RULES_TARGET_MOCK);
    CU_ASSERT_EQUAL(r->answer_status, 201);
    CU_ASSERT_EQUAL(r->answer_field_count, 2);
    CU_ASSERT_STRING_EQUAL(r->answer_fields[0], "Content-Type: application/json");
    CU_ASSERT_EQUAL(r->answer_body_len, 11);
    CU_ASSERT_EQUAL(memcmp(r->answer_body, "{\"ok\":true}", 11), 0);
    r = rules_set_get(set, 1);
    CU_ASSERT_EQUAL(r->target, RULES_TARGET_BLOCK);
    CU_ASSERT_EQUAL(r->answer_status, 403);
    CU_ASSERT_FALSE(r->is_close);
    CU_ASSERT_EQUAL(rules_set_get(set, 2)->answer_status, 451);
    r = rules_set_get(set, 3);
    CU_ASSERT_TRUE(r->is_close);
    CU_ASSERT_STRING_EQUAL(r->label, "cut");
    r = rules_set_get(set, 4);
    CU_ASSERT_EQUAL(r->target, RULES_TARGET_MAP_REMOTE);
    CU_ASSERT_TRUE(r->remote.is_tls);
    CU_ASSERT_STRING_EQUAL(r->remote.host, "staging.example");
    CU_ASSERT_EQUAL(r->remote.port, 8443);
    CU_ASSERT_STRING_EQUAL(r->remote.authority, "staging.example:8443");
    CU_ASSERT_STRING_EQUAL(r->remote.prefix, "/v2");
    r = rules_set_get(set, 5);
    CU_ASSERT_FALSE(r->remote.is_tls);
    CU_ASSERT_EQUAL(r->remote.port, 3000);
    CU_ASSERT_STRING_EQUAL(r->remote.prefix, "");
    rules_set_unref(set);
}

static void test_action_errors_name_the_column(void)
{
    static const struct {
        const char *line;
        const char *err;
    } cases[] = {
        {"request mock", "line 1, column 13: missing status (e.g. 200)"},
        {"request mock 99", "line 1, column 14: bad status '99' (expected a code from 200 to 599)"},
        {"request mock 200 a b", "line 1, column 20: unexpected 'b' (quote text that contains "
                                 "spaces)"},
        {"request mock 204 body", "line 1, column 14: a 204 answer has no body"},
        {"response mock 200", "line 1, column 10: 'mock' is a request rule (it decides before "
                              "the origin is asked)"},
        {"request mock regex 200", "line 1, column 1: 'regex' is for patterns, and 'mock' has "
                                   "none"},
        {"request mock header=Content-Length:3 200 abc",
         "line 1, column 21: Content-Length is computed by tapwire for each answer and cannot "
         "be set"},
        {"request mock header=NoColon 200", "line 1, column 21: header= takes \"Name: value\""},
        {"request block header='A: b'", "line 1, column 15: option 'header' is for mock and "
                                        "map-local rules"},
        {"request block 200 x", "line 1, column 19: unexpected 'x' (quote text that contains "
                                "spaces)"},
        {"request map-local 200", "line 1, column 22: map-local needs file=PATH"},
        {"request map-remote", "line 1, column 19: missing URL (e.g. https://host:port/prefix)"},
        {"request map-remote ftp://x/", "line 1, column 20: bad map-remote URL 'ftp://x/' "
                                        "(expected http[s]://host[:port][/prefix])"},
        {"request map-remote http://x/a?b=1", "line 1, column 20: a map-remote URL has no query "
                                              "or fragment"},
        {"request mock file=/nonexistent/x 200",
         "line 1, column 19: cannot open /nonexistent/x: No such file or directory"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].line, cases[i].err);
}

static void test_match_errors_point_into_the_expression(void)
{
    /* The column is the line's: the expression starts at column 29, and
     * its end is the closing quote's. */
    expect_error("request header A set match='~m GET & (' x",
                 "line 1, column 39: match=: expected a filter after '('");
    expect_error("request url match='~c 200' a b",
                 "line 1, column 20: match=: a request rule is decided before the response: ~c, "
                 "~s, ~q, ~hs and ~ts cannot be used (write ~hq, ~tq for the request's)");
    expect_error("response header A set match='~bs x' x",
                 "line 1, column 30: match=: rules are decided on the heads, before a body is "
                 "read: ~b, ~bq and ~bs cannot be used");
    expect_error("request url match=a match=b a b",
                 "line 1, column 21: option 'match' given twice (combine with &)");
}

static void test_file_is_read_at_load_and_refused_from_the_dashboard(void)
{
    char path[128], rules_path[128], text[300];
    struct rule_set *set = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "%s/body.json", dir);
    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("{\"mocked\":1}\n", f);
    fclose(f);
    /* A relative file= is the rules file's neighbour. */
    snprintf(rules_path, sizeof(rules_path), "%s/lab.rules", dir);
    f = fopen(rules_path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("request map-local path=/x file=body.json header='Content-Type: application/json'\n", f);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(rules_load_file(rules_path, &set, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(only_rule(set)->answer_status, 200);
    CU_ASSERT_EQUAL(only_rule(set)->answer_body_len, 13);
    CU_ASSERT_EQUAL(memcmp(only_rule(set)->answer_body, "{\"mocked\":1}\n", 13), 0);
    rules_set_unref(set);
    set = NULL;

    snprintf(text, sizeof(text), "request mock file=%s 200", path);
    CU_ASSERT_EQUAL(rules_parse_stored(text, 4, true, &set, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NULL(set);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "file= is for --rules and --rule only"));
    CU_ASSERT_EQUAL(rules_parse_stored("request mock 200 inline", 4, true, &set, err, sizeof(err)),
                    0);
    rules_set_unref(set);
    unlink(path);
    unlink(rules_path);
}

static void test_action_format_round_trips(void)
{
    static const char *const lines[] = {
        "request mock name=m path=/a match='~m POST & ~hq \"X-Mock\"' header='Content-Type: "
        "text/plain' 201 'hello'",
        "request block host=ads.example 403",
        "request block close",
        "request map-remote path=/api/ 'https://localhost:8443/v2'",
    };

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct rule_set *a = parse_ok(lines[i]);
        char *first = rules_format(only_rule(a));

        CU_ASSERT_PTR_NOT_NULL_FATAL(first);
        if (strcmp(first, lines[i]) != 0)
            fprintf(stderr, "\n  want: %s\n  got:  %s\n", lines[i], first);
        CU_ASSERT_STRING_EQUAL(first, lines[i]);
        free(first);
        rules_set_unref(a);
    }
}

/* A flow of the request for match=, as rewrite.c makes it. */
static struct flow *request_flow(const char *method, const char *headers)
{
    struct flow *f = flow_new(0);

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    snprintf(f->scheme, sizeof(f->scheme), "http");
    snprintf(f->method, sizeof(f->method), "%s", method);
    snprintf(f->host, sizeof(f->host), "api.example");
    f->port = 80;
    f->target = strdup("/v1/items");
    f->request_headers = strdup(headers);
    return f;
}

static void test_first_matching_action_wins_and_match_selects(void)
{
    struct rule_set *set = parse_ok("request block path=/admin name=deny\n"
                                    "request mock match='~m POST & ~hq X-Mock' name=m 200 ok\n"
                                    "request map-remote host=api.* name=mr http://127.0.0.1:9/\n");
    struct flow *post = request_flow("POST", "Host: api.example\r\nX-Mock: 1\r\n");
    struct flow *get = request_flow("GET", "Host: api.example\r\nX-Mock: 1\r\n");
    struct rules_ctx ctx;
    const struct rule *r;

    CU_ASSERT_TRUE(rules_set_has_match(set));
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "POST", "api.example", "/v1/items"), 0);
    ctx.flow = post;
    r = rules_find_action(set, &ctx);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->label, "m");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "m");
    rules_ctx_free(&ctx);

    /* match= says no: the next action applies. */
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "api.example", "/v1/items"), 0);
    ctx.flow = get;
    r = rules_find_action(set, &ctx);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(r->label, "mr");
    rules_ctx_free(&ctx);

    /* Without a flow a rule with match= never applies. */
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "POST", "api.example", "/v1/items"), 0);
    r = rules_find_action(set, &ctx);
    CU_ASSERT_STRING_EQUAL(r->label, "mr");
    rules_ctx_free(&ctx);

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "api.example", "/admin/x"), 0);
    CU_ASSERT_STRING_EQUAL(rules_find_action(set, &ctx)->label, "deny");
    rules_ctx_free(&ctx);
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "www.example", "/"), 0);
    CU_ASSERT_PTR_NULL(rules_find_action(set, &ctx));
    rules_ctx_free(&ctx);

    flow_free(post);
    flow_free(get);
    rules_set_unref(set);

    set = parse_ok("request mock host=*.test 200 x\nrequest url a b\n");
    CU_ASSERT_FALSE(rules_set_has_match(set));
    rules_set_unref(set);
}

static void test_match_on_header_and_response_rules(void)
{
    struct rule_set *set = parse_ok("request header X-A set 1 match='~hq \"X-Tag: yes\"'\n"
                                    "response header X-B set 2 match='~c 404 & ~hs Server'\n");
    struct flow *f = request_flow("GET", "X-Tag: yes\r\n");
    struct rules_header in[1] = {{"Server", 6, "t", 1}};
    struct rules_headers out;
    struct rules_ctx ctx;

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "api.example", "/"), 0);
    ctx.flow = f;
    CU_ASSERT_EQUAL(rules_apply_headers(set, &ctx, in, 1, &out), 0);
    CU_ASSERT_EQUAL(out.count, 2);
    rules_headers_free(&out);
    f->status = 404;
    f->response_headers = strdup("Server: t\r\n");
    rules_ctx_set_response(&ctx, 404, NULL);
    CU_ASSERT_EQUAL(rules_apply_headers(set, &ctx, in, 1, &out), 0);
    CU_ASSERT_EQUAL(out.count, 2);
    rules_headers_free(&out);
    f->status = 200;
    rules_ctx_set_response(&ctx, 200, NULL);
    CU_ASSERT_EQUAL(rules_apply_headers(set, &ctx, in, 1, &out), 0);
    CU_ASSERT_PTR_NULL(out.fields); /* ~c 404 no longer holds */
    rules_ctx_free(&ctx);
    flow_free(f);
    rules_set_unref(set);
}

static void test_remote_target_joins_prefix(void)
{
    static const struct {
        const char *rule, *in, *out;
    } cases[] = {
        {"request map-remote https://h/v2", "/users?x=1", "/v2/users?x=1"},
        {"request map-remote https://h/v2/", "/users", "/v2/users"},
        {"request map-remote https://h", "/users", "/users"},
        {"request map-remote https://h/", "/", "/"},
        {"request map-remote path=/api/ http://h/", "/api/users", "/users"},
        {"request map-remote path=/api http://h/v1", "/api?q", "/v1?q"},
        {"request map-remote path=/api/ http://h/", "/api/", "/"},
        {"request map-remote path=/api/ http://h/v1", "/api/x", "/v1/x"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rule_set *set = parse_ok(cases[i].rule);
        char *t = rules_remote_target(only_rule(set), cases[i].in);

        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        if (strcmp(t, cases[i].out) != 0)
            fprintf(stderr, "\n  %s on %s: want %s, got %s\n", cases[i].rule, cases[i].in,
                    cases[i].out, t);
        CU_ASSERT_STRING_EQUAL(t, cases[i].out);
        free(t);
        rules_set_unref(set);
    }
}

/* ---- matching and applying ---- */

static void test_textbook_google_example(void)
{
    struct rule_set *set =
        parse_ok("request url host=www.google.com \"q=cybersecurity\" \"q=SEED+Labs\"");
    struct rules_ctx ctx;
    char *t = url_after(set, "GET", "www.google.com", "/search?q=cybersecurity&hl=en", &ctx);

    CU_ASSERT_STRING_EQUAL(t, "/search?q=SEED+Labs&hl=en");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "t.rules:1");
    free(t);
    t = url_after(set, "GET", "www.bing.com", "/search?q=cybersecurity", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/search?q=cybersecurity");
    free(t);
    rules_set_unref(set);

    /* The regex form from the man page, for hosts like www.google.de too. */
    set = parse_ok("request url regex host=*.google.* path=/search '([?&]q=)cybersecurity\\b' "
                   "'$1SEED+Labs'");
    t = url_after(set, "GET", "www.google.de", "/search?hl=en&q=cybersecurity&oq=cybersecurity",
                  NULL);
    CU_ASSERT_STRING_EQUAL(t, "/search?hl=en&q=SEED+Labs&oq=cybersecurity");
    free(t);
    rules_set_unref(set);
}

static void test_host_glob_filter(void)
{
    struct rule_set *set = parse_ok("request url host=*.example.org,exa?ple.com a b");

    static const struct {
        const char *host;
        bool hit;
    } cases[] = {
        {"www.example.org", true},   {"a.b.EXAMPLE.org", true}, {"example.org", false},
        {"example.com", true},       {"exaXple.com", true},     {"exaple.com", false},
        {"example.com.evil", false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = url_after(set, "GET", cases[i].host, "/a", NULL);

        CU_ASSERT_STRING_EQUAL(t, cases[i].hit ? "/b" : "/a");
        free(t);
    }
    rules_set_unref(set);
}

static void test_path_prefix_and_regex_filters(void)
{
    struct rule_set *set = parse_ok("request url path=/api/ x y\n"
                                    "request url path~'^/v[0-9]+/' k l\n");
    char *t;

    t = url_after(set, "GET", "h", "/api/x?k", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/api/y?k");
    free(t);
    t = url_after(set, "GET", "h", "/apix/x", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/apix/x");
    free(t);
    t = url_after(set, "GET", "h", "/v2/k", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/v2/l");
    free(t);
    t = url_after(set, "GET", "h", "/vx/k", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/vx/k");
    free(t);
    rules_set_unref(set);
}

static void test_method_filter(void)
{
    struct rule_set *set = parse_ok("request body method=POST,put secret '[redacted]'");
    struct rules_ctx ctx;
    const char *methods[] = {"POST", "PUT", "GET"};
    const char *want[] = {"a=[redacted]", "a=[redacted]", "a=secret"};

    for (size_t i = 0; i < 3; i++) {
        char *b;

        CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, methods[i], "h", "/"), 0);
        b = body_after(set, &ctx, "a=secret", 0, NULL);
        CU_ASSERT_STRING_EQUAL(b, want[i]);
        free(b);
        rules_ctx_free(&ctx);
    }
    rules_set_unref(set);
}

static void test_status_class_filter(void)
{
    struct rule_set *set = parse_ok("response body status=4xx,302 a b");
    const int statuses[] = {404, 499, 302, 200, 500, 301};
    const char *want[] = {"b", "b", "b", "a", "a", "a"};

    for (size_t i = 0; i < 6; i++) {
        char *b = response_body_after(set, "h", "/", statuses[i], "text/plain", "a", NULL);

        CU_ASSERT_STRING_EQUAL(b, want[i]);
        free(b);
    }
    rules_set_unref(set);
}

static void test_content_type_filter(void)
{
    struct rule_set *set = parse_ok("response body type=text/html,JSON a b");
    const char *types[] = {"text/html; charset=utf-8", "application/json", "image/png", NULL};
    const char *want[] = {"b", "b", "a", "a"};

    for (size_t i = 0; i < 4; i++) {
        char *b = response_body_after(set, "h", "/", 200, types[i], "a", NULL);

        CU_ASSERT_STRING_EQUAL(b, want[i]);
        free(b);
    }
    rules_set_unref(set);
}

static void test_phase_separates_request_and_response(void)
{
    struct rule_set *set = parse_ok("request body a req\nresponse body a resp\n");
    struct rules_ctx ctx;
    char *b;

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "POST", "h", "/"), 0);
    b = body_after(set, &ctx, "a", 0, NULL);
    CU_ASSERT_STRING_EQUAL(b, "req");
    free(b);
    rules_ctx_set_response(&ctx, 200, "text/plain");
    b = body_after(set, &ctx, "a", 0, NULL);
    CU_ASSERT_STRING_EQUAL(b, "resp");
    free(b);
    CU_ASSERT_STRING_EQUAL(ctx.applied, "t.rules:1, t.rules:2");
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_disabled_rule_is_skipped(void)
{
    struct rule_set *set = parse_ok("response body disabled a b\nresponse body a c\n");
    struct rules_ctx ctx;
    char *b;

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 200, NULL);
    CU_ASSERT_TRUE(rules_wants_body(set, &ctx));
    b = body_after(set, &ctx, "aa", 0, NULL);
    CU_ASSERT_STRING_EQUAL(b, "cc");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "t.rules:2");
    free(b);
    rules_ctx_free(&ctx);
    rules_set_unref(set);

    set = parse_ok("response body disabled a b\n");
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 200, NULL);
    CU_ASSERT_FALSE(rules_wants_body(set, &ctx));
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_rules_apply_in_order(void)
{
    struct rule_set *set = parse_ok("request url name=first /a /b\n"
                                    "request url name=second /b /c\n"
                                    "request url name=third path=/c /c /d\n"
                                    "request url name=never path=/a /d /e\n");
    struct rules_ctx ctx;
    char *t = url_after(set, "GET", "h", "/a", &ctx);

    /* Each rule sees what the one before it made, filters included. */
    CU_ASSERT_STRING_EQUAL(t, "/d");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "first, second, third");
    free(t);
    rules_set_unref(set);
}

static void test_literal_replaces_all_without_overlap(void)
{
    struct rule_set *set = parse_ok("response body aa b\nresponse body icase XyZ '<$1>'\n");
    char *b = response_body_after(set, "h", "/", 200, NULL, "aaaaa-xyz-XYZ-xYz-xy", NULL);

    CU_ASSERT_STRING_EQUAL(b, "bba-<$1>-<$1>-<$1>-xy");
    free(b);
    rules_set_unref(set);
}

static void test_icase_literal_is_ascii_only(void)
{
    struct rule_set *set = parse_ok("response body icase \"\\xc3\\xa9T\\xc3\\xa9\" x");
    char *b =
        response_body_after(set, "h", "/", 200, NULL, "\xc3\xa9t\xc3\xa9 \xc3\x89T\xc3\x89", NULL);

    /* "é" and "É" differ in bytes; only the ASCII 't' folds. */
    CU_ASSERT_STRING_EQUAL(b, "x \xc3\x89T\xc3\x89");
    free(b);
    rules_set_unref(set);
}

static void test_regex_replacement_with_groups(void)
{
    struct rule_set *set =
        parse_ok("response body regex '(?<user>\\w+)@(\\w+)\\.org' '${2}:$user:$$:${1}0'\n"
                 "response body regex '(x)|(y)' '[$1$2]'\n");
    char *b = response_body_after(set, "h", "/", 200, NULL, "mail alice@lab.org, xy", NULL);

    CU_ASSERT_STRING_EQUAL(b, "mail lab:alice:$:alice0, [x][y]");
    free(b);
    rules_set_unref(set);
}

static void test_regex_icase_and_empty_matches(void)
{
    struct rule_set *set = parse_ok("response body regex icase 'hello' bye\n");
    char *b = response_body_after(set, "h", "/", 200, NULL, "HeLLo hello", NULL);

    CU_ASSERT_STRING_EQUAL(b, "bye bye");
    free(b);
    rules_set_unref(set);

    /* Perl: "xxa" =~ s/x* /-/g gives "--a-". */
    set = parse_ok("response body regex 'x*' -\n");
    b = response_body_after(set, "h", "/", 200, NULL, "xxa", NULL);
    CU_ASSERT_STRING_EQUAL(b, "--a-");
    free(b);
    rules_set_unref(set);

    set = parse_ok("response body regex '(?m)^' '> '\n");
    b = response_body_after(set, "h", "/", 200, NULL, "a\nb\n", NULL);
    CU_ASSERT_STRING_EQUAL(b, "> a\n> b\n");
    free(b);
    rules_set_unref(set);

    set = parse_ok("response body regex '(*UTF)\\x{e9}' e\n");
    b = response_body_after(set, "h", "/", 200, NULL, "caf\xc3\xa9 \xc3\xa9", NULL);
    CU_ASSERT_STRING_EQUAL(b, "cafe e");
    free(b);
    rules_set_unref(set);
}

static void test_header_set_replaces_every_field_of_the_name(void)
{
    struct rule_set *set = parse_ok("request header user-agent set \"tapwire-test\"\n"
                                    "request header X-New set yes\n");
    const char *in[] = {"Host: h.example", "User-Agent: curl/8", "Accept: */*",
                        "USER-AGENT: second"};
    struct rules_ctx ctx;
    char *t = request_headers_after(set, in, 4, &ctx);

    /* The first field keeps its place and the client's spelling. */
    CU_ASSERT_STRING_EQUAL(t, "Host: h.example\nUser-Agent: tapwire-test\nAccept: */*\n"
                              "X-New: yes\n");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "t.rules:1, t.rules:2");
    free(t);
    rules_set_unref(set);
}

static void test_header_replace_in_every_field(void)
{
    struct rule_set *set = parse_ok("request header Accept-Language replace en de\n");
    const char *in[] = {"Accept-Language: en-US,en;q=0.9", "Accept: text/en",
                        "accept-language: fr, en"};
    char *t = request_headers_after(set, in, 3, NULL);

    CU_ASSERT_STRING_EQUAL(t, "Accept-Language: de-US,de;q=0.9\nAccept: text/en\n"
                              "accept-language: fr, de\n");
    free(t);
    rules_set_unref(set);
}

static void test_header_remove_all_or_by_pattern(void)
{
    struct rule_set *set = parse_ok("request header Cookie remove\n"
                                    "request header X-Trace remove regex '^debug'\n");
    const char *in[] = {"Cookie: a=1", "X-Trace: debug-1", "Host: h",
                        "cookie: b=2", "X-Trace: keep",    "X-Trace: debug-2"};
    char *t = request_headers_after(set, in, 6, NULL);

    CU_ASSERT_STRING_EQUAL(t, "Host: h\nX-Trace: keep\n");
    free(t);
    rules_set_unref(set);
}

static void test_headers_unchanged_when_no_rule_changes_them(void)
{
    struct rule_set *set = parse_ok("request header Accept replace zzz y\n"
                                    "request header Host set h\n");
    const char *in[] = {"Host: h", "Accept: */*"};
    struct rules_header fields[2];
    struct rules_headers out;
    struct rules_ctx ctx;

    make_fields(fields, in, 2);
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    CU_ASSERT_EQUAL(rules_apply_headers(set, &ctx, fields, 2, &out), 0);
    CU_ASSERT_PTR_NULL(out.fields);
    CU_ASSERT_EQUAL(out.count, 0);
    CU_ASSERT_STRING_EQUAL(ctx.applied, "");
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_header_crlf_injection_refused_at_apply(void)
{
    /* The parser refuses CR and LF in what a rule writes; a group can
     * still copy them from a value the caller failed to validate. */
    struct rule_set *set = parse_ok("request header X-A replace regex '(?s)(.+)' '$1!'\n"
                                    "request header X-B set ok\n");
    const char *in[] = {"X-A: a\r\nEvil: 1", "Host: h"};
    struct rules_ctx ctx;
    char *t = request_headers_after(set, in, 2, &ctx);

    CU_ASSERT_STRING_EQUAL(t, "X-A: a\r\nEvil: 1\nHost: h\nX-B: ok\n");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "t.rules:2");
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "t.rules:1: request header X-A not rewritten: the "
                                             "result would put a control character"));
    free(t);
    rules_set_unref(set);
}

static void test_url_result_must_stay_a_request_target(void)
{
    struct rule_set *set = parse_ok("request url regex name=noslash '^/' ''\n"
                                    "request url name=ok a b\n");
    struct rules_ctx ctx;
    char *t = url_after(set, "GET", "h", "/a", &ctx);

    CU_ASSERT_STRING_EQUAL(t, "/b");
    CU_ASSERT_STRING_EQUAL(ctx.applied, "ok");
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "noslash: request url not rewritten: the result is "
                                             "not a valid request-target"));
    free(t);
    rules_set_unref(set);
}

static void test_content_type_set_by_header_rule_filters_body(void)
{
    struct rule_set *set = parse_ok("response header Content-Type set 'text/html'\n"
                                    "response body type=text/html a b\n");
    const char *in[] = {"Content-Type: text/plain"};
    struct rules_header fields[1];
    struct rules_headers out;
    struct rules_ctx ctx;
    char *b;

    make_fields(fields, in, 1);
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 200, "text/plain");
    CU_ASSERT_FALSE(rules_wants_body(set, &ctx));
    CU_ASSERT_EQUAL(rules_apply_headers(set, &ctx, fields, 1, &out), 0);
    CU_ASSERT_STRING_EQUAL(ctx.content_type, "text/html");
    CU_ASSERT_TRUE(rules_wants_body(set, &ctx));
    b = body_after(set, &ctx, "a", 0, NULL);
    CU_ASSERT_STRING_EQUAL(b, "b");
    free(b);
    rules_headers_free(&out);
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_partial_content_is_never_rewritten(void)
{
    struct rule_set *set = parse_ok("response body a b\n");
    struct rules_ctx ctx;

    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 206, NULL);
    CU_ASSERT_FALSE(rules_wants_body(set, &ctx));
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "206 Partial Content"));
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_body_output_is_capped(void)
{
    struct rule_set *set;
    struct rules_ctx ctx;
    char spec[256];
    char *big = malloc(20001);
    unsigned char *out = NULL;
    size_t out_len = 0;
    char *b;

    /* 100 bytes for every 'a': a 20 KB body would become 2 MB, past
     * 4 x 20000 + 1 MiB. */
    snprintf(spec, sizeof(spec),
             "response body name=grow a '%0100d'\nresponse body name=small z y\n", 0);
    set = parse_ok(spec);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, 'a', 20000);
    big[20000] = '\0';
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 200, NULL);
    CU_ASSERT_EQUAL(
        rules_apply_body(set, &ctx, (const unsigned char *)big, 20000, 0, &out, &out_len), 0);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "grow: response body not rewritten: the result "
                                             "would pass 1128576 bytes"));
    free(big);

    /* An explicit max_out bounds it further; the other rules still apply. */
    ctx.notes[0] = '\0';
    b = body_after(set, &ctx, "aaz", 20, NULL);
    CU_ASSERT_STRING_EQUAL(b, "aay");
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "would pass 20 bytes"));
    CU_ASSERT_STRING_EQUAL(ctx.applied, "small");
    free(b);
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_catastrophic_regex_hits_match_limit_quickly(void)
{
    struct rule_set *set = parse_ok("response body regex name=evil '^(a|a?)+$' x\n"
                                    "response body regex name=evil2 '(*NO_JIT)^(\\w+\\s?)*$' x\n"
                                    "response body name=fine '!' '?'\n");
    char subject[64];
    struct rules_ctx ctx;
    int64_t start = mono_ms();
    bool changed = false;
    char *b;

    memset(subject, 'a', 40);
    strcpy(subject + 40, "!");
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 200, NULL);
    b = body_after(set, &ctx, subject, 0, &changed);
    CU_ASSERT_TRUE(mono_ms() - start < 1000);
    CU_ASSERT_TRUE(changed);
    CU_ASSERT_EQUAL(strchr(b, '?') - b, 40);
    CU_ASSERT_STRING_EQUAL(ctx.applied, "fine");
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "evil: response body not rewritten: regex match "
                                             "limit reached"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "evil2: response body not rewritten: regex match "
                                             "limit reached"));
    free(b);
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_slow_regex_stops_at_time_budget(void)
{
    /* Quadratic in the interpreter: every start position scans to the
     * end, under the match limit each time. Without the budget this takes
     * minutes on 400 KB. */
    struct rule_set *set = parse_ok("response body regex name=slow '(*NO_JIT)(?s)(a.*z|q)' x\n");
    size_t n = 400000;
    char *subject = malloc(n + 1);
    struct rules_ctx ctx;
    int64_t start;
    bool changed = true;
    char *b;

    CU_ASSERT_PTR_NOT_NULL_FATAL(subject);
    memset(subject, 'a', n);
    subject[n] = '\0';
    CU_ASSERT_EQUAL_FATAL(rules_ctx_init(&ctx, "GET", "h", "/"), 0);
    rules_ctx_set_response(&ctx, 200, NULL);
    start = mono_ms();
    b = body_after(set, &ctx, subject, 0, &changed);
    CU_ASSERT_TRUE(mono_ms() - start < RULES_APPLY_BUDGET_MS + 2000);
    CU_ASSERT_FALSE(changed);
    CU_ASSERT_PTR_NOT_NULL(strstr(ctx.notes, "slow: response body not rewritten: the rules took "
                                             "longer than"));
    free(b);
    free(subject);
    rules_ctx_free(&ctx);
    rules_set_unref(set);
}

static void test_summary_lists_applied_and_notes(void)
{
    struct rules_ctx ctx;
    struct rule_set *set = parse_ok("request url name=a x y\nrequest url name=b y z\n"
                                    "request url name=a2 /z z\n");
    char *t = url_after(set, "GET", "h", "/x", &ctx);
    char *s = rules_ctx_summary(&ctx);

    CU_ASSERT_STRING_EQUAL(t, "/z");
    CU_ASSERT_STRING_EQUAL(s, "a, b; a2: request url not rewritten: the result is not a valid "
                              "request-target (space, control or non-ASCII byte, or no leading "
                              "'/')");
    free(s);
    free(t);
    memset(&ctx, 0, sizeof(ctx));
    CU_ASSERT_PTR_NULL(rules_ctx_summary(&ctx));
    rules_set_unref(set);
}

/* ---- the current set ---- */

static void test_publish_takes_effect_from_next_acquire(void)
{
    struct rules_current cur;
    struct rule_set *held, *next;
    char *t;

    CU_ASSERT_EQUAL_FATAL(rules_current_init(&cur), 0);
    held = rules_acquire(&cur);
    CU_ASSERT_EQUAL(rules_set_count(held), 0);
    next = parse_ok("request url a b");
    rules_publish(&cur, next);
    rules_set_unref(next);

    /* The exchange in flight keeps its set; the next one sees the new. */
    t = url_after(held, "GET", "h", "/a", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/a");
    free(t);
    rules_set_unref(held);
    held = rules_acquire(&cur);
    t = url_after(held, "GET", "h", "/a", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/b");
    free(t);
    rules_set_unref(held);
    rules_current_destroy(&cur);
}

static void test_concat_shares_rules_in_order(void)
{
    struct rule_set *file = parse_ok("request url a b\nrequest url b c\n");
    struct rule_set *cli = parse_ok("request url c d\n");
    struct rule_set *parts[] = {file, NULL, cli};
    struct rule_set *all = rules_set_concat(parts, 3, err, sizeof(err));
    char *t;

    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    CU_ASSERT_EQUAL(rules_set_count(all), 3);
    CU_ASSERT_PTR_EQUAL(rules_set_get(all, 0), rules_set_get(file, 0));
    rules_set_unref(file);
    rules_set_unref(cli);
    t = url_after(all, "GET", "h", "/a", NULL);
    CU_ASSERT_STRING_EQUAL(t, "/d");
    free(t);
    rules_set_unref(all);
}

struct worker {
    struct rules_current *cur;
    int index;
    int failures;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;

    if (w->index < PUBLISHERS) {
        for (int i = 0; i < PUBLISHES_PER_THREAD; i++) {
            char spec[96];
            struct rule_set *set = NULL;

            snprintf(spec, sizeof(spec), "request url name=gen-%d-%d /a /b%d", w->index, i, i);
            if (rules_parse_spec(spec, strlen(spec), "x", &set, NULL, 0) != 0) {
                w->failures++;
                continue;
            }
            rules_publish(w->cur, set);
            rules_set_unref(set);
        }
        return NULL;
    }
    for (int i = 0; i < ACQUIRES_PER_THREAD; i++) {
        struct rule_set *set = rules_acquire(w->cur);
        struct rules_ctx ctx;
        char *out = NULL;

        /* Either the initial empty set or a published one, whole. */
        if (rules_set_count(set) == 1) {
            const struct rule *r = rules_set_get(set, 0);

            if (strncmp(r->label, "gen-", 4) != 0)
                w->failures++;
            if (rules_ctx_init(&ctx, "GET", "h", "/a") != 0 ||
                rules_apply_url(set, &ctx, &out) != 0 || out == NULL || strncmp(out, "/b", 2) != 0)
                w->failures++;
            free(out);
            rules_ctx_free(&ctx);
        } else if (rules_set_count(set) != 0) {
            w->failures++;
        }
        rules_set_unref(set);
    }
    return NULL;
}

static void test_concurrent_acquire_and_publish(void)
{
    struct rules_current cur;
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    int failures = 0;
    struct rule_set *last;

    CU_ASSERT_EQUAL_FATAL(rules_current_init(&cur), 0);
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){&cur, i, 0};
        CU_ASSERT_FATAL(pthread_create(&threads[i], NULL, worker_run, &workers[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        failures += workers[i].failures;
    }
    CU_ASSERT_EQUAL(failures, 0);
    last = rules_acquire(&cur);
    CU_ASSERT_EQUAL(rules_set_count(last), 1);
    rules_set_unref(last);
    /* Leak-free teardown is checked by LeakSanitizer at exit; a reference
     * dropped twice aborts in rules_set_unref(). */
    rules_current_destroy(&cur);
}

/* ---- runner ---- */

static void remove_dir(void)
{
    const char *names[] = {"lab.rules"};
    const char *suffixes[] = {"", "-wal", "-shm"};
    char path[200];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (size_t k = 0; k < 3; k++) {
            snprintf(path, sizeof(path), "%s/%s%s", dir, names[i], suffixes[k]);
            unlink(path);
        }
    }
    rmdir(dir);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-rules-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

static void teardown(void)
{
    remove_dir();
}

/* Registers fn under its name without the "test_" prefix. */
#define ADD(suite, fn) (CU_add_test(suite, #fn + 5, fn) != NULL)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("rules_parse", NULL, NULL, setup, teardown);
    if (suite == NULL || !ADD(suite, test_parses_textbook_url_rule) ||
        !ADD(suite, test_parses_every_option) || !ADD(suite, test_parses_header_actions) ||
        !ADD(suite, test_quotes_and_escapes_decode) ||
        !ADD(suite, test_comments_and_blank_lines_are_skipped) ||
        !ADD(suite, test_unterminated_quote_names_line_and_column) ||
        !ADD(suite, test_regex_error_names_line_and_column) ||
        !ADD(suite, test_unknown_target_names_line) ||
        !ADD(suite, test_bad_lines_name_line_and_column) ||
        !ADD(suite, test_one_bad_line_rejects_whole_file) ||
        !ADD(suite, test_parse_spec_is_one_rule) ||
        !ADD(suite, test_parse_specs_labels_and_errors) || !ADD(suite, test_format_round_trips) ||
        !ADD(suite, test_load_file_errors_name_the_file) ||
        !ADD(suite, test_mock_block_map_remote_parse) ||
        !ADD(suite, test_action_errors_name_the_column) ||
        !ADD(suite, test_match_errors_point_into_the_expression) ||
        !ADD(suite, test_file_is_read_at_load_and_refused_from_the_dashboard) ||
        !ADD(suite, test_action_format_round_trips))
        goto out;
    suite = CU_add_suite("rules_apply", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_textbook_google_example) ||
        !ADD(suite, test_host_glob_filter) || !ADD(suite, test_path_prefix_and_regex_filters) ||
        !ADD(suite, test_method_filter) || !ADD(suite, test_status_class_filter) ||
        !ADD(suite, test_content_type_filter) ||
        !ADD(suite, test_phase_separates_request_and_response) ||
        !ADD(suite, test_disabled_rule_is_skipped) || !ADD(suite, test_rules_apply_in_order) ||
        !ADD(suite, test_literal_replaces_all_without_overlap) ||
        !ADD(suite, test_icase_literal_is_ascii_only) ||
        !ADD(suite, test_regex_replacement_with_groups) ||
        !ADD(suite, test_regex_icase_and_empty_matches) ||
        !ADD(suite, test_header_set_replaces_every_field_of_the_name) ||
        !ADD(suite, test_header_replace_in_every_field) ||
        !ADD(suite, test_header_remove_all_or_by_pattern) ||
        !ADD(suite, test_headers_unchanged_when_no_rule_changes_them) ||
        !ADD(suite, test_header_crlf_injection_refused_at_apply) ||
        !ADD(suite, test_url_result_must_stay_a_request_target) ||
        !ADD(suite, test_content_type_set_by_header_rule_filters_body) ||
        !ADD(suite, test_partial_content_is_never_rewritten) ||
        !ADD(suite, test_body_output_is_capped) ||
        !ADD(suite, test_catastrophic_regex_hits_match_limit_quickly) ||
        !ADD(suite, test_slow_regex_stops_at_time_budget) ||
        !ADD(suite, test_summary_lists_applied_and_notes) ||
        !ADD(suite, test_first_matching_action_wins_and_match_selects) ||
        !ADD(suite, test_match_on_header_and_response_rules) ||
        !ADD(suite, test_remote_target_joins_prefix))
        goto out;
    suite = CU_add_suite("rules_current", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_publish_takes_effect_from_next_acquire) ||
        !ADD(suite, test_concat_shares_rules_in_order) ||
        !ADD(suite, test_concurrent_acquire_and_publish))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
