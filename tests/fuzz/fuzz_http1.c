/*
 * libFuzzer target for http1: request heads, response heads and the chunked
 * decoder, with the invariants the proxy relies on checked after every call
 * (a violation traps, so the fuzzer reports it like a crash).
 *
 * fuzz-sources: src/http1.c src/message.c
 *
 * The first byte selects what the rest is: 0 request, 1 response (bits 2-3
 * pick the request method), 2 chunked body (bits 2-7 pick a split size),
 * 3 payload for an encode/decode round trip.
 */
#include "http1.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* An exact-size heap copy, so that ASan sees any read past len. */
static char *copy_of(const uint8_t *data, size_t len)
{
    char *p = malloc(len > 0 ? len : 1);

    CHECK(p != NULL);
    if (len > 0)
        memcpy(p, data, len);
    return p;
}

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p != NULL && p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static bool only_ows(const char *from, const char *to)
{
    for (; from < to; from++) {
        if (*from != ' ' && *from != '\t')
            return false;
    }
    return true;
}

static void check_head(const struct http1_head *h, const char *buf, int r)
{
    const struct message_field *conn;
    size_t i;
    size_t len = (size_t)r;

    CHECK(h->head_len == len);
    CHECK(len <= HTTP1_MAX_HEAD_BYTES);
    /* The start line's CRLF and the empty line's. */
    CHECK(len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0);
    CHECK(h->version_minor == 0 || h->version_minor == 1);
    CHECK(h->num_headers <= HTTP1_MAX_HEADERS);
    for (i = 0; i < h->num_headers; i++) {
        const struct message_field *f = &h->headers[i];

        CHECK(f->name_len > 0 && inside(f->name, f->name_len, buf, len));
        CHECK(inside(f->value, f->value_len, buf, len));
        /* Each span maps back onto "\nname:" OWS value OWS "\r\n". */
        CHECK(f->name > buf && f->name[-1] == '\n' && f->name[f->name_len] == ':');
        CHECK(f->value > f->name + f->name_len);
        CHECK(only_ows(f->name + f->name_len + 1, f->value));
        {
            const char *e = f->value + f->value_len;

            while (*e == ' ' || *e == '\t')
                e++;
            CHECK(e[0] == '\r' && e[1] == '\n');
        }
        CHECK(memchr(f->name, ':', f->name_len) == NULL);
        CHECK(memchr(f->value, '\r', f->value_len) == NULL);
        CHECK(memchr(f->value, '\n', f->value_len) == NULL);
        CHECK(memchr(f->value, '\0', f->value_len) == NULL);
        if (f->value_len > 0) {
            CHECK(f->value[0] != ' ' && f->value[0] != '\t');
            CHECK(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
        }
        (void)http1_is_hop_by_hop(h, f);
    }
    conn = http1_find_header(h, "connection");
    if (conn != NULL) {
        const struct message_field *named = http1_find_header(h, "X-Fuzz");

        CHECK(http1_is_hop_by_hop(h, conn));
        /* A field named in Connection is hop-by-hop, whatever its case. */
        if (named != NULL && http1_list_has_token(conn->value, conn->value_len, "x-fuzz"))
            CHECK(http1_is_hop_by_hop(h, named));
    }
    CHECK(h->framing == HTTP1_BODY_NONE || h->framing == HTTP1_BODY_LENGTH ||
          h->framing == HTTP1_BODY_CHUNKED || h->framing == HTTP1_BODY_UNTIL_CLOSE);
    if (h->framing == HTTP1_BODY_LENGTH)
        CHECK(h->content_length <= (uint64_t)INT64_MAX);
    /* Chunked framing always comes from a Transfer-Encoding field. */
    if (h->framing == HTTP1_BODY_CHUNKED)
        CHECK(http1_find_header(h, "transfer-encoding") != NULL &&
              http1_find_header(h, "content-length") == NULL);
    if (h->framing == HTTP1_BODY_LENGTH)
        CHECK(http1_find_header(h, "transfer-encoding") == NULL);
}

/* A prefix of something that parsed (or was incomplete) must be incomplete. */
static void check_prefix_incomplete(const uint8_t *data, size_t prefix_len, bool is_request,
                                    const char *method)
{
    struct http1_head h;
    struct http1_error err;
    char *buf = copy_of(data, prefix_len);
    int r;

    if (is_request)
        r = http1_parse_request(buf, prefix_len, &h, &err);
    else
        r = http1_parse_response(buf, prefix_len, method, method ? strlen(method) : 0, &h, &err);
    CHECK(r == HTTP1_INCOMPLETE);
    free(buf);
}

static void fuzz_request(const uint8_t *data, size_t size)
{
    static struct http1_head h;
    struct http1_error err = {0, NULL};
    char *buf = copy_of(data, size);
    int r;

    /* The whole input as an Accept-Encoding value: it reads within len. */
    (void)http1_accepts_content_coding(buf, size);
    r = http1_parse_request(buf, size, &h, &err);
    CHECK(r >= HTTP1_ERROR);
    if (r == HTTP1_ERROR) {
        CHECK(err.message != NULL);
        CHECK(err.status == 400 || err.status == 414 || err.status == 431 || err.status == 501 ||
              err.status == 505);
    } else if (r == HTTP1_INCOMPLETE) {
        CHECK(size < HTTP1_MAX_HEAD_BYTES);
        check_prefix_incomplete(data, size / 2, true, NULL);
    } else {
        CHECK((size_t)r <= size);
        check_head(&h, buf, r);
        CHECK(h.method_len > 0 && inside(h.method, h.method_len, buf, (size_t)r));
        CHECK(h.target_len > 0 && inside(h.target, h.target_len, buf, (size_t)r));
        CHECK(h.target_len <= HTTP1_MAX_REQUEST_LINE_BYTES);
        /* method SP target SP "HTTP/1.x" CRLF, after at most a few CRLFs. */
        CHECK(h.method == buf || h.method[-1] == '\n');
        CHECK(h.method[h.method_len] == ' ' && h.target == h.method + h.method_len + 1);
        CHECK(h.target[h.target_len] == ' ');
        CHECK(memcmp(h.target + h.target_len + 1, "HTTP/1.", 7) == 0);
        CHECK(h.target[h.target_len + 8] - '0' == h.version_minor);
        CHECK(memcmp(h.target + h.target_len + 9, "\r\n", 2) == 0);
        CHECK(h.framing != HTTP1_BODY_UNTIL_CLOSE);
        CHECK(h.version_minor == 0 || http1_find_header(&h, "host") != NULL);
        /* Bytes after the head cannot change the head. */
        {
            static struct http1_head h2;
            char *exact = copy_of(data, (size_t)r);

            CHECK(http1_parse_request(exact, (size_t)r, &h2, &err) == r);
            CHECK(h2.framing == h.framing && h2.content_length == h.content_length &&
                  h2.num_headers == h.num_headers && h2.keep_alive == h.keep_alive);
            free(exact);
        }
        check_prefix_incomplete(data, (size_t)r - 1, true, NULL);
    }
    free(buf);
}

static void fuzz_response(const uint8_t *data, size_t size, const char *method)
{
    static struct http1_head h;
    struct http1_error err = {0, NULL};
    char *buf = copy_of(data, size);
    int r;

    r = http1_parse_response(buf, size, method, strlen(method), &h, &err);
    CHECK(r >= HTTP1_ERROR);
    if (r == HTTP1_ERROR) {
        CHECK(err.message != NULL && err.status == 502);
    } else if (r == HTTP1_INCOMPLETE) {
        CHECK(size < HTTP1_MAX_HEAD_BYTES);
        check_prefix_incomplete(data, size / 2, false, method);
    } else {
        CHECK((size_t)r <= size);
        check_head(&h, buf, r);
        CHECK(h.status >= 100 && h.status <= 599);
        CHECK(h.reason_len == 0 || inside(h.reason, h.reason_len, buf, (size_t)r));
        CHECK(h.method == NULL && h.target == NULL);
        if (h.framing == HTTP1_BODY_UNTIL_CLOSE)
            CHECK(!h.keep_alive);
        if (strcmp(method, "HEAD") == 0 || h.status < 200 || h.status == 204 || h.status == 304)
            CHECK(h.framing == HTTP1_BODY_NONE);
        check_prefix_incomplete(data, (size_t)r - 1, false, method);
    }
    free(buf);
}

struct decode_out {
    enum http1_chunk_result result;
    char *data;
    size_t data_len;
    size_t consumed;
    size_t trailers_len;
    char trailers[HTTP1_MAX_TRAILER_BYTES];
};

/*
 * Decodes in[0..len) as a connection would, in pieces of piece bytes
 * (0: all at once), checking every call's contract. out->data holds at most
 * len bytes.
 */
static void decode(const uint8_t *in, size_t len, size_t piece, struct decode_out *out)
{
    static struct http1_chunked st;
    char *pending = malloc(len > 0 ? len : 1);
    size_t pending_len = 0;
    size_t fed = 0;

    CHECK(pending != NULL);
    out->result = HTTP1_CHUNK_NEED_MORE;
    out->data_len = 0;
    out->consumed = 0;
    out->trailers_len = 0;
    http1_chunked_init(&st);
    for (;;) {
        size_t n = piece == 0 ? len - fed : piece;
        bool stop = false;

        if (n > len - fed)
            n = len - fed;
        memcpy(pending + pending_len, in + fed, n);
        pending_len += n;
        fed += n;
        while (!stop) {
            /* An exact-size copy makes any read past in_len visible to ASan. */
            char *exact = copy_of((const uint8_t *)pending, pending_len);
            const char *d = NULL;
            size_t d_len = 0;
            size_t used = (size_t)-1;
            enum http1_chunk_result r;

            r = http1_chunked_decode(&st, exact, pending_len, &used, &d, &d_len);
            CHECK(used <= pending_len);
            CHECK(st.trailers_len <= HTTP1_MAX_TRAILER_BYTES);
            switch (r) {
            case HTTP1_CHUNK_DATA:
                CHECK(d_len > 0 && inside(d, d_len, exact, used));
                CHECK(out->data_len + d_len <= len);
                memcpy(out->data + out->data_len, d, d_len);
                out->data_len += d_len;
                break;
            case HTTP1_CHUNK_NEED_MORE:
                CHECK(d == NULL && d_len == 0);
                CHECK(used == pending_len);
                stop = true;
                break;
            case HTTP1_CHUNK_DONE:
                CHECK(d == NULL && d_len == 0);
                CHECK(used > 0 || pending_len == 0);
                out->result = r;
                out->consumed = fed - pending_len + used;
                out->trailers_len = st.trailers_len;
                memcpy(out->trailers, st.trailers, st.trailers_len);
                break;
            case HTTP1_CHUNK_ERROR:
                CHECK(d == NULL && d_len == 0);
                out->result = r;
                break;
            default:
                CHECK(0);
            }
            free(exact);
            if (r == HTTP1_CHUNK_DONE || r == HTTP1_CHUNK_ERROR) {
                free(pending);
                return;
            }
            memmove(pending, pending + used, pending_len - used);
            pending_len -= used;
        }
        if (fed == len) {
            out->consumed = fed - pending_len;
            free(pending);
            return;
        }
    }
}

static void check_trailers(const struct decode_out *o)
{
    size_t i = 0;

    /* "Name: value\r\n" lines: a token, a colon, no CR or LF but the CRLF. */
    while (i < o->trailers_len) {
        size_t start = i;

        while (i < o->trailers_len && o->trailers[i] != ':')
            i++;
        CHECK(i > start && i < o->trailers_len);
        while (i < o->trailers_len && o->trailers[i] != '\r') {
            CHECK(o->trailers[i] != '\n' && o->trailers[i] != '\0');
            i++;
        }
        CHECK(i + 1 < o->trailers_len && o->trailers[i + 1] == '\n');
        CHECK(o->trailers[i - 1] != ' ' && o->trailers[i - 1] != '\t');
        i += 2;
    }
}

/*
 * A second, deliberately naive reading of RFC 9112 7.1 over the whole input,
 * written apart from the state machine: the streaming decoder must agree with
 * it on the outcome, the data, the bytes consumed and the trailers. Running
 * out of input anywhere means NEED_MORE, unless the line (or the trailer
 * section) already exceeds its limit.
 */
#define REF_AT(i) ((i) < len ? (int)in[i] : -1)
#define REF_STOP(limit)                                                                            \
    do {                                                                                           \
        o->result = p < len || len - start > (limit) ? HTTP1_CHUNK_ERROR : HTTP1_CHUNK_NEED_MORE;  \
        o->consumed = len;                                                                         \
        return;                                                                                    \
    } while (0)

static bool ref_tchar(int c)
{
    return c > 0 && strchr("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                           c) != NULL;
}

static bool ref_ows(int c)
{
    return c == ' ' || c == '\t';
}

static bool ref_field_char(int c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int ref_hex(int c)
{
    static const char digits[] = "0123456789abcdef";
    const char *d;

    if (c >= 'A' && c <= 'F')
        c += 'a' - 'A';
    d = c > 0 ? strchr(digits, c) : NULL;
    return d != NULL ? (int)(d - digits) : -1;
}

static void ref_decode(const uint8_t *in, size_t len, struct decode_out *o)
{
    size_t p = 0;
    size_t start = 0;

    o->data_len = 0;
    o->trailers_len = 0;
    o->consumed = 0;
    for (;;) {
        uint64_t size = 0;
        int digits = 0;
        int v;

        start = p;
        while ((v = ref_hex(REF_AT(p))) >= 0) {
            if (++digits > 16 || size > ((uint64_t)INT64_MAX - (uint64_t)v) / 16) {
                o->result = HTTP1_CHUNK_ERROR;
                return;
            }
            size = size * 16 + (uint64_t)v;
            p++;
        }
        if (digits == 0)
            REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
        /* *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) */
        for (;;) {
            size_t q = p;
            size_t n;

            while (ref_ows(REF_AT(p)))
                p++;
            if (p >= len)
                REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
            if (in[p] != ';') {
                p = q;
                break;
            }
            p++;
            while (ref_ows(REF_AT(p)))
                p++;
            n = p;
            while (ref_tchar(REF_AT(p)))
                p++;
            if (p >= len || p == n)
                REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
            q = p;
            while (ref_ows(REF_AT(p)))
                p++;
            if (p >= len)
                REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
            if (in[p] != '=') {
                p = q;
                continue;
            }
            p++;
            while (ref_ows(REF_AT(p)))
                p++;
            if (p >= len)
                REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
            if (in[p] == '"') {
                for (p++;; p++) {
                    if (p >= len)
                        REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
                    if (in[p] == '"')
                        break;
                    if (in[p] == '\\')
                        p++;
                    if (!ref_field_char(REF_AT(p)))
                        REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
                }
                p++;
            } else {
                n = p;
                while (ref_tchar(REF_AT(p)))
                    p++;
                if (p >= len || p == n)
                    REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
            }
        }
        if (REF_AT(p) != '\r' || REF_AT(p + 1) != '\n') {
            p = REF_AT(p) == '\r' ? p + 1 : p;
            REF_STOP(HTTP1_MAX_CHUNK_LINE_BYTES);
        }
        p += 2;
        if (p - start > HTTP1_MAX_CHUNK_LINE_BYTES) {
            o->result = HTTP1_CHUNK_ERROR;
            return;
        }
        if (size == 0)
            break;
        if (size > len - p) {
            memcpy(o->data + o->data_len, in + p, len - p);
            o->data_len += len - p;
            o->result = HTTP1_CHUNK_NEED_MORE;
            o->consumed = len;
            return;
        }
        memcpy(o->data + o->data_len, in + p, (size_t)size);
        o->data_len += (size_t)size;
        p += (size_t)size;
        start = p;
        if (REF_AT(p) != '\r' || REF_AT(p + 1) != '\n') {
            p = REF_AT(p) == '\r' ? p + 1 : p;
            REF_STOP(SIZE_MAX);
        }
        p += 2;
    }
    /* trailer-section = *( field-line CRLF ), then CRLF */
    start = p;
    for (;;) {
        size_t name;
        size_t name_len;
        size_t value;
        size_t value_end;

        if (REF_AT(p) == '\r') {
            if (REF_AT(p + 1) != '\n') {
                p++;
                REF_STOP(HTTP1_MAX_TRAILER_BYTES);
            }
            p += 2;
            o->result = p - start > HTTP1_MAX_TRAILER_BYTES ? HTTP1_CHUNK_ERROR : HTTP1_CHUNK_DONE;
            o->consumed = p;
            return;
        }
        name = p;
        while (ref_tchar(REF_AT(p)))
            p++;
        if (p == name || REF_AT(p) != ':')
            REF_STOP(HTTP1_MAX_TRAILER_BYTES);
        name_len = p - name;
        p++;
        while (ref_ows(REF_AT(p)))
            p++;
        value = p;
        while (ref_field_char(REF_AT(p)))
            p++;
        if (REF_AT(p) != '\r' || REF_AT(p + 1) != '\n') {
            p = REF_AT(p) == '\r' ? p + 1 : p;
            REF_STOP(HTTP1_MAX_TRAILER_BYTES);
        }
        value_end = p;
        while (value_end > value && ref_ows(in[value_end - 1]))
            value_end--;
        p += 2;
        /* Inputs are kept small enough that the copy always fits. */
        memcpy(o->trailers + o->trailers_len, in + name, name_len);
        o->trailers_len += name_len;
        o->trailers[o->trailers_len++] = ':';
        if (value_end > value) {
            o->trailers[o->trailers_len++] = ' ';
            memcpy(o->trailers + o->trailers_len, in + value, value_end - value);
            o->trailers_len += value_end - value;
        }
        memcpy(o->trailers + o->trailers_len, "\r\n", 2);
        o->trailers_len += 2;
    }
}

static struct decode_out out_whole;
static struct decode_out out_bytes;
static struct decode_out out_split;
static struct decode_out out_ref;

static void same_outcome(const struct decode_out *a, const struct decode_out *b)
{
    CHECK(a->result == b->result);
    if (a->result == HTTP1_CHUNK_ERROR)
        return;
    CHECK(a->data_len == b->data_len && memcmp(a->data, b->data, a->data_len) == 0);
    CHECK(a->consumed == b->consumed);
    /* Trailers are only published once the section is complete. */
    if (a->result == HTTP1_CHUNK_DONE)
        CHECK(a->trailers_len == b->trailers_len &&
              memcmp(a->trailers, b->trailers, a->trailers_len) == 0);
}

static void fuzz_chunked(const uint8_t *data, size_t size, size_t piece)
{
    out_whole.data = malloc(size + 1);
    out_bytes.data = malloc(size + 1);
    out_split.data = malloc(size + 1);
    CHECK(out_whole.data && out_bytes.data && out_split.data);

    /* The answer must not depend on how the bytes were split. */
    decode(data, size, 0, &out_whole);
    decode(data, size, 1, &out_bytes);
    decode(data, size, piece, &out_split);
    same_outcome(&out_whole, &out_bytes);
    same_outcome(&out_whole, &out_split);
    /* Below this size the trailer copy cannot reach its limit, which the
     * reference does not model (the decoder counts OWS it later trims). */
    if (size < HTTP1_MAX_TRAILER_BYTES / 2) {
        out_ref.data = malloc(size + 1);
        CHECK(out_ref.data != NULL);
        ref_decode(data, size, &out_ref);
        same_outcome(&out_whole, &out_ref);
        free(out_ref.data);
    }
    if (out_whole.result == HTTP1_CHUNK_DONE) {
        CHECK(out_whole.consumed <= size);
        CHECK(out_whole.data_len < out_whole.consumed);
        check_trailers(&out_whole);
    } else if (out_whole.result == HTTP1_CHUNK_NEED_MORE) {
        CHECK(out_whole.consumed == size);
    }
    free(out_whole.data);
    free(out_bytes.data);
    free(out_split.data);
}

/* Encodes data as chunks (sizes taken from the data itself) with
 * http1_chunk_header, then decodes: the payload must come back unchanged. */
static void fuzz_round_trip(const uint8_t *data, size_t size)
{
    size_t cap = size * 24 + 64;
    char *enc = malloc(cap);
    size_t enc_len = 0;
    size_t off = 0;

    CHECK(enc != NULL);
    while (off < size) {
        size_t n = 1 + data[off] % 64;

        if (n > size - off)
            n = size - off;
        enc_len += http1_chunk_header(enc + enc_len, n);
        memcpy(enc + enc_len, data + off, n);
        enc_len += n;
        memcpy(enc + enc_len, "\r\n", 2);
        enc_len += 2;
        off += n;
    }
    enc_len += http1_chunk_header(enc + enc_len, 0);
    memcpy(enc + enc_len, "\r\n", 2);
    enc_len += 2;
    CHECK(enc_len <= cap);

    out_whole.data = malloc(enc_len + 1);
    out_bytes.data = malloc(enc_len + 1);
    CHECK(out_whole.data && out_bytes.data);
    decode((const uint8_t *)enc, enc_len, 0, &out_whole);
    decode((const uint8_t *)enc, enc_len, 1, &out_bytes);
    CHECK(out_whole.result == HTTP1_CHUNK_DONE);
    CHECK(out_whole.consumed == enc_len);
    CHECK(out_whole.data_len == size && memcmp(out_whole.data, data, size) == 0);
    CHECK(out_whole.trailers_len == 0);
    same_outcome(&out_whole, &out_bytes);
    free(out_whole.data);
    free(out_bytes.data);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "CONNECT", "POST"};
    uint8_t mode;

    if (size == 0)
        return 0;
    mode = data[0];
    data++;
    size--;
    switch (mode & 3) {
    case 0:
        fuzz_request(data, size);
        break;
    case 1:
        fuzz_response(data, size, methods[(mode >> 2) & 3]);
        break;
    case 2:
        fuzz_chunked(data, size, (size_t)(mode >> 2));
        break;
    default:
        fuzz_round_trip(data, size);
        break;
    }
    (void)http1_reason_phrase((int)size);
    return 0;
}
