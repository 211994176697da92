/*
 * filter: parsing, evaluating and translating filter expressions to SQL
 * (see filter.h and tapwire-filters(7)).
 *
 * What the module must never do: recurse or allocate without bound on
 * hostile text (FILTER_MAX_* are checked while parsing, before anything
 * grows), let a regex hold the thread that evaluates it (regexsearch's
 * windows and a deadline per call), or paste a value into SQL (every value
 * is a bound parameter; the SQL text is made only of the fixed pieces
 * below). The SQL must never drop a row the evaluator would keep: a term
 * SQLite cannot answer exactly becomes a weaker condition (or none) and
 * the result says the rows need the evaluator.
 *
 * Grammar, loosest first (mitmproxy's operators; juxtaposition is '&'):
 *   or      := and ('|' and)*
 *   and     := unary (['&'] unary)*
 *   unary   := '!' unary | primary
 *   primary := '(' or ')' | '~' NAME [value] | value
 *   value   := WORD | "..." | '...'
 * A WORD is a run of bytes other than blanks, ( ) & | and quotes, that
 * does not start with '~' or '!'; operators therefore never hide inside a
 * value, and a regex that needs them is quoted.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem(); AC_USE_SYSTEM_EXTENSIONS defines it in the real build */
#endif

#include "filter.h"

#include "buf.h"
#include "clock.h"
#include "codec.h"
#include "errmsg.h"
#include "regexsearch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define URL_STACK_BYTES 2048         /* URLs up to this long are built on the stack */
#define MAX_SQL_BYTES (1024 * 1024)  /* far above what FILTER_MAX_NODES terms make */
#define MAX_ENCODING_VALUE_BYTES 256 /* Content-Encoding fields joined for the decoder */

enum op {
    OP_AND,
    OP_OR,
    OP_NOT,
    OP_ALL,
    OP_TEXT, /* bare word or quoted string: URL text */
    OP_DOMAIN,
    OP_URL,
    OP_METHOD,
    OP_STATUS,
    OP_HEADER,
    OP_BODY,
    OP_TYPE,
    OP_NO_RESPONSE,
    OP_HAS_RESPONSE,
    OP_ERROR,
    OP_WEBSOCKET,
    OP_TUNNEL,
    OP_TLS,
    OP_HTTP2,
    OP_VERSION,
    OP_CLIENT,
    OP_LISTENER,
};

enum side { SIDE_EITHER, SIDE_REQUEST, SIDE_RESPONSE };
enum value_kind { VALUE_NONE, VALUE_REGEX, VALUE_STATUS, VALUE_LISTENER };

/* The ways a flow comes in, as flows.listener stores them (capture.h);
 * ~listener takes exactly one of them, so a typo is an error rather than
 * a filter that matches nothing. */
static const char *const listener_names[] = {"proxy", "socks5", "transparent", "reverse", "replay"};

struct term {
    const char *name; /* after '~' */
    enum op op;
    enum side side;
    enum value_kind value;
};

/* Sorted by name only for the reader; looked up linearly. */
static const struct term terms[] = {
    {"all", OP_ALL, SIDE_EITHER, VALUE_NONE},
    {"b", OP_BODY, SIDE_EITHER, VALUE_REGEX},
    {"bq", OP_BODY, SIDE_REQUEST, VALUE_REGEX},
    {"bs", OP_BODY, SIDE_RESPONSE, VALUE_REGEX},
    {"c", OP_STATUS, SIDE_RESPONSE, VALUE_STATUS},
    {"d", OP_DOMAIN, SIDE_REQUEST, VALUE_REGEX},
    {"e", OP_ERROR, SIDE_EITHER, VALUE_NONE},
    {"h", OP_HEADER, SIDE_EITHER, VALUE_REGEX},
    {"hq", OP_HEADER, SIDE_REQUEST, VALUE_REGEX},
    {"hs", OP_HEADER, SIDE_RESPONSE, VALUE_REGEX},
    {"http2", OP_HTTP2, SIDE_REQUEST, VALUE_NONE},
    {"listener", OP_LISTENER, SIDE_REQUEST, VALUE_LISTENER},
    {"m", OP_METHOD, SIDE_REQUEST, VALUE_REGEX},
    {"q", OP_NO_RESPONSE, SIDE_RESPONSE, VALUE_NONE},
    {"s", OP_HAS_RESPONSE, SIDE_RESPONSE, VALUE_NONE},
    {"src", OP_CLIENT, SIDE_REQUEST, VALUE_REGEX},
    {"t", OP_TYPE, SIDE_EITHER, VALUE_REGEX},
    {"tls", OP_TLS, SIDE_REQUEST, VALUE_NONE},
    {"tq", OP_TYPE, SIDE_REQUEST, VALUE_REGEX},
    {"ts", OP_TYPE, SIDE_RESPONSE, VALUE_REGEX},
    {"tunnel", OP_TUNNEL, SIDE_REQUEST, VALUE_NONE},
    {"u", OP_URL, SIDE_REQUEST, VALUE_REGEX},
    {"version", OP_VERSION, SIDE_REQUEST, VALUE_REGEX},
    {"websocket", OP_WEBSOCKET, SIDE_REQUEST, VALUE_NONE},
};

struct node {
    enum op op;
    enum side side;
    const struct term *term; /* NULL for operators and OP_TEXT */
    int a, b;                /* children: AND, OR (a, b), NOT (a) */
    char *value;             /* owned, NUL-terminated (no NUL inside: control bytes are refused) */
    size_t value_len;
    char *lower; /* owned: OP_TEXT's value with ASCII folded */
    pcre2_code *re;
    int status_lo, status_hi;
    const char *listener; /* OP_LISTENER: one of listener_names */
};

struct filter {
    struct node *nodes;
    size_t count;
    int root;
    unsigned needs;
    pcre2_match_context *mc; /* the limits; read-only, shared by every evaluation */
};

/* ---- parsing ---- */

struct parser {
    const char *s;
    size_t len;
    size_t pos;
    int depth;
    struct filter *f;
    char *err;
    size_t err_len;
    bool has_failed;
};

static unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static void perr(struct parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error only: "column C: ...". */
static void perr(struct parser *p, size_t at, const char *fmt, ...)
{
    char msg[FILTER_ERROR_BYTES];
    va_list ap;

    if (p->has_failed)
        return;
    p->has_failed = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    errmsg_set(p->err, p->err_len, "column %zu: %s", at + 1, msg);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_word_byte(char c)
{
    return !is_blank(c) && strchr("()&|\"'", c) == NULL;
}

static void skip_blanks(struct parser *p)
{
    while (p->pos < p->len && is_blank(p->s[p->pos]))
        p->pos++;
}

static int new_node(struct parser *p, enum op op, size_t at)
{
    struct node *n;

    if (p->f->count >= FILTER_MAX_NODES) {
        perr(p, at, "too many terms and operators (at most %d)", FILTER_MAX_NODES);
        return -1;
    }
    n = &p->f->nodes[p->f->count];
    memset(n, 0, sizeof(*n));
    n->op = op;
    n->a = n->b = -1;
    return (int)p->f->count++;
}

/*
 * A value at p->pos: a quoted string (\" or \' for the quote, \\ for a
 * backslash, any other backslash kept, so regex escapes survive) or a
 * word. *cols gets the input offset of every byte of the value and of its
 * end, for regex errors. Returns 0 or -1.
 */
static int read_value(struct parser *p, char **out, size_t *out_len, size_t **cols)
{
    size_t start = p->pos;
    char quote = p->s[p->pos];
    size_t n = 0;
    size_t end;
    char *v = malloc(p->len - start + 1);
    size_t *c = malloc((p->len - start + 1) * sizeof(*c));

    if (v == NULL || c == NULL) {
        perr(p, start, "out of memory");
        goto fail;
    }
    if (quote == '"' || quote == '\'') {
        p->pos++;
        for (;;) {
            if (p->pos >= p->len) {
                perr(p, start, "unterminated quote");
                goto fail;
            }
            if (p->s[p->pos] == quote) {
                end = p->pos++; /* a regex error at the end points at the quote */
                break;
            }
            if (p->s[p->pos] == '\\' && p->pos + 1 < p->len &&
                (p->s[p->pos + 1] == quote || p->s[p->pos + 1] == '\\'))
                p->pos++;
            c[n] = p->pos;
            v[n++] = p->s[p->pos++];
        }
    } else {
        while (p->pos < p->len && is_word_byte(p->s[p->pos])) {
            c[n] = p->pos;
            v[n++] = p->s[p->pos++];
        }
        end = p->pos;
    }
    c[n] = end;
    v[n] = '\0';
    *out = v;
    *out_len = n;
    *cols = c;
    return 0;
fail:
    free(v);
    free(c);
    return -1;
}

static int compile_value(struct parser *p, struct node *n, const size_t *cols)
{
    uint32_t options =
        PCRE2_CASELESS | PCRE2_NEVER_UTF | PCRE2_NEVER_BACKSLASH_C | PCRE2_USE_OFFSET_LIMIT;
    int code;
    PCRE2_SIZE offset;

    if (n->term->value == VALUE_STATUS) {
        const char *v = n->value;

        if (n->value_len >= 1 && n->value_len <= 3 && strspn(v, "0123456789") == n->value_len) {
            n->status_lo = n->status_hi = atoi(v);
            return 0;
        }
        if (n->value_len == 3 && v[0] >= '1' && v[0] <= '9' && fold((unsigned char)v[1]) == 'x' &&
            fold((unsigned char)v[2]) == 'x') {
            n->status_lo = (v[0] - '0') * 100;
            n->status_hi = n->status_lo + 99;
            return 0;
        }
        perr(p, cols[0], "~c needs a status code (404) or class (4xx)");
        return -1;
    }
    if (n->term->value == VALUE_LISTENER) {
        for (size_t k = 0; k < sizeof(listener_names) / sizeof(listener_names[0]); k++)
            if (strlen(listener_names[k]) == n->value_len &&
                strncasecmp(listener_names[k], n->value, n->value_len) == 0) {
                n->listener = listener_names[k];
                return 0;
            }
        perr(p, cols[0], "~listener needs proxy, socks5, transparent, reverse or replay");
        return -1;
    }
    n->re = pcre2_compile((PCRE2_SPTR)n->value, n->value_len, options, &code, &offset, NULL);
    if (n->re == NULL) {
        PCRE2_UCHAR msg[256];

        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        if (offset > n->value_len)
            offset = n->value_len;
        perr(p, cols[offset], "regex error: %s", (const char *)msg);
        return -1;
    }
    /* JIT is an optimisation; without it the interpreter runs with the
     * same limits. */
    (void)pcre2_jit_compile(n->re, PCRE2_JIT_COMPLETE);
    return 0;
}

static int parse_or(struct parser *p);

static bool starts_value(char c)
{
    return c == '"' || c == '\'' || (is_word_byte(c) && c != '~' && c != '!');
}

static int parse_term(struct parser *p)
{
    size_t at = p->pos;
    size_t name_start = ++p->pos;
    size_t name_len;
    const struct term *t = NULL;
    size_t *cols = NULL;
    struct node *n;
    int i;

    while (p->pos < p->len && ((p->s[p->pos] >= 'a' && p->s[p->pos] <= 'z') ||
                               (p->s[p->pos] >= '0' && p->s[p->pos] <= '9')))
        p->pos++;
    name_len = p->pos - name_start;
    for (size_t k = 0; k < sizeof(terms) / sizeof(terms[0]); k++)
        if (strlen(terms[k].name) == name_len &&
            memcmp(terms[k].name, p->s + name_start, name_len) == 0)
            t = &terms[k];
    if (t == NULL) {
        if (name_len == 0)
            perr(p, at, "'~' must be followed by a filter name such as ~d or ~u");
        else
            perr(p, at, "unknown filter ~%.*s", (int)name_len, p->s + name_start);
        return -1;
    }
    if (p->pos < p->len && is_word_byte(p->s[p->pos])) {
        perr(p, p->pos, "a blank must separate ~%s from what follows", t->name);
        return -1;
    }
    i = new_node(p, t->op, at);
    if (i < 0)
        return -1;
    n = &p->f->nodes[i];
    n->term = t;
    n->side = t->side;
    if (t->value == VALUE_NONE)
        return i;
    skip_blanks(p);
    if (p->pos >= p->len || !starts_value(p->s[p->pos])) {
        perr(p, at, "~%s needs a value (quote it if it starts with '~' or '!')", t->name);
        return -1;
    }
    if (read_value(p, &n->value, &n->value_len, &cols) != 0)
        return -1;
    if (compile_value(p, n, cols) != 0)
        i = -1;
    free(cols);
    return i;
}

static int parse_primary(struct parser *p, const char *after)
{
    size_t at;
    char c;

    skip_blanks(p);
    at = p->pos;
    if (p->pos >= p->len) {
        perr(p, at, "expected a filter%s", after);
        return -1;
    }
    c = p->s[p->pos];
    if (c == '(') {
        int e;

        if (++p->depth > FILTER_MAX_DEPTH) {
            perr(p, at, "nested deeper than %d levels", FILTER_MAX_DEPTH);
            return -1;
        }
        p->pos++;
        e = parse_or(p);
        if (e < 0)
            return -1;
        skip_blanks(p);
        if (p->pos >= p->len || p->s[p->pos] != ')') {
            perr(p, p->pos, "expected ')' to close the '(' at column %zu", at + 1);
            return -1;
        }
        p->pos++;
        p->depth--;
        return e;
    }
    if (c == ')' || c == '&' || c == '|') {
        perr(p, at, "unexpected '%c' (expected a filter%s)", c, after);
        return -1;
    }
    if (c == '~')
        return parse_term(p);
    {
        size_t *cols = NULL;
        int i = new_node(p, OP_TEXT, at);
        struct node *n;

        if (i < 0)
            return -1;
        n = &p->f->nodes[i];
        if (read_value(p, &n->value, &n->value_len, &cols) != 0)
            return -1;
        free(cols);
        n->lower = strdup(n->value);
        if (n->lower == NULL) {
            perr(p, at, "out of memory");
            return -1;
        }
        for (char *s = n->lower; *s != '\0'; s++)
            *s = (char)fold((unsigned char)*s);
        return i;
    }
}

static int parse_unary(struct parser *p, const char *after)
{
    size_t at;
    int child, i;

    skip_blanks(p);
    at = p->pos;
    if (p->pos >= p->len || p->s[p->pos] != '!')
        return parse_primary(p, after);
    if (++p->depth > FILTER_MAX_DEPTH) {
        perr(p, at, "nested deeper than %d levels", FILTER_MAX_DEPTH);
        return -1;
    }
    p->pos++;
    child = parse_unary(p, " after '!'");
    if (child < 0)
        return -1;
    p->depth--;
    i = new_node(p, OP_NOT, at);
    if (i >= 0)
        p->f->nodes[i].a = child;
    return i;
}

static int parse_and(struct parser *p, const char *after)
{
    int left = parse_unary(p, after);

    while (left >= 0) {
        size_t at;
        int right, i;

        skip_blanks(p);
        at = p->pos;
        if (p->pos >= p->len)
            break;
        if (p->s[p->pos] == '&') {
            p->pos++;
            right = parse_unary(p, " after '&'");
        } else if (p->s[p->pos] == '(' || p->s[p->pos] == '!' || p->s[p->pos] == '~' ||
                   starts_value(p->s[p->pos])) {
            right = parse_unary(p, "");
        } else {
            break;
        }
        if (right < 0)
            return -1;
        i = new_node(p, OP_AND, at);
        if (i < 0)
            return -1;
        p->f->nodes[i].a = left;
        p->f->nodes[i].b = right;
        left = i;
    }
    return left;
}

static int parse_or(struct parser *p)
{
    int left = parse_and(p, p->depth == 0 ? "" : " after '('");

    while (left >= 0) {
        size_t at;
        int right, i;

        skip_blanks(p);
        at = p->pos;
        if (p->pos >= p->len || p->s[p->pos] != '|')
            break;
        p->pos++;
        right = parse_and(p, " after '|'");
        if (right < 0)
            return -1;
        i = new_node(p, OP_OR, at);
        if (i < 0)
            return -1;
        p->f->nodes[i].a = left;
        p->f->nodes[i].b = right;
        left = i;
    }
    return left;
}

static unsigned node_needs(const struct node *n)
{
    unsigned req = 0, resp = 0;

    switch (n->op) {
    case OP_STATUS:
    case OP_NO_RESPONSE:
    case OP_HAS_RESPONSE:
        return FILTER_NEEDS_RESPONSE;
    case OP_HEADER:
    case OP_TYPE:
        req = FILTER_NEEDS_REQUEST_HEADERS;
        resp = FILTER_NEEDS_RESPONSE | FILTER_NEEDS_RESPONSE_HEADERS;
        break;
    case OP_BODY:
        /* The headers say how the body is encoded. */
        req = FILTER_NEEDS_REQUEST_HEADERS | FILTER_NEEDS_REQUEST_BODY;
        resp = FILTER_NEEDS_RESPONSE | FILTER_NEEDS_RESPONSE_HEADERS | FILTER_NEEDS_RESPONSE_BODY;
        break;
    default:
        return 0;
    }
    return (n->side != SIDE_RESPONSE ? req : 0) | (n->side != SIDE_REQUEST ? resp : 0);
}

int filter_parse(const char *text, size_t len, struct filter **out, char *err, size_t err_len)
{
    struct parser p = {.s = text, .len = len, .err = err, .err_len = err_len};
    struct filter *f = NULL;
    int ret = -1;

    *out = NULL;
    if (len > FILTER_MAX_INPUT_BYTES) {
        errmsg_set(err, err_len, "column %d: the filter is longer than %d bytes",
                   FILTER_MAX_INPUT_BYTES + 1, FILTER_MAX_INPUT_BYTES);
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];

        if ((c < 0x20 && !is_blank((char)c)) || c == 0x7f) {
            errmsg_set(err, err_len, "column %zu: control character 0x%02x", i + 1, c);
            goto out;
        }
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL || (f->nodes = calloc(FILTER_MAX_NODES, sizeof(f->nodes[0]))) == NULL ||
        (f->mc = pcre2_match_context_create(NULL)) == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    pcre2_set_match_limit(f->mc, FILTER_MATCH_LIMIT);
    pcre2_set_depth_limit(f->mc, FILTER_DEPTH_LIMIT);
    pcre2_set_heap_limit(f->mc, FILTER_HEAP_LIMIT_KIB);
    p.f = f;
    skip_blanks(&p);
    if (p.pos >= len) {
        errmsg_set(err, err_len, "column 1: empty filter");
        goto out;
    }
    f->root = parse_or(&p);
    if (f->root < 0)
        goto out;
    skip_blanks(&p);
    if (p.pos < len) {
        perr(&p, p.pos, "unexpected '%c'", text[p.pos]);
        goto out;
    }
    for (size_t i = 0; i < f->count; i++)
        f->needs |= node_needs(&f->nodes[i]);
    *out = f;
    f = NULL;
    ret = 0;
out:
    filter_free(f);
    return ret;
}

void filter_free(struct filter *filter)
{
    if (filter == NULL)
        return;
    for (size_t i = 0; filter->nodes != NULL && i < filter->count; i++) {
        free(filter->nodes[i].value);
        free(filter->nodes[i].lower);
        pcre2_code_free(filter->nodes[i].re);
    }
    /* A node that failed half-way was counted: its fields are zero or set. */
    free(filter->nodes);
    pcre2_match_context_free(filter->mc);
    free(filter);
}

unsigned filter_needs(const struct filter *filter)
{
    return filter->needs;
}

/* ---- canonical text ---- */

static int precedence(enum op op)
{
    return op == OP_OR ? 1 : op == OP_AND ? 2 : op == OP_NOT ? 3 : 4;
}

static void format_value(struct buf *b, const struct node *n)
{
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n->value_len; i++) {
        if (n->value[i] == '"' || n->value[i] == '\\')
            buf_put(b, "\\", 1);
        buf_put(b, &n->value[i], 1);
    }
    buf_put(b, "\"", 1);
}

static void format_node(struct buf *b, const struct filter *f, int i, int min_precedence)
{
    const struct node *n = &f->nodes[i];
    bool has_parens = precedence(n->op) < min_precedence;

    if (has_parens)
        buf_put(b, "(", 1);
    switch (n->op) {
    case OP_AND:
    case OP_OR:
        format_node(b, f, n->a, precedence(n->op));
        buf_str(b, n->op == OP_AND ? " & " : " | ");
        format_node(b, f, n->b, precedence(n->op));
        break;
    case OP_NOT:
        buf_put(b, "!", 1);
        format_node(b, f, n->a, precedence(OP_NOT));
        break;
    case OP_TEXT:
        format_value(b, n);
        break;
    default:
        buf_put(b, "~", 1);
        buf_str(b, n->term->name);
        if (n->term->value != VALUE_NONE) {
            buf_put(b, " ", 1);
            format_value(b, n);
        }
    }
    if (has_parens)
        buf_put(b, ")", 1);
}

char *filter_format(const struct filter *filter)
{
    /* Quoting at most doubles a value, plus a few bytes per node. */
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);

    format_node(&b, filter, filter->root, 0);
    if (b.has_failed || b.data == NULL) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- evaluation ---- */

struct decoded {
    bool is_done;
    unsigned char *data; /* owned when decoded; NULL: search the stored bytes */
    size_t len;
};

struct eval {
    const struct filter *f;
    const struct flow *flow;
    int64_t deadline_ms;
    char *why;
    size_t why_len;
    char *url; /* lowered; url_stack or an allocation */
    size_t url_len;
    bool is_url_allocated;
    char url_stack[URL_STACK_BYTES];
    struct decoded body[2]; /* request, response */
};

/* The version as the flow store writes req_version (flow_version_text()):
 * the two agree, so ~version's SQL is exact. */
static void version_text(const struct flow *flow, char *buf, size_t len)
{
    char other[16];

    snprintf(buf, len, "%s", flow_version_text(flow->request_version, other, sizeof(other)));
}

static bool is_default_port(const char *scheme, unsigned port)
{
    return (strcmp(scheme, "http") == 0 && port == 80) ||
           (strcmp(scheme, "https") == 0 && port == 443);
}

/* The URL as ~u and bare words see it, ASCII lowered (every match is
 * caseless): scheme "://" host (bracketed when it has a ':') [":" port
 * unless the scheme's default] target. URL_SQL builds the same text. */
static int build_url(struct eval *ev)
{
    const struct flow *fl = ev->flow;
    const char *target = fl->target != NULL ? fl->target : "";
    bool is_v6 = strchr(fl->host, ':') != NULL;
    char port[16] = "";
    size_t need;
    int n;

    if (ev->url != NULL)
        return 0;
    if (!is_default_port(fl->scheme, fl->port))
        snprintf(port, sizeof(port), ":%u", (unsigned)fl->port);
    need = strlen(fl->scheme) + 3 + strlen(fl->host) + 2 + strlen(port) + strlen(target) + 1;
    if (need <= sizeof(ev->url_stack)) {
        ev->url = ev->url_stack;
    } else {
        ev->url = malloc(need);
        if (ev->url == NULL) {
            errmsg_set(ev->why, ev->why_len, "out of memory");
            return -1;
        }
        ev->is_url_allocated = true;
    }
    n = snprintf(ev->url, need, "%s://%s%s%s%s%s", fl->scheme, is_v6 ? "[" : "", fl->host,
                 is_v6 ? "]" : "", port, target);
    ev->url_len = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; i < ev->url_len; i++)
        ev->url[i] = (char)fold((unsigned char)ev->url[i]);
    return 0;
}

