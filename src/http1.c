/*
 * http1: strict RFC 9112 parsing of request and response heads, the framing
 * decision that follows from them, and a streaming chunked decoder.
 *
 * This module is the proxy's defence against request smuggling and response
 * splitting: whenever two reasonable parsers could disagree about where a
 * message ends, the message is refused here instead of being forwarded. It
 * therefore accepts only CRLF line endings (RFC 9112 2.2 lets a recipient
 * accept a bare LF, but a proxy that did so would frame differently from an
 * origin that does not), and refuses bare CR, obs-fold, whitespace before a
 * colon, CTLs in values, and every ambiguous Content-Length/Transfer-Encoding
 * combination.
 *
 * It must never allocate, do I/O or keep global mutable state: heads are
 * parsed in place (every pointer in struct http1_head points into the caller's
 * buffer) and the chunked decoder keeps all its state in struct http1_chunked.
 * The head parsers are stateless: a caller re-parses from the start when more
 * bytes arrive, so a partial head never leaves anything behind.
 */
#include "http1.h"
#include "httptoken.h"
#include "textcode.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
 * request-line. A few are tolerated (a client's stray CRLF after a body);
 * an endless stream of them is refused rather than read forever. */
#define MAX_LEADING_EMPTY_LINES 4

/* A chunk size is at most 16 hex digits (leading zeros included) and below
 * 2^63, so that it always fits an off_t and never wraps a length sum. The
 * same ceiling applies to Content-Length. */
#define MAX_CHUNK_SIZE_DIGITS 16
#define MAX_BODY_LENGTH ((uint64_t)INT64_MAX)

/* Results of the internal parse steps; P_ERROR equals HTTP1_ERROR so it can be
 * returned directly. */
#define P_OK 1
#define P_INCOMPLETE HTTP1_INCOMPLETE
#define P_ERROR HTTP1_ERROR

enum chunk_state {
    CS_SIZE_FIRST,        /* expecting the first hex digit of chunk-size */
    CS_SIZE,              /* more hex digits, ';', BWS or CR */
    CS_EXT_PRE_SEMI,      /* BWS after the size or a value, before ';' */
    CS_EXT_NAME_PRE,      /* after ';': BWS then chunk-ext-name */
    CS_EXT_NAME,          /* inside chunk-ext-name */
    CS_EXT_POST_NAME,     /* BWS after the name: '=' or ';' follows */
    CS_EXT_VALUE_PRE,     /* after '=': BWS then token or quoted-string */
    CS_EXT_TOKEN,         /* inside a token value */
    CS_EXT_QUOTED,        /* inside a quoted-string value */
    CS_EXT_QUOTED_ESC,    /* after a backslash inside a quoted-string */
    CS_EXT_POST_QUOTED,   /* after the closing quote */
    CS_SIZE_LF,           /* CR of the size line seen, LF must follow */
    CS_DATA,              /* remaining bytes of chunk data */
    CS_DATA_CR,           /* CR after chunk data */
    CS_DATA_LF,           /* LF after chunk data */
    CS_TRAILER_START,     /* start of a trailer line (or of the final CRLF) */
    CS_TRAILER_NAME,      /* inside a trailer field name */
    CS_TRAILER_VALUE_PRE, /* OWS after the colon */
    CS_TRAILER_VALUE,     /* inside a trailer field value */
    CS_TRAILER_LF,        /* CR of a trailer line seen, LF must follow */
    CS_FINAL_LF,          /* CR of the final empty line seen, LF must follow */
    CS_DONE,
    CS_ERROR,
};

static int fail(struct http1_error *err, int status, const char *message)
{
    if (err != NULL) {
        err->status = status;
        err->message = message;
    }
    return P_ERROR;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 9110 5.5: field-vchar = VCHAR / obs-text. */
static bool is_field_vchar(unsigned char c)
{
    return c >= 0x21 && c != 0x7f;
}

/* A byte that may appear inside a field value (CTLs, DEL and NUL may not). */
static bool is_field_char(unsigned char c)
{
    return is_field_vchar(c) || is_ows(c);
}

/* Locale-independent: field names and tokens are ASCII (RFC 9110 5.1). */
static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static bool ascii_case_equal(const char *a, size_t a_len, const char *b, size_t b_len)
{
    size_t i;

    if (a_len != b_len)
        return false;
    for (i = 0; i < a_len; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

static bool name_is(const struct message_field *h, const char *name)
{
    return ascii_case_equal(h->name, h->name_len, name, strlen(name));
}

/*
 * Steps over the next element of a comma-separated list (RFC 9110 5.6.1),
 * trimmed of OWS; empty elements are returned too (as length 0) so callers
 * that must refuse them can. Returns false at the end of the list.
 */
static bool list_next(const char **cur, const char *end, const char **elem, size_t *elem_len)
{
    const char *p = *cur;
    const char *start;
    const char *stop;

    if (p == NULL)
        return false;
    start = p;
    while (p < end && *p != ',')
        p++;
    stop = p;
    while (start < stop && is_ows((unsigned char)*start))
        start++;
    while (stop > start && is_ows((unsigned char)stop[-1]))
        stop--;
    *elem = start;
    *elem_len = (size_t)(stop - start);
    /* NULL marks the end once the last element has been returned. */
    *cur = p < end ? p + 1 : NULL;
    return true;
}

bool http1_list_has_token(const char *value, size_t value_len, const char *token)
{
    const char *cur = value;
    const char *elem;
    size_t elem_len;
    size_t token_len;

    if (value == NULL || token == NULL)
        return false;
    token_len = strlen(token);
    if (token_len == 0)
        return false;
    while (list_next(&cur, value + value_len, &elem, &elem_len)) {
        if (ascii_case_equal(elem, elem_len, token, token_len))
            return true;
    }
    return false;
}

const struct message_field *http1_find_header(const struct http1_head *head, const char *name)
{
    size_t i;

    if (head == NULL || name == NULL)
        return NULL;
    for (i = 0; i < head->num_headers; i++) {
        if (name_is(&head->headers[i], name))
            return &head->headers[i];
    }
    return NULL;
}

bool http1_is_hop_by_hop(const struct http1_head *head, const struct message_field *h)
{
    struct message_fields all = {head != NULL ? head->headers : NULL,
                                 head != NULL ? head->num_headers : 0};

    return message_is_hop_by_hop(head != NULL ? &all : NULL, h);
}

/* Expects CRLF at buf[*pos]; a lone CR or LF is refused (see the top comment). */
static int expect_crlf(const char *buf, size_t len, size_t *pos, int status,
                       const char *other_message, struct http1_error *err)
{
    if (*pos >= len)
        return P_INCOMPLETE;
    if (buf[*pos] == '\r') {
        if (*pos + 1 >= len)
            return P_INCOMPLETE;
        if (buf[*pos + 1] != '\n')
            return fail(err, status, "bare CR");
        *pos += 2;
        return P_OK;
    }
    if (buf[*pos] == '\n')
        return fail(err, status, "bare LF line ending (CRLF required)");
    return fail(err, status, other_message);
}

static int skip_empty_lines(const char *buf, size_t len, size_t *pos, int status,
                            struct http1_error *err)
{
    int lines = 0;
    int r;

    while (*pos < len && (buf[*pos] == '\r' || buf[*pos] == '\n')) {
        if (lines == MAX_LEADING_EMPTY_LINES)
            return fail(err, status, "too many empty lines before the start line");
        r = expect_crlf(buf, len, pos, status, "", err);
        if (r != P_OK)
            return r;
        lines++;
    }
    return *pos < len ? P_OK : P_INCOMPLETE;
}

/*
 * Matches HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3) at buf[*pos],
 * case-sensitively. A prefix of a valid version is P_INCOMPLETE, so garbage is
 * refused as soon as it shows and not only once a line end arrives.
 */
static int parse_version(const char *buf, size_t len, size_t *pos, int *major, int *minor)
{
    static const char pattern[] = "HTTP/d.d";
    size_t i;

    for (i = 0; i < sizeof(pattern) - 1; i++) {
        unsigned char c;

        if (*pos + i >= len)
            return P_INCOMPLETE;
        c = (unsigned char)buf[*pos + i];
        if (pattern[i] == 'd' ? !is_digit(c) : c != (unsigned char)pattern[i])
            return P_ERROR;
    }
    *major = buf[*pos + 5] - '0';
    *minor = buf[*pos + 7] - '0';
    *pos += sizeof(pattern) - 1;
    return P_OK;
}

/* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 3). */
static int parse_request_line(const char *buf, size_t len, size_t *pos, struct http1_head *head,
                              struct http1_error *err)
{
    size_t p = *pos;
    size_t start;
    int major;
    int minor;
    int r;

    start = p;
    while (p < len && httptoken_is_tchar((unsigned char)buf[p]))
        p++;
    if (p >= len)
        return P_INCOMPLETE;
    if (p == start || buf[p] != ' ')
        return fail(err, 400, "invalid request method");
    head->method = buf + start;
    head->method_len = p - start;
    p++;

    /* Any form of request-target is visible ASCII without SP; the caller
     * decides whether the form fits the method (RFC 9112 3.2). */
    start = p;
    while (p < len && (unsigned char)buf[p] >= 0x21 && (unsigned char)buf[p] <= 0x7e)
        p++;
    if (p >= len)
        return P_INCOMPLETE;
    if (p == start || buf[p] != ' ')
        return fail(err, 400, "invalid request target");
    head->target = buf + start;
    head->target_len = p - start;
    p++;

    r = parse_version(buf, len, &p, &major, &minor);
    if (r == P_ERROR)
        return fail(err, 400, "invalid HTTP version");
    if (r != P_OK)
        return r;
    r = expect_crlf(buf, len, &p, 400, "invalid request line", err);
    if (r != P_OK)
        return r;
    if (major != 1 || minor > 1)
        return fail(err, 505, "HTTP version not supported");
    head->version_minor = minor;
    *pos = p;
    return P_OK;
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF
 * (RFC 9112 4); a missing SP after the code is tolerated, as it says. */
static int parse_status_line(const char *buf, size_t len, size_t *pos, struct http1_head *head,
                             struct http1_error *err)
{
    size_t p = *pos;
    size_t start;
    int major;
    int minor;
    int status = 0;
    int i;
    int r;

    r = parse_version(buf, len, &p, &major, &minor);
    if (r == P_ERROR)
        return fail(err, 502, "invalid HTTP version in status line");
    if (r != P_OK)
        return r;
    if (p >= len)
        return P_INCOMPLETE;
    if (buf[p] != ' ')
        return fail(err, 502, "invalid status line");
    p++;
    for (i = 0; i < 3; i++, p++) {
        if (p >= len)
            return P_INCOMPLETE;
        if (!is_digit((unsigned char)buf[p]))
            return fail(err, 502, "invalid status code");
        status = status * 10 + (buf[p] - '0');
    }
    if (p >= len)
        return P_INCOMPLETE;
    if (buf[p] == ' ') {
        p++;
        start = p;
        /* reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ) */
        while (p < len && is_field_char((unsigned char)buf[p]))
            p++;
        head->reason = buf + start;
        head->reason_len = p - start;
    } else {
        head->reason = buf + p;
        head->reason_len = 0;
    }
    r = expect_crlf(buf, len, &p, 502, "invalid character in status line", err);
    if (r != P_OK)
        return r;
    /* RFC 9110 15: values outside 100..599 are invalid. */
    if (status < 100 || status > 599)
        return fail(err, 502, "invalid status code");
    if (major != 1 || minor > 1)
        return fail(err, 502, "unsupported HTTP version in response");
    head->status = status;
    head->version_minor = minor;
    *pos = p;
    return P_OK;
}

/*
 * field-line = field-name ":" OWS field-value OWS, then CRLF (RFC 9112 5),
 * repeated until the empty line. bad_status is 400 for a request and 502 for
 * a response; too_many_status is 431 or 502.
 */
static int parse_fields(const char *buf, size_t len, size_t *pos, struct http1_head *head,
                        int bad_status, int too_many_status, struct http1_error *err)
{
    size_t p = *pos;
    int r;

    for (;;) {
        struct message_field *h;
        size_t name_start;
        size_t value_start;
        size_t value_end;
        unsigned char c;

        if (p >= len)
            return P_INCOMPLETE;
        c = (unsigned char)buf[p];
        if (c == '\r' || c == '\n') {
            r = expect_crlf(buf, len, &p, bad_status, "", err);
            if (r != P_OK)
                return r;
            *pos = p;
            return P_OK;
        }
        /* RFC 9112 5.2 and 2.2: obs-fold and whitespace after the start line
         * are refused; a proxy must not guess how the next hop unfolds. */
        if (is_ows(c)) {
            return fail(err, bad_status,
                        head->num_headers > 0 ? "obsolete line folding (obs-fold)"
                                              : "whitespace before the first header field");
        }
        if (head->num_headers == HTTP1_MAX_HEADERS)
            return fail(err, too_many_status, "too many header fields");

        name_start = p;
        while (p < len && httptoken_is_tchar((unsigned char)buf[p]))
            p++;
        if (p >= len)
            return P_INCOMPLETE;
        /* RFC 9112 5.1: whitespace between name and colon MUST be refused. */
        if (p > name_start && is_ows((unsigned char)buf[p]))
            return fail(err, bad_status, "whitespace between header field name and colon");
        if (p == name_start || buf[p] != ':')
            return fail(err, bad_status, "invalid character in header field name");
        h = &head->headers[head->num_headers];
        h->name = buf + name_start;
        h->name_len = p - name_start;
        p++;

        while (p < len && is_ows((unsigned char)buf[p]))
            p++;
        value_start = p;
        while (p < len && is_field_char((unsigned char)buf[p]))
            p++;
        if (p >= len)
            return P_INCOMPLETE;
        value_end = p;
        while (value_end > value_start && is_ows((unsigned char)buf[value_end - 1]))
            value_end--;
        r = expect_crlf(buf, len, &p, bad_status, "invalid character in header field value", err);
        if (r != P_OK)
            return r;
        h->value = buf + value_start;
        h->value_len = value_end - value_start;
        head->num_headers++;
    }
}

/*
 * Content-Length = 1*DIGIT (RFC 9110 8.6). A list of identical values
 * ("5, 5", or the same value in several fields) is the one repetition the RFC
 * lets a recipient accept; anything else is refused because two parsers could
 * each pick a different element.
 */
static int parse_content_length(const struct message_field *h, bool *seen, uint64_t *out)
{
    const char *cur = h->value;
    const char *elem;
    size_t elem_len;
    size_t i;

    while (list_next(&cur, h->value + h->value_len, &elem, &elem_len)) {
        uint64_t v = 0;

        if (elem_len == 0)
            return -1;
        for (i = 0; i < elem_len; i++) {
            unsigned char c = (unsigned char)elem[i];

            if (!is_digit(c))
                return -1;
            if (v > (MAX_BODY_LENGTH - (uint64_t)(c - '0')) / 10)
                return -1;
            v = v * 10 + (uint64_t)(c - '0');
        }
        if (*seen && v != *out)
            return -1;
        *seen = true;
        *out = v;
    }
    return 0;
}

/* What the framing decision needs to know about the fields, gathered once. */
struct field_summary {
    bool has_cl;
    bool cl_invalid;
    uint64_t cl;
    bool has_te;
    bool te_invalid; /* an element is not a token, or no coding at all */
    bool te_unknown; /* a coding this module does not know */
    int te_count;    /* codings listed, over all TE fields */
    int te_chunked_count;
    bool te_chunked_last;
    size_t host_count;
    const struct message_field *host;
    bool conn_close;
    bool conn_keep_alive;
    bool conn_upgrade;
    bool has_upgrade;
    bool expect_continue;
};

static bool is_token(const char *s, size_t len)
{
    size_t i;

    if (len == 0)
        return false;
    for (i = 0; i < len; i++) {
        if (!httptoken_is_tchar((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* Transfer codings registered for HTTP/1.1 besides chunked (RFC 9112 7).
 * "identity" is deliberately absent: it was removed from the registry and
 * has been used to split messages between lenient and strict parsers. */
static bool is_known_coding(const char *s, size_t len)
{
    static const char *const codings[] = {
        "gzip", "x-gzip", "deflate", "compress", "x-compress",
    };
    size_t i;

    for (i = 0; i < sizeof(codings) / sizeof(codings[0]); i++) {
        if (ascii_case_equal(s, len, codings[i], strlen(codings[i])))
            return true;
    }
    return false;
}

/* Transfer-Encoding fields form one list in field order (RFC 9110 5.3). */
static void summarize_te(const struct message_field *h, struct field_summary *sum)
{
    const char *cur = h->value;
    const char *elem;
    size_t elem_len;

    sum->has_te = true;
    while (list_next(&cur, h->value + h->value_len, &elem, &elem_len)) {
        if (elem_len == 0)
            continue;
        /* Parameters are not defined for chunked and the other codings are
         * refused or passed through, so any ";param" makes the element
         * invalid rather than something to interpret. */
        if (!is_token(elem, elem_len)) {
            sum->te_invalid = true;
            continue;
        }
        sum->te_count++;
        if (ascii_case_equal(elem, elem_len, "chunked", 7)) {
            sum->te_chunked_count++;
            sum->te_chunked_last = true;
        } else {
            if (!is_known_coding(elem, elem_len))
                sum->te_unknown = true;
            sum->te_chunked_last = false;
        }
    }
}

static void summarize_fields(const struct http1_head *head, struct field_summary *sum)
{
    size_t i;

    memset(sum, 0, sizeof(*sum));
    for (i = 0; i < head->num_headers; i++) {
        const struct message_field *h = &head->headers[i];

        if (name_is(h, "content-length")) {
            if (parse_content_length(h, &sum->has_cl, &sum->cl) < 0)
                sum->cl_invalid = true;
            sum->has_cl = true;
        } else if (name_is(h, "transfer-encoding")) {
            summarize_te(h, sum);
        } else if (name_is(h, "host")) {
            sum->host_count++;
            sum->host = h;
        } else if (name_is(h, "connection")) {
            if (http1_list_has_token(h->value, h->value_len, "close"))
                sum->conn_close = true;
            if (http1_list_has_token(h->value, h->value_len, "keep-alive"))
                sum->conn_keep_alive = true;
            if (http1_list_has_token(h->value, h->value_len, "upgrade"))
                sum->conn_upgrade = true;
        } else if (name_is(h, "upgrade")) {
            sum->has_upgrade = true;
        } else if (name_is(h, "expect")) {
            if (ascii_case_equal(h->value, h->value_len, "100-continue", 12))
                sum->expect_continue = true;
        }
    }
    /* "Transfer-Encoding: ," names no coding: no framing can follow from it. */
    if (sum->has_te && sum->te_count == 0)
        sum->te_invalid = true;
}

/* Host = uri-host [ ":" port ] (RFC 9110 7.2): the characters of an
 * authority without userinfo. Whitespace or a second host is refused. */
static bool is_valid_host(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (is_digit(c) || is_alpha(c) || (c != '\0' && strchr("-._~%!$&'()*+,;=:[]", c) != NULL))
            continue;
        return false;
    }
    return true;
}

static bool persistent(const struct http1_head *head, const struct field_summary *sum)
{
    /* RFC 9112 9.3 */
    if (sum->conn_close)
        return false;
    if (head->version_minor >= 1)
        return true;
    return sum->conn_keep_alive;
}

static int finish_request(struct http1_head *head, struct http1_error *err)
{
    struct field_summary sum;

    summarize_fields(head, &sum);

    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, never more than one. */
    if (sum.host_count > 1)
        return fail(err, 400, "more than one Host header");
    if (sum.host_count == 0 && head->version_minor >= 1)
        return fail(err, 400, "missing Host header");
    if (sum.host != NULL && !is_valid_host(sum.host->value, sum.host->value_len))
        return fail(err, 400, "invalid Host header");

    /* RFC 9112 6.3 (3): both present may be an attempt to smuggle. */
    if (sum.has_te && sum.has_cl)
        return fail(err, 400, "both Content-Length and Transfer-Encoding");
    if (sum.cl_invalid)
        return fail(err, 400, "invalid Content-Length");
    if (sum.has_te) {
        /* RFC 9112 6.1: TE in HTTP/1.0 means the framing is faulty. */
        if (head->version_minor == 0)
            return fail(err, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (sum.te_invalid)
            return fail(err, 400, "invalid Transfer-Encoding");
        /* RFC 9112 6.3 (4): a request whose final coding is not chunked has
         * no determinable length, and the server MUST answer 400 and close,
         * whatever the other codings are; chunked applied twice is never
         * valid. Only a well-framed request with a coding we do not decode
         * gets 501 (RFC 9112 6.1). */
        if (sum.te_chunked_count != 1 || !sum.te_chunked_last)
            return fail(err, 400, "chunked must be the final transfer coding, once");
        if (sum.te_unknown)
            return fail(err, 501, "unsupported transfer coding");
        head->framing = HTTP1_BODY_CHUNKED;
    } else if (sum.has_cl) {
        head->framing = HTTP1_BODY_LENGTH;
        head->content_length = sum.cl;
    } else {
        head->framing = HTTP1_BODY_NONE;
    }

    head->keep_alive = persistent(head, &sum);
    /* RFC 9110 10.1.1: a 100-continue in an HTTP/1.0 request is ignored. */
    head->expect_continue = sum.expect_continue && head->version_minor >= 1;
    head->is_upgrade = sum.conn_upgrade && sum.has_upgrade;
    return P_OK;
}

static int finish_response(struct http1_head *head, const char *request_method,
                           size_t request_method_len, struct http1_error *err)
{
    struct field_summary sum;
    bool is_head;
    bool is_connect;

    summarize_fields(head, &sum);
    is_head =
        request_method != NULL && request_method_len == 4 && memcmp(request_method, "HEAD", 4) == 0;
    is_connect = request_method != NULL && request_method_len == 7 &&
                 memcmp(request_method, "CONNECT", 7) == 0;

    /* Refused whatever the status: even where they do not frame this
     * response, such fields show a peer whose framing cannot be trusted. */
    if (sum.has_te && sum.has_cl)
        return fail(err, 502, "both Content-Length and Transfer-Encoding in response");
    if (sum.cl_invalid)
        return fail(err, 502, "invalid Content-Length in response");
    if (sum.has_te && head->version_minor == 0)
        return fail(err, 502, "Transfer-Encoding in an HTTP/1.0 response");
    if (sum.te_invalid || sum.te_chunked_count > 1)
        return fail(err, 502, "invalid Transfer-Encoding in response");

    if (sum.has_cl)
        head->content_length = sum.cl;
    /* RFC 9112 6.3, in its order. */
    if (is_head || head->status < 200 || head->status == 204 || head->status == 304)
        head->framing = HTTP1_BODY_NONE;
    else if (is_connect && head->status < 300)
        head->framing = HTTP1_BODY_NONE;
    else if (sum.has_te)
        head->framing = sum.te_chunked_last ? HTTP1_BODY_CHUNKED : HTTP1_BODY_UNTIL_CLOSE;
    else if (sum.has_cl)
        head->framing = HTTP1_BODY_LENGTH;
    else
        head->framing = HTTP1_BODY_UNTIL_CLOSE;

    head->keep_alive = head->framing != HTTP1_BODY_UNTIL_CLOSE && persistent(head, &sum);
    head->expect_continue = false;
    head->is_upgrade = sum.conn_upgrade && sum.has_upgrade;
    return P_OK;
}

static void reset_head(struct http1_head *head)
{
    head->method = NULL;
    head->method_len = 0;
    head->target = NULL;
    head->target_len = 0;
    head->status = 0;
    head->reason = NULL;
    head->reason_len = 0;
    head->version_minor = 0;
    head->num_headers = 0;
    head->head_len = 0;
    head->framing = HTTP1_BODY_NONE;
    head->content_length = 0;
    head->keep_alive = false;
    head->expect_continue = false;
    head->is_upgrade = false;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/*
 * For a start line the parser found incomplete within buf[line_start..end):
 * it saw no line end, except perhaps a CR as the very last byte, so every
 * other byte is part of the line.
 */
static bool line_too_long(const char *buf, size_t line_start, size_t end)
{
    size_t seen = end - line_start;

    if (seen > 0 && buf[end - 1] == '\r')
        seen--;
    return seen > HTTP1_MAX_REQUEST_LINE_BYTES;
}

/*
 * Limits are enforced by parsing within a window: if the start line (or the
 * head) is still incomplete when the window is full, it is too long whether
 * or not the caller has more bytes, so the same answer comes from a complete
 * and from a partial head.
 */
int http1_parse_request(const char *buf, size_t len, struct http1_head *head,
                        struct http1_error *err)
{
    size_t head_window = min_size(len, HTTP1_MAX_HEAD_BYTES);
    size_t line_window;
    size_t line_start;
    size_t pos = 0;
    int r;

    reset_head(head);
    r = skip_empty_lines(buf, head_window, &pos, 400, err);
    if (r != P_OK)
        goto out;
    line_start = pos;
    line_window = min_size(head_window, line_start + HTTP1_MAX_REQUEST_LINE_BYTES + 2);
    r = parse_request_line(buf, line_window, &pos, head, err);
    if (r == P_INCOMPLETE && line_too_long(buf, line_start, line_window))
        r = fail(err, 414, "request line too long");
    if (r != P_OK)
        goto out;
    r = parse_fields(buf, head_window, &pos, head, 400, 431, err);
    if (r != P_OK)
        goto out;
    r = finish_request(head, err);
    if (r != P_OK)
        goto out;
    head->head_len = pos;
    r = (int)pos;
out:
    if (r == P_INCOMPLETE && len >= HTTP1_MAX_HEAD_BYTES)
        r = fail(err, 431, "request header section too large");
    return r;
}

int http1_parse_response(const char *buf, size_t len, const char *request_method,
                         size_t request_method_len, struct http1_head *head,
                         struct http1_error *err)
{
    size_t head_window = min_size(len, HTTP1_MAX_HEAD_BYTES);
    size_t line_window;
    size_t line_start;
    size_t pos = 0;
    int r;

    reset_head(head);
    /* Tolerated for the same reason as before a request: a sloppy origin's
     * stray CRLF after a body cannot change where this response ends. */
    r = skip_empty_lines(buf, head_window, &pos, 502, err);
    if (r != P_OK)
        goto out;
    line_start = pos;
    line_window = min_size(head_window, line_start + HTTP1_MAX_REQUEST_LINE_BYTES + 2);
    r = parse_status_line(buf, line_window, &pos, head, err);
    if (r == P_INCOMPLETE && line_too_long(buf, line_start, line_window))
        r = fail(err, 502, "status line too long");
    if (r != P_OK)
        goto out;
    r = parse_fields(buf, head_window, &pos, head, 502, 502, err);
    if (r != P_OK)
        goto out;
    r = finish_response(head, request_method, request_method_len, err);
    if (r != P_OK)
        goto out;
    head->head_len = pos;
    r = (int)pos;
out:
    if (r == P_INCOMPLETE && len >= HTTP1_MAX_HEAD_BYTES)
        r = fail(err, 502, "response header section too large");
    return r;
}

void http1_chunked_init(struct http1_chunked *st)
{
    st->state = CS_SIZE_FIRST;
    st->remaining = 0;
    st->line_bytes = 0;
    st->trailers_len = 0;
}

static int trailer_append(struct http1_chunked *st, char c)
{
    if (st->trailers_len >= sizeof(st->trailers))
        return -1;
    st->trailers[st->trailers_len++] = c;
    return 0;
}

static bool in_size_line(int state)
{
    return state >= CS_SIZE_FIRST && state <= CS_SIZE_LF;
}

static bool in_trailer(int state)
{
    return state >= CS_TRAILER_START && state <= CS_FINAL_LF;
}

/*
 * One byte of everything but chunk data. Returns 0, or -1 when the byte is
 * not allowed here (RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, then data
 * CRLF, and after the last chunk trailer fields and CRLF).
 */
static int chunk_step(struct http1_chunked *st, unsigned char c)
{
    int v;

    /* line_bytes counts the size line, or the whole trailer section. */
    if (in_size_line(st->state) && ++st->line_bytes > HTTP1_MAX_CHUNK_LINE_BYTES)
        return -1;
    if (in_trailer(st->state) && ++st->line_bytes > HTTP1_MAX_TRAILER_BYTES)
        return -1;

    switch (st->state) {
    case CS_SIZE_FIRST:
        v = textcode_hex_value((unsigned char)c);
        if (v < 0)
            return -1;
        st->remaining = (uint64_t)v;
        st->state = CS_SIZE;
        return 0;
    case CS_SIZE:
        v = textcode_hex_value((unsigned char)c);
        if (v >= 0) {
            if (st->line_bytes > MAX_CHUNK_SIZE_DIGITS)
                return -1;
            if (st->remaining > (MAX_BODY_LENGTH - (uint64_t)v) / 16)
                return -1;
            st->remaining = st->remaining * 16 + (uint64_t)v;
        } else if (c == ';') {
            st->state = CS_EXT_NAME_PRE;
        } else if (is_ows(c)) {
            st->state = CS_EXT_PRE_SEMI;
        } else if (c == '\r') {
            st->state = CS_SIZE_LF;
        } else {
            return -1;
        }
        return 0;
    case CS_EXT_PRE_SEMI:
        /* BWS is only allowed where a ';' follows: "5 \r\n" is refused. */
        if (c == ';')
            st->state = CS_EXT_NAME_PRE;
        else if (!is_ows(c))
            return -1;
        return 0;
    case CS_EXT_NAME_PRE:
        if (httptoken_is_tchar(c))
            st->state = CS_EXT_NAME;
        else if (!is_ows(c))
            return -1;
        return 0;
    case CS_EXT_NAME:
        if (httptoken_is_tchar(c))
            return 0;
        if (is_ows(c))
            st->state = CS_EXT_POST_NAME;
        else if (c == '=')
            st->state = CS_EXT_VALUE_PRE;
        else if (c == ';')
            st->state = CS_EXT_NAME_PRE;
        else if (c == '\r')
            st->state = CS_SIZE_LF;
        else
            return -1;
        return 0;
    case CS_EXT_POST_NAME:
        if (c == '=')
            st->state = CS_EXT_VALUE_PRE;
        else if (c == ';')
            st->state = CS_EXT_NAME_PRE;
        else if (!is_ows(c))
            return -1;
        return 0;
    case CS_EXT_VALUE_PRE:
        if (c == '"')
            st->state = CS_EXT_QUOTED;
        else if (httptoken_is_tchar(c))
            st->state = CS_EXT_TOKEN;
        else if (!is_ows(c))
            return -1;
        return 0;
    case CS_EXT_TOKEN:
        if (httptoken_is_tchar(c))
            return 0;
        if (is_ows(c))
            st->state = CS_EXT_PRE_SEMI;
        else if (c == ';')
            st->state = CS_EXT_NAME_PRE;
        else if (c == '\r')
            st->state = CS_SIZE_LF;
        else
            return -1;
        return 0;
    case CS_EXT_QUOTED:
        /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
        if (c == '"')
            st->state = CS_EXT_POST_QUOTED;
        else if (c == '\\')
            st->state = CS_EXT_QUOTED_ESC;
        else if (!is_field_char(c))
            return -1;
        return 0;
    case CS_EXT_QUOTED_ESC:
        if (!is_field_char(c))
            return -1;
        st->state = CS_EXT_QUOTED;
        return 0;
    case CS_EXT_POST_QUOTED:
        if (is_ows(c))
            st->state = CS_EXT_PRE_SEMI;
        else if (c == ';')
            st->state = CS_EXT_NAME_PRE;
        else if (c == '\r')
            st->state = CS_SIZE_LF;
        else
            return -1;
        return 0;
    case CS_SIZE_LF:
        if (c != '\n')
            return -1;
        st->line_bytes = 0;
        if (st->remaining == 0) {
            st->trailers_len = 0;
            st->state = CS_TRAILER_START;
        } else {
            st->state = CS_DATA;
        }
        return 0;
    case CS_DATA_CR:
        if (c != '\r')
            return -1;
        st->state = CS_DATA_LF;
        return 0;
    case CS_DATA_LF:
        if (c != '\n')
            return -1;
        st->remaining = 0;
        st->line_bytes = 0;
        st->state = CS_SIZE_FIRST;
        return 0;
    case CS_TRAILER_START:
        /* Same rules as header fields: no obs-fold, no empty name. */
        if (c == '\r') {
            st->state = CS_FINAL_LF;
            return 0;
        }
        if (!httptoken_is_tchar(c))
            return -1;
        st->state = CS_TRAILER_NAME;
        return trailer_append(st, (char)c);
    case CS_TRAILER_NAME:
        if (c == ':') {
            st->state = CS_TRAILER_VALUE_PRE;
            return trailer_append(st, ':');
        }
        if (!httptoken_is_tchar(c))
            return -1;
        return trailer_append(st, (char)c);
    case CS_TRAILER_VALUE_PRE:
        if (is_ows(c))
            return 0;
        if (c == '\r') {
            st->state = CS_TRAILER_LF;
            return 0;
        }
        if (!is_field_vchar(c))
            return -1;
        /* The separating space is written only before a non-empty value,
         * so trimming trailing OWS later stops at the value's last byte. */
        st->state = CS_TRAILER_VALUE;
        if (trailer_append(st, ' ') < 0)
            return -1;
        return trailer_append(st, (char)c);
    case CS_TRAILER_VALUE:
        if (c == '\r') {
            while (st->trailers_len > 0 &&
                   is_ows((unsigned char)st->trailers[st->trailers_len - 1]))
                st->trailers_len--;
            st->state = CS_TRAILER_LF;
            return 0;
        }
        if (!is_field_char(c))
            return -1;
        return trailer_append(st, (char)c);
    case CS_TRAILER_LF:
        if (c != '\n')
            return -1;
        st->state = CS_TRAILER_START;
        if (trailer_append(st, '\r') < 0)
            return -1;
        return trailer_append(st, '\n');
    case CS_FINAL_LF:
        if (c != '\n')
            return -1;
        st->state = CS_DONE;
        return 0;
    default:
        return -1;
    }
}

enum http1_chunk_result http1_chunked_decode(struct http1_chunked *st, const char *in,
                                             size_t in_len, size_t *consumed, const char **data,
                                             size_t *data_len)
{
    enum http1_chunk_result res = HTTP1_CHUNK_NEED_MORE;
    size_t pos = 0;

    *data = NULL;
    *data_len = 0;
    if (st->state == CS_ERROR) {
        res = HTTP1_CHUNK_ERROR;
        goto out;
    }
    if (st->state == CS_DONE) {
        res = HTTP1_CHUNK_DONE;
        goto out;
    }
    while (pos < in_len) {
        if (st->state == CS_DATA) {
            size_t n = in_len - pos;

            if ((uint64_t)n > st->remaining)
                n = (size_t)st->remaining;
            *data = in + pos;
            *data_len = n;
            pos += n;
            st->remaining -= n;
            if (st->remaining == 0)
                st->state = CS_DATA_CR;
            res = HTTP1_CHUNK_DATA;
            goto out;
        }
        if (chunk_step(st, (unsigned char)in[pos]) < 0) {
            st->state = CS_ERROR;
            pos = 0;
            res = HTTP1_CHUNK_ERROR;
            goto out;
        }
        pos++;
        if (st->state == CS_DONE) {
            res = HTTP1_CHUNK_DONE;
            goto out;
        }
    }
out:
    *consumed = pos;
    return res;
}

size_t http1_chunk_header(char *out, uint64_t size)
{
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    size_t n = 0;
    size_t i;

    do {
        digits[n++] = hex[size & 0xf];
        size >>= 4;
    } while (size != 0);
    for (i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    out[n++] = '\r';
    out[n++] = '\n';
    out[n] = '\0';
    return n;
}

const char *http1_reason_phrase(int status)
{
    static const struct {
        int status;
        const char *phrase;
    } phrases[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {451, "Unavailable For Legal Reasons"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {508, "Loop Detected"},
        {511, "Network Authentication Required"},
    };
    size_t i;

    for (i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++) {
        if (phrases[i].status == status)
            return phrases[i].phrase;
    }
    return "Unknown";
}

/* ---- request targets ---- */

static bool is_dns_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

bool http1_is_valid_host(const char *host)
{
    size_t n = strlen(host), i;

    if (n == 0 || n > 253)
        return false;
    if (memchr(host, ':', n) != NULL) {
        struct in6_addr addr;
        return inet_pton(AF_INET6, host, &addr) == 1;
    }
    for (i = 0; i < n; i++)
        if (!is_dns_char(host[i]))
            return false;
    return true;
}

int http1_parse_authority(const char *authority, size_t len, uint16_t default_port, char *host,
                          uint16_t *port)
{
    const char *h = authority;
    const char *port_at = NULL; /* the port's digits */
    size_t host_len, port_len, i;
    unsigned long value = 0;

    if (len == 0 || memchr(authority, '@', len) != NULL)
        return -1;
    if (authority[0] == '[') {
        const char *end = memchr(authority, ']', len);
        if (end == NULL)
            return -1;
        h = authority + 1;
        host_len = (size_t)(end - h);
        if (end + 1 < authority + len) {
            if (end[1] != ':')
                return -1;
            port_at = end + 2;
        }
    } else {
        const char *colon = memchr(authority, ':', len);
        if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - authority)))
            return -1; /* a bare IPv6 address needs brackets */
        host_len = colon != NULL ? (size_t)(colon - authority) : len;
        if (colon != NULL)
            port_at = colon + 1;
    }
    if (host_len == 0 || host_len >= HTTP1_MAX_HOST_BYTES)
        return -1;
    if (port_at == NULL) {
        if (default_port == 0)
            return -1;
        value = default_port;
    } else {
        port_len = len - (size_t)(port_at - authority);
        if (port_len == 0 || port_len > 5)
            return -1;
        for (i = 0; i < port_len; i++) {
            if (port_at[i] < '0' || port_at[i] > '9')
                return -1;
            value = value * 10 + (unsigned long)(port_at[i] - '0');
        }
        if (value == 0 || value > 65535)
            return -1;
    }
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    if (!http1_is_valid_host(host) || (authority[0] == '[' && memchr(host, ':', host_len) == NULL))
        return -1;
    *port = (uint16_t)value;
    return 0;
}

int http1_parse_absolute_target(const char *target, size_t len, struct http1_absolute_target *out)
{
    size_t p, a;

    memset(out, 0, sizeof(*out));
    if (len >= 7 && strncasecmp(target, "http://", 7) == 0) {
        p = 7;
    } else if (len >= 8 && strncasecmp(target, "https://", 8) == 0) {
        out->is_https = true;
        p = 8;
    } else {
        return -1;
    }
    a = p;
    while (p < len && target[p] != '/' && target[p] != '?' && target[p] != '#')
        p++;
    out->authority = target + a;
    out->authority_len = p - a;
    if (http1_parse_authority(out->authority, out->authority_len, out->is_https ? 443 : 80,
                              out->host, &out->port) < 0)
        return -1;
    out->path = target + p;
    out->path_len = len - p;
    /* A fragment is never sent (RFC 9110 7.1); a target made of one has
     * no path. */
    if (out->path_len > 0 && out->path[0] == '#')
        out->path_len = 0;
    return 0;
}

/* ---- field values ---- */

static const char *skip_field_blanks(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* The weight after a coding (";q=0", ";q=0.00", RFC 9110 12.4.2) is 0. */
static bool is_weight_zero(const char *semi, const char *end)
{
    const char *p;

    if (semi == NULL)
        return false;
    p = skip_field_blanks(semi + 1, end);
    if (end - p < 3 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' || p[2] != '0')
        return false;
    p += 3;
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p == '0')
            p++;
    }
    return skip_field_blanks(p, end) == end;
}

bool http1_accepts_content_coding(const char *value, size_t value_len)
{
    const char *end = value + value_len;
    const char *elem = value;

    while (elem < end) {
        const char *comma = memchr(elem, ',', (size_t)(end - elem));
        const char *elem_end = comma != NULL ? comma : end;
        const char *semi = memchr(elem, ';', (size_t)(elem_end - elem));
        const char *coding = skip_field_blanks(elem, elem_end);
        const char *coding_end = semi != NULL ? semi : elem_end;

        while (coding_end > coding && (coding_end[-1] == ' ' || coding_end[-1] == '\t'))
            coding_end--;
        if (coding_end > coding &&
            !(coding_end - coding == 8 && strncasecmp(coding, "identity", 8) == 0) &&
            !is_weight_zero(semi, elem_end))
            return true;
        elem = comma != NULL ? comma + 1 : end;
    }
    return false;
}
