/*
 * Unit tests for tlsserver: the ClientHello reader on hellos written by a
 * real OpenSSL client (whole, cut short, re-framed, corrupted) and on
 * hand-built ones for the edge cases, and the server handshake over a
 * socketpair with a certificate made here.
 * Every parse runs on an exact-size heap copy so ASan sees any over-read.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "tlsserver.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#define HELLO_BUF_BYTES 4096

/* ---- helpers: parsing ---- */

/* Parses from a heap copy of exactly len bytes: any read past the end is a
 * heap-buffer-overflow under ASan. */
static enum tlsserver_hello_result parse_exact(const uint8_t *bytes, size_t len,
                                               struct client_hello *out)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    enum tlsserver_hello_result r;

    CU_ASSERT_FATAL(copy != NULL);
    if (len > 0)
        memcpy(copy, bytes, len);
    r = tlsserver_parse_client_hello(copy, len, out);
    free(copy);
    return r;
}

/* Writes a ClientHello the way a real OpenSSL client does: a memory BIO
 * pair, one SSL_connect() call, and whatever it wrote is the hello. */
static size_t openssl_client_hello(const char *sni, const char *alpn_wire, size_t alpn_len,
                                   int max_version, uint8_t *out, size_t out_size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    int n;

    CU_ASSERT_FATAL(ctx != NULL && rbio != NULL && wbio != NULL);
    if (max_version != 0)
        CU_ASSERT_FATAL(SSL_CTX_set_max_proto_version(ctx, max_version) == 1);
    ssl = SSL_new(ctx);
    CU_ASSERT_FATAL(ssl != NULL);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_connect_state(ssl);
    if (sni != NULL)
        CU_ASSERT_FATAL(SSL_set_tlsext_host_name(ssl, sni) == 1);
    if (alpn_wire != NULL)
        CU_ASSERT_FATAL(SSL_set_alpn_protos(ssl, (const unsigned char *)alpn_wire,
                                            (unsigned int)alpn_len) == 0);
    CU_ASSERT_FATAL(SSL_connect(ssl) == -1);
    CU_ASSERT_FATAL(SSL_get_error(ssl, -1) == SSL_ERROR_WANT_READ);
    n = BIO_read(wbio, out, (int)out_size);
    CU_ASSERT_FATAL(n > 9 && (size_t)n < out_size);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static const char ALPN_H2_HTTP11[] = "\x02h2\x08http/1.1";

static size_t default_hello(uint8_t *out)
{
    return openssl_client_hello("www.example.com", ALPN_H2_HTTP11, sizeof ALPN_H2_HTTP11 - 1, 0,
                                out, HELLO_BUF_BYTES);
}

/* Re-frames the handshake message of a single-record hello into records of
 * at most frag bytes each. Returns the new length. */
static size_t reframe(const uint8_t *hello, size_t len, size_t frag, uint8_t *out, size_t out_size)
{
    const uint8_t *msg = hello + 5;
    size_t msg_len = len - 5;
    size_t pos = 0, n = 0;

    CU_ASSERT_FATAL(((size_t)hello[3] << 8 | hello[4]) == msg_len);
    while (pos < msg_len) {
        size_t take = msg_len - pos < frag ? msg_len - pos : frag;

        CU_ASSERT_FATAL(n + 5 + take <= out_size);
        out[n++] = 0x16;
        out[n++] = 0x03;
        out[n++] = pos == 0 ? 0x01 : 0x03;
        out[n++] = (uint8_t)(take >> 8);
        out[n++] = (uint8_t)take;
        memcpy(out + n, msg + pos, take);
        n += take;
        pos += take;
    }
    return n;
}

/* Frames msg into records split at the given offsets (ascending, 0 < s < len). */
static size_t frame_at(const uint8_t *msg, size_t msg_len, const size_t *splits, size_t nsplits,
                       uint8_t *out, size_t out_size)
{
    size_t start = 0, n = 0, i;

    for (i = 0; i <= nsplits; i++) {
        size_t end = i < nsplits ? splits[i] : msg_len;
        size_t take = end - start;

        CU_ASSERT_FATAL(n + 5 + take <= out_size);
        out[n++] = 0x16;
        out[n++] = 0x03;
        out[n++] = 0x03;
        out[n++] = (uint8_t)(take >> 8);
        out[n++] = (uint8_t)take;
        memcpy(out + n, msg + start, take);
        n += take;
        start = end;
    }
    return n;
}

/* Offsets of the length fields in a single-record hello from OpenSSL. */
struct hello_layout {
    size_t session_id_len_at;  /* 1 byte */
    size_t suites_len_at;      /* 2 bytes */
    size_t compression_len_at; /* 1 byte */
    size_t extensions_len_at;  /* 2 bytes */
    size_t sni_ext_len_at;     /* 2 bytes each from here on */
    size_t sni_list_len_at;
    size_t sni_name_len_at;
    size_t alpn_ext_len_at;
    size_t alpn_list_len_at;
    size_t alpn_first_len_at; /* 1 byte */
    size_t last_ext_len_at;
};

static size_t get16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

static void put16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void find_layout(const uint8_t *h, size_t len, struct hello_layout *l)
{
    size_t p = 5 + 4 + 2 + 32;
    size_t end;

    memset(l, 0, sizeof *l);
    l->session_id_len_at = p;
    p += 1 + h[p];
    l->suites_len_at = p;
    p += 2 + get16(h + p);
    l->compression_len_at = p;
    p += 1 + h[p];
    l->extensions_len_at = p;
    end = p + 2 + get16(h + p);
    CU_ASSERT_FATAL(end == len);
    p += 2;
    while (p < end) {
        size_t type = get16(h + p);

        l->last_ext_len_at = p + 2;
        if (type == 0) {
            l->sni_ext_len_at = p + 2;
            l->sni_list_len_at = p + 4;
            l->sni_name_len_at = p + 7;
        } else if (type == 16) {
            l->alpn_ext_len_at = p + 2;
            l->alpn_list_len_at = p + 4;
            l->alpn_first_len_at = p + 6;
        }
        p += 4 + get16(h + p + 2);
    }
    CU_ASSERT_FATAL(l->sni_ext_len_at != 0 && l->alpn_ext_len_at != 0);
}

/* ---- helpers: hand-built hellos ---- */

struct bytes {
    uint8_t b[40000];
    size_t n;
};

static void add(struct bytes *x, const void *p, size_t n)
{
    CU_ASSERT_FATAL(x->n + n <= sizeof x->b);
    memcpy(x->b + x->n, p, n);
    x->n += n;
}

static void add8(struct bytes *x, size_t v)
{
    uint8_t b = (uint8_t)v;

    add(x, &b, 1);
}

static void add16(struct bytes *x, size_t v)
{
    add8(x, v >> 8);
    add8(x, v);
}

static void add_ext(struct bytes *x, size_t type, const void *data, size_t n)
{
    add16(x, type);
    add16(x, n);
    add(x, data, n);
}

static void add_sni_ext(struct bytes *x, const char *name, size_t name_len)
{
    struct bytes d = {.n = 0};

    add16(&d, name_len + 3);
    add8(&d, 0);
    add16(&d, name_len);
    add(&d, name, name_len);
    add_ext(x, 0, d.b, d.n);
}

/* The handshake message of a ClientHello with the given extensions block
 * contents (or no block at all when exts is NULL). */
static void build_hello_msg(const struct bytes *exts, struct bytes *msg)
{
    struct bytes body = {.n = 0};
    static const uint8_t random[32];

    add16(&body, 0x0303);
    add(&body, random, sizeof random);
    add8(&body, 0);
    add16(&body, 2);
    add16(&body, 0x1301);
    add8(&body, 1);
    add8(&body, 0);
    if (exts != NULL) {
        add16(&body, exts->n);
        add(&body, exts->b, exts->n);
    }
    msg->n = 0;
    add8(msg, 1);
    add8(msg, body.n >> 16);
    add16(msg, body.n & 0xffff);
    add(msg, body.b, body.n);
}

/* One record, or several of at most 16384 bytes when the message is larger. */
static void build_hello(const struct bytes *exts, struct bytes *out)
{
    struct bytes msg;
    size_t pos = 0;

    build_hello_msg(exts, &msg);
    out->n = 0;
    while (pos < msg.n) {
        size_t take = msg.n - pos < 16384 ? msg.n - pos : 16384;

        add8(out, 0x16);
        add16(out, 0x0301);
        add16(out, take);
        add(out, msg.b + pos, take);
        pos += take;
    }
}

static enum tlsserver_hello_result parse_built(const struct bytes *exts, struct client_hello *ch)
{
    static struct bytes hello;

    build_hello(exts, &hello);
    return parse_exact(hello.b, hello.n, ch);
}

/* ---- ClientHello tests ---- */

static void test_reads_sni_and_alpn_from_openssl_hello(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    size_t n = default_hello(h);
    struct client_hello ch;

    CU_ASSERT_EQUAL_FATAL(parse_exact(h, n, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_TRUE(ch.has_sni);
    CU_ASSERT_STRING_EQUAL(ch.sni, "www.example.com");
    CU_ASSERT_EQUAL_FATAL(ch.alpn_count, 2);
    CU_ASSERT_STRING_EQUAL(ch.alpn[0], "h2");
    CU_ASSERT_STRING_EQUAL(ch.alpn[1], "http/1.1");
}

static void test_reads_tls12_only_hello(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    size_t n = openssl_client_hello("tls12.example", ALPN_H2_HTTP11, sizeof ALPN_H2_HTTP11 - 1,
                                    TLS1_2_VERSION, h, sizeof h);
    struct client_hello ch;

    CU_ASSERT_EQUAL_FATAL(parse_exact(h, n, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "tls12.example");
    CU_ASSERT_EQUAL(ch.alpn_count, 2);
}

static void test_hello_without_sni_or_alpn_has_neither(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    size_t n = openssl_client_hello(NULL, NULL, 0, 0, h, sizeof h);
    struct client_hello ch;

    CU_ASSERT_EQUAL_FATAL(parse_exact(h, n, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_FALSE(ch.has_sni);
    CU_ASSERT_STRING_EQUAL(ch.sni, "");
    CU_ASSERT_EQUAL(ch.alpn_count, 0);
}

static void test_uppercase_sni_is_lowercased(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    size_t n = openssl_client_hello("WWW.Example.COM", NULL, 0, 0, h, sizeof h);
    struct client_hello ch;

    CU_ASSERT_EQUAL_FATAL(parse_exact(h, n, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "www.example.com");
}

static void test_every_proper_prefix_is_incomplete(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    size_t n = default_hello(h);
    struct client_hello ch;
    size_t i;

    for (i = 0; i < n; i++) {
        enum tlsserver_hello_result r = parse_exact(h, i, &ch);

        if (r != TLSSERVER_HELLO_INCOMPLETE)
            fprintf(stderr, "prefix of %zu bytes gave %d\n", i, (int)r);
        CU_ASSERT_EQUAL(r, TLSSERVER_HELLO_INCOMPLETE);
    }
}

static void test_http_request_is_not_tls(void)
{
    static const char get[] = "GET / HTTP/1.1\r\n";
    static const uint8_t sslv2ish[] = {0x16, 0x02, 0x00};
    struct client_hello ch;

    CU_ASSERT_EQUAL(parse_exact((const uint8_t *)get, sizeof get - 1, &ch),
                    TLSSERVER_HELLO_NOT_TLS);
    CU_ASSERT_EQUAL(parse_exact((const uint8_t *)get, 1, &ch), TLSSERVER_HELLO_NOT_TLS);
    CU_ASSERT_EQUAL(parse_exact(sslv2ish, sizeof sslv2ish, &ch), TLSSERVER_HELLO_NOT_TLS);
    CU_ASSERT_EQUAL(parse_exact(sslv2ish, 0, &ch), TLSSERVER_HELLO_INCOMPLETE);
}

static void test_looks_like_tls_checks_three_bytes(void)
{
    static const uint8_t tls10[] = {0x16, 0x03, 0x01};
    static const uint8_t tls13[] = {0x16, 0x03, 0x04};
    static const uint8_t future[] = {0x16, 0x03, 0x05};
    static const uint8_t alert[] = {0x15, 0x03, 0x01};

    CU_ASSERT_TRUE(tlsserver_looks_like_tls(tls10, 3));
    CU_ASSERT_TRUE(tlsserver_looks_like_tls(tls13, 3));
    CU_ASSERT_FALSE(tlsserver_looks_like_tls(tls10, 2));
    CU_ASSERT_FALSE(tlsserver_looks_like_tls(future, 3));
    CU_ASSERT_FALSE(tlsserver_looks_like_tls(alert, 3));
    CU_ASSERT_FALSE(tlsserver_looks_like_tls((const uint8_t *)"GET", 3));
}

static void test_hello_split_across_records_parses_identically(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    static uint8_t framed[HELLO_BUF_BYTES * 6];
    size_t n = default_hello(h);
    size_t msg_len = n - 5;
    size_t cuts[] = {1, 2, 3, 4, 5, 40, msg_len / 2, msg_len - 1};
    struct client_hello whole, split;
    size_t i, m;

    CU_ASSERT_EQUAL_FATAL(parse_exact(h, n, &whole), TLSSERVER_HELLO_COMPLETE);
    for (i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        m = frame_at(h + 5, msg_len, &cuts[i], 1, framed, sizeof framed);
        CU_ASSERT_EQUAL(m, n + 5);
        CU_ASSERT_EQUAL_FATAL(parse_exact(framed, m, &split), TLSSERVER_HELLO_COMPLETE);
        CU_ASSERT_EQUAL(memcmp(&whole, &split, sizeof whole), 0);
    }
    /* Three records, the handshake header split between the first two. */
    m = frame_at(h + 5, msg_len, (size_t[]){2, 100}, 2, framed, sizeof framed);
    CU_ASSERT_EQUAL_FATAL(parse_exact(framed, m, &split), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(split.sni, "www.example.com");
    CU_ASSERT_EQUAL(split.alpn_count, 2);
    /* One byte per record, and every prefix of that is still incomplete. */
    m = reframe(h, n, 1, framed, sizeof framed);
    CU_ASSERT_EQUAL_FATAL(parse_exact(framed, m, &split), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_EQUAL(memcmp(&whole, &split, sizeof whole), 0);
    for (i = 0; i < m; i += 7)
        CU_ASSERT_EQUAL(parse_exact(framed, i, &split), TLSSERVER_HELLO_INCOMPLETE);
}

static void test_bytes_after_the_hello_records_are_ignored(void)
{
    uint8_t h[HELLO_BUF_BYTES + 6];
    size_t n = default_hello(h);
    static const uint8_t ccs[] = {0x14, 0x03, 0x03, 0x00, 0x01, 0x01};
    struct client_hello ch;

    memcpy(h + n, ccs, sizeof ccs);
    CU_ASSERT_EQUAL(parse_exact(h, n + sizeof ccs, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "www.example.com");
}

/* Sets a 1- or 2-byte big-endian field at off to value and expects result;
 * also parses every prefix of the corrupted bytes, which must not over-read. */
static void expect_with_field(const uint8_t *h, size_t n, size_t off, size_t width, size_t value,
                              enum tlsserver_hello_result expected)
{
    uint8_t c[HELLO_BUF_BYTES];
    struct client_hello ch;
    enum tlsserver_hello_result r;
    size_t i;

    memcpy(c, h, n);
    if (width == 1)
        c[off] = (uint8_t)value;
    else
        put16(c + off, value);
    r = parse_exact(c, n, &ch);
    if (r != expected)
        fprintf(stderr, "field at %zu set to %zu: got %d, want %d\n", off, value, (int)r,
                (int)expected);
    CU_ASSERT_EQUAL(r, expected);
    for (i = 0; i < n; i++)
        (void)parse_exact(c, i, &ch);
}

static void test_corrupted_lengths_are_malformed(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    size_t n = default_hello(h);
    struct hello_layout l;
    size_t i;

    find_layout(h, n, &l);
    /* Record header. */
    expect_with_field(h, n, 3, 2, 0, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, 3, 2, 16385, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, 3, 2, 0xffff, TLSSERVER_HELLO_MALFORMED);
    /* Handshake header: shorter than the record leaves bytes over. */
    expect_with_field(h, n, 7, 2, get16(h + 7) - 1, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, 5, 1, 2, TLSSERVER_HELLO_MALFORMED);    /* not a ClientHello */
    expect_with_field(h, n, 6, 1, 0x01, TLSSERVER_HELLO_TOO_LARGE); /* > 16 KiB: not broken */
    /* Body fields whose bounds are fixed. */
    expect_with_field(h, n, l.session_id_len_at, 1, 33, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.session_id_len_at, 1, 0xff, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.suites_len_at, 2, get16(h + l.suites_len_at) + 1,
                      TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.suites_len_at, 2, get16(h + l.suites_len_at) - 1,
                      TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.suites_len_at, 2, 0, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.suites_len_at, 2, 0xfffe, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.compression_len_at, 1, 0, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.compression_len_at, 1, 0xff, TLSSERVER_HELLO_MALFORMED);
    /* Nested lengths, each off by one in both directions. */
    {
        const size_t at[] = {l.extensions_len_at, l.sni_ext_len_at,  l.sni_list_len_at,
                             l.sni_name_len_at,   l.alpn_ext_len_at, l.alpn_list_len_at,
                             l.last_ext_len_at};

        for (i = 0; i < sizeof at / sizeof at[0]; i++) {
            size_t v = get16(h + at[i]);

            expect_with_field(h, n, at[i], 2, v + 1, TLSSERVER_HELLO_MALFORMED);
            expect_with_field(h, n, at[i], 2, v - 1, TLSSERVER_HELLO_MALFORMED);
            expect_with_field(h, n, at[i], 2, 0xffff, TLSSERVER_HELLO_MALFORMED);
        }
    }
    expect_with_field(h, n, l.alpn_first_len_at, 1, 3, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.alpn_first_len_at, 1, 1, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, l.alpn_first_len_at, 1, 0, TLSSERVER_HELLO_MALFORMED);
    /* A longer handshake message is not wrong, just not all here yet. */
    expect_with_field(h, n, 7, 2, get16(h + 7) + 1, TLSSERVER_HELLO_INCOMPLETE);
}

static void test_record_header_is_checked(void)
{
    uint8_t h[HELLO_BUF_BYTES];
    static uint8_t framed[HELLO_BUF_BYTES * 2];
    size_t n = default_hello(h);
    size_t m;
    struct client_hello ch;

    expect_with_field(h, n, 1, 2, 0x0300, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, 1, 2, 0x0305, TLSSERVER_HELLO_MALFORMED);
    expect_with_field(h, n, 1, 2, 0x0304, TLSSERVER_HELLO_COMPLETE);
    /* The second fragment of a split hello must be a handshake record too,
     * and it is refused as soon as its first byte is seen. */
    m = reframe(h, n, 100, framed, sizeof framed);
    framed[105] = 0x17;
    CU_ASSERT_EQUAL(parse_exact(framed, m, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_exact(framed, 106, &ch), TLSSERVER_HELLO_MALFORMED);
    framed[105] = 0x16;
    framed[107] = 0x07;
    CU_ASSERT_EQUAL(parse_exact(framed, 108, &ch), TLSSERVER_HELLO_MALFORMED);
}

static void test_hello_without_extensions_is_complete(void)
{
    struct bytes empty = {.n = 0};
    struct client_hello ch;

    CU_ASSERT_EQUAL(parse_built(NULL, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_FALSE(ch.has_sni);
    CU_ASSERT_EQUAL(parse_built(&empty, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_EQUAL(ch.alpn_count, 0);
}

static void test_duplicate_extensions_are_malformed(void)
{
    static struct bytes exts;
    struct client_hello ch;

    exts.n = 0;
    add_sni_ext(&exts, "a.example", 9);
    add_sni_ext(&exts, "b.example", 9);
    CU_ASSERT_EQUAL(parse_built(&exts, &ch), TLSSERVER_HELLO_MALFORMED);
    exts.n = 0;
    add_ext(&exts, 0xfe0d, "x", 1);
    add_sni_ext(&exts, "a.example", 9);
    add_ext(&exts, 0xfe0d, "y", 1);
    CU_ASSERT_EQUAL(parse_built(&exts, &ch), TLSSERVER_HELLO_MALFORMED);
    exts.n = 0;
    add_ext(&exts, 0xffff, "", 0);
    add_ext(&exts, 0xfffe, "", 0);
    add_sni_ext(&exts, "a.example", 9);
    CU_ASSERT_EQUAL(parse_built(&exts, &ch), TLSSERVER_HELLO_COMPLETE);
}

static enum tlsserver_hello_result parse_sni(const char *name, size_t len, struct client_hello *ch)
{
    static struct bytes exts;

    exts.n = 0;
    add_sni_ext(&exts, name, len);
    return parse_built(&exts, ch);
}

static void test_sni_is_validated_and_normalised(void)
{
    char name[300];
    struct client_hello ch;

    CU_ASSERT_EQUAL(parse_sni("Api.Example.COM.", 16, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "api.example.com");
    CU_ASSERT_EQUAL(parse_sni("under_score-9.test", 18, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "under_score-9.test");
    CU_ASSERT_EQUAL(parse_sni("a\0b.test", 8, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni("a b.test", 8, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni("a/b.test", 8, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni("", 0, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni(".", 1, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni("a.test..", 8, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni("a..test", 7, &ch), TLSSERVER_HELLO_MALFORMED);
    CU_ASSERT_EQUAL(parse_sni(".a.test", 7, &ch), TLSSERVER_HELLO_MALFORMED);
    memset(name, 'a', sizeof name);
    CU_ASSERT_EQUAL(parse_sni(name, 255, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_EQUAL(strlen(ch.sni), 255);
    CU_ASSERT_EQUAL(parse_sni(name, 256, &ch), TLSSERVER_HELLO_MALFORMED);
}

static void test_first_host_name_entry_wins(void)
{
    static struct bytes exts;
    struct bytes d = {.n = 0};
    struct client_hello ch;

    add16(&d, 3 + 5 + 3 + 6 + 3 + 6);
    add8(&d, 7); /* an unknown name type first */
    add16(&d, 5);
    add(&d, "other", 5);
    add8(&d, 0);
    add16(&d, 6);
    add(&d, "first.", 6);
    add8(&d, 0);
    add16(&d, 6);
    add(&d, "second", 6);
    exts.n = 0;
    add_ext(&exts, 0, d.b, d.n);
    CU_ASSERT_EQUAL_FATAL(parse_built(&exts, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "first");
}

static void test_alpn_keeps_first_eight_short_names(void)
{
    static struct bytes exts;
    struct bytes list = {.n = 0}, d = {.n = 0};
    char longname[40];
    struct client_hello ch;
    int i;

    memset(longname, 'x', sizeof longname);
    add8(&list, 32);
    add(&list, longname, 32); /* one too long for a slot: skipped */
    add8(&list, 3);
    add(&list, "a\0b", 3); /* not representable as a string: skipped */
    for (i = 0; i < 10; i++) {
        char p[16];

        snprintf(p, sizeof p, "p%d", i);
        add8(&list, strlen(p));
        add(&list, p, strlen(p));
    }
    add8(&list, 31);
    add(&list, longname, 31);
    add16(&d, list.n);
    add(&d, list.b, list.n);
    exts.n = 0;
    add_ext(&exts, 16, d.b, d.n);
    CU_ASSERT_EQUAL_FATAL(parse_built(&exts, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_EQUAL_FATAL(ch.alpn_count, TLSSERVER_MAX_ALPN);
    CU_ASSERT_STRING_EQUAL(ch.alpn[0], "p0");
    CU_ASSERT_STRING_EQUAL(ch.alpn[7], "p7");

    /* An empty protocol name is a protocol error (RFC 7301 3.1). */
    list.n = 0;
    add8(&list, 2);
    add(&list, "h2", 2);
    add8(&list, 0);
    d.n = 0;
    add16(&d, list.n);
    add(&d, list.b, list.n);
    exts.n = 0;
    add_ext(&exts, 16, d.b, d.n);
    CU_ASSERT_EQUAL(parse_built(&exts, &ch), TLSSERVER_HELLO_MALFORMED);
}

static void test_oversized_hello_is_refused_early(void)
{
    static struct bytes exts, hello;
    static uint8_t padding[17000];
    struct client_hello ch;

    exts.n = 0;
    add_sni_ext(&exts, "big.example", 11);
    add_ext(&exts, 21, padding, sizeof padding);
    build_hello(&exts, &hello);
    CU_ASSERT_EQUAL(parse_exact(hello.b, hello.n, &ch), TLSSERVER_HELLO_TOO_LARGE);
    /* The handshake header is enough to know it will not fit. */
    CU_ASSERT_EQUAL(parse_exact(hello.b, 9, &ch), TLSSERVER_HELLO_TOO_LARGE);
    CU_ASSERT_EQUAL(parse_exact(hello.b, 8, &ch), TLSSERVER_HELLO_INCOMPLETE);

    /* Exactly at the limit still parses; one byte more does not. The
     * message takes 71 bytes besides the padding extension's contents. */
    exts.n = 0;
    add_sni_ext(&exts, "big.example", 11);
    add_ext(&exts, 21, padding, TLSSERVER_MAX_HELLO_BYTES - 71);
    build_hello(&exts, &hello);
    CU_ASSERT_EQUAL(hello.n, TLSSERVER_MAX_HELLO_BYTES + 5);
    CU_ASSERT_EQUAL(parse_exact(hello.b, hello.n, &ch), TLSSERVER_HELLO_COMPLETE);
    CU_ASSERT_STRING_EQUAL(ch.sni, "big.example");
    exts.n = 0;
    add_sni_ext(&exts, "big.example", 11);
    add_ext(&exts, 21, padding, TLSSERVER_MAX_HELLO_BYTES - 70);
    build_hello(&exts, &hello);
    CU_ASSERT_EQUAL(hello.n, TLSSERVER_MAX_HELLO_BYTES + 1 + 10);
    CU_ASSERT_EQUAL(parse_exact(hello.b, hello.n, &ch), TLSSERVER_HELLO_TOO_LARGE);
}

static void test_trailing_bytes_in_hello_record_are_malformed(void)
{
    uint8_t h[HELLO_BUF_BYTES + 1];
    size_t n = default_hello(h);
    struct client_hello ch;

    h[n] = 0;
    put16(h + 3, get16(h + 3) + 1);
    CU_ASSERT_EQUAL(parse_exact(h, n + 1, &ch), TLSSERVER_HELLO_MALFORMED);
}

/* ---- helpers: certificates ---- */

static long next_serial = 1;

static void add_ext_conf(X509 *cert, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);

    CU_ASSERT_FATAL(ext != NULL);
    CU_ASSERT_FATAL(X509_add_ext(cert, ext, -1) == 1);
    X509_EXTENSION_free(ext);
}

/* A CA (issuer NULL: self-signed) or a leaf for san, valid now. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san)
{
    X509 *cert = X509_new();
    X509V3_CTX v3;
    X509_NAME *name;

    CU_ASSERT_FATAL(cert != NULL);
    CU_ASSERT_FATAL(X509_set_version(cert, X509_VERSION_3) == 1);
    CU_ASSERT_FATAL(ASN1_INTEGER_set(X509_get_serialNumber(cert), next_serial++) == 1);
    CU_ASSERT_FATAL(X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL);
    CU_ASSERT_FATAL(X509_gmtime_adj(X509_getm_notAfter(cert), 86400) != NULL);
    CU_ASSERT_FATAL(X509_set_pubkey(cert, key) == 1);
    name = X509_get_subject_name(cert);
    CU_ASSERT_FATAL(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                                               -1, -1, 0) == 1);
    CU_ASSERT_FATAL(
        X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name) == 1);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : cert, cert, NULL, NULL, 0);
    add_ext_conf(cert, &v3, NID_subject_key_identifier, "hash");
    if (issuer == NULL) {
        add_ext_conf(cert, &v3, NID_basic_constraints, "critical,CA:TRUE");
        add_ext_conf(cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext_conf(cert, &v3, NID_authority_key_identifier, "keyid");
        add_ext_conf(cert, &v3, NID_basic_constraints, "CA:FALSE");
        add_ext_conf(cert, &v3, NID_ext_key_usage, "serverAuth");
        add_ext_conf(cert, &v3, NID_subject_alt_name, san);
    }
    CU_ASSERT_FATAL(X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
    return cert;
}

static EVP_PKEY *ca_key, *leaf_key;
static X509 *ca_cert, *leaf_cert;

/* Made on first use inside a test, where CUnit assertions may run. */
static void pki_ensure(void)
{
    if (ca_cert != NULL)
        return;
    ca_key = EVP_EC_gen("P-256");
    leaf_key = EVP_EC_gen("P-256");
    CU_ASSERT_FATAL(ca_key != NULL && leaf_key != NULL);
    ca_cert = make_cert("tapwire test CA", ca_key, NULL, NULL, NULL);
    leaf_cert = make_cert("www.example.com", leaf_key, ca_cert, ca_key, "DNS:www.example.com");
}

static int pki_clean(void)
{
    X509_free(leaf_cert);
    X509_free(ca_cert);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(ca_key);
    return 0;
}

/* ---- handshake tests ---- */

struct accept_job {
    SSL_CTX *ctx;
    int fd;
    int timeout_ms;
    SSL *ssl;
    char err[256];
    long long elapsed_ms;
};

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *accept_main(void *arg)
{
    struct accept_job *job = arg;
    long long start = mono_ms();

    job->err[0] = '\0';
    job->ssl = tlsserver_accept(job->ctx, job->fd, leaf_cert, ca_cert, leaf_key, job->timeout_ms,
                                job->err, sizeof job->err);
    job->elapsed_ms = mono_ms() - start;
    return NULL;
}

struct pair {
    int server_fd;
    int client_fd;
    pthread_t thread;
    struct accept_job job;
};

static void pair_start(struct pair *p, SSL_CTX *ctx, int timeout_ms)
{
    int fds[2];
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};

    pki_ensure();
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    /* The client side blocks; a broken server must not hang the test. */
    CU_ASSERT_FATAL(setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    p->server_fd = fds[0];
    p->client_fd = fds[1];
    memset(&p->job, 0, sizeof p->job);
    p->job.ctx = ctx;
    p->job.fd = fds[0];
    p->job.timeout_ms = timeout_ms;
    CU_ASSERT_FATAL(pthread_create(&p->thread, NULL, accept_main, &p->job) == 0);
}

static void pair_finish(struct pair *p)
{
    CU_ASSERT(pthread_join(p->thread, NULL) == 0);
    if (p->job.ssl != NULL)
        SSL_free(p->job.ssl);
    if (p->client_fd >= 0)
        close(p->client_fd);
    close(p->server_fd);
}

/* A verifying client for www.example.com; trusts our CA when is_trusting. */
static SSL *make_client(SSL_CTX **cctx_out, int fd, const char *alpn, size_t alpn_len,
                        bool is_trusting)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;

    CU_ASSERT_FATAL(cctx != NULL);
    if (is_trusting)
        CU_ASSERT_FATAL(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), ca_cert) == 1);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(cctx);
    CU_ASSERT_FATAL(ssl != NULL);
    CU_ASSERT_FATAL(SSL_set_fd(ssl, fd) == 1);
    CU_ASSERT_FATAL(SSL_set_tlsext_host_name(ssl, "www.example.com") == 1);
    CU_ASSERT_FATAL(SSL_set1_host(ssl, "www.example.com") == 1);
    if (alpn != NULL)
        CU_ASSERT_FATAL(
            SSL_set_alpn_protos(ssl, (const unsigned char *)alpn, (unsigned int)alpn_len) == 0);
    *cctx_out = cctx;
    return ssl;
}

static SSL_CTX *server_ctx(const char *keylog)
{
    char err[256] = "";
    SSL_CTX *ctx = tlsserver_ctx_new(keylog, err, sizeof err);

    if (ctx == NULL)
        fprintf(stderr, "tlsserver_ctx_new: %s\n", err);
    CU_ASSERT_FATAL(ctx != NULL);
    return ctx;
}

static void test_handshake_selects_http11_when_offered(void)
{
    SSL_CTX *ctx = server_ctx(NULL);
    SSL_CTX *cctx;
    struct pair p;
    SSL *client;
    const unsigned char *proto = NULL;
    unsigned int proto_len = 0;
    int flags;

    pair_start(&p, ctx, 5000);
    client = make_client(&cctx, p.client_fd, ALPN_H2_HTTP11, sizeof ALPN_H2_HTTP11 - 1, true);
    CU_ASSERT_EQUAL(SSL_connect(client), 1);
    CU_ASSERT_EQUAL(SSL_get_verify_result(client), X509_V_OK);
    SSL_get0_alpn_selected(client, &proto, &proto_len);
    CU_ASSERT_EQUAL(proto_len, 8);
    CU_ASSERT(proto != NULL && memcmp(proto, "http/1.1", 8) == 0);
    /* The client gets the chain: leaf and CA. */
    CU_ASSERT_EQUAL(sk_X509_num(SSL_get_peer_cert_chain(client)), 2);
    CU_ASSERT_EQUAL(pthread_join(p.thread, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(p.job.ssl);
    CU_ASSERT_STRING_EQUAL(p.job.err, "");
    /* The rest of the connection code relies on blocking I/O. */
    flags = fcntl(p.server_fd, F_GETFL);
    CU_ASSERT(flags >= 0 && (flags & O_NONBLOCK) == 0);
    if (p.job.ssl != NULL) {
        CU_ASSERT_EQUAL(SSL_write(p.job.ssl, "hi", 2), 2);
        {
            char buf[4];

            CU_ASSERT_EQUAL(SSL_read(client, buf, sizeof buf), 2);
        }
        SSL_free(p.job.ssl);
    }
    SSL_free(client);
    SSL_CTX_free(cctx);
    close(p.client_fd);
    close(p.server_fd);
    SSL_CTX_free(ctx);
}

static void test_handshake_without_http11_has_no_alpn(void)
{
    SSL_CTX *ctx = server_ctx(NULL);
    SSL_CTX *cctx;
    struct pair p;
    SSL *client;
    const unsigned char *proto = NULL;
    unsigned int proto_len = 0;

    pair_start(&p, ctx, 5000);
    client = make_client(&cctx, p.client_fd, "\x02h2", 3, true);
    CU_ASSERT_EQUAL(SSL_connect(client), 1);
    SSL_get0_alpn_selected(client, &proto, &proto_len);
    CU_ASSERT_EQUAL(proto_len, 0);
    pair_finish(&p);
    CU_ASSERT_STRING_EQUAL(p.job.err, "");
    SSL_free(client);
    SSL_CTX_free(cctx);
    SSL_CTX_free(ctx);
}

static void test_client_rejecting_certificate_is_reported(void)
{
    SSL_CTX *ctx = server_ctx(NULL);
    SSL_CTX *cctx;
    struct pair p;
    SSL *client;

    pair_start(&p, ctx, 5000);
    client = make_client(&cctx, p.client_fd, NULL, 0, false);
    CU_ASSERT_NOT_EQUAL(SSL_connect(client), 1);
    SSL_free(client);
    SSL_CTX_free(cctx);
    close(p.client_fd);
    p.client_fd = -1;
    pair_finish(&p);
    CU_ASSERT_PTR_NULL(p.job.ssl);
    CU_ASSERT_STRING_EQUAL(p.job.err, "client rejected our certificate: tlsv1 alert unknown ca");
    ERR_clear_error();
    SSL_CTX_free(ctx);
}

static void test_client_closing_is_reported(void)
{
    SSL_CTX *ctx = server_ctx(NULL);
    struct pair p;

    pair_start(&p, ctx, 5000);
    close(p.client_fd);
    p.client_fd = -1;
    pair_finish(&p);
    CU_ASSERT_PTR_NULL(p.job.ssl);
    CU_ASSERT_STRING_EQUAL(p.job.err, "client closed during TLS handshake");
    SSL_CTX_free(ctx);
}

static void test_plain_http_client_is_reported(void)
{
    static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    SSL_CTX *ctx = server_ctx(NULL);
    struct pair p;

    pair_start(&p, ctx, 5000);
    CU_ASSERT_EQUAL(write(p.client_fd, get, sizeof get - 1), (ssize_t)(sizeof get - 1));
    pair_finish(&p);
    CU_ASSERT_PTR_NULL(p.job.ssl);
    CU_ASSERT_STRING_EQUAL(p.job.err, "TLS handshake with client failed: http request");
    SSL_CTX_free(ctx);
}

static void test_silent_client_times_out(void)
{
    SSL_CTX *ctx = server_ctx(NULL);
    struct pair p;
    int flags;

    pair_start(&p, ctx, 200);
    CU_ASSERT_EQUAL(pthread_join(p.thread, NULL), 0);
    CU_ASSERT_PTR_NULL(p.job.ssl);
    CU_ASSERT_STRING_EQUAL(p.job.err, "client TLS handshake timed out after 200 ms");
    CU_ASSERT(p.job.elapsed_ms >= 190 && p.job.elapsed_ms < 1000);
    flags = fcntl(p.server_fd, F_GETFL);
    CU_ASSERT(flags >= 0 && (flags & O_NONBLOCK) == 0);
    close(p.client_fd);
    close(p.server_fd);
    SSL_CTX_free(ctx);
}

static void test_keylog_gets_one_line_per_secret(void)
{
    char path[] = "/tmp/tlsserver-keylog-XXXXXX";
    int fd = mkstemp(path);
    SSL_CTX *ctx, *cctx;
    struct pair p;
    SSL *client;
    char buf[4096];
    ssize_t n;
    struct stat st;
    int lines = 0, i;

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT_FATAL(unlink(path) == 0); /* let the module create it, with its mode */
    ctx = server_ctx(path);
    pair_start(&p, ctx, 5000);
    client = make_client(&cctx, p.client_fd, NULL, 0, true);
    CU_ASSERT_EQUAL(SSL_connect(client), 1);
    pair_finish(&p);
    SSL_free(client);
    SSL_CTX_free(cctx);
    SSL_CTX_free(ctx);

    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unlink(path);
    CU_ASSERT_FATAL(n > 0);
    buf[n] = '\0';
    CU_ASSERT_EQUAL(buf[n - 1], '\n');
    for (i = 0; i < n; i++)
        lines += buf[i] == '\n';
    /* TLS 1.3 server side: two handshake, two traffic, one exporter secret. */
    CU_ASSERT_EQUAL(lines, 5);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "SERVER_HANDSHAKE_TRAFFIC_SECRET "));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "CLIENT_TRAFFIC_SECRET_0 "));
}

int main(void)
{
    CU_pSuite parse, handshake;
    unsigned int failures;

    /* A client that hangs up while we write must not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    parse = CU_add_suite("tlsserver_client_hello", NULL, NULL);
    handshake = CU_add_suite("tlsserver_handshake", NULL, pki_clean);
    if (parse == NULL || handshake == NULL ||
        !CU_add_test(parse, "reads SNI and ALPN from an OpenSSL hello",
                     test_reads_sni_and_alpn_from_openssl_hello) ||
        !CU_add_test(parse, "reads a TLS 1.2-only hello", test_reads_tls12_only_hello) ||
        !CU_add_test(parse, "hello without SNI or ALPN has neither",
                     test_hello_without_sni_or_alpn_has_neither) ||
        !CU_add_test(parse, "uppercase SNI is lowercased", test_uppercase_sni_is_lowercased) ||
        !CU_add_test(parse, "every proper prefix is incomplete",
                     test_every_proper_prefix_is_incomplete) ||
        !CU_add_test(parse, "HTTP request is not TLS", test_http_request_is_not_tls) ||
        !CU_add_test(parse, "looks_like_tls checks three bytes",
                     test_looks_like_tls_checks_three_bytes) ||
        !CU_add_test(parse, "hello split across records parses identically",
                     test_hello_split_across_records_parses_identically) ||
        !CU_add_test(parse, "bytes after the hello records are ignored",
                     test_bytes_after_the_hello_records_are_ignored) ||
        !CU_add_test(parse, "corrupted lengths are malformed",
                     test_corrupted_lengths_are_malformed) ||
        !CU_add_test(parse, "record header is checked", test_record_header_is_checked) ||
        !CU_add_test(parse, "hello without extensions is complete",
                     test_hello_without_extensions_is_complete) ||
        !CU_add_test(parse, "duplicate extensions are malformed",
                     test_duplicate_extensions_are_malformed) ||
        !CU_add_test(parse, "SNI is validated and normalised",
                     test_sni_is_validated_and_normalised) ||
        !CU_add_test(parse, "first host_name entry wins", test_first_host_name_entry_wins) ||
        !CU_add_test(parse, "ALPN keeps the first eight short names",
                     test_alpn_keeps_first_eight_short_names) ||
        !CU_add_test(parse, "oversized hello is refused early as too large",
                     test_oversized_hello_is_refused_early) ||
        !CU_add_test(parse, "trailing bytes in the hello record are malformed",
                     test_trailing_bytes_in_hello_record_are_malformed) ||
        !CU_add_test(handshake, "selects http/1.1 when offered",
                     test_handshake_selects_http11_when_offered) ||
        !CU_add_test(handshake, "without http/1.1 there is no ALPN",
                     test_handshake_without_http11_has_no_alpn) ||
        !CU_add_test(handshake, "client rejecting our certificate is reported",
                     test_client_rejecting_certificate_is_reported) ||
        !CU_add_test(handshake, "client closing is reported", test_client_closing_is_reported) ||
        !CU_add_test(handshake, "plain HTTP client is reported",
                     test_plain_http_client_is_reported) ||
        !CU_add_test(handshake, "silent client times out", test_silent_client_times_out) ||
        !CU_add_test(handshake, "key log gets one line per secret",
                     test_keylog_gets_one_line_per_secret)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS) {
        CU_cleanup_registry();
        return 1;
    }
    failures = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures == 0 ? 0 : 1;
}