static int re_find(struct eval *ev, const struct node *n, const void *s, size_t len)
{
    struct regexsearch se;
    int rc;

    if (regexsearch_init(&se, n->re, ev->f->mc, ev->deadline_ms) != 0) {
        errmsg_set(ev->why, ev->why_len, "out of memory");
        rc = -1;
        goto out;
    }
    rc = regexsearch_next(&se, s != NULL ? s : "", len, 0, 0);
    if (rc >= 0) {
        rc = 1;
    } else if (rc == PCRE2_ERROR_NOMATCH) {
        rc = 0;
    } else {
        char budget[64];

        snprintf(budget, sizeof(budget), "the filter took longer than %d ms",
                 FILTER_MATCH_BUDGET_MS);
        regexsearch_reason(rc, budget, ev->why, ev->why_len);
        rc = -1;
    }
out:
    regexsearch_free(&se);
    return rc;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    if (len != strlen(want))
        return false;
    for (size_t i = 0; i < len; i++)
        if (fold((unsigned char)name[i]) != fold((unsigned char)want[i]))
            return false;
    return true;
}

static const char *side_headers(const struct flow *flow, int side)
{
    return side == 0 ? flow->request_headers : flow->response_headers;
}

/* ~h: the regex against each field line of the section as stored. */
static int match_header_lines(struct eval *ev, const struct node *n, const char *text)
{
    const char *p = text;

    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        size_t line_len = len > 0 && p[len - 1] == '\r' ? len - 1 : len;
        int rc = re_find(ev, n, p, line_len);

        if (rc != 0)
            return rc;
        p = nl != NULL ? nl + 1 : NULL;
    }
    return 0;
}

