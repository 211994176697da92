/*
 * rules: parsing, matching and applying rewrite rules; the rule set in
 * effect. Storing rules is rulestore's: nothing here knows SQL.
 *
 * What the module must never do: let a rule add a header line or split the
 * request line (replacements are checked when parsed and results again when
 * applied), apply half a rule (a rule that cannot finish leaves the message
 * as the rules before it made it), or let one regex hold a connection thread
 * (PCRE2 limits per match, a wall-clock budget per call).
 *
 * Replacement is done here rather than with pcre2_substitute(): the loop
 * below stops as soon as the output passes its bound instead of sizing a
 * buffer for an unbounded result first, checks the budget between matches,
 * and the replacement template is parsed once, when the rule is, so that a
 * reference to a group the regex does not have is a parse error rather
 * than a surprise on the first matching request.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem(); AC_USE_SYSTEM_EXTENSIONS defines it in the real build */
#endif

#include "rules.h"

#include "buf.h"
#include "clock.h"
#include "errmsg.h"
#include "filter.h"
#include "http1.h"
#include "httptoken.h"
#include "regexsearch.h"
#include "textcode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEARCH_NOT_FOUND ((size_t)-1)
#define BUDGET_CHECK_EVERY 256 /* literal matches between two looks at the clock */
#define MAX_GROUP_NAME_BYTES 128

struct rule_set {
    atomic_long refs;
    size_t count;
    struct rule **rules;
    bool has_match; /* some rule has match= */
};

/* What a text being parsed may do: where a relative file= is read from,
 * and whether files may be read at all (not from the dashboard). */
struct parse_opts {
    const char *base_dir; /* NULL: the working directory */
    bool may_read_files;
};

/* Byte-search state of a literal icase pattern: the KMP failure table over
 * ASCII-folded bytes, so that searching 16 MiB is linear whatever the
 * pattern. Case-sensitive literals use memmem(), linear in glibc too. */
struct rule_private {
    size_t *fold_fail;
};

static unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool ascii_case_equal(const char *a, size_t a_len, const char *b, size_t b_len)
{
    if (a_len != b_len)
        return false;
    for (size_t i = 0; i < a_len; i++)
        if (fold((unsigned char)a[i]) != fold((unsigned char)b[i]))
            return false;
    return true;
}

static bool contains_folded(const char *hay, const char *needle)
{
    size_t h = strlen(hay), n = strlen(needle);

    for (size_t i = 0; n <= h && i <= h - n; i++)
        if (ascii_case_equal(hay + i, n, needle, n))
            return true;
    return false;
}

/* ---- tokenizer ---- */

/* One word of a line after unquoting. cols maps each decoded byte back to
 * its column in the line, so an error inside a quoted regex with escapes
 * still points at the right place. */
struct token {
    char *text; /* NUL-terminated; may contain NUL bytes from \x00 */
    size_t len;
    int *cols;       /* cols[0..len]: column of each byte; cols[len]: the closing quote, or
                        just past the last byte of an unquoted word */
    int col;         /* where the word starts */
    size_t bare_len; /* bytes before the first quote: an option's key= must be in them */
    bool is_quoted;
};

struct line_tokens {
    struct token tok[RULES_MAX_TOKENS];
    size_t count;
    int end_col; /* column just past the last byte of the line */
    char *text_arena;
    int *col_arena;
};

/* A parse error: column 0 means the line as a whole. */
struct perr {
    int col;
    char msg[RULES_ERROR_BYTES - 64];
};