/* The first Content-Type value, as the flow store keeps it. */
static int match_type(struct eval *ev, const struct node *n, const char *text)
{
    const char *name, *value;
    size_t name_len, value_len, pos = 0;

    while (text != NULL && flow_headers_next(text, &pos, &name, &name_len, &value, &value_len))
        if (name_is(name, name_len, "Content-Type"))
            return re_find(ev, n, value, value_len);
    return 0;
}

/* The body of side, decoded when its Content-Encoding says so and the
 * capture is whole; otherwise the stored bytes. */
static void body_bytes(struct eval *ev, int side, const unsigned char **data, size_t *len)
{
    const struct flow_body *body = side == 0 ? &ev->flow->request_body : &ev->flow->response_body;
    struct decoded *d = &ev->body[side];

    if (!d->is_done) {
        const char *text = side_headers(ev->flow, side);
        const char *name, *value;
        size_t name_len, value_len, pos = 0;
        char coding[MAX_ENCODING_VALUE_BYTES] = "";
        size_t used = 0;
        bool is_too_long = false;
        char err[CODEC_ERROR_BYTES];

        d->is_done = true;
        while (text != NULL &&
               flow_headers_next(text, &pos, &name, &name_len, &value, &value_len)) {
            if (!name_is(name, name_len, "Content-Encoding"))
                continue;
            if (used + value_len + 3 > sizeof(coding)) {
                is_too_long = true;
                break;
            }
            if (used > 0) {
                memcpy(coding + used, ", ", 2);
                used += 2;
            }
            memcpy(coding + used, value, value_len);
            used += value_len;
            coding[used] = '\0';
        }
        if (used > 0 && !is_too_long && !body->truncated && body->len == body->size &&
            codec_decode_content(coding, body->data, body->len, FILTER_MAX_DECODED_BODY_BYTES,
                                 &d->data, &d->len, err, sizeof(err)) != 0) {
            d->data = NULL;
            d->len = 0;
        }
    }
    if (d->data != NULL) {
        *data = d->data;
        *len = d->len;
    } else {
        *data = body->data;
        *len = body->len;
    }
}

static int eval_node(struct eval *ev, int i)
{
    const struct node *n = &ev->f->nodes[i];
    const struct flow *fl = ev->flow;
    int rc = 0;

    switch (n->op) {
    case OP_AND:
        rc = eval_node(ev, n->a);
        return rc == 1 ? eval_node(ev, n->b) : rc;
    case OP_OR:
        rc = eval_node(ev, n->a);
        return rc == 0 ? eval_node(ev, n->b) : rc;
    case OP_NOT:
        rc = eval_node(ev, n->a);
        return rc < 0 ? rc : !rc;
    case OP_ALL:
        return 1;
    case OP_TEXT:
        if (build_url(ev) != 0)
            return -1;
        return n->value_len == 0 || memmem(ev->url, ev->url_len, n->lower, n->value_len) != NULL;
    case OP_URL:
        if (build_url(ev) != 0)
            return -1;
        return re_find(ev, n, ev->url, ev->url_len);
    case OP_DOMAIN:
        return re_find(ev, n, fl->host, strlen(fl->host));
    case OP_METHOD:
        return re_find(ev, n, fl->method, strlen(fl->method));
    case OP_CLIENT:
        return re_find(ev, n, fl->client_addr, strlen(fl->client_addr));
    case OP_LISTENER:
        return strcmp(fl->listener, n->listener) == 0;
    case OP_VERSION: {
        char v[32];

        version_text(fl, v, sizeof(v));
        return re_find(ev, n, v, strlen(v));
    }
    case OP_HTTP2: {
        char v[32];

        version_text(fl, v, sizeof(v));
        return strncmp(v, "HTTP/2", 6) == 0;
    }
    case OP_STATUS:
        return fl->status >= n->status_lo && fl->status <= n->status_hi;
    case OP_NO_RESPONSE:
        return fl->status == 0;
    case OP_HAS_RESPONSE:
        return fl->status != 0;
    case OP_ERROR:
        return fl->error != NULL;
    case OP_WEBSOCKET:
        return fl->kind == FLOW_WEBSOCKET;
    case OP_TUNNEL:
        return fl->kind == FLOW_TUNNEL;
    case OP_TLS:
        return fl->is_tls;
    case OP_HEADER:
    case OP_TYPE:
    case OP_BODY:
        for (int side = 0; side < 2 && rc == 0; side++) {
            if ((side == 0 && n->side == SIDE_RESPONSE) || (side == 1 && n->side == SIDE_REQUEST))
                continue;
            if (n->op == OP_HEADER) {
                rc = match_header_lines(ev, n, side_headers(fl, side));
            } else if (n->op == OP_TYPE) {
                rc = match_type(ev, n, side_headers(fl, side));
            } else {
                const unsigned char *data;
                size_t len;

                body_bytes(ev, side, &data, &len);
                rc = re_find(ev, n, data, len);
            }
        }
        return rc;
    }
    return 0;
}

int filter_match(const struct filter *filter, const struct flow *flow, char *why, size_t why_len)
{
    struct eval ev;
    int rc;

    ev.f = filter;
    ev.flow = flow;
    ev.deadline_ms = clock_mono_coarse_ms() + FILTER_MATCH_BUDGET_MS;
    ev.why = why;
    ev.why_len = why_len;
    ev.url = NULL;
    ev.url_len = 0;
    ev.is_url_allocated = false;
    memset(ev.body, 0, sizeof(ev.body));
    rc = eval_node(&ev, filter->root);
    if (ev.is_url_allocated)
        free(ev.url);
    free(ev.body[0].data);
    free(ev.body[1].data);
    return rc;
}

/* ---- SQL ---- */

/* The URL of build_url() in SQL. */
#define URL_SQL                                                                                    \
    "(scheme || '://' || CASE WHEN instr(host, ':') > 0 THEN '[' || host || ']' ELSE host END "    \
    "|| CASE WHEN (scheme = 'http' AND port = 80) OR (scheme = 'https' AND port = 443) THEN '' "   \
    "ELSE ':' || port END || target)"