static int perr_set(struct perr *pe, int col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int perr_set(struct perr *pe, int col, const char *fmt, ...)
{
    va_list ap;

    pe->col = col;
    va_start(ap, fmt);
    vsnprintf(pe->msg, sizeof(pe->msg), fmt, ap);
    va_end(ap);
    return -1;
}

static void tokens_free(struct line_tokens *lt)
{
    free(lt->text_arena);
    free(lt->col_arena);
    lt->text_arena = NULL;
    lt->col_arena = NULL;
    lt->count = 0;
}

/* A raw control byte is refused everywhere (tab only as a separator or
 * inside quotes): a rule line is text, and escapes say what is meant. */
static bool is_bad_raw_byte(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int tokenize(const char *line, size_t len, struct line_tokens *lt, struct perr *pe)
{
    size_t i = 0;
    size_t used = 0; /* bytes of the arenas handed out */
    int end_col = 0;
    int rc = -1;

    memset(lt, 0, sizeof(*lt));
    lt->end_col = (int)len + 1;
    /* Decoded text never grows: every escape is longer than its byte. */
    lt->text_arena = malloc(len + RULES_MAX_TOKENS + 1);
    lt->col_arena = malloc((len + RULES_MAX_TOKENS + 1) * sizeof(int));
    if (lt->text_arena == NULL || lt->col_arena == NULL) {
        perr_set(pe, 0, "out of memory");
        goto out;
    }
    for (;;) {
        struct token *t;

        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i >= len || line[i] == '#')
            break;
        if (lt->count == RULES_MAX_TOKENS) {
            perr_set(pe, (int)i + 1, "more than %d words on one line", RULES_MAX_TOKENS);
            goto out;
        }
        t = &lt->tok[lt->count++];
        t->text = lt->text_arena + used;
        t->cols = lt->col_arena + used;
        t->col = (int)i + 1;
        end_col = t->col;
        while (i < len && line[i] != ' ' && line[i] != '\t') {
            char c = line[i];

            if (c == '"' || c == '\'') {
                size_t open = i;

                if (!t->is_quoted)
                    t->bare_len = t->len;
                t->is_quoted = true;
                i++;
                for (;;) {
                    int col = (int)i + 1;
                    char byte;

                    if (i >= len) {
                        perr_set(pe, (int)open + 1, "unterminated quote");
                        goto out;
                    }
                    byte = line[i];
                    if (byte == c) {
                        end_col = col; /* an error "at the end" points at the quote */
                        i++;
                        break;
                    }
                    if (is_bad_raw_byte((unsigned char)byte)) {
                        perr_set(pe, col,
                                 "control character 0x%02x (write it as \\x%02x inside \"...\")",
                                 (unsigned char)byte, (unsigned char)byte);
                        goto out;
                    }
                    if (c == '"' && byte == '\\') {
                        char e = i + 1 < len ? line[i + 1] : '\0';
                        int hi, lo;

                        switch (e) {
                        case '"':
                        case '\\':
                            byte = e;
                            i += 2;
                            break;
                        case 'n':
                            byte = '\n';
                            i += 2;
                            break;
                        case 'r':
                            byte = '\r';
                            i += 2;
                            break;
                        case 't':
                            byte = '\t';
                            i += 2;
                            break;
                        case 'x':
                            hi = i + 2 < len ? textcode_hex_value((unsigned char)line[i + 2]) : -1;
                            lo = i + 3 < len ? textcode_hex_value((unsigned char)line[i + 3]) : -1;
                            if (hi < 0 || lo < 0) {
                                perr_set(pe, col, "\\x needs two hex digits");
                                goto out;
                            }
                            byte = (char)(hi * 16 + lo);
                            i += 4;
                            break;
                        default:
                            if (is_bad_raw_byte((unsigned char)e) || i + 1 >= len)
                                perr_set(pe, col, "backslash at the end of a quoted string");
                            else
                                perr_set(pe, col,
                                         "unknown escape '\\%c' (inside '...' backslashes are "
                                         "literal, which suits regexes)",
                                         e);
                            goto out;
                        }
                    } else {
                        i++;
                    }
                    t->cols[t->len] = col;
                    t->text[t->len++] = byte;
                }
            } else {
                if (is_bad_raw_byte((unsigned char)c)) {
                    perr_set(pe, (int)i + 1,
                             "control character 0x%02x (write it as \\x%02x inside \"...\")",
                             (unsigned char)c, (unsigned char)c);
                    goto out;
                }
                t->cols[t->len] = (int)i + 1;
                t->text[t->len++] = c;
                i++;
                end_col = (int)i + 1;
            }
        }
        if (!t->is_quoted)
            t->bare_len = t->len;
        t->cols[t->len] = end_col;
        t->text[t->len] = '\0';
        used += t->len + 1;
    }
    rc = 0;
out:
    if (rc != 0)
        tokens_free(lt);
    return rc;
}

static bool is_word(const struct token *t, const char *word)
{
    return !t->is_quoted && strcmp(t->text, word) == 0 && strlen(word) == t->len;
}

/* ---- rules ---- */

static struct rule_private *priv(const struct rule *r);

static void free_list(char **items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(items[i]);
    free(items);
}

static void rule_free(struct rule *r)
{
    struct rule_private *p;

    if (r == NULL)
        return;
    p = priv(r);
    free_list(r->hosts, r->host_count);
    free(r->path_prefix);
    free(r->path_regex);
    pcre2_code_free(r->path_re);
    free_list(r->methods, r->method_count);
    free(r->statuses);
    free_list(r->types, r->type_count);
    free(r->pattern);
    free(r->replacement);
    pcre2_code_free(r->re);
    pcre2_match_context_free(r->match_ctx);
    free(r->repl_parts);
    filter_free(r->match);
    free(r->match_text);
    free_list(r->answer_fields, r->answer_field_count);
    free(r->answer_body);
    free(r->file_path);
    free(r->remote_url);
    free(r->remote.authority);
    free(r->remote.prefix);
    free(p->fold_fail);
    free(r);
}

/* The private part lives right after the public struct, in one allocation. */
struct rule_alloc {
    struct rule pub;
    struct rule_private priv;
};

static struct rule_private *priv(const struct rule *r)
{
    return &((struct rule_alloc *)(void *)(uintptr_t)r)->priv;
}

static struct rule *rule_new(void)
{
    struct rule_alloc *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    atomic_init(&a->pub.refs, 1);
    a->pub.is_enabled = true;
    return &a->pub;
}

static void rule_ref(struct rule *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

static void rule_unref(struct rule *r)
{
    long before;

    if (r == NULL)
        return;
    before = atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel);
    if (before <= 0)
        abort(); /* a reference dropped twice: memory is already corrupt */
    if (before == 1)
        rule_free(r);
}

static char *dup_bytes(const char *p, size_t n)
{
    char *s = malloc(n + 1);

    if (s != NULL) {
        if (n > 0)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Builds the KMP failure table over folded bytes. */
static size_t *fold_fail_table(const unsigned char *p, size_t m)
{
    size_t *fail = malloc((m > 0 ? m : 1) * sizeof(size_t));
    size_t k = 0;

    if (fail == NULL)
        return NULL;
    fail[0] = 0;
    for (size_t i = 1; i < m; i++) {
        while (k > 0 && fold(p[i]) != fold(p[k]))
            k = fail[k - 1];
        if (fold(p[i]) == fold(p[k]))
            k++;
        fail[i] = k;
    }
    return fail;
}

static pcre2_match_context *new_match_ctx(void)
{
    pcre2_match_context *mc = pcre2_match_context_create(NULL);

    if (mc == NULL)
        return NULL;
    pcre2_set_match_limit(mc, RULES_MATCH_LIMIT);
    pcre2_set_depth_limit(mc, RULES_DEPTH_LIMIT);
    pcre2_set_heap_limit(mc, RULES_HEAP_LIMIT_KIB);
    return mc;
}

/* Compiles a regex from token text, mapping PCRE2's error offset to a column. */
static pcre2_code *compile_regex(const char *src, size_t len, const int *cols, bool icase,
                                 struct perr *pe)
{
    uint32_t options =
        PCRE2_NEVER_BACKSLASH_C | PCRE2_USE_OFFSET_LIMIT | (icase ? PCRE2_CASELESS : 0);
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re;

    re = pcre2_compile((PCRE2_SPTR)src, len, options, &code, &offset, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[256];

        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        if (offset > len)
            offset = len;
        perr_set(pe, cols[offset], "regex error: %s", (const char *)msg);
        return NULL;
    }
    /* JIT is an optimisation: where it is unavailable (no JIT support, no
     * executable memory) the interpreter runs with the same limits. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* Splits an option value on commas into an array of strings. */
static int split_list(const struct token *t, size_t value_at, const char *key, char ***items,
                      size_t *count, struct perr *pe)
{
    const char *v = t->text + value_at;
    size_t n = t->len - value_at;
    size_t start = 0;
    char **list = NULL;
    size_t k = 0;

    list = calloc(RULES_MAX_LIST_ITEMS, sizeof(char *));
    if (list == NULL)
        return perr_set(pe, t->col, "out of memory");
    for (size_t i = 0; i <= n; i++) {
        if (i < n && v[i] != ',')
            continue;
        if (i == start) {
            perr_set(pe, t->cols[value_at + start], "empty value in %s=", key);
            goto fail;
        }
        if (k == RULES_MAX_LIST_ITEMS) {
            perr_set(pe, t->cols[value_at + start],
                     "more than %d values in %s=", RULES_MAX_LIST_ITEMS, key);
            goto fail;
        }
        list[k] = dup_bytes(v + start, i - start);
        if (list[k] == NULL) {
            perr_set(pe, t->col, "out of memory");
            goto fail;
        }
        k++;
        start = i + 1;
    }
    *items = list;
    *count = k;
    return 0;
fail:
    free_list(list, k);
    return -1;
}

static int parse_statuses(struct rule *r, const struct token *t, size_t value_at, struct perr *pe)
{
    char **items = NULL;
    size_t count = 0;
    int rc = -1;
    size_t at = value_at;

    if (split_list(t, value_at, "status", &items, &count, pe) != 0)
        return -1;
    r->statuses = calloc(count, sizeof(*r->statuses));
    if (r->statuses == NULL) {
        perr_set(pe, t->col, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        const char *s = items[i];
        bool is_class =
            strlen(s) == 3 && fold((unsigned char)s[1]) == 'x' && fold((unsigned char)s[2]) == 'x';
        bool is_code = strlen(s) == 3 && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9';

        if (s[0] < '1' || s[0] > '5' || !(is_class || is_code)) {
            perr_set(pe, t->cols[at],
                     "bad status '%s' (expected a code like 404 or a class like 4xx)", s);
            goto out;
        }
        if (is_class) {
            r->statuses[i].lo = (s[0] - '0') * 100;
            r->statuses[i].hi = r->statuses[i].lo + 99;
        } else {
            r->statuses[i].lo = r->statuses[i].hi = atoi(s);
        }
        at += strlen(s) + 1;
    }
    r->status_count = count;
    rc = 0;
out:
    free_list(items, count);
    return rc;
}

static bool is_action(const struct rule *r)
{
    return r->target >= RULES_TARGET_MOCK;
}

/* match=EXPR: parsed once, here, so a bad expression is an error naming
 * its column in the line. The filter decides on heads only (bodies are not
 * read when rules decide), and a request rule before the response. */
static int parse_match(struct rule *r, const struct token *t, size_t value_at, struct perr *pe)
{
    const char *value = t->text + value_at;
    size_t value_len = t->len - value_at;
    char ferr[FILTER_ERROR_BYTES];
    unsigned needs;
    long col;
    char *end;

    if (r->match != NULL)
        return perr_set(pe, t->col, "option 'match' given twice (combine with &)");
    if (filter_parse(value, value_len, &r->match, ferr, sizeof(ferr)) != 0) {
        /* "column C: what": C counts bytes of the expression from 1. */
        if (strncmp(ferr, "column ", 7) == 0 && (col = strtol(ferr + 7, &end, 10)) > 0 &&
            strncmp(end, ": ", 2) == 0)
            return perr_set(
                pe, t->cols[value_at + ((size_t)col - 1 < value_len ? (size_t)col - 1 : value_len)],
                "match=: %s", end + 2);
        return perr_set(pe, t->cols[value_at], "match=: %s", ferr);
    }
    needs = filter_needs(r->match);
    if (needs & (FILTER_NEEDS_REQUEST_BODY | FILTER_NEEDS_RESPONSE_BODY))
        return perr_set(pe, t->cols[value_at],
                        "match=: rules are decided on the heads, before a body is read: ~b, "
                        "~bq and ~bs cannot be used");
    if (r->phase == RULES_REQUEST && (needs & FILTER_NEEDS_RESPONSE))
        return perr_set(pe, t->cols[value_at],
                        "match=: a request rule is decided before the response: ~c, ~s, ~q, "
                        "~hs and ~ts cannot be used (write ~hq, ~tq for the request's)");
    r->match_text = dup_bytes(value, value_len);
    return r->match_text != NULL ? 0 : perr_set(pe, t->col, "out of memory");
}

/* header="Name: value" of a mock: a field of tapwire's answer. Framing
 * and the connection are tapwire's to declare (RFC 9112 6), as for the
 * header rules. */
static int parse_answer_field(struct rule *r, const struct token *t, size_t value_at,
                              struct perr *pe)
{
    const char *value = t->text + value_at;
    size_t value_len = t->len - value_at;
    const char *colon = memchr(value, ':', value_len);
    size_t name_len = colon != NULL ? (size_t)(colon - value) : 0;
    char *field;

    if (r->answer_field_count == RULES_MAX_ANSWER_FIELDS)
        return perr_set(pe, t->col, "more than %d header= options", RULES_MAX_ANSWER_FIELDS);
    if (name_len == 0)
        return perr_set(pe, t->cols[value_at], "header= takes \"Name: value\"");
    for (size_t i = 0; i < name_len; i++)
        if (!httptoken_is_tchar((unsigned char)value[i]))
            return perr_set(pe, t->cols[value_at + i], "'%c' cannot be part of a header name",
                            value[i]);
    if (ascii_case_equal(value, name_len, "Content-Length", 14) ||
        ascii_case_equal(value, name_len, "Transfer-Encoding", 17) ||
        ascii_case_equal(value, name_len, "Connection", 10))
        return perr_set(pe, t->cols[value_at],
                        "%.*s is computed by tapwire for each answer and cannot be set",
                        (int)name_len, value);
    if (r->answer_fields == NULL) {
        r->answer_fields = calloc(RULES_MAX_ANSWER_FIELDS, sizeof(char *));
        if (r->answer_fields == NULL)
            return perr_set(pe, t->col, "out of memory");
    }
    field = dup_bytes(value, value_len);
    if (field == NULL)
        return perr_set(pe, t->col, "out of memory");
    r->answer_fields[r->answer_field_count++] = field;
    return 0;
}

/* file=PATH of a mock: read now, whole and bounded, so that a missing or
 * huge file is an error when the rule is read rather than on a request. */
static int read_answer_file(struct rule *r, const struct token *t, size_t value_at,
                            const struct parse_opts *po, struct perr *pe)
{
    const char *value = t->text + value_at;
    char *path = NULL;
    struct stat st;
    size_t len = 0;
    int fd = -1;
    int rc = -1;

    if (!po->may_read_files)
        return perr_set(pe, t->col,
                        "file= is for --rules and --rule only (a rule from the dashboard cannot "
                        "read files of the proxy's machine); give the body inline");
    if (r->file_path != NULL)
        return perr_set(pe, t->col, "option 'file' given twice");
    r->file_path = dup_bytes(value, t->len - value_at);
    if (r->file_path == NULL)
        return perr_set(pe, t->col, "out of memory");
    if (value[0] != '/' && po->base_dir != NULL) {
        size_t n = strlen(po->base_dir) + strlen(value) + 2;

        path = malloc(n);
        if (path == NULL)
            return perr_set(pe, t->col, "out of memory");
        snprintf(path, n, "%s/%s", po->base_dir, value);
    }
    /* O_NONBLOCK: a FIFO would otherwise wait for a writer (see
     * rules_load_file()); only a regular file is read. */
    fd = open(path != NULL ? path : value, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        perr_set(pe, t->cols[value_at], "cannot open %s: %s", path != NULL ? path : value,
                 strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        perr_set(pe, t->cols[value_at], "%s is not a regular file", path != NULL ? path : value);
        goto out;
    }
    if (st.st_size > RULES_MAX_ANSWER_BODY_BYTES) {
        perr_set(pe, t->cols[value_at], "%s is larger than %d bytes", path != NULL ? path : value,
                 RULES_MAX_ANSWER_BODY_BYTES);
        goto out;
    }
    /* One byte more than allowed: a file growing meanwhile is noticed. */
    r->answer_body = malloc((size_t)st.st_size + 1);
    if (r->answer_body == NULL) {
        perr_set(pe, t->col, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, r->answer_body + len, (size_t)st.st_size + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perr_set(pe, t->cols[value_at], "cannot read %s: %s", path != NULL ? path : value,
                     strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > (size_t)st.st_size) {
            perr_set(pe, t->cols[value_at], "%s changed while it was read",
                     path != NULL ? path : value);
            goto out;
        }
    }
    r->answer_body_len = len;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

static int parse_option(struct rule *r, const struct token *t, size_t key_len,
                        const struct parse_opts *po, struct perr *pe)
{
    const char *key = t->text;
    char op = t->text[key_len];
    size_t value_at = key_len + 1;
    const char *value = t->text + value_at;
    size_t value_len = t->len - value_at;
    int value_col = t->cols[value_at];

#define KEY_IS(k) (key_len == strlen(k) && memcmp(key, k, key_len) == 0)
    if (!(KEY_IS("host") || KEY_IS("path") || KEY_IS("method") || KEY_IS("status") ||
          KEY_IS("type") || KEY_IS("name") || KEY_IS("match") || KEY_IS("header") ||
          KEY_IS("file")))
        return perr_set(pe, t->col,
                        "unknown option '%.*s' (quote a pattern that contains '=' or '~')",
                        (int)key_len, key);
    if (op == '~' && !KEY_IS("path"))
        return perr_set(pe, t->cols[key_len], "option '%.*s' takes '=', not '~'", (int)key_len,
                        key);
    if (value_len == 0)
        return perr_set(pe, value_col, "empty value for %.*s%c", (int)key_len, key, op);
    for (size_t i = 0; i < value_len; i++) {
        unsigned char c = (unsigned char)value[i];

        if (c < 0x20 || c == 0x7f)
            return perr_set(pe, t->cols[value_at + i], "control character 0x%02x in %.*s%c", c,
                            (int)key_len, key, op);
    }

    if (KEY_IS("match"))
        return parse_match(r, t, value_at, pe);
    if ((KEY_IS("header") || KEY_IS("file")) && r->target != RULES_TARGET_MOCK)
        return perr_set(pe, t->col, "option '%.*s' is for mock and map-local rules", (int)key_len,
                        key);
    if (KEY_IS("header"))
        return parse_answer_field(r, t, value_at, pe);
    if (KEY_IS("file"))
        return read_answer_file(r, t, value_at, po, pe);
    if (KEY_IS("host")) {
        if (r->hosts != NULL)
            return perr_set(pe, t->col, "option 'host' given twice (list globs with commas)");
        return split_list(t, value_at, "host", &r->hosts, &r->host_count, pe);
    }
    if (KEY_IS("path") && op == '=') {
        if (r->path_prefix != NULL)
            return perr_set(pe, t->col, "option 'path=' given twice");
        for (size_t i = 0; i < value_len; i++) {
            unsigned char c = (unsigned char)value[i];

            if (c <= 0x20 || c >= 0x7f)
                return perr_set(pe, t->cols[value_at + i],
                                "a request-target never contains byte 0x%02x, so path= could "
                                "never match",
                                c);
        }
        r->path_prefix = dup_bytes(value, value_len);
        return r->path_prefix != NULL ? 0 : perr_set(pe, t->col, "out of memory");
    }
    if (KEY_IS("path")) {
        if (r->path_regex != NULL)
            return perr_set(pe, t->col, "option 'path~' given twice");
        r->path_regex = dup_bytes(value, value_len);
        if (r->path_regex == NULL)
            return perr_set(pe, t->col, "out of memory");
        r->path_re = compile_regex(value, value_len, t->cols + value_at, false, pe);
        return r->path_re != NULL ? 0 : -1;
    }
    if (KEY_IS("method")) {
        if (r->methods != NULL)
            return perr_set(pe, t->col, "option 'method' given twice (list methods with commas)");
        for (size_t i = 0; i < value_len; i++)
            if (value[i] != ',' && !httptoken_is_tchar((unsigned char)value[i]))
                return perr_set(pe, t->cols[value_at + i], "'%c' cannot be part of a method",
                                value[i]);
        return split_list(t, value_at, "method", &r->methods, &r->method_count, pe);
    }
    if (KEY_IS("status")) {
        if (r->statuses != NULL)
            return perr_set(pe, t->col, "option 'status' given twice (list codes with commas)");
        return parse_statuses(r, t, value_at, pe);
    }
    if (KEY_IS("type")) {
        if (r->types != NULL)
            return perr_set(pe, t->col, "option 'type' given twice (list types with commas)");
        return split_list(t, value_at, "type", &r->types, &r->type_count, pe);
    }
    /* name= */
    if (r->has_name)
        return perr_set(pe, t->col, "option 'name' given twice");
    if (value_len >= RULES_MAX_LABEL_BYTES)
        return perr_set(pe, value_col, "name longer than %d characters", RULES_MAX_LABEL_BYTES - 1);
    for (size_t i = 0; i < value_len; i++) {
        char c = value[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return perr_set(pe, t->cols[value_at + i],
                            "a name is made of letters, digits, '.', '_' and '-'");
    }
    memcpy(r->label, value, value_len);
    r->label[value_len] = '\0';
    r->has_name = true;
    return 0;
#undef KEY_IS
}

/* Length of the key when the token is key=value or key~value: a bare
 * [a-z][a-z0-9_-]* followed by '=' or '~' before any quote. 0 otherwise. */
static size_t option_key_len(const struct token *t)
{
    size_t i = 0;

    if (t->bare_len == 0 || !(t->text[0] >= 'a' && t->text[0] <= 'z'))
        return 0;
    while (i < t->bare_len &&
           ((t->text[i] >= 'a' && t->text[i] <= 'z') || (t->text[i] >= '0' && t->text[i] <= '9') ||
            t->text[i] == '_' || t->text[i] == '-'))
        i++;
    if (i < t->bare_len && (t->text[i] == '=' || t->text[i] == '~'))
        return i;
    return 0;
}

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/* Parses a regex replacement into parts ($n, ${n}, $name, ${name}, $$). */
static int parse_replacement(struct rule *r, const struct token *t, struct perr *pe)
{
    const char *s = t->text;
    size_t n = t->len;
    uint32_t captures = 0;
    struct rule_repl_part *parts;
    size_t count = 0;
    size_t lit = 0;
    size_t i = 0;

    pcre2_pattern_info(r->re, PCRE2_INFO_CAPTURECOUNT, &captures);
    /* Each '$' ends at most one literal and adds one part. */
    parts = calloc(2 * n + 1, sizeof(*parts));
    if (parts == NULL)
        return perr_set(pe, t->col, "out of memory");
    while (i < n) {
        size_t dollar = i;
        long group = -1;

        if (s[i] != '$') {
            i++;
            continue;
        }
        if (i > lit)
            parts[count++] = (struct rule_repl_part){-1, lit, i - lit};
        if (i + 1 < n && s[i + 1] == '$') {
            parts[count++] = (struct rule_repl_part){-1, i + 1, 1};
            i += 2;
            lit = i;
            continue;
        }
        if (i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9') {
            group = 0;
            for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
                group = group * 10 + (s[i] - '0');
                if (group > 65535)
                    break;
            }
        } else if (i + 1 < n && (s[i + 1] == '{' || is_name_start(s[i + 1]))) {
            bool is_braced = s[i + 1] == '{';
            const char *name = s + i + 1 + is_braced;
            size_t name_len = 0;
            bool is_number = is_braced;

            while (name + name_len < s + n &&
                   (is_braced ? name[name_len] != '}' : is_name_char(name[name_len])))
                name_len++;
            if (is_braced && (name + name_len >= s + n || name_len == 0)) {
                free(parts);
                return perr_set(pe, t->cols[dollar], "'${' without a group and a closing '}'");
            }
            for (size_t k = 0; k < name_len && is_number; k++)
                is_number = name[k] >= '0' && name[k] <= '9';
            if (is_number) {
                if (name_len > 5) {
                    free(parts);
                    return perr_set(pe, t->cols[dollar], "group number too large");
                }
                group = atol(name);
            } else {
                char buf[MAX_GROUP_NAME_BYTES + 1];
                int number;

                if (name_len > MAX_GROUP_NAME_BYTES || memchr(name, '\0', name_len) != NULL) {
                    free(parts);
                    return perr_set(pe, t->cols[dollar], "bad group name");
                }
                memcpy(buf, name, name_len);
                buf[name_len] = '\0';
                number = pcre2_substring_number_from_name(r->re, (PCRE2_SPTR)buf);
                if (number == PCRE2_ERROR_NOUNIQUESUBSTRING) {
                    free(parts);
                    return perr_set(pe, t->cols[dollar], "group name '%s' is not unique", buf);
                }
                if (number < 0) {
                    free(parts);
                    return perr_set(pe, t->cols[dollar],
                                    "the regex has no group named '%s' (write $$ for a dollar "
                                    "sign)",
                                    buf);
                }
                group = number;
            }
            i += 1 + name_len + (is_braced ? 2 : 0);
        } else {
            free(parts);
            return perr_set(pe, t->cols[dollar],
                            "'$' must be followed by a group number, {group} or $ (write $$ for "
                            "a dollar sign)");
        }
        if (group > (long)captures) {
            free(parts);
            return perr_set(pe, t->cols[dollar], "group %ld does not exist (the regex has %u)",
                            group, captures);
        }
        parts[count++] = (struct rule_repl_part){(int)group, 0, 0};
        lit = i;
    }
    if (n > lit)
        parts[count++] = (struct rule_repl_part){-1, lit, n - lit};
    r->repl_parts = parts;
    r->repl_part_count = count;
    return 0;
}

/* Literal bytes a replacement puts into its output: for a regex only its
 * literal parts (groups copy bytes of the subject, which the caller has
 * validated); checked per target so a rule cannot split a message. */
static int check_replacement_bytes(const struct rule *r, const struct token *t, struct perr *pe)
{
    for (size_t i = 0; i < t->len; i++) {
        unsigned char c = (unsigned char)t->text[i];
        bool is_literal = true;

        if (r->is_regex) {
            is_literal = false;
            for (size_t k = 0; k < r->repl_part_count; k++) {
                const struct rule_repl_part *p = &r->repl_parts[k];

                if (p->group < 0 && i >= p->offset && i < p->offset + p->len)
                    is_literal = true;
            }
        }
        if (!is_literal)
            continue;
        if (r->target == RULES_TARGET_HEADER) {
            if (c == '\r' || c == '\n')
                return perr_set(pe, t->cols[i],
                                "a header value cannot contain CR or LF (it would start a new "
                                "header line)");
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return perr_set(pe, t->cols[i], "a header value cannot contain byte 0x%02x", c);
        } else if (r->target == RULES_TARGET_URL) {
            if (c == ' ')
                return perr_set(pe, t->cols[i],
                                "a request-target cannot contain a space (write + or %%20)");
            if (c < 0x20 || c >= 0x7f)
                return perr_set(pe, t->cols[i],
                                "a request-target cannot contain byte 0x%02x (percent-encode it)",
                                c);
        }
    }
    return 0;
}

static int set_pattern(struct rule *r, const struct token *t, struct perr *pe)
{
    r->has_pattern = true;
    r->pattern = dup_bytes(t->text, t->len);
    r->pattern_len = t->len;
    if (r->pattern == NULL)
        return perr_set(pe, t->col, "out of memory");
    if (r->is_regex) {
        r->re = compile_regex(t->text, t->len, t->cols, r->is_icase, pe);
        return r->re != NULL ? 0 : -1;
    }
    if (t->len == 0)
        return perr_set(pe, t->col, "empty pattern");
    if (r->is_icase) {
        priv(r)->fold_fail = fold_fail_table((const unsigned char *)t->text, t->len);
        if (priv(r)->fold_fail == NULL)
            return perr_set(pe, t->col, "out of memory");
    }
    return 0;
}

static int set_replacement(struct rule *r, const struct token *t, struct perr *pe)
{
    r->replacement = dup_bytes(t->text, t->len);
    r->replacement_len = t->len;
    if (r->replacement == NULL)
        return perr_set(pe, t->col, "out of memory");
    if (r->is_regex && r->action != RULES_HEADER_SET && parse_replacement(r, t, pe) != 0)
        return -1;
    return check_replacement_bytes(r, t, pe);
}

static const char *positional_name(const struct rule *r, size_t k)
{
    if (r->target != RULES_TARGET_HEADER)
        return k == 0 ? "pattern" : "replacement";
    if (r->action == RULES_HEADER_SET)
        return "value";
    return k == 0 ? "pattern" : "replacement";
}

/* A status code of tapwire's own answer: a final one (1xx are interim). */
static int parse_answer_status(const struct token *t, struct perr *pe)
{
    if (t->is_quoted || t->len != 3 || t->text[0] < '2' || t->text[0] > '5' || t->text[1] < '0' ||
        t->text[1] > '9' || t->text[2] < '0' || t->text[2] > '9')
        return perr_set(pe, t->col, "bad status '%s' (expected a code from 200 to 599)", t->text);
    return atoi(t->text);
}

/* map-remote's URL: http or https, a host, an optional port and path
 * prefix; no query or fragment (the request keeps its own). */
static int parse_remote(struct rule *r, const struct token *t, struct perr *pe)
{
    struct http1_absolute_target at;
    size_t plen;

    if (memchr(t->text, '?', t->len) != NULL || memchr(t->text, '#', t->len) != NULL)
        return perr_set(pe, t->col, "a map-remote URL has no query or fragment");
    for (size_t i = 0; i < t->len; i++)
        if ((unsigned char)t->text[i] <= 0x20 || (unsigned char)t->text[i] >= 0x7f)
            return perr_set(pe, t->cols[i], "a URL cannot contain byte 0x%02x",
                            (unsigned char)t->text[i]);
    if (http1_parse_absolute_target(t->text, t->len, &at) != 0)
        return perr_set(pe, t->col,
                        "bad map-remote URL '%s' (expected http[s]://host[:port][/prefix])",
                        t->text);
    r->remote_url = dup_bytes(t->text, t->len);
    r->remote.is_tls = at.is_https;
    snprintf(r->remote.host, sizeof(r->remote.host), "%s", at.host);
    r->remote.port = at.port;
    r->remote.authority = dup_bytes(at.authority, at.authority_len);
    plen = at.path_len;
    if (plen == 1 && at.path[0] == '/')
        plen = 0; /* "http://h/" means no prefix */
    r->remote.prefix = dup_bytes(at.path, plen);
    if (r->remote_url == NULL || r->remote.authority == NULL || r->remote.prefix == NULL)
        return perr_set(pe, t->col, "out of memory");
    return 0;
}

/* The words after the options of an action rule. */
static int parse_action_words(struct rule *r, const struct token *const *pos, size_t pos_count,
                              const struct line_tokens *lt, struct perr *pe)
{
    const struct token *tok = lt->tok;
    size_t max = r->target == RULES_TARGET_MOCK && r->file_path == NULL ? 2 : 1;
    int status;

    if (r->phase != RULES_REQUEST)
        return perr_set(pe, tok[1].col,
                        "'%s' is a request rule (it decides before the origin is asked)",
                        tok[1].text);
    if (r->is_regex || r->is_icase)
        return perr_set(pe, tok[0].col, "'%s' is for patterns, and '%s' has none",
                        r->is_regex ? "regex" : "icase", tok[1].text);
    if (pos_count > max)
        return perr_set(pe, pos[max]->col, "unexpected '%s'%s", pos[max]->text,
                        r->file_path != NULL ? " (the body comes from file=)"
                                             : " (quote text that contains spaces)");
    if (r->target == RULES_TARGET_MAP_REMOTE) {
        if (pos_count == 0)
            return perr_set(pe, lt->end_col, "missing URL (e.g. https://host:port/prefix)");
        return parse_remote(r, pos[0], pe);
    }
    if (r->target == RULES_TARGET_BLOCK) {
        r->answer_status = RULES_DEFAULT_BLOCK_STATUS;
        if (pos_count == 1 && is_word(pos[0], "close")) {
            r->is_close = true;
            r->answer_status = 0;
        } else if (pos_count == 1) {
            if ((status = parse_answer_status(pos[0], pe)) < 0)
                return -1;
            r->answer_status = status;
        }
        return 0;
    }
    /* mock, map-local */
    if (r->is_map_local && r->file_path == NULL)
        return perr_set(pe, lt->end_col, "map-local needs file=PATH");
    if (pos_count == 0 && !r->is_map_local)
        return perr_set(pe, lt->end_col, "missing status (e.g. 200)");
    r->answer_status = 200;
    if (pos_count > 0 && (status = parse_answer_status(pos[0], pe)) < 0)
        return -1;
    if (pos_count > 0)
        r->answer_status = status;
    if (pos_count > 1) {
        if (pos[1]->len > RULES_MAX_ANSWER_BODY_BYTES)
            return perr_set(pe, pos[1]->col, "a body is at most %d bytes",
                            RULES_MAX_ANSWER_BODY_BYTES);
        r->answer_body = dup_bytes(pos[1]->text, pos[1]->len);
        if (r->answer_body == NULL)
            return perr_set(pe, pos[1]->col, "out of memory");
        r->answer_body_len = pos[1]->len;
    }
    /* RFC 9110 15.3.5, 15.4.5: these never carry content. */
    if ((r->answer_status == 204 || r->answer_status == 304) && r->answer_body_len > 0)
        return perr_set(pe, pos[0]->col, "a %d answer has no body", r->answer_status);
    return 0;
}

/* Turns the words of one line into a rule. *out NULL for a blank line. */
static int parse_tokens(const struct line_tokens *lt, const char *default_label,
                        const struct parse_opts *po, struct rule **out, struct perr *pe)
{
    const struct token *tok = lt->tok;
    const struct token *pos[RULES_MAX_TOKENS];
    size_t pos_count = 0;
    size_t first_option = 2;
    size_t want_min, want_max;
    struct rule *r = NULL;
    int rc = -1;

    *out = NULL;
    if (lt->count == 0)
        return 0;
    r = rule_new();
    if (r == NULL) {
        perr_set(pe, 0, "out of memory");
        goto out;
    }
    snprintf(r->label, sizeof(r->label), "%s", default_label != NULL ? default_label : "");

    if (is_word(&tok[0], "request")) {
        r->phase = RULES_REQUEST;
    } else if (is_word(&tok[0], "response")) {
        r->phase = RULES_RESPONSE;
    } else {
        perr_set(pe, tok[0].col, "unknown phase '%s' (expected request or response)", tok[0].text);
        goto out;
    }
    if (lt->count < 2) {
        perr_set(pe, lt->end_col,
                 "missing target (url, header NAME, body, mock, map-local, block or map-remote)");
        goto out;
    }
    if (is_word(&tok[1], "url")) {
        r->target = RULES_TARGET_URL;
        if (r->phase != RULES_REQUEST) {
            perr_set(pe, tok[1].col,
                     "target 'url' is for request rules (a response has no request-target)");
            goto out;
        }
    } else if (is_word(&tok[1], "body")) {
        r->target = RULES_TARGET_BODY;
    } else if (is_word(&tok[1], "mock") || is_word(&tok[1], "map-local")) {
        r->target = RULES_TARGET_MOCK;
        r->is_map_local = is_word(&tok[1], "map-local");
    } else if (is_word(&tok[1], "block")) {
        r->target = RULES_TARGET_BLOCK;
    } else if (is_word(&tok[1], "map-remote")) {
        r->target = RULES_TARGET_MAP_REMOTE;
    } else if (is_word(&tok[1], "header")) {
        r->target = RULES_TARGET_HEADER;
        if (lt->count < 3) {
            perr_set(pe, lt->end_col, "missing header name after 'header'");
            goto out;
        }
        if (tok[2].is_quoted || tok[2].len == 0 || tok[2].len >= RULES_MAX_HEADER_NAME_BYTES) {
            perr_set(pe, tok[2].col, "bad header name");
            goto out;
        }
        for (size_t i = 0; i < tok[2].len; i++) {
            if (!httptoken_is_tchar((unsigned char)tok[2].text[i])) {
                perr_set(pe, tok[2].cols[i], "'%c' cannot be part of a header name",
                         tok[2].text[i]);
                goto out;
            }
        }
        /* Framing is computed by the proxy for every hop (RFC 9112 6): a
         * rule that could set it could smuggle a second message. */
        if (ascii_case_equal(tok[2].text, tok[2].len, "Content-Length", 14) ||
            ascii_case_equal(tok[2].text, tok[2].len, "Transfer-Encoding", 17)) {
            perr_set(pe, tok[2].col,
                     "%s is computed by tapwire for each hop and cannot be "
                     "rewritten",
                     tok[2].text);
            goto out;
        }
        memcpy(r->header_name, tok[2].text, tok[2].len + 1);
        first_option = 3;
    } else {
        perr_set(pe, tok[1].col,
                 "unknown target '%s' (expected url, header, body, mock, map-local, block or "
                 "map-remote)",
                 tok[1].text);
        goto out;
    }

    for (size_t i = first_option; i < lt->count; i++) {
        const struct token *t = &tok[i];
        size_t key_len = option_key_len(t);
        bool *flag = NULL;

        if (key_len > 0) {
            if (parse_option(r, t, key_len, po, pe) != 0)
                goto out;
            continue;
        }
        if (is_word(t, "regex"))
            flag = &r->is_regex;
        else if (is_word(t, "icase"))
            flag = &r->is_icase;
        if (flag != NULL || is_word(t, "disabled")) {
            bool is_set = flag != NULL ? *flag : !r->is_enabled;

            if (is_set) {
                perr_set(pe, t->col, "'%s' given twice", t->text);
                goto out;
            }
            if (flag != NULL)
                *flag = true;
            else
                r->is_enabled = false;
            continue;
        }
        pos[pos_count++] = t;
    }
    if (r->status_count > 0 && r->phase != RULES_RESPONSE) {
        perr_set(pe, tok[0].col, "status= is for response rules");
        goto out;
    }

    if (is_action(r)) {
        if (parse_action_words(r, pos, pos_count, lt, pe) != 0)
            goto out;
        goto done;
    }
    if (r->target == RULES_TARGET_HEADER) {
        if (pos_count == 0) {
            perr_set(pe, lt->end_col, "missing header action (set, replace or remove)");
            goto out;
        }
        if (is_word(pos[0], "set")) {
            r->action = RULES_HEADER_SET;
            want_min = want_max = 1;
        } else if (is_word(pos[0], "replace")) {
            r->action = RULES_HEADER_REPLACE;
            want_min = want_max = 2;
        } else if (is_word(pos[0], "remove")) {
            r->action = RULES_HEADER_REMOVE;
            want_min = 0;
            want_max = 1;
        } else {
            perr_set(pe, pos[0]->col,
                     "unknown header action '%s' (expected set, replace or "
                     "remove)",
                     pos[0]->text);
            goto out;
        }
        memmove(pos, pos + 1, (pos_count - 1) * sizeof(pos[0]));
        pos_count--;
    } else {
        want_min = want_max = 2;
    }
    if (pos_count < want_min) {
        perr_set(pe, lt->end_col, "missing %s", positional_name(r, pos_count));
        goto out;
    }
    if (pos_count > want_max) {
        perr_set(pe, pos[want_max]->col,
                 "unexpected '%s' after the %s (quote text that contains spaces)",
                 pos[want_max]->text, positional_name(r, want_max - 1));
        goto out;
    }
    if ((r->is_regex || r->is_icase) &&
        (r->action == RULES_HEADER_SET || (r->action == RULES_HEADER_REMOVE && pos_count == 0))) {
        perr_set(pe, tok[0].col, "'%s' needs a pattern", r->is_regex ? "regex" : "icase");
        goto out;
    }

    if (r->action == RULES_HEADER_SET) {
        if (set_replacement(r, pos[0], pe) != 0)
            goto out;
    } else {
        if (pos_count > 0 && set_pattern(r, pos[0], pe) != 0)
            goto out;
        if (pos_count > 1 && set_replacement(r, pos[1], pe) != 0)
            goto out;
    }
done:
    if (r->re != NULL || r->path_re != NULL) {
        r->match_ctx = new_match_ctx();
        if (r->match_ctx == NULL) {
            perr_set(pe, 0, "out of memory");
            goto out;
        }
    }
    *out = r;
    r = NULL;
    rc = 0;
out:
    rule_free(r);
    return rc;
}

static void format_perr(char *err, size_t err_len, const char *prefix, int line,
                        const struct perr *pe)
{
    if (line > 0 && pe->col > 0)
        errmsg_set(err, err_len, "%sline %d, column %d: %s", prefix, line, pe->col, pe->msg);
    else if (line > 0)
        errmsg_set(err, err_len, "%sline %d: %s", prefix, line, pe->msg);
    else if (pe->col > 0)
        errmsg_set(err, err_len, "%scolumn %d: %s", prefix, pe->col, pe->msg);
    else
        errmsg_set(err, err_len, "%s%s", prefix, pe->msg);
}

/* Parses one line (without its newline) into *out (NULL when blank). */
static int parse_line(const char *line, size_t len, const char *default_label,
                      const struct parse_opts *po, struct rule **out, struct perr *pe)
{
    struct line_tokens lt;
    int rc;

    *out = NULL;
    if (len > RULES_MAX_LINE_BYTES)
        return perr_set(pe, 0, "longer than %d bytes", RULES_MAX_LINE_BYTES);
    if (tokenize(line, len, &lt, pe) != 0)
        return -1;
    rc = parse_tokens(&lt, default_label, po, out, pe);
    tokens_free(&lt);
    return rc;
}

/* ---- rule sets ---- */

static struct rule_set *set_from(struct rule **rules, size_t count)
{
    struct rule_set *set = calloc(1, sizeof(*set));

    if (set == NULL)
        return NULL;
    atomic_init(&set->refs, 1);
    set->rules = rules;
    set->count = count;
    for (size_t i = 0; i < count; i++)
        set->has_match = set->has_match || rules[i]->match != NULL;
    return set;
}

struct rule_set *rules_set_new_empty(void)
{
    return set_from(NULL, 0);
}

struct rule_set *rules_set_ref(struct rule_set *set)
{
    atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

void rules_set_unref(struct rule_set *set)
{
    long before;

    if (set == NULL)
        return;
    /* acq_rel: the thread that frees must see every other thread's reads
     * of the set as finished. */
    before = atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel);
    if (before <= 0)
        abort(); /* a reference dropped twice: memory is already corrupt */
    if (before > 1)
        return;
    for (size_t i = 0; i < set->count; i++)
        rule_unref(set->rules[i]);
    free(set->rules);
    free(set);
}

size_t rules_set_count(const struct rule_set *set)
{
    return set != NULL ? set->count : 0;
}

const struct rule *rules_set_get(const struct rule_set *set, size_t i)
{
    return set != NULL && i < set->count ? set->rules[i] : NULL;
}

struct rule_set *rules_set_concat(struct rule_set *const *parts, size_t count, char *err,
                                  size_t err_len)
{
    size_t total = 0, k = 0;
    struct rule **rules = NULL;
    struct rule_set *set = NULL;

    for (size_t i = 0; i < count; i++)
        total += parts[i] != NULL ? parts[i]->count : 0;
    if (total > RULES_MAX_RULES) {
        errmsg_set(err, err_len, "more than %d rules in all", RULES_MAX_RULES);
        goto out;
    }
    if (total > 0) {
        rules = calloc(total, sizeof(*rules));
        if (rules == NULL) {
            errmsg_set(err, err_len, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < count; i++) {
        for (size_t j = 0; parts[i] != NULL && j < parts[i]->count; j++) {
            rules[k] = parts[i]->rules[j];
            rule_ref(rules[k++]);
        }
    }
    set = set_from(rules, total);
    if (set == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    rules = NULL;
out:
    for (size_t i = 0; rules != NULL && i < k; i++)
        rule_unref(rules[i]);
    free(rules);
    return set;
}

/*
 * Why a mutex is right here: readers hold it for a pointer load and one
 * atomic increment, a few nanoseconds, and never while doing anything that
 * can block (building, parsing and freeing sets all happen outside it;
 * rules_publish() drops the old set's reference after unlocking). An
 * uncontended pthread mutex is one atomic instruction to take and one to
 * release, the same cache-line traffic as the refcount itself, so readers
 * are no more serialised than the shared refcount already makes them.
 * A lock-free load of the pointer alone is not enough: between loading it
 * and incrementing its count a publisher may drop the last reference and
 * free it. Closing that gap without a lock needs hazard pointers or RCU,
 * much more code for no measurable gain at one acquire per exchange.
 */
int rules_current_init(struct rules_current *cur)
{
    cur->set = rules_set_new_empty();
    if (cur->set == NULL)
        return -1;
    if (pthread_mutex_init(&cur->lock, NULL) != 0) {
        rules_set_unref(cur->set);
        cur->set = NULL;
        return -1;
    }
    return 0;
}

void rules_current_destroy(struct rules_current *cur)
{
    pthread_mutex_destroy(&cur->lock);
    rules_set_unref(cur->set);
    cur->set = NULL;
}

void rules_publish(struct rules_current *cur, struct rule_set *set)
{
    struct rule_set *old;

    rules_set_ref(set);
    pthread_mutex_lock(&cur->lock);
    old = cur->set;
    cur->set = set;
    pthread_mutex_unlock(&cur->lock);
    rules_set_unref(old);
}

struct rule_set *rules_acquire(struct rules_current *cur)
{
    struct rule_set *set;

    pthread_mutex_lock(&cur->lock);
    set = rules_set_ref(cur->set);
    pthread_mutex_unlock(&cur->lock);
    return set;
}

/* ---- parsing texts and files ---- */

/* Collects rules; on failure frees what it has. */
struct rule_list {
    struct rule **rules;
    size_t count, cap;
};

static int list_add(struct rule_list *l, struct rule *r)
{
    if (l->count == l->cap) {
        size_t cap = l->cap == 0 ? 16 : l->cap * 2;
        struct rule **grown = realloc(l->rules, cap * sizeof(*grown));

        if (grown == NULL)
            return -1;
        l->rules = grown;
        l->cap = cap;
    }
    l->rules[l->count++] = r;
    return 0;
}

static void list_free(struct rule_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        rule_unref(l->rules[i]);
    free(l->rules);
    memset(l, 0, sizeof(*l));
}

static int list_to_set(struct rule_list *l, struct rule_set **out, char *err, size_t err_len)
{
    *out = set_from(l->rules, l->count);
    if (*out == NULL) {
        list_free(l);
        errmsg_set(err, err_len, "out of memory");
        return -1;
    }
    memset(l, 0, sizeof(*l));
    return 0;
}

static int parse_text(const char *text, size_t len, const char *origin, const struct parse_opts *po,
                      struct rule_set **out, char *err, size_t err_len)
{
    struct rule_list list = {0};
    size_t at = 0;
    int line = 0;
    int rc = -1;

    *out = NULL;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        at = 3; /* a UTF-8 byte order mark some editors write */
    while (at < len) {
        const char *start = text + at;
        const char *nl = memchr(start, '\n', len - at);
        size_t line_len = nl != NULL ? (size_t)(nl - start) : len - at;
        char label[RULES_MAX_LABEL_BYTES];
        struct rule *r = NULL;
        struct perr pe = {0};

        line++;
        at += line_len + (nl != NULL);
        if (line_len > 0 && start[line_len - 1] == '\r')
            line_len--;
        snprintf(label, sizeof(label), "%s:%d", origin != NULL ? origin : "rules", line);
        if (parse_line(start, line_len, label, po, &r, &pe) != 0) {
            format_perr(err, err_len, "", line, &pe);
            goto out;
        }
        if (r == NULL)
            continue;
        r->line = line;
        if (list.count == RULES_MAX_RULES) {
            rule_unref(r);
            errmsg_set(err, err_len, "line %d: more than %d rules", line, RULES_MAX_RULES);
            goto out;
        }
        if (list_add(&list, r) != 0) {
            rule_unref(r);
            errmsg_set(err, err_len, "out of memory");
            goto out;
        }
    }
    rc = list_to_set(&list, out, err, err_len);
out:
    list_free(&list);
    return rc;
}

int rules_parse_text(const char *text, size_t len, const char *origin, struct rule_set **out,
                     char *err, size_t err_len)
{
    const struct parse_opts po = {.may_read_files = true};

    return parse_text(text, len, origin, &po, out, err, err_len);
}

/* One spec into one rule, refusing blank lines: a --rule or an API call
 * that holds no rule is a mistake, not a no-op. */
static int parse_one(const char *spec, size_t len, const char *default_label,
                     const struct parse_opts *po, struct rule **out, struct perr *pe)
{
    if (memchr(spec, '\n', len) != NULL)
        return perr_set(pe, (int)((const char *)memchr(spec, '\n', len) - spec) + 1,
                        "a rule is one line");
    if (len > 0 && spec[len - 1] == '\r')
        len--;
    if (parse_line(spec, len, default_label, po, out, pe) != 0)
        return -1;
    if (*out == NULL)
        return perr_set(pe, 0, "no rule (the text is blank or a comment)");
    return 0;
}

int rules_parse_spec(const char *spec, size_t len, const char *default_label, struct rule_set **out,
                     char *err, size_t err_len)
{
    const struct parse_opts po = {.may_read_files = true};
    struct rule_list list = {0};
    struct rule *r = NULL;
    struct perr pe = {0};
    int rc = -1;

    *out = NULL;
    if (parse_one(spec, len, default_label, &po, &r, &pe) != 0) {
        format_perr(err, err_len, "", 0, &pe);
        goto out;
    }
    if (list_add(&list, r) != 0) {
        rule_unref(r);
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    rc = list_to_set(&list, out, err, err_len);
out:
    list_free(&list);
    return rc;
}

int rules_parse_stored(const char *spec, int64_t id, bool is_enabled, struct rule_set **out,
                       char *err, size_t err_len)
{
    struct rule_list list = {0};
    struct rule *r = NULL;
    struct perr pe = {0};
    char label[RULES_MAX_LABEL_BYTES];
    int rc = -1;

    *out = NULL;
    const struct parse_opts po = {.may_read_files = false};

    snprintf(label, sizeof(label), "#%lld", (long long)id);
    if (parse_one(spec, strlen(spec), label, &po, &r, &pe) != 0) {
        format_perr(err, err_len, "", 0, &pe);
        goto out;
    }
    r->id = id;
    r->is_enabled = r->is_enabled && is_enabled;
    rc = -2;
    if (list_add(&list, r) != 0) {
        rule_unref(r);
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (list_to_set(&list, out, err, err_len) != 0)
        goto out;
    rc = 0;
out:
    list_free(&list);
    return rc;
}

int rules_parse_specs(const char *const *specs, size_t count, struct rule_set **out, char *err,
                      size_t err_len)
{
    struct rule_list list = {0};
    int rc = -1;

    *out = NULL;
    if (count > RULES_MAX_RULES) {
        errmsg_set(err, err_len, "more than %d rules", RULES_MAX_RULES);
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        char label[RULES_MAX_LABEL_BYTES];
        char prefix[32];
        struct rule *r = NULL;
        struct perr pe = {0};

        snprintf(label, sizeof(label), "rule %zu", i + 1);
        snprintf(prefix, sizeof(prefix), "rule %zu: ", i + 1);
        const struct parse_opts po = {.may_read_files = true};

        if (parse_one(specs[i], strlen(specs[i]), label, &po, &r, &pe) != 0) {
            format_perr(err, err_len, prefix, 0, &pe);
            goto out;
        }
        if (list_add(&list, r) != 0) {
            rule_unref(r);
            errmsg_set(err, err_len, "out of memory");
            goto out;
        }
    }
    rc = list_to_set(&list, out, err, err_len);
out:
    list_free(&list);
    return rc;
}

int rules_load_file(const char *path, struct rule_set **out, char *err, size_t err_len)
{
    char msg[RULES_ERROR_BYTES];
    const char *base = strrchr(path, '/');
    char *dir = base != NULL ? strndup(path, base > path ? (size_t)(base - path) : 1) : NULL;
    struct parse_opts po = {.base_dir = dir, .may_read_files = true};
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    int fd;
    int rc = -1;

    *out = NULL;
    if (base != NULL && dir == NULL) {
        errmsg_set(err, err_len, "out of memory");
        return -1;
    }
    /* O_NONBLOCK: opening a FIFO (or a device) for reading otherwise waits
     * for a writer, which would hang the start or the reload thread, and
     * with it SIGTERM. Only a regular file is read. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        errmsg_set(err, err_len, "cannot open rules file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        errmsg_set(err, err_len, "cannot read rules file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errmsg_set(err, err_len, "rules file %s is not a regular file%s", path,
                   S_ISFIFO(st.st_mode)  ? " (a FIFO)"
                   : S_ISDIR(st.st_mode) ? " (a directory)"
                                         : "");
        goto out;
    }
    if (st.st_size > RULES_MAX_FILE_BYTES) {
        errmsg_set(err, err_len, "rules file %s is larger than %d bytes", path,
                   RULES_MAX_FILE_BYTES);
        goto out;
    }
    /* One byte more than allowed, so that a file growing while we read it
     * is noticed rather than cut. */
    text = malloc(RULES_MAX_FILE_BYTES + 1);
    if (text == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, text + len, RULES_MAX_FILE_BYTES + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errmsg_set(err, err_len, "cannot read rules file %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > RULES_MAX_FILE_BYTES) {
            errmsg_set(err, err_len, "rules file %s is larger than %d bytes", path,
                       RULES_MAX_FILE_BYTES);
            goto out;
        }
    }
    if (parse_text(text, len, base != NULL ? base + 1 : path, &po, out, msg, sizeof(msg)) != 0) {
        errmsg_set(err, err_len, "%s: %s", path, msg);
        goto out;
    }
    rc = 0;
out:
    free(text);
    free(dir);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- formatting ---- */

/* Strict UTF-8 (RFC 3629): no overlong forms, surrogates or values past
 * U+10FFFF. */
static bool is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i - 1 < more)
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

/* Writes value so the tokenizer reads it back byte for byte: bare when it
 * is safe (and may_be_bare), else in '...' when that needs no escape, else
 * in "..." with escapes. The result is always valid UTF-8 (bytes that are
 * not are escaped), since specs travel as JSON strings to the dashboard. */
static void put_quoted(struct buf *t, const char *v, size_t n, bool may_be_bare)
{
    bool is_utf = is_utf8((const unsigned char *)v, n);
    bool is_bare = may_be_bare && n > 0 && is_utf;
    bool is_raw = is_utf;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c <= 0x20 || c == 0x7f || c == '"' || c == '\'')
            is_bare = false;
        if (c == '\'' || is_bad_raw_byte(c) || c == '\t')
            is_raw = false;
    }
    if (is_bare) {
        buf_put(t, v, n);
        return;
    }
    if (is_raw) {
        buf_str(t, "'");
        buf_put(t, v, n);
        buf_str(t, "'");
        return;
    }
    buf_str(t, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        char esc[8];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            buf_put(t, esc, 2);
        } else if (c == '\n') {
            buf_str(t, "\\n");
        } else if (c == '\r') {
            buf_str(t, "\\r");
        } else if (c == '\t') {
            buf_str(t, "\\t");
        } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !is_utf)) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            buf_str(t, esc);
        } else {
            buf_put(t, &v[i], 1);
        }
    }
    buf_str(t, "\"");
}

static void put_list(struct buf *t, const char *key, char *const *items, size_t count)
{
    struct buf joined = BUF_INIT(BUF_UNBOUNDED_BYTES);

    if (count == 0)
        return;
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            buf_str(&joined, ",");
        buf_str(&joined, items[i]);
    }
    buf_str(t, " ");
    buf_str(t, key);
    if (joined.has_failed)
        t->has_failed = true;
    else
        put_quoted(t, joined.data, joined.len, true);
    free(joined.data);
}

static char *format_rule(const struct rule *r, bool with_disabled)
{
    static const char *const actions[] = {"", "set", "replace", "remove"};
    struct buf t = BUF_INIT(BUF_UNBOUNDED_BYTES);

    buf_str(&t, r->phase == RULES_REQUEST ? "request" : "response");
    if (r->target == RULES_TARGET_URL) {
        buf_str(&t, " url");
    } else if (r->target == RULES_TARGET_BODY) {
        buf_str(&t, " body");
    } else if (r->target == RULES_TARGET_MOCK) {
        buf_str(&t, r->is_map_local ? " map-local" : " mock");
    } else if (r->target == RULES_TARGET_BLOCK) {
        buf_str(&t, " block");
    } else if (r->target == RULES_TARGET_MAP_REMOTE) {
        buf_str(&t, " map-remote");
    } else {
        buf_str(&t, " header ");
        buf_str(&t, r->header_name);
        buf_str(&t, " ");
        buf_str(&t, actions[r->action]);
    }
    if (r->is_regex)
        buf_str(&t, " regex");
    if (r->is_icase)
        buf_str(&t, " icase");
    if (with_disabled && !r->is_enabled)
        buf_str(&t, " disabled");
    if (r->has_name) {
        buf_str(&t, " name=");
        buf_str(&t, r->label);
    }
    put_list(&t, "host=", r->hosts, r->host_count);
    if (r->path_prefix != NULL) {
        buf_str(&t, " path=");
        put_quoted(&t, r->path_prefix, strlen(r->path_prefix), true);
    }
    if (r->path_regex != NULL) {
        buf_str(&t, " path~");
        put_quoted(&t, r->path_regex, strlen(r->path_regex), true);
    }
    put_list(&t, "method=", r->methods, r->method_count);
    if (r->status_count > 0) {
        buf_str(&t, " status=");
        for (size_t i = 0; i < r->status_count; i++) {
            char code[16];

            if (r->statuses[i].lo == r->statuses[i].hi)
                snprintf(code, sizeof(code), "%s%d", i > 0 ? "," : "", r->statuses[i].lo);
            else
                snprintf(code, sizeof(code), "%s%dxx", i > 0 ? "," : "", r->statuses[i].lo / 100);
            buf_str(&t, code);
        }
    }
    put_list(&t, "type=", r->types, r->type_count);
    if (r->match_text != NULL) {
        buf_str(&t, " match=");
        put_quoted(&t, r->match_text, strlen(r->match_text), true);
    }
    for (size_t i = 0; i < r->answer_field_count; i++) {
        buf_str(&t, " header=");
        put_quoted(&t, r->answer_fields[i], strlen(r->answer_fields[i]), true);
    }
    if (r->file_path != NULL) {
        buf_str(&t, " file=");
        put_quoted(&t, r->file_path, strlen(r->file_path), true);
    }
    if (r->is_close)
        buf_str(&t, " close");
    if (r->answer_status > 0) {
        char code[16];

        snprintf(code, sizeof(code), " %d", r->answer_status);
        buf_str(&t, code);
    }
    if (r->target == RULES_TARGET_MOCK && r->file_path == NULL && r->answer_body != NULL) {
        buf_str(&t, " ");
        put_quoted(&t, r->answer_body, r->answer_body_len, false);
    }
    if (r->remote_url != NULL) {
        buf_str(&t, " ");
        put_quoted(&t, r->remote_url, strlen(r->remote_url), false);
    }
    if (r->has_pattern) {
        buf_str(&t, " ");
        put_quoted(&t, r->pattern, r->pattern_len, false);
    }
    if (r->replacement != NULL) {
        buf_str(&t, " ");
        put_quoted(&t, r->replacement, r->replacement_len, false);
    }
    if (t.has_failed) {
        free(t.data);
        return NULL;
    }
    return t.data;
}

char *rules_format(const struct rule *rule)
{
    return format_rule(rule, true);
}

char *rules_format_as_stored(const struct rule *rule)
{
    return format_rule(rule, false);
}

/* ---- the context ---- */

int rules_ctx_init(struct rules_ctx *ctx, const char *method, const char *host, const char *target)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->phase = RULES_REQUEST;
    snprintf(ctx->method, sizeof(ctx->method), "%s", method != NULL ? method : "");
    snprintf(ctx->host, sizeof(ctx->host), "%s", host != NULL ? host : "");
    ctx->target = strdup(target != NULL ? target : "");
    return ctx->target != NULL ? 0 : -1;
}

void rules_ctx_set_response(struct rules_ctx *ctx, int status, const char *content_type)
{
    ctx->phase = RULES_RESPONSE;
    ctx->status = status;
    rules_ctx_set_content_type(ctx, content_type);
}

void rules_ctx_set_content_type(struct rules_ctx *ctx, const char *content_type)
{
    snprintf(ctx->content_type, sizeof(ctx->content_type), "%s",
             content_type != NULL ? content_type : "");
}

void rules_ctx_free(struct rules_ctx *ctx)
{
    free(ctx->target);
    ctx->target = NULL;
}

/* Appends item to a separated list in a fixed buffer; "..." marks a cut. */
static void append_item(char *buf, size_t size, const char *sep, const char *item)
{
    size_t used = strlen(buf);
    size_t need = (used > 0 ? strlen(sep) : 0) + strlen(item);

    if (used >= 3 && strcmp(buf + used - 3, "...") == 0)
        return;
    if (need + 1 > size - used) {
        if (size - used >= 4)
            memcpy(buf + used, "...", 4);
        else if (size >= 4)
            memcpy(buf + size - 4, "...", 4);
        return;
    }
    snprintf(buf + used, size - used, "%s%s", used > 0 ? sep : "", item);
}

static void note_applied(struct rules_ctx *ctx, const struct rule *r)
{
    const char *p = ctx->applied;
    size_t n = strlen(r->label);

    /* A rule is listed once however many fields or matches it changed. */
    while ((p = strstr(p, r->label)) != NULL) {
        bool starts = p == ctx->applied || (p >= ctx->applied + 2 && p[-2] == ',');
        bool ends = p[n] == '\0' || p[n] == ',';

        if (starts && ends)
            return;
        p += n;
    }
    append_item(ctx->applied, sizeof(ctx->applied), ", ", r->label);
}

static void note_skip(struct rules_ctx *ctx, const struct rule *r, const char *what,
                      const char *why)
{
    char item[RULES_NOTES_BYTES];

    snprintf(item, sizeof(item), "%s: %s %s not rewritten: %s", r->label,
             ctx->phase == RULES_REQUEST ? "request" : "response", what, why);
    append_item(ctx->notes, sizeof(ctx->notes), "; ", item);
}

char *rules_ctx_summary(const struct rules_ctx *ctx)
{
    struct buf t = BUF_INIT(BUF_UNBOUNDED_BYTES);

    if (ctx->applied[0] == '\0' && ctx->notes[0] == '\0')
        return NULL;
    buf_str(&t, ctx->applied);
    if (ctx->notes[0] != '\0') {
        if (ctx->applied[0] != '\0')
            buf_str(&t, "; ");
        buf_str(&t, ctx->notes);
    }
    if (t.has_failed) {
        free(t.data);
        return NULL;
    }
    return t.data;
}

/* ---- matching ---- */

/* '*' any run of characters (dots too), '?' one; ASCII case-insensitive.
 * Linear backtracking over the last star only, so O(len(glob) * len(host)). */
static bool glob_match(const char *g, const char *s)
{
    const char *star = NULL, *resume = NULL;

    while (*s != '\0') {
        if (*g == '*') {
            star = g++;
            resume = s;
        } else if (*g != '\0' &&
                   (*g == '?' || fold((unsigned char)*g) == fold((unsigned char)*s))) {
            g++;
            s++;
        } else if (star != NULL) {
            g = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*g == '*')
        g++;
    return *g == '\0';
}

static void pcre2_reason(int code, char *why, size_t why_len)
{
    char budget[64];

    snprintf(budget, sizeof(budget), "the rules took longer than %d ms", RULES_APPLY_BUDGET_MS);
    regexsearch_reason(code, budget, why, why_len);
}

/* 1 when re matches somewhere in s, 0 when not, -1 with why on an error. */
static int regex_search(const pcre2_code *re, const pcre2_match_context *mc, const unsigned char *s,
                        size_t len, int64_t deadline_ms, char *why, size_t why_len)
{
    struct regexsearch se;
    int rc = -1;

    if (regexsearch_init(&se, re, mc, deadline_ms) != 0) {
        errmsg_set(why, why_len, "out of memory");
        goto out;
    }
    rc = regexsearch_next(&se, s, len, 0, 0);
    if (rc >= 0) {
        rc = 1;
    } else if (rc == PCRE2_ERROR_NOMATCH) {
        rc = 0;
    } else {
        pcre2_reason(rc, why, why_len);
        rc = -1;
    }
out:
    regexsearch_free(&se);
    return rc;
}

/* Offset of the first occurrence of the literal pattern in s[from..len),
 * or SEARCH_NOT_FOUND. */
static size_t find_literal(const struct rule *r, const unsigned char *s, size_t len, size_t from)
{
    const unsigned char *p = (const unsigned char *)r->pattern;
    size_t m = r->pattern_len;

    if (from > len || len - from < m)
        return SEARCH_NOT_FOUND;
    if (!r->is_icase) {
        const unsigned char *hit = memmem(s + from, len - from, p, m);

        return hit != NULL ? (size_t)(hit - s) : SEARCH_NOT_FOUND;
    }
    {
        const size_t *fail = priv(r)->fold_fail;
        size_t k = 0;

        for (size_t i = from; i < len; i++) {
            unsigned char c = fold(s[i]);

            while (k > 0 && c != fold(p[k]))
                k = fail[k - 1];
            if (c == fold(p[k]))
                k++;
            if (k == m)
                return i + 1 - m;
        }
    }
    return SEARCH_NOT_FOUND;
}

/* Does the rule's pattern occur in s? 1, 0, or -1 with why. */
static int pattern_found(const struct rule *r, const unsigned char *s, size_t len,
                         int64_t deadline_ms, char *why, size_t why_len)
{
    if (r->is_regex)
        return regex_search(r->re, r->match_ctx, s, len, deadline_ms, why, why_len);
    return find_literal(r, s, len, 0) != SEARCH_NOT_FOUND;
}

/* The filters, in the order of their cost. ctx gets a note when a path
 * regex fails, since then the rule is skipped for a reason the user
 * should see. */
static const char *const target_names[] = {"url", "header", "body", "mock", "block", "map-remote"};

static bool rule_selected(const struct rule *r, struct rules_ctx *ctx, enum rules_target target)
{
    bool hit;

    if (!r->is_enabled || r->phase != ctx->phase || r->target != target)
        return false;
    if (r->method_count > 0) {
        hit = false;
        for (size_t i = 0; i < r->method_count && !hit; i++)
            hit = ascii_case_equal(r->methods[i], strlen(r->methods[i]), ctx->method,
                                   strlen(ctx->method));
        if (!hit)
            return false;
    }
    if (r->status_count > 0) {
        hit = false;
        for (size_t i = 0; i < r->status_count && !hit; i++)
            hit = ctx->status >= r->statuses[i].lo && ctx->status <= r->statuses[i].hi;
        if (!hit)
            return false;
    }
    if (r->host_count > 0) {
        hit = false;
        for (size_t i = 0; i < r->host_count && !hit; i++)
            hit = glob_match(r->hosts[i], ctx->host);
        if (!hit)
            return false;
    }
    if (r->type_count > 0) {
        hit = false;
        for (size_t i = 0; i < r->type_count && !hit; i++)
            hit = contains_folded(ctx->content_type, r->types[i]);
        if (!hit)
            return false;
    }
    if (r->path_prefix != NULL && strncmp(ctx->target, r->path_prefix, strlen(r->path_prefix)) != 0)
        return false;
    if (r->path_re != NULL) {
        char why[256];
        int rc = regex_search(r->path_re, r->match_ctx, (const unsigned char *)ctx->target,
                              strlen(ctx->target), clock_mono_coarse_ms() + RULES_APPLY_BUDGET_MS,
                              why, sizeof(why));

        if (rc < 0) {
            char reason[300];

            snprintf(reason, sizeof(reason), "path~: %s", why);
            note_skip(ctx, r, target_names[target], reason);
        }
        if (rc != 1)
            return false;
    }
    if (r->match != NULL) {
        char why[256];
        int rc = ctx->flow != NULL ? filter_match(r->match, ctx->flow, why, sizeof(why)) : 0;

        if (rc < 0) {
            char reason[300];

            snprintf(reason, sizeof(reason), "match=: %s", why);
            note_skip(ctx, r, target_names[target], reason);
        }
        if (rc != 1)
            return false;
    }
    return true;
}

bool rules_set_has_match(const struct rule_set *set)
{
    return set != NULL && set->has_match;
}

const struct rule *rules_find_action(const struct rule_set *set, struct rules_ctx *ctx)
{
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        const struct rule *r = set->rules[i];

        if (is_action(r) && rule_selected(r, ctx, r->target)) {
            note_applied(ctx, r);
            return r;
        }
    }
    return NULL;
}

char *rules_remote_target(const struct rule *rule, const char *target)
{
    const char *prefix = rule->remote.prefix != NULL ? rule->remote.prefix : "";
    const char *rest = target;
    size_t plen = strlen(prefix), n;
    const char *sep = "";
    char *out;

    if (rule->path_prefix != NULL &&
        strncmp(target, rule->path_prefix, strlen(rule->path_prefix)) == 0)
        rest = target + strlen(rule->path_prefix);
    /* Exactly one slash between the prefix and the rest: "/v2" and "x"
     * make "/v2/x", "/v2/" and "/x" too; a query follows directly. */
    if (plen > 0 && prefix[plen - 1] == '/' && rest[0] == '/')
        rest++;
    else if (rest[0] != '/' && rest[0] != '?' && (plen == 0 || prefix[plen - 1] != '/'))
        sep = "/";
    if (plen == 0 && rest[0] == '?')
        sep = "/";
    n = plen + strlen(sep) + strlen(rest);
    if (n > RULES_MAX_TARGET_BYTES)
        return NULL;
    out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, prefix, plen);
    memcpy(out + plen, sep, strlen(sep));
    memcpy(out + plen + strlen(sep), rest, strlen(rest) + 1);
    return out;
}

/* ---- replacing ---- */

enum subst_result {
    SUBST_NOMEM = -1,
    SUBST_NONE = 0,    /* no match; out untouched */
    SUBST_CHANGED = 1, /* out holds the result */
    SUBST_SKIPPED = 2, /* why says why; out freed */
};

static int put_replacement(const struct rule *r, struct buf *out, const unsigned char *s,
                           const PCRE2_SIZE *ov, int pairs)
{
    int rc = 0;

    if (!r->is_regex)
        return buf_put(out, r->replacement, r->replacement_len);
    for (size_t i = 0; i < r->repl_part_count && rc == 0; i++) {
        const struct rule_repl_part *p = &r->repl_parts[i];

        if (p->group < 0) {
            rc = buf_put(out, r->replacement + p->offset, p->len);
        } else if (p->group < pairs && ov[2 * p->group] != PCRE2_UNSET &&
                   ov[2 * p->group] <= ov[2 * p->group + 1]) {
            rc = buf_put(out, s + ov[2 * p->group], ov[2 * p->group + 1] - ov[2 * p->group]);
        }
        /* an unset group is empty, as in Perl */
    }
    return rc;
}

static int put_result(int put_rc, struct buf *out, char *why, size_t why_len)
{
    if (put_rc == BUF_OVER_MAX)
        errmsg_set(why, why_len, "the result would pass %zu bytes", out->max);
    return put_rc == BUF_OVER_MAX ? SUBST_SKIPPED : SUBST_NOMEM;
}

/*
 * Replaces every match of r in s[0..len), left to right, without overlap,
 * into out (whose max bounds the result). Empty regex matches are handled
 * as Perl does: after one, the next match may not be empty at the same
 * place, else the search moves on by one character.
 */
static int substitute(const struct rule *r, const unsigned char *s, size_t len, int64_t deadline_ms,
                      struct buf *out, char *why, size_t why_len)
{
    struct regexsearch se = {0};
    size_t copied = 0, offset = 0;
    uint32_t options = 0;
    unsigned long matches = 0;
    int put_rc;
    int rc = SUBST_NOMEM;

    if (r->is_regex && regexsearch_init(&se, r->re, r->match_ctx, deadline_ms) != 0)
        goto out;
    for (;;) {
        size_t start, end;
        int pairs = 0;
        const PCRE2_SIZE *ov = NULL;

        if (r->is_regex) {
            if (offset > len)
                break;
            pairs = regexsearch_next(&se, s, len, offset, options);
            if (pairs == PCRE2_ERROR_NOMATCH && options == 0)
                break;
            if (pairs == PCRE2_ERROR_NOMATCH) {
                /* No non-empty match where the empty one was: step one
                 * character on and search normally again. */
                offset = regexsearch_char_boundary(&se, s, len, offset + 1);
                options = 0;
                continue;
            }
            if (pairs < 0) {
                pcre2_reason(pairs, why, why_len);
                rc = SUBST_SKIPPED;
                goto out;
            }
            ov = pcre2_get_ovector_pointer(se.md);
            start = ov[0];
            end = ov[1];
            if (start < copied || end < start || end > len) {
                errmsg_set(why, why_len, "the regex reported a match outside the text (\\K?)");
                rc = SUBST_SKIPPED;
                goto out;
            }
        } else {
            start = find_literal(r, s, len, offset);
            if (start == SEARCH_NOT_FOUND)
                break;
            end = start + r->pattern_len;
        }
        put_rc = buf_put(out, s + copied, start - copied);
        if (put_rc == 0)
            put_rc = put_replacement(r, out, s, ov, pairs);
        if (put_rc != 0) {
            rc = put_result(put_rc, out, why, why_len);
            goto out;
        }
        copied = end;
        /* regexsearch_next() watches the clock for regexes; literals are checked here. */
        if (++matches % BUDGET_CHECK_EVERY == 0 && !r->is_regex &&
            clock_mono_coarse_ms() > deadline_ms) {
            errmsg_set(why, why_len, "the rules took longer than %d ms", RULES_APPLY_BUDGET_MS);
            rc = SUBST_SKIPPED;
            goto out;
        }
        if (r->is_regex && start == end) {
            if (end == len)
                break;
            options = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
        } else {
            options = 0;
        }
        offset = end;
    }
    if (matches == 0) {
        rc = SUBST_NONE;
        goto out;
    }
    put_rc = buf_put(out, s + copied, len - copied);
    if (put_rc != 0) {
        rc = put_result(put_rc, out, why, why_len);
        goto out;
    }
    rc = SUBST_CHANGED;
out:
    regexsearch_free(&se);
    if (rc != SUBST_CHANGED)
        buf_free(out);
    return rc;
}

static bool same_bytes(const void *a, size_t a_len, const void *b, size_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

/* RFC 9112 3.2: a request-target is visible ASCII; one that is not would
 * split or corrupt the request line. */
static bool is_valid_target(const unsigned char *t, size_t len, bool must_start_with_slash)
{
    if (len == 0 || (must_start_with_slash && t[0] != '/'))
        return false;
    for (size_t i = 0; i < len; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f)
            return false;
    return true;
}

/* RFC 9110 5.5: field-value bytes; no CR, LF, NUL or other controls. */
static bool is_valid_field_value(const unsigned char *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return false;
    return true;
}

static bool budget_gone(const struct rule *r, struct rules_ctx *ctx, const char *what,
                        int64_t deadline_ms)
{
    char why[96];

    if (clock_mono_coarse_ms() <= deadline_ms)
        return false;
    snprintf(why, sizeof(why), "the rules took longer than %d ms", RULES_APPLY_BUDGET_MS);
    note_skip(ctx, r, what, why);
    return true;
}

int rules_apply_url(const struct rule_set *set, struct rules_ctx *ctx, char **out)
{
    int64_t deadline = clock_mono_coarse_ms() + RULES_APPLY_BUDGET_MS;
    char *original = NULL;
    int rc = -1;

    *out = NULL;
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        const struct rule *r = set->rules[i];
        struct buf ob = {.max = RULES_MAX_TARGET_BYTES};
        const unsigned char *t = (const unsigned char *)ctx->target;
        size_t t_len = strlen(ctx->target);
        char why[256];
        int s;

        if (!rule_selected(r, ctx, RULES_TARGET_URL))
            continue;
        if (budget_gone(r, ctx, "url", deadline))
            break;
        s = substitute(r, t, t_len, deadline, &ob, why, sizeof(why));
        if (s == SUBST_NOMEM)
            goto out;
        if (s == SUBST_SKIPPED)
            note_skip(ctx, r, "url", why);
        if (s != SUBST_CHANGED)
            continue;
        if (!is_valid_target((const unsigned char *)ob.data, ob.len, t_len > 0 && t[0] == '/')) {
            note_skip(ctx, r, "url",
                      "the result is not a valid request-target (space, control or non-ASCII "
                      "byte, or no leading '/')");
            buf_free(&ob);
            continue;
        }
        if (same_bytes(ob.data, ob.len, t, t_len)) {
            buf_free(&ob);
            continue;
        }
        ob.data[ob.len] = '\0';
        if (original == NULL)
            original = ctx->target;
        else
            free(ctx->target);
        ctx->target = (char *)ob.data;
        note_applied(ctx, r);
    }
    if (original != NULL && strcmp(original, ctx->target) != 0) {
        *out = strdup(ctx->target);
        if (*out == NULL)
            goto out;
    }
    rc = 0;
out:
    free(original);
    return rc;
}

/* ---- headers ---- */

struct field {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
};

struct fields {
    struct field *f;
    size_t count, cap;
};

static void fields_free(struct fields *fs)
{
    for (size_t i = 0; i < fs->count; i++) {
        free(fs->f[i].name);
        free(fs->f[i].value);
    }
    free(fs->f);
    memset(fs, 0, sizeof(*fs));
}

static int fields_add(struct fields *fs, size_t at, const char *name, size_t name_len,
                      const char *value, size_t value_len)
{
    struct field f = {dup_bytes(name, name_len), name_len, dup_bytes(value, value_len), value_len};

    if (f.name == NULL || f.value == NULL)
        goto fail;
    if (fs->count == fs->cap) {
        size_t cap = fs->cap == 0 ? 32 : fs->cap * 2;
        struct field *grown = realloc(fs->f, cap * sizeof(*grown));

        if (grown == NULL)
            goto fail;
        fs->f = grown;
        fs->cap = cap;
    }
    memmove(fs->f + at + 1, fs->f + at, (fs->count - at) * sizeof(*fs->f));
    fs->f[at] = f;
    fs->count++;
    return 0;
fail:
    free(f.name);
    free(f.value);
    return -1;
}

static void fields_remove(struct fields *fs, size_t at)
{
    free(fs->f[at].name);
    free(fs->f[at].value);
    memmove(fs->f + at, fs->f + at + 1, (fs->count - at - 1) * sizeof(*fs->f));
    fs->count--;
}

static bool field_is(const struct field *f, const char *name)
{
    return ascii_case_equal(f->name, f->name_len, name, strlen(name));
}

/* Bytes of the fields as a head: "Name: value\r\n" each. */
static size_t head_bytes(const struct fields *fs)
{
    size_t n = 0;

    for (size_t i = 0; i < fs->count; i++)
        n += fs->f[i].name_len + fs->f[i].value_len + 4;
    return n;
}

enum header_result { HDR_NOMEM = -1, HDR_SAME = 0, HDR_CHANGED = 1, HDR_SKIPPED = 2 };

static int header_set(const struct rule *r, struct fields *fs, char *why, size_t why_len)
{
    size_t first = SIZE_MAX, count = 0;
    size_t bytes = head_bytes(fs);
    size_t name_len = strlen(r->header_name);
    char *value;

    for (size_t i = 0; i < fs->count; i++) {
        if (field_is(&fs->f[i], r->header_name)) {
            if (first == SIZE_MAX)
                first = i;
            count++;
            bytes -= fs->f[i].name_len + fs->f[i].value_len + 4;
        }
    }
    if (count == 1 &&
        same_bytes(fs->f[first].value, fs->f[first].value_len, r->replacement, r->replacement_len))
        return HDR_SAME;
    if (bytes + name_len + r->replacement_len + 4 > RULES_MAX_HEAD_BYTES) {
        errmsg_set(why, why_len, "the head would pass %d bytes", RULES_MAX_HEAD_BYTES);
        return HDR_SKIPPED;
    }
    if (first == SIZE_MAX)
        return fields_add(fs, fs->count, r->header_name, name_len, r->replacement,
                          r->replacement_len) == 0
                   ? HDR_CHANGED
                   : HDR_NOMEM;
    value = dup_bytes(r->replacement, r->replacement_len);
    if (value == NULL)
        return HDR_NOMEM;
    free(fs->f[first].value);
    fs->f[first].value = value;
    fs->f[first].value_len = r->replacement_len;
    for (size_t i = fs->count; i-- > first + 1;)
        if (field_is(&fs->f[i], r->header_name))
            fields_remove(fs, i);
    return HDR_CHANGED;
}

static int header_replace(const struct rule *r, struct fields *fs, int64_t deadline, char *why,
                          size_t why_len)
{
    struct buf *news = calloc(fs->count > 0 ? fs->count : 1, sizeof(*news));
    size_t bytes = head_bytes(fs);
    int rc = HDR_NOMEM;
    bool is_changed = false;

    if (news == NULL)
        return HDR_NOMEM;
    /* All new values first: the rule applies to every field or to none. */
    for (size_t i = 0; i < fs->count; i++) {
        struct field *f = &fs->f[i];
        int s;

        if (!field_is(f, r->header_name))
            continue;
        news[i].max = RULES_MAX_HEAD_BYTES;
        s = substitute(r, (const unsigned char *)f->value, f->value_len, deadline, &news[i], why,
                       why_len);
        if (s == SUBST_NOMEM)
            goto out;
        if (s == SUBST_SKIPPED) {
            rc = HDR_SKIPPED;
            goto out;
        }
        if (s == SUBST_NONE)
            continue;
        if (!is_valid_field_value((const unsigned char *)news[i].data, news[i].len)) {
            errmsg_set(why, why_len,
                       "the result would put a control character (CR, LF, NUL...) into %s",
                       r->header_name);
            rc = HDR_SKIPPED;
            goto out;
        }
        bytes = bytes - f->value_len + news[i].len;
        if (bytes > RULES_MAX_HEAD_BYTES) {
            errmsg_set(why, why_len, "the head would pass %d bytes", RULES_MAX_HEAD_BYTES);
            rc = HDR_SKIPPED;
            goto out;
        }
    }
    for (size_t i = 0; i < fs->count; i++) {
        if (news[i].data == NULL)
            continue;
        if (!same_bytes(news[i].data, news[i].len, fs->f[i].value, fs->f[i].value_len))
            is_changed = true;
        news[i].data[news[i].len] = '\0';
        free(fs->f[i].value);
        fs->f[i].value = news[i].data;
        fs->f[i].value_len = news[i].len;
        news[i].data = NULL;
    }
    rc = is_changed ? HDR_CHANGED : HDR_SAME;
out:
    for (size_t i = 0; i < fs->count; i++)
        buf_free(&news[i]);
    free(news);
    return rc;
}

static int header_remove(const struct rule *r, struct fields *fs, int64_t deadline, char *why,
                         size_t why_len)
{
    bool *drop = calloc(fs->count > 0 ? fs->count : 1, sizeof(*drop));
    bool is_changed = false;
    int rc = HDR_SKIPPED;

    if (drop == NULL)
        return HDR_NOMEM;
    for (size_t i = 0; i < fs->count; i++) {
        int found = 1;

        if (!field_is(&fs->f[i], r->header_name))
            continue;
        if (r->has_pattern)
            found = pattern_found(r, (const unsigned char *)fs->f[i].value, fs->f[i].value_len,
                                  deadline, why, why_len);
        if (found < 0)
            goto out;
        drop[i] = found == 1;
    }
    for (size_t i = fs->count; i-- > 0;) {
        if (drop[i]) {
            fields_remove(fs, i);
            is_changed = true;
        }
    }
    rc = is_changed ? HDR_CHANGED : HDR_SAME;
out:
    free(drop);
    return rc;
}

void rules_headers_free(struct rules_headers *list)
{
    free(list->fields);
    free(list->storage);
    memset(list, 0, sizeof(*list));
}

/* Packs the work list into one allocation for the caller. */
static int pack_fields(const struct fields *fs, struct rules_headers *out)
{
    size_t bytes = 0;
    char *p;

    for (size_t i = 0; i < fs->count; i++)
        bytes += fs->f[i].name_len + fs->f[i].value_len + 2;
    out->fields = calloc(fs->count > 0 ? fs->count : 1, sizeof(*out->fields));
    out->storage = malloc(bytes > 0 ? bytes : 1);
    if (out->fields == NULL || out->storage == NULL) {
        rules_headers_free(out);
        return -1;
    }
    p = out->storage;
    for (size_t i = 0; i < fs->count; i++) {
        const struct field *f = &fs->f[i];

        memcpy(p, f->name, f->name_len);
        p[f->name_len] = '\0';
        out->fields[i].name = p;
        out->fields[i].name_len = f->name_len;
        p += f->name_len + 1;
        memcpy(p, f->value, f->value_len);
        p[f->value_len] = '\0';
        out->fields[i].value = p;
        out->fields[i].value_len = f->value_len;
        p += f->value_len + 1;
    }
    out->count = fs->count;
    return 0;
}

int rules_apply_headers(const struct rule_set *set, struct rules_ctx *ctx,
                        const struct rules_header *in, size_t in_count, struct rules_headers *out)
{
    int64_t deadline = clock_mono_coarse_ms() + RULES_APPLY_BUDGET_MS;
    struct fields fs = {0};
    bool is_copied = false, is_changed = false;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        const struct rule *r = set->rules[i];
        char why[256];
        int h;

        if (!rule_selected(r, ctx, RULES_TARGET_HEADER))
            continue;
        if (budget_gone(r, ctx, "header", deadline))
            break;
        /* Copied only once a rule applies: most exchanges match no rule. */
        if (!is_copied) {
            for (size_t k = 0; k < in_count; k++)
                if (fields_add(&fs, k, in[k].name, in[k].name_len, in[k].value, in[k].value_len) !=
                    0)
                    goto out;
            is_copied = true;
        }
        if (r->action == RULES_HEADER_SET)
            h = header_set(r, &fs, why, sizeof(why));
        else if (r->action == RULES_HEADER_REPLACE)
            h = header_replace(r, &fs, deadline, why, sizeof(why));
        else
            h = header_remove(r, &fs, deadline, why, sizeof(why));
        if (h == HDR_NOMEM)
            goto out;
        if (h == HDR_SKIPPED) {
            char what[RULES_MAX_HEADER_NAME_BYTES + 8];

            snprintf(what, sizeof(what), "header %s", r->header_name);
            note_skip(ctx, r, what, why);
        }
        if (h == HDR_CHANGED) {
            is_changed = true;
            note_applied(ctx, r);
        }
    }
    if (is_changed) {
        const struct field *ct = NULL;

        if (pack_fields(&fs, out) != 0)
            goto out;
        for (size_t i = 0; i < fs.count && ct == NULL; i++)
            if (field_is(&fs.f[i], "Content-Type"))
                ct = &fs.f[i];
        rules_ctx_set_content_type(ctx, ct != NULL ? ct->value : NULL);
    }
    rc = 0;
out:
    fields_free(&fs);
    return rc;
}

/* ---- bodies ---- */

bool rules_wants_body(const struct rule_set *set, struct rules_ctx *ctx)
{
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        const struct rule *r = set->rules[i];

        if (!rule_selected(r, ctx, RULES_TARGET_BODY))
            continue;
        if (ctx->phase == RULES_RESPONSE && ctx->status == 206) {
            note_skip(ctx, r, "body", "206 Partial Content carries a range, not the body");
            return false;
        }
        return true;
    }
    return false;
}

int rules_apply_body(const struct rule_set *set, struct rules_ctx *ctx, const unsigned char *in,
                     size_t in_len, size_t max_out, unsigned char **out, size_t *out_len)
{
    int64_t deadline = clock_mono_coarse_ms() + RULES_APPLY_BUDGET_MS;
    const unsigned char *cur = in;
    size_t cur_len = in_len;
    unsigned char *owned = NULL;
    size_t cap;
    int rc = -1;

    *out = NULL;
    *out_len = 0;
    cap = in_len > (SIZE_MAX - RULES_BODY_GROWTH_SLACK_BYTES) / 4
              ? SIZE_MAX
              : 4 * in_len + RULES_BODY_GROWTH_SLACK_BYTES;
    if (max_out > 0 && max_out < cap)
        cap = max_out;
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        const struct rule *r = set->rules[i];
        struct buf ob = {.max = cap};
        char why[256];
        int s;

        if (!rule_selected(r, ctx, RULES_TARGET_BODY))
            continue;
        if (budget_gone(r, ctx, "body", deadline))
            break;
        s = substitute(r, cur, cur_len, deadline, &ob, why, sizeof(why));
        if (s == SUBST_NOMEM)
            goto out;
        if (s == SUBST_SKIPPED)
            note_skip(ctx, r, "body", why);
        if (s != SUBST_CHANGED)
            continue;
        if (same_bytes(ob.data, ob.len, cur, cur_len)) {
            buf_free(&ob);
            continue;
        }
        free(owned);
        owned = (unsigned char *)ob.data;
        cur = owned;
        cur_len = ob.len;
        note_applied(ctx, r);
    }
    if (owned != NULL && !same_bytes(owned, cur_len, in, in_len)) {
        *out = owned;
        *out_len = cur_len;
        owned = NULL;
    }
    rc = 0;
out:
    free(owned);
    return rc;
}