enum sql_class {
    SQL_NONE,  /* no condition: every row may match (the evaluator decides) */
    SQL_SUPER, /* a condition every matching row meets, and some others */
    SQL_EXACT, /* a condition met by exactly the matching rows */
};

/*
 * What a regex requires of the text, when its shape is simple enough to
 * tell: literal runs (ASCII, folded) that every match contains, and
 * whether it is one plain literal (is_plain) with ^ and $ (has_start,
 * has_end). Other regexes (classes, groups, alternation) yield no runs.
 */
#define MAX_RUNS 16
struct literal {
    bool is_plain;
    bool has_start, has_end;
    size_t run_count;
    char *runs[MAX_RUNS]; /* owned */
};

static void literal_free(struct literal *l)
{
    for (size_t i = 0; i < l->run_count; i++)
        free(l->runs[i]);
    memset(l, 0, sizeof(*l));
}

static int add_run(struct literal *l, const char *run, size_t len)
{
    if (len == 0 || l->run_count >= MAX_RUNS)
        return 0;
    l->runs[l->run_count] = strndup(run, len);
    if (l->runs[l->run_count] == NULL)
        return -1;
    l->run_count++;
    return 0;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Returns 0, or -1 when out of memory. */
static int analyze_regex(const char *re, size_t len, struct literal *l)
{
    char run[FILTER_MAX_INPUT_BYTES + 1];
    size_t run_len = 0, i = 0;
    bool has_break = false;

    memset(l, 0, sizeof(*l));
    if (i < len && re[i] == '^') {
        l->has_start = true;
        i++;
    }
    while (i < len) {
        unsigned char c = (unsigned char)re[i];
        bool is_literal = false;
        unsigned char lit = 0;

        if (c == '$' && i + 1 == len) {
            l->has_end = true;
            i++;
            break;
        }
        if (c == '\\') {
            unsigned char e = i + 1 < len ? (unsigned char)re[i + 1] : 0;

            if (e != 0 && e < 0x80 && !is_alnum(e)) {
                is_literal = true;
                lit = e;
            } else if (e == 0 || strchr("dDwWsShHvVbBRX", e) == NULL) {
                goto opaque; /* \Q, \x.., \p{..}, back references: not analysed */
            }
            i += 2;
        } else if (c == '.' || c >= 0x80) {
            i++; /* one byte we do not know: it ends the run */
        } else if (strchr("[](){}|^$?*+", c) != NULL) {
            goto opaque;
        } else {
            is_literal = true;
            lit = c;
            i++;
        }
        if (i < len && (re[i] == '*' || re[i] == '?' || re[i] == '+' || re[i] == '{')) {
            if (re[i] == '{')
                goto opaque;
            /* The atom may repeat or vanish: what it requires ends here. */
            if (re[i] == '+' && is_literal)
                run[run_len++] = (char)fold(lit);
            i++;
            if (i < len && (re[i] == '?' || re[i] == '+'))
                i++;
            is_literal = false;
        }
        if (is_literal) {
            run[run_len++] = (char)fold(lit);
        } else {
            has_break = true;
            if (add_run(l, run, run_len) != 0)
                return -1;
            run_len = 0;
        }
    }
    if (i < len)
        goto opaque; /* '$' was not last: never, since '$' elsewhere is opaque */
    l->is_plain = !has_break;
    if (l->is_plain) {
        /* One run, possibly empty: keep it even when empty. */
        l->runs[0] = strndup(run, run_len);
        if (l->runs[0] == NULL)
            return -1;
        l->run_count = 1;
        return 0;
    }
    return add_run(l, run, run_len);
opaque:
    literal_free(l);
    return 0;
}

struct sqlgen {
    const struct filter *f;
    enum sql_class *classes; /* of every node, children before parents */
    struct buf where;
    struct filter_sql *out;
    size_t param_cap;
    bool has_failed;
};

static void sql_text(struct sqlgen *g, const char *s)
{
    if (buf_str(&g->where, s) != 0)
        g->has_failed = true;
}

static struct filter_sql_param *new_param(struct sqlgen *g)
{
    struct filter_sql *o = g->out;

    if (o->param_count == g->param_cap) {
        size_t cap = g->param_cap == 0 ? 8 : g->param_cap * 2;
        struct filter_sql_param *p = realloc(o->params, cap * sizeof(*p));
        char **s = realloc(o->strings, cap * sizeof(*s));

        if (p != NULL)
            o->params = p;
        if (s != NULL)
            o->strings = s;
        if (p == NULL || s == NULL) {
            g->has_failed = true;
            return NULL;
        }
        g->param_cap = cap;
    }
    return &o->params[o->param_count++];
}

static void param_int(struct sqlgen *g, int64_t v)
{
    struct filter_sql_param *p = new_param(g);

    if (p != NULL)
        *p = (struct filter_sql_param){.type = FILTER_SQL_INT, .number = v};
    sql_text(g, "?");
}

/* Takes s (malloc'd) in every case. */
static void param_text(struct sqlgen *g, char *s)
{
    struct filter_sql_param *p = s != NULL ? new_param(g) : NULL;

    if (p == NULL) {
        free(s);
        g->has_failed = true;
        return;
    }
    g->out->strings[g->out->string_count++] = s;
    *p = (struct filter_sql_param){.type = FILTER_SQL_TEXT, .text = s, .len = strlen(s)};
    sql_text(g, "?");
}

/* A LIKE pattern for a prefix or suffix: '%' and '_' in the literal are
 * escaped with '\'. */
static char *like_pattern(const char *lit, bool is_prefix)
{
    size_t n = strlen(lit);
    char *s = malloc(2 * n + 2);
    size_t k = 0;

    if (s == NULL)
        return NULL;
    if (!is_prefix)
        s[k++] = '%';
    for (size_t i = 0; i < n; i++) {
        if (lit[i] == '%' || lit[i] == '_' || lit[i] == '\\')
            s[k++] = '\\';
        s[k++] = lit[i];
    }
    if (is_prefix)
        s[k++] = '%';
    s[k] = '\0';
    return s;
}

/*
 * The condition "regex matches column" for a literal analysis. col is an
 * SQL expression of TEXT; present, when not NULL, is the condition under
 * which the evaluator has something to search at all (a NULL column, a
 * section without lines), put first so the result is false, never NULL
 * (NOT must stay exact). is_whole says col is the very text the evaluator
 * searches (not a section of lines), so anchors can be used. Emits nothing
 * and returns SQL_NONE when the literal says nothing.
 */
static enum sql_class emit_literal(struct sqlgen *g, const struct literal *l, const char *col,
                                   const char *present, bool is_whole)
{
    bool is_exact = l->is_plain && (is_whole || (!l->has_start && !l->has_end));
    bool has_condition = false;

    for (size_t i = 0; i < l->run_count; i++)
        has_condition |= l->runs[i][0] != '\0';
    if (!is_exact && !has_condition)
        return SQL_NONE;
    sql_text(g, "(");
    if (present != NULL)
        sql_text(g, present);
    if (is_exact && l->runs[0][0] == '\0' && !(l->has_start && l->has_end)) {
        if (present == NULL)
            sql_text(g, "1");
        sql_text(g, ")");
        return SQL_EXACT;
    }
    if (present != NULL)
        sql_text(g, " AND ");
    if (is_exact && is_whole && l->has_start && l->has_end) {
        sql_text(g, "lower(");
        sql_text(g, col);
        sql_text(g, ") = ");
        param_text(g, strdup(l->runs[0]));
    } else if (is_exact && is_whole && (l->has_start || l->has_end)) {
        sql_text(g, "lower(");
        sql_text(g, col);
        sql_text(g, ") LIKE ");
        param_text(g, like_pattern(l->runs[0], l->has_start));
        sql_text(g, " ESCAPE '\\'");
    } else {
        bool is_first = true;

        for (size_t i = 0; i < l->run_count; i++) {
            if (l->runs[i][0] == '\0')
                continue;
            sql_text(g, is_first ? "instr(lower(" : " AND instr(lower(");
            sql_text(g, col);
            sql_text(g, "), ");
            param_text(g, strdup(l->runs[i]));
            sql_text(g, ") > 0");
            is_first = false;
        }
    }
    sql_text(g, ")");
    return is_exact ? SQL_EXACT : SQL_SUPER;
}

static enum sql_class emit_regex(struct sqlgen *g, const struct node *n, const char *col,
                                 const char *present, bool is_whole)
{
    struct literal l;
    enum sql_class c;

    if (analyze_regex(n->value, n->value_len, &l) != 0) {
        g->has_failed = true;
        return SQL_NONE;
    }
    c = emit_literal(g, &l, col, present, is_whole);
    literal_free(&l);
    return c;
}

/* A term on the request side, the response side or both (OR); cols[0] and
 * present[0] are the request's, [1] the response's. */
static enum sql_class emit_sides(struct sqlgen *g, const struct node *n, const char *const *cols,
                                 const char *const *present, bool is_whole)
{
    struct literal l;
    enum sql_class a, b;

    if (n->side != SIDE_EITHER) {
        int k = n->side == SIDE_REQUEST ? 0 : 1;

        return emit_regex(g, n, cols[k], present[k], is_whole);
    }
    if (analyze_regex(n->value, n->value_len, &l) != 0) {
        g->has_failed = true;
        return SQL_NONE;
    }
    /* Both sides have the same class: the same literal, the same shape. */
    sql_text(g, "(");
    a = emit_literal(g, &l, cols[0], present[0], is_whole);
    if (a != SQL_NONE) {
        sql_text(g, " OR ");
        b = emit_literal(g, &l, cols[1], present[1], is_whole);
        a = a < b ? a : b;
    }
    sql_text(g, ")");
    literal_free(&l);
    return a;
}

/*
 * Emits node i (known not to be SQL_NONE) and returns its class. A chain
 * of one operator is written flat, "(a AND b AND c)": the parser builds
 * such chains left-deep, and as many nested parentheses as terms would
 * overflow SQLite's parser stack (about a hundred levels).
 */
static enum sql_class emit(struct sqlgen *g, int i, enum op parent)
{
    const struct node *n = &g->f->nodes[i];
    enum sql_class a, b;

    switch (n->op) {
    case OP_AND:
    case OP_OR:
        a = g->classes[n->a];
        b = g->classes[n->b];
        /* An OR with a side of SQL_NONE is SQL_NONE itself: never emitted. */
        if (a == SQL_NONE)
            return emit(g, n->b, parent) == SQL_NONE ? SQL_NONE : SQL_SUPER;
        if (b == SQL_NONE)
            return emit(g, n->a, parent) == SQL_NONE ? SQL_NONE : SQL_SUPER;
        if (parent != n->op)
            sql_text(g, "(");
        a = emit(g, n->a, n->op);
        sql_text(g, n->op == OP_AND ? " AND " : " OR ");
        b = emit(g, n->b, n->op);
        if (parent != n->op)
            sql_text(g, ")");
        return a < b ? a : b;
    case OP_NOT:
        sql_text(g, "(NOT ");
        emit(g, n->a, OP_NOT);
        sql_text(g, ")");
        return SQL_EXACT;
    case OP_ALL:
        sql_text(g, "1");
        return SQL_EXACT;
    case OP_TEXT:
        if (!flow_is_text(n->value, n->value_len))
            return SQL_NONE; /* SQLite compares text as UTF-8 */
        if (n->value_len == 0) {
            sql_text(g, "1");
        } else {
            sql_text(g, "(instr(lower(" URL_SQL "), ");
            param_text(g, strdup(n->lower));
            sql_text(g, ") > 0)");
        }
        return SQL_EXACT;
    case OP_DOMAIN:
        return emit_regex(g, n, "host", NULL, true);
    case OP_URL:
        return emit_regex(g, n, URL_SQL, NULL, true);
    case OP_METHOD:
        return emit_regex(g, n, "method", NULL, true);
    case OP_CLIENT:
        return emit_regex(g, n, "client", NULL, true);
    case OP_LISTENER:
        /* A column compare per row, no index: the listener is one of five
         * values, too few for an index to narrow a walk down the ids. NULL
         * (stored before schema version 13) is no listener. */
        sql_text(g, "(coalesce(listener, '') = ");
        param_text(g, strdup(n->listener));
        sql_text(g, ")");
        return SQL_EXACT;
    case OP_VERSION:
        return emit_regex(g, n, "req_version", NULL, true);
    case OP_HTTP2:
        sql_text(g, "(substr(req_version, 1, 6) = 'HTTP/2')");
        return SQL_EXACT;
    case OP_STATUS:
        if (n->status_lo == n->status_hi) {
            sql_text(g, "(status = ");
            param_int(g, n->status_lo);
            sql_text(g, ")");
        } else {
            /* The partial index flows_status_class leaves 2xx out and is
             * used only when the query states its condition. */
            sql_text(g, "(status / 100 = ");
            param_int(g, n->status_lo / 100);
            sql_text(g, n->status_lo == 200 ? ")" : " AND status / 100 <> 2)");
        }
        return SQL_EXACT;
    case OP_NO_RESPONSE:
        sql_text(g, "(status = 0)");
        return SQL_EXACT;
    case OP_HAS_RESPONSE:
        sql_text(g, "(status <> 0)");
        return SQL_EXACT;
    case OP_ERROR:
        sql_text(g, "(error IS NOT NULL)");
        return SQL_EXACT;
    case OP_WEBSOCKET:
        sql_text(g, "(kind = 2)");
        return SQL_EXACT;
    case OP_TUNNEL:
        sql_text(g, "(kind = 1)");
        return SQL_EXACT;
    case OP_TLS:
        sql_text(g, "(is_tls <> 0)");
        return SQL_EXACT;
    case OP_HEADER: {
        /* The evaluator searches the lines of a section: none in NULL or "". */
        static const char *const cols[] = {"req_headers", "resp_headers"};
        static const char *const present[] = {"coalesce(req_headers, '') <> ''",
                                              "coalesce(resp_headers, '') <> ''"};

        return emit_sides(g, n, cols, present, false);
    }
    case OP_TYPE: {
        static const char *const cols[] = {"req_content_type", "resp_content_type"};
        static const char *const present[] = {"req_content_type IS NOT NULL",
                                              "resp_content_type IS NOT NULL"};

        return emit_sides(g, n, cols, present, true);
    }
    case OP_BODY:
        return SQL_NONE;
    }
    return SQL_NONE;
}

/* The class node i has, its children's known: a leaf's is found by
 * emitting it into a throwaway generator. */
static enum sql_class classify(const struct filter *f, const enum sql_class *classes, int i)
{
    const struct node *n = &f->nodes[i];
    struct filter_sql scratch = {0};
    struct sqlgen g = {.f = f, .classes = NULL, .where = BUF_INIT(MAX_SQL_BYTES), .out = &scratch};
    enum sql_class c, d;

    switch (n->op) {
    case OP_AND:
        c = classes[n->a];
        d = classes[n->b];
        if (c == SQL_NONE && d == SQL_NONE)
            return SQL_NONE;
        if (c == SQL_NONE || d == SQL_NONE)
            return SQL_SUPER;
        return c < d ? c : d;
    case OP_OR:
        c = classes[n->a];
        d = classes[n->b];
        return c < d ? c : d;
    case OP_NOT:
        return classes[n->a] == SQL_EXACT ? SQL_EXACT : SQL_NONE;
    default:
        c = emit(&g, i, OP_NOT);
        buf_free(&g.where);
        filter_sql_free(&scratch);
        return c;
    }
}

/*
 * The part of run (a literal a URL as URL_SQL shows it must contain) that
 * host || target must then contain too, or NULL. The shown URL is scheme
 * "://" host [":" port] target: a run without ':' or brackets lies within
 * the scheme, within "//" and the host (and the target when no port is
 * shown), or within the port's digits and the target. A run made only of
 * the letters of "http", "https", "ws" and "wss" may be in the scheme
 * alone, so it is not used; dropping leading digits and slashes rules out
 * "//" and the port.
 */
static const char *url_run_in_index(const char *run)
{
    if (strpbrk(run, ":[]") != NULL || run[strspn(run, "htpsw")] == '\0')
        return NULL;
    return run + strspn(run, "0123456789/");
}

/* Keeps in *best the longest of the texts the index can look for (at least
 * three characters, its trigrams) that node i requires, walking only the
 * AND chain: under a NOT or an OR a term requires nothing. */
static int find_index_text(const struct filter *f, int i, char **best)
{
    const struct node *n = &f->nodes[i];
    struct literal l;
    int ret = 0;

    if (n->op == OP_AND)
        return find_index_text(f, n->a, best) == 0 && find_index_text(f, n->b, best) == 0 ? 0 : -1;
    if (n->op == OP_TEXT) {
        if (!flow_is_text(n->value, n->value_len))
            return 0;
        memset(&l, 0, sizeof(l));
        l.runs[0] = n->lower;
        l.run_count = 1;
    } else if (n->op == OP_URL || n->op == OP_DOMAIN) {
        if (analyze_regex(n->value, n->value_len, &l) != 0)
            return -1;
    } else {
        return 0;
    }
    for (size_t k = 0; k < l.run_count; k++) {
        const char *text = n->op == OP_DOMAIN ? l.runs[k] : url_run_in_index(l.runs[k]);

        if (text == NULL || strlen(text) < 3 || (*best != NULL && strlen(*best) >= strlen(text)))
            continue;
        free(*best);
        if ((*best = strdup(text)) == NULL) {
            ret = -1;
            break;
        }
    }
    if (n->op != OP_TEXT)
        literal_free(&l);
    return ret;
}

int filter_to_sql(const struct filter *filter, struct filter_sql *out, char *err, size_t err_len)
{
    enum sql_class classes[FILTER_MAX_NODES];
    struct sqlgen g = {
        .f = filter, .classes = classes, .where = BUF_INIT(MAX_SQL_BYTES), .out = out};
    enum sql_class c;
    int ret = -1;

    memset(out, 0, sizeof(*out));
    /* The parser makes a node after its children: one pass upwards. */
    for (size_t i = 0; i < filter->count; i++)
        classes[i] = classify(filter, classes, (int)i);
    c = classes[filter->root];
    if (c == SQL_NONE)
        sql_text(&g, "(1)");
    else
        c = emit(&g, filter->root, OP_NOT);
    if (g.has_failed || g.where.data == NULL) {
        errmsg_set(err, err_len, "out of memory");
        buf_free(&g.where);
        goto out;
    }
    out->where = g.where.data;
    out->needs_eval = c != SQL_EXACT;
    if (find_index_text(filter, filter->root, &out->index_text) != 0) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    ret = 0;
out:
    return ret;
}

void filter_sql_free(struct filter_sql *sql)
{
    for (size_t i = 0; i < sql->string_count; i++)
        free(sql->strings[i]);
    free(sql->strings);
    free(sql->params);
    free(sql->where);
    free(sql->index_text);
    memset(sql, 0, sizeof(*sql));
}
