/*
 * Unit tests for codec: every coding round-trips, decodes what the reference
 * command-line tools write, refuses broken input with a reason that names
 * the coding, and stops at max_out however far the input would expand.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define ZLIB_CONST
#include "codec.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <brotli/encode.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MIB ((size_t)1024 * 1024)
#define ERR_BYTES CODEC_ERROR_BYTES
#define ZERO_RUN_BYTES (10 * MIB)
#define BOMB_MAX_OUT MIB
/* Peak resident memory a bomb may add. Well above the honest cost (1 MiB of
 * output, a brotli or zstd window of at most 16 MiB, ASan's redzones and
 * quarantine) and far below any bomb's expansion (4 GiB and up). */
#define BOMB_RSS_LIMIT_KIB (64 * 1024)
#define THREADS 4

static const enum codec_kind all_kinds[] = {CODEC_IDENTITY, CODEC_GZIP, CODEC_DEFLATE, CODEC_BR,
                                            CODEC_ZSTD};
static const enum codec_kind compressing_kinds[] = {CODEC_GZIP, CODEC_DEFLATE, CODEC_BR,
                                                    CODEC_ZSTD};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The text the command-line vectors below were made from (plain.txt). */
static const char cli_plain[] = "<!doctype html>\n<title>tapwire</title>\n"
                                "<p>Hello from the CLI, hello from the CLI, hello again.</p>\n";

/*
 * Written once by the reference tools (gzip 1.12, zstd 1.5.4, brotli 1.0.9,
 * Python's zlib module) from a file plain.txt holding cli_plain, so that the
 * test needs none of them.
 */

/* gzip -9 -n -c plain.txt */
static const unsigned char cli_gzip[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xb3, 0x51, 0x4c, 0xc9, 0x4f, 0x2e,
    0xa9, 0x2c, 0x48, 0x55, 0xc8, 0x28, 0xc9, 0xcd, 0xb1, 0xe3, 0xb2, 0x29, 0xc9, 0x2c, 0xc9, 0x49,
    0xb5, 0x2b, 0x49, 0x2c, 0x28, 0xcf, 0x2c, 0x4a, 0xb5, 0xd1, 0x87, 0x70, 0xb9, 0x6c, 0x0a, 0xec,
    0x3c, 0x52, 0x73, 0x72, 0xf2, 0x15, 0xd2, 0x8a, 0xf2, 0x73, 0x15, 0x4a, 0x32, 0x52, 0x15, 0x9c,
    0x7d, 0x3c, 0x75, 0x14, 0x32, 0x70, 0x8a, 0x25, 0xa6, 0x27, 0x66, 0xe6, 0xe9, 0xd9, 0xe8, 0x17,
    0xd8, 0x71, 0x01, 0x00, 0x96, 0xaa, 0x72, 0x2c, 0x63, 0x00, 0x00, 0x00};

/* two members: gzip -n of "first member\n", then of "second member\n" */
static const unsigned char cli_gzip_members[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4b, 0xcb, 0x2c, 0x2a,
    0x2e, 0x51, 0xc8, 0x4d, 0xcd, 0x4d, 0x4a, 0x2d, 0xe2, 0x02, 0x00, 0xa7, 0xf4, 0x85,
    0x0a, 0x0d, 0x00, 0x00, 0x00, 0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x2b, 0x4e, 0x4d, 0xce, 0xcf, 0x4b, 0x51, 0xc8, 0x4d, 0xcd, 0x4d, 0x4a, 0x2d,
    0xe2, 0x02, 0x00, 0x36, 0x18, 0x4b, 0x0e, 0x0e, 0x00, 0x00, 0x00};

/* zstd -19 -c plain.txt (content size in the header, XXH64 checksum) */
static const unsigned char cli_zstd[] = {
    0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x63, 0x35, 0x02, 0x00, 0x42, 0xc4, 0x0e, 0x11, 0xa0,
    0x6f, 0x28, 0x2b, 0xdf, 0xbc, 0xfe, 0x06, 0x16, 0x68, 0x24, 0xe2, 0xc5, 0x23, 0x55,
    0x30, 0x0f, 0xa0, 0x58, 0xe2, 0x83, 0x46, 0xf5, 0x14, 0x6c, 0x81, 0x92, 0xe9, 0x06,
    0xbf, 0x67, 0xbd, 0xae, 0xab, 0x94, 0xed, 0x14, 0xeb, 0x80, 0x78, 0xbb, 0x11, 0x5b,
    0xf5, 0xa5, 0xc9, 0x8f, 0xef, 0xa0, 0xc8, 0xf9, 0xb0, 0x9b, 0xcd, 0xbf, 0x2a, 0x0b,
    0x1e, 0x02, 0x00, 0xdd, 0x5c, 0x03, 0x32, 0x4c, 0x32, 0xd3, 0xa3, 0xcc, 0x0d};

/* cat plain.txt | zstd -c (no content size in the header) */
static const unsigned char cli_zstd_no_size[] = {
    0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x55, 0x02, 0x00, 0x42, 0xc4, 0x0f, 0x16, 0x90, 0xb9,
    0x0d, 0x6b, 0x92, 0x0b, 0x21, 0x88, 0xf2, 0x6d, 0xb1, 0x9d, 0xa2, 0x96, 0x5e, 0x6d, 0x6d,
    0x1e, 0xa7, 0x39, 0x4e, 0x75, 0xa7, 0x7d, 0x52, 0x58, 0x14, 0x52, 0x50, 0xc2, 0xa0, 0x30,
    0x06, 0xdc, 0x74, 0x5c, 0xac, 0x25, 0xc8, 0x98, 0x97, 0xd0, 0xce, 0x3b, 0xb9, 0x4d, 0x31,
    0x8d, 0xae, 0xcb, 0x57, 0xcf, 0x53, 0x5e, 0x4f, 0xb8, 0xdd, 0xfc, 0x60, 0x08, 0x90, 0x01,
    0x02, 0x00, 0xdd, 0x5c, 0x03, 0x32, 0x4c, 0x32, 0xd3, 0xa3, 0xcc, 0x0d};

/* two frames: zstd of "first frame\n", then of "second frame\n" (from stdin) */
static const unsigned char cli_zstd_frames[] = {
    0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x61, 0x00, 0x00, 0x66, 0x69, 0x72, 0x73,
    0x74, 0x20, 0x66, 0x72, 0x61, 0x6d, 0x65, 0x0a, 0x0e, 0xc2, 0xc7, 0x2a, 0x28,
    0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x69, 0x00, 0x00, 0x73, 0x65, 0x63, 0x6f, 0x6e,
    0x64, 0x20, 0x66, 0x72, 0x61, 0x6d, 0x65, 0x0a, 0x9e, 0x39, 0x73, 0xab};

/* brotli -q 11 -c plain.txt */
static const unsigned char cli_brotli[] = {
    0xa1, 0x10, 0x03, 0x00, 0xe0, 0x3c, 0xb0, 0x6d, 0x91, 0xdb, 0x4c, 0x68, 0xf5, 0x64,
    0x60, 0xf9, 0xac, 0x84, 0x43, 0xe3, 0x69, 0x05, 0x90, 0x21, 0x3a, 0xcd, 0xe2, 0x92,
    0xc4, 0xa4, 0x7c, 0xc2, 0x60, 0x03, 0x0e, 0x1c, 0x86, 0x68, 0x90, 0x37, 0x1b, 0x79,
    0x8f, 0xb1, 0x33, 0x70, 0x24, 0xcb, 0xb3, 0x80, 0xd1, 0x73, 0x55, 0xc6, 0x68, 0x63,
    0xfd, 0x22, 0x81, 0x5b, 0x87, 0xf3, 0xf2, 0x64, 0x4f, 0xd6, 0x01};

/* python3 zlib.compress(plain, 9): the zlib format RFC 9110 asks for */
static const unsigned char py_zlib[] = {
    0x78, 0xda, 0xb3, 0x51, 0x4c, 0xc9, 0x4f, 0x2e, 0xa9, 0x2c, 0x48, 0x55, 0xc8, 0x28, 0xc9, 0xcd,
    0xb1, 0xe3, 0xb2, 0x29, 0xc9, 0x2c, 0xc9, 0x49, 0xb5, 0x2b, 0x49, 0x2c, 0x28, 0xcf, 0x2c, 0x4a,
    0xb5, 0xd1, 0x87, 0x70, 0xb9, 0x6c, 0x0a, 0xec, 0x3c, 0x52, 0x73, 0x72, 0xf2, 0x15, 0xd2, 0x8a,
    0xf2, 0x73, 0x15, 0x4a, 0x32, 0x52, 0x15, 0x9c, 0x7d, 0x3c, 0x75, 0x14, 0x32, 0x70, 0x8a, 0x25,
    0xa6, 0x27, 0x66, 0xe6, 0xe9, 0xd9, 0xe8, 0x17, 0xd8, 0x71, 0x01, 0x00, 0xb8, 0x20, 0x21, 0x49};

/* python3 zlib.compressobj(9, DEFLATED, -15): raw deflate, no wrapper */
static const unsigned char py_raw_deflate[] = {
    0xb3, 0x51, 0x4c, 0xc9, 0x4f, 0x2e, 0xa9, 0x2c, 0x48, 0x55, 0xc8, 0x28, 0xc9, 0xcd, 0xb1,
    0xe3, 0xb2, 0x29, 0xc9, 0x2c, 0xc9, 0x49, 0xb5, 0x2b, 0x49, 0x2c, 0x28, 0xcf, 0x2c, 0x4a,
    0xb5, 0xd1, 0x87, 0x70, 0xb9, 0x6c, 0x0a, 0xec, 0x3c, 0x52, 0x73, 0x72, 0xf2, 0x15, 0xd2,
    0x8a, 0xf2, 0x73, 0x15, 0x4a, 0x32, 0x52, 0x15, 0x9c, 0x7d, 0x3c, 0x75, 0x14, 0x32, 0x70,
    0x8a, 0x25, 0xa6, 0x27, 0x66, 0xe6, 0xe9, 0xd9, 0xe8, 0x17, 0xd8, 0x71, 0x01, 0x00};

static bool contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

static bool starts_with(const char *s, const char *prefix)
{
    return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Deterministic noise (xorshift32), so a failure can be reproduced. */
static unsigned char *random_bytes(size_t n, uint32_t seed)
{
    unsigned char *p = malloc(n > 0 ? n : 1);
    uint32_t x = seed != 0 ? seed : 1;
    size_t i;

    CU_ASSERT_FATAL(p != NULL);
    for (i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

/* Something like an access log: repetitive text that compresses well. */
static unsigned char *compressible_bytes(size_t n)
{
    unsigned char *p = malloc(n + 128);
    size_t len = 0;
    size_t line = 0;

    CU_ASSERT_FATAL(p != NULL);
    while (len < n) {
        len += (size_t)snprintf(
            (char *)p + len, 128,
            "%07zu GET /api/items?page=%zu HTTP/1.1 200 text/html; charset=utf-8\n", line,
            line % 97);
        line++;
    }
    return p;
}

static unsigned char *zero_bytes(size_t n)
{
    unsigned char *p = calloc(n > 0 ? n : 1, 1);

    CU_ASSERT_FATAL(p != NULL);
    return p;
}

static bool same_bytes(const unsigned char *a, size_t a_len, const void *b, size_t b_len)
{
    return a != NULL && a_len == b_len && (b_len == 0 || memcmp(a, b, b_len) == 0);
}

static unsigned char *encode_or_fail(enum codec_kind kind, const void *in, size_t in_len,
                                     size_t *out_len)
{
    unsigned char *out = NULL;
    char err[ERR_BYTES] = "";

    if (codec_encode(kind, in, in_len, &out, out_len, err, sizeof err) != 0)
        fprintf(stderr, "\n%s: encode failed: %s\n", codec_name(kind), err);
    CU_ASSERT_FATAL(out != NULL);
    return out;
}

/* Encodes and decodes with max_out exactly the original size: the bound is
 * inclusive, so this must succeed and give back the same bytes. */
static void check_round_trip(enum codec_kind kind, const unsigned char *in, size_t in_len)
{
    unsigned char *enc;
    unsigned char *dec = NULL;
    size_t enc_len = 0;
    size_t dec_len = 0;
    char err[ERR_BYTES] = "";
    int r;

    enc = encode_or_fail(kind, in, in_len, &enc_len);
    r = codec_decode(kind, enc, enc_len, in_len, &dec, &dec_len, err, sizeof err);
    if (r != 0)
        fprintf(stderr, "\n%s: decode failed: %s\n", codec_name(kind), err);
    CU_ASSERT_EQUAL(r, 0);
    CU_ASSERT(same_bytes(dec, dec_len, in, in_len));
    free(enc);
    free(dec);
}

/* A decode that must fail: no output, and a reason containing want. */
static void check_decode_fails(enum codec_kind kind, const void *in, size_t in_len, size_t max_out,
                               const char *want)
{
    unsigned char *out = (unsigned char *)"not touched";
    size_t out_len = 12345;
    char err[ERR_BYTES] = "";
    int r;

    r = codec_decode(kind, in, in_len, max_out, &out, &out_len, err, sizeof err);
    CU_ASSERT_EQUAL(r, -1);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(out_len, 0);
    if (!contains(err, want))
        fprintf(stderr, "\n%s: got error \"%s\", wanted \"%s\"\n", codec_name(kind), err, want);
    CU_ASSERT(contains(err, want));
    if (r == 0)
        free(out);
}

static void check_decodes_to(enum codec_kind kind, const void *in, size_t in_len, const char *want)
{
    unsigned char *out = NULL;
    size_t out_len = 0;
    char err[ERR_BYTES] = "";
    int r;

    r = codec_decode(kind, in, in_len, MIB, &out, &out_len, err, sizeof err);
    if (r != 0)
        fprintf(stderr, "\n%s: decode failed: %s\n", codec_name(kind), err);
    CU_ASSERT_EQUAL(r, 0);
    CU_ASSERT(same_bytes(out, out_len, want, strlen(want)));
    free(out);
}

static void test_parse_lists_codings_in_the_order_applied(void)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];

    CU_ASSERT_EQUAL(
        codec_parse_content_encoding("GZIP , br", chain, CODEC_MAX_CHAIN, err, sizeof err), 2);
    CU_ASSERT_EQUAL(chain[0], CODEC_GZIP);
    CU_ASSERT_EQUAL(chain[1], CODEC_BR);
    CU_ASSERT_EQUAL(
        codec_parse_content_encoding("\tzstd,Deflate\t", chain, CODEC_MAX_CHAIN, err, sizeof err),
        2);
    CU_ASSERT_EQUAL(chain[0], CODEC_ZSTD);
    CU_ASSERT_EQUAL(chain[1], CODEC_DEFLATE);
    CU_ASSERT_EQUAL(codec_parse_content_encoding("br", chain, CODEC_MAX_CHAIN, err, sizeof err), 1);
    CU_ASSERT_EQUAL(chain[0], CODEC_BR);
}

static void test_parse_reads_x_gzip_as_gzip(void)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];

    CU_ASSERT_EQUAL(codec_parse_content_encoding("X-Gzip", chain, CODEC_MAX_CHAIN, err, sizeof err),
                    1);
    CU_ASSERT_EQUAL(chain[0], CODEC_GZIP);
}

static void test_parse_of_null_or_empty_value_is_no_coding(void)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];

    CU_ASSERT_EQUAL(codec_parse_content_encoding(NULL, chain, CODEC_MAX_CHAIN, err, sizeof err), 0);
    CU_ASSERT_EQUAL(codec_parse_content_encoding("", chain, CODEC_MAX_CHAIN, err, sizeof err), 0);
    CU_ASSERT_EQUAL(codec_parse_content_encoding(" \t ", chain, CODEC_MAX_CHAIN, err, sizeof err),
                    0);
    CU_ASSERT_EQUAL(codec_parse_content_encoding(" , ,", chain, CODEC_MAX_CHAIN, err, sizeof err),
                    0);
}

static void test_parse_leaves_out_identity(void)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];

    CU_ASSERT_EQUAL(
        codec_parse_content_encoding("identity", chain, CODEC_MAX_CHAIN, err, sizeof err), 0);
    CU_ASSERT_EQUAL(codec_parse_content_encoding("Identity, gzip, identity", chain, CODEC_MAX_CHAIN,
                                                 err, sizeof err),
                    1);
    CU_ASSERT_EQUAL(chain[0], CODEC_GZIP);
}

static void test_parse_ignores_empty_list_elements(void)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];

    CU_ASSERT_EQUAL(
        codec_parse_content_encoding(",gzip,, br , ,", chain, CODEC_MAX_CHAIN, err, sizeof err), 2);
    CU_ASSERT_EQUAL(chain[0], CODEC_GZIP);
    CU_ASSERT_EQUAL(chain[1], CODEC_BR);
}

static void test_parse_rejects_unknown_codings(void)
{
    static const char *const values[] = {"compress", "x-compress", "foo", "gzip, foo", "gzip2"};
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(values); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(
            codec_parse_content_encoding(values[i], chain, CODEC_MAX_CHAIN, err, sizeof err), -1);
        CU_ASSERT(contains(err, "unsupported content coding"));
    }
    codec_parse_content_encoding("gzip, foo", chain, CODEC_MAX_CHAIN, err, sizeof err);
    CU_ASSERT_STRING_EQUAL(err, "unsupported content coding \"foo\"");
}

static void test_parse_rejects_malformed_values(void)
{
    static const char *const values[] = {"gzip br",  "gzip;q=1", "\"gzip\"",
                                         "gz\x01ip", "gzip/br",  "gzip\r\n"};
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(values); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(
            codec_parse_content_encoding(values[i], chain, CODEC_MAX_CHAIN, err, sizeof err), -1);
        CU_ASSERT(contains(err, "invalid Content-Encoding value"));
    }
    codec_parse_content_encoding("gzip;q=1", chain, CODEC_MAX_CHAIN, err, sizeof err);
    CU_ASSERT_STRING_EQUAL(err, "invalid Content-Encoding value: unexpected ';'");
    codec_parse_content_encoding("gzip\r\n", chain, CODEC_MAX_CHAIN, err, sizeof err);
    CU_ASSERT_STRING_EQUAL(err, "invalid Content-Encoding value: unexpected byte 0x0d");
}

static void test_parse_shows_long_unknown_coding_shortened(void)
{
    char value[200];
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[ERR_BYTES] = "";

    memset(value, 'a', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    CU_ASSERT_EQUAL(codec_parse_content_encoding(value, chain, CODEC_MAX_CHAIN, err, sizeof err),
                    -1);
    CU_ASSERT(contains(err, "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"..."));
    CU_ASSERT(!contains(err, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

static void test_parse_rejects_chain_longer_than_the_limit(void)
{
    enum codec_kind chain[CODEC_MAX_CHAIN + 1];
    char err[ERR_BYTES] = "";

    CU_ASSERT_EQUAL(codec_parse_content_encoding("gzip, br, zstd, deflate", chain, CODEC_MAX_CHAIN,
                                                 err, sizeof err),
                    4);
    CU_ASSERT_EQUAL(chain[3], CODEC_DEFLATE);
    /* A larger array does not raise the limit. */
    CU_ASSERT_EQUAL(codec_parse_content_encoding("gzip, br, zstd, deflate, gzip", chain,
                                                 CODEC_MAX_CHAIN + 1, err, sizeof err),
                    -1);
    CU_ASSERT_STRING_EQUAL(err, "Content-Encoding lists more than 4 codings");
    /* A smaller array lowers it. */
    CU_ASSERT_EQUAL(codec_parse_content_encoding("gzip, br", chain, 1, err, sizeof err), -1);
    CU_ASSERT_STRING_EQUAL(err, "Content-Encoding lists more than 1 codings");
}

static void test_names_are_the_http_tokens(void)
{
    CU_ASSERT_STRING_EQUAL(codec_name(CODEC_IDENTITY), "identity");
    CU_ASSERT_STRING_EQUAL(codec_name(CODEC_GZIP), "gzip");
    CU_ASSERT_STRING_EQUAL(codec_name(CODEC_DEFLATE), "deflate");
    CU_ASSERT_STRING_EQUAL(codec_name(CODEC_BR), "br");
    CU_ASSERT_STRING_EQUAL(codec_name(CODEC_ZSTD), "zstd");
    CU_ASSERT_STRING_EQUAL(codec_name((enum codec_kind)99), "unknown");
}

static void test_round_trips_empty_body(void)
{
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++)
        check_round_trip(all_kinds[i], NULL, 0);
}

static void test_round_trips_small_body(void)
{
    static const char body[] = "{\"ok\":true}";
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++) {
        check_round_trip(all_kinds[i], (const unsigned char *)body, 1);
        check_round_trip(all_kinds[i], (const unsigned char *)body, strlen(body));
    }
}

static void test_round_trips_1mib_random_body(void)
{
    unsigned char *body = random_bytes(MIB, 0x7a9e1u);
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++)
        check_round_trip(all_kinds[i], body, MIB);
    free(body);
}

static void test_round_trips_1mib_compressible_body(void)
{
    unsigned char *body = compressible_bytes(MIB);
    unsigned char *enc;
    size_t enc_len;
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++)
        check_round_trip(all_kinds[i], body, MIB);
    for (i = 0; i < COUNT(compressing_kinds); i++) {
        enc = encode_or_fail(compressing_kinds[i], body, MIB, &enc_len);
        CU_ASSERT(enc_len < MIB / 8);
        free(enc);
    }
    free(body);
}

static void test_encodes_each_coding_in_its_wire_format(void)
{
    const unsigned char *body = (const unsigned char *)cli_plain;
    unsigned char *enc;
    size_t enc_len;

    enc = encode_or_fail(CODEC_GZIP, body, strlen(cli_plain), &enc_len);
    CU_ASSERT(enc_len > 18 && enc[0] == 0x1f && enc[1] == 0x8b && enc[2] == 8);
    free(enc);
    /* RFC 9110 8.4.1.2: "deflate" is the zlib format. */
    enc = encode_or_fail(CODEC_DEFLATE, body, strlen(cli_plain), &enc_len);
    CU_ASSERT(enc_len > 6 && (enc[0] & 0x0f) == 8 && ((enc[0] << 8) | enc[1]) % 31 == 0);
    free(enc);
    enc = encode_or_fail(CODEC_ZSTD, body, strlen(cli_plain), &enc_len);
    CU_ASSERT(enc_len > 4 && enc[0] == 0x28 && enc[1] == 0xb5 && enc[2] == 0x2f && enc[3] == 0xfd);
    free(enc);
    enc = encode_or_fail(CODEC_IDENTITY, body, strlen(cli_plain), &enc_len);
    CU_ASSERT(same_bytes(enc, enc_len, cli_plain, strlen(cli_plain)));
    free(enc);
}

static void test_decodes_gzip_cli_vector(void)
{
    check_decodes_to(CODEC_GZIP, cli_gzip, sizeof cli_gzip, cli_plain);
}

static void test_decodes_brotli_cli_vector(void)
{
    check_decodes_to(CODEC_BR, cli_brotli, sizeof cli_brotli, cli_plain);
}

static void test_decodes_zstd_cli_vector(void)
{
    check_decodes_to(CODEC_ZSTD, cli_zstd, sizeof cli_zstd, cli_plain);
}

static void test_decodes_zstd_frame_without_content_size(void)
{
    /* Frame_Header_Descriptor 0x04: checksum, no content size field. */
    CU_ASSERT_EQUAL(cli_zstd_no_size[4], 0x04);
    check_decodes_to(CODEC_ZSTD, cli_zstd_no_size, sizeof cli_zstd_no_size, cli_plain);
}

static void test_decodes_zlib_wrapped_deflate(void)
{
    check_decodes_to(CODEC_DEFLATE, py_zlib, sizeof py_zlib, cli_plain);
}

static void test_deflate_accepts_raw_deflate(void)
{
    static const unsigned char stored[] = {0x01, 0x02, 0x00, 0xfd, 0xff, 'o', 'k'};
    unsigned char *raw;
    size_t raw_len;

    check_decodes_to(CODEC_DEFLATE, py_raw_deflate, sizeof py_raw_deflate, cli_plain);
    /* Also a stored block (the byte 0x01 first), and a longer raw stream cut
     * from our own zlib output: strip the 2-byte header and Adler-32. */
    raw = encode_or_fail(CODEC_DEFLATE, (const unsigned char *)cli_plain, strlen(cli_plain),
                         &raw_len);
    check_decodes_to(CODEC_DEFLATE, raw + 2, raw_len - 6, cli_plain);
    free(raw);
    check_decodes_to(CODEC_DEFLATE, stored, sizeof stored, "ok");
    /* Raw deflate is not gzip: gzip stays strict. */
    check_decode_fails(CODEC_GZIP, py_raw_deflate, sizeof py_raw_deflate, MIB,
                       "gzip: invalid data (incorrect header check)");
}

static void test_gzip_decodes_all_concatenated_members(void)
{
    check_decodes_to(CODEC_GZIP, cli_gzip_members, sizeof cli_gzip_members,
                     "first member\nsecond member\n");
}

static void test_zstd_decodes_all_concatenated_frames(void)
{
    check_decodes_to(CODEC_ZSTD, cli_zstd_frames, sizeof cli_zstd_frames,
                     "first frame\nsecond frame\n");
}

static void test_zstd_skips_skippable_frames(void)
{
    unsigned char buf[sizeof cli_zstd + 11];
    /* RFC 8878 3.1.2: magic 0x184D2A5?, 4-byte size, then that many bytes. */
    static const unsigned char skippable[] = {0x53, 0x2a, 0x4d, 0x18, 0x03, 0x00,
                                              0x00, 0x00, 'x',  'y',  'z'};

    memcpy(buf, skippable, sizeof skippable);
    memcpy(buf + sizeof skippable, cli_zstd, sizeof cli_zstd);
    check_decodes_to(CODEC_ZSTD, buf, sizeof buf, cli_plain);
    check_decodes_to(CODEC_ZSTD, skippable, sizeof skippable, "");
}

static void test_chain_gzip_br_round_trips(void)
{
    unsigned char *body = compressible_bytes(64 * 1024);
    unsigned char *enc = NULL;
    unsigned char *inner = NULL;
    unsigned char *dec = NULL;
    size_t enc_len = 0;
    size_t inner_len = 0;
    size_t dec_len = 0;
    char err[ERR_BYTES] = "";

    CU_ASSERT_EQUAL_FATAL(
        codec_encode_content("gzip, br", body, 64 * 1024, &enc, &enc_len, err, sizeof err), 0);
    /* br was applied last, so it is the outer layer. */
    CU_ASSERT_EQUAL(codec_decode(CODEC_BR, enc, enc_len, MIB, &inner, &inner_len, err, sizeof err),
                    0);
    CU_ASSERT(inner != NULL && inner_len > 2 && inner[0] == 0x1f && inner[1] == 0x8b);
    CU_ASSERT_EQUAL(
        codec_decode_content("gzip, br", enc, enc_len, 64 * 1024, &dec, &dec_len, err, sizeof err),
        0);
    CU_ASSERT(same_bytes(dec, dec_len, body, 64 * 1024));
    free(dec);
    dec = NULL;
    /* The other order is a different body. */
    CU_ASSERT_EQUAL(
        codec_decode_content("br, gzip", enc, enc_len, MIB, &dec, &dec_len, err, sizeof err), -1);
    CU_ASSERT(starts_with(err, "gzip: invalid data"));
    CU_ASSERT_PTR_NULL(dec);
    free(inner);
    free(enc);
    free(body);
}

static void test_chain_decodes_in_reverse_order_of_application(void)
{
    unsigned char *zst;
    unsigned char *both;
    unsigned char *dec = NULL;
    size_t zst_len;
    size_t both_len;
    size_t dec_len = 0;
    char err[ERR_BYTES] = "";

    zst = encode_or_fail(CODEC_ZSTD, (const unsigned char *)cli_plain, strlen(cli_plain), &zst_len);
    both = encode_or_fail(CODEC_DEFLATE, zst, zst_len, &both_len);
    CU_ASSERT_EQUAL(
        codec_decode_content("zstd, deflate", both, both_len, MIB, &dec, &dec_len, err, sizeof err),
        0);
    CU_ASSERT(same_bytes(dec, dec_len, cli_plain, strlen(cli_plain)));
    free(dec);
    free(both);
    free(zst);
}

static void test_chain_error_names_the_failing_coding(void)
{
    static const unsigned char junk[] = "definitely not compressed";
    unsigned char *out = NULL;
    size_t out_len = 0;
    char err[ERR_BYTES] = "";

    CU_ASSERT_EQUAL(
        codec_decode_content("gzip, zstd", junk, sizeof junk, MIB, &out, &out_len, err, sizeof err),
        -1);
    CU_ASSERT(starts_with(err, "zstd: invalid data"));
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(out_len, 0);
}

static void test_chain_bounds_the_decoded_body(void)
{
    unsigned char *zeros = zero_bytes(2 * MIB);
    unsigned char *enc = NULL;
    unsigned char *out = NULL;
    size_t enc_len = 0;
    size_t out_len = 0;
    char err[ERR_BYTES] = "";

    CU_ASSERT_EQUAL_FATAL(
        codec_encode_content("deflate, zstd", zeros, 2 * MIB, &enc, &enc_len, err, sizeof err), 0);
    CU_ASSERT_EQUAL(
        codec_decode_content("deflate, zstd", enc, enc_len, MIB, &out, &out_len, err, sizeof err),
        -1);
    CU_ASSERT_STRING_EQUAL(err, "deflate: decoded body exceeds 1048576 bytes");
    CU_ASSERT_PTR_NULL(out);
    free(enc);
    free(zeros);
}

static void test_chain_admits_a_body_whose_intermediate_is_larger(void)
{
    static const unsigned char body[] = "tiny";
    unsigned char *enc = NULL;
    unsigned char *out = NULL;
    size_t enc_len = 0;
    size_t out_len = 0;
    char err[ERR_BYTES] = "";

    /* The gzip stream between the two stages is larger than the body. */
    CU_ASSERT_EQUAL_FATAL(
        codec_encode_content("gzip, br", body, sizeof body, &enc, &enc_len, err, sizeof err), 0);
    CU_ASSERT_EQUAL(codec_decode_content("gzip, br", enc, enc_len, sizeof body, &out, &out_len, err,
                                         sizeof err),
                    0);
    CU_ASSERT(same_bytes(out, out_len, body, sizeof body));
    free(out);
    free(enc);
}

static void test_chain_bounds_intermediate_results(void)
{
    unsigned char *zeros = zero_bytes(ZERO_RUN_BYTES);
    size_t enc_len;
    unsigned char *enc = encode_or_fail(CODEC_BR, zeros, ZERO_RUN_BYTES, &enc_len);
    unsigned char *out = NULL;
    size_t out_len = 0;
    char err[ERR_BYTES] = "";

    /* br expands to 10 MiB that would only then be read as gzip. */
    CU_ASSERT_EQUAL(
        codec_decode_content("gzip, br", enc, enc_len, MIB, &out, &out_len, err, sizeof err), -1);
    CU_ASSERT(starts_with(err, "br: decoded body exceeds"));
    CU_ASSERT_PTR_NULL(out);
    free(enc);
    free(zeros);
}

static void test_content_functions_reject_unknown_codings(void)
{
    static const char *const values[] = {"compress", "foo", "gzip, foo"};
    static const unsigned char body[] = "body";
    unsigned char *out;
    size_t out_len;
    char err[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(values); i++) {
        out = (unsigned char *)"not touched";
        out_len = 1;
        err[0] = '\0';
        CU_ASSERT_EQUAL(codec_decode_content(values[i], body, sizeof body, MIB, &out, &out_len, err,
                                             sizeof err),
                        -1);
        CU_ASSERT_PTR_NULL(out);
        CU_ASSERT_EQUAL(out_len, 0);
        CU_ASSERT(contains(err, "unsupported content coding"));
        out = (unsigned char *)"not touched";
        err[0] = '\0';
        CU_ASSERT_EQUAL(
            codec_encode_content(values[i], body, sizeof body, &out, &out_len, err, sizeof err),
            -1);
        CU_ASSERT_PTR_NULL(out);
        CU_ASSERT(contains(err, "unsupported content coding"));
    }
}

static void test_identity_passes_the_body_through(void)
{
    static const char *const values[] = {NULL, "", "identity", " Identity "};
    static const unsigned char body[] = "plain body";
    unsigned char *out = NULL;
    size_t out_len = 0;
    char err[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(values); i++) {
        CU_ASSERT_EQUAL(codec_decode_content(values[i], body, sizeof body, MIB, &out, &out_len, err,
                                             sizeof err),
                        0);
        CU_ASSERT(same_bytes(out, out_len, body, sizeof body));
        CU_ASSERT(out != body);
        free(out);
        CU_ASSERT_EQUAL(
            codec_encode_content(values[i], body, sizeof body, &out, &out_len, err, sizeof err), 0);
        CU_ASSERT(same_bytes(out, out_len, body, sizeof body));
        free(out);
    }
    CU_ASSERT_EQUAL(codec_decode(CODEC_IDENTITY, body, sizeof body, sizeof body, &out, &out_len,
                                 err, sizeof err),
                    0);
    CU_ASSERT(same_bytes(out, out_len, body, sizeof body));
    free(out);
    check_decode_fails(CODEC_IDENTITY, body, sizeof body, sizeof body - 1,
                       "identity: decoded body exceeds 10 bytes");
}

static void test_empty_input_decodes_to_an_empty_body(void)
{
    unsigned char *out;
    size_t out_len;
    char err[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++) {
        out = NULL;
        out_len = 99;
        CU_ASSERT_EQUAL(codec_decode(all_kinds[i], (const unsigned char *)"", 0, 0, &out, &out_len,
                                     err, sizeof err),
                        0);
        CU_ASSERT_PTR_NOT_NULL(out);
        CU_ASSERT_EQUAL(out_len, 0);
        free(out);
    }
}

static void test_max_out_stops_a_10mib_zero_run(void)
{
    unsigned char *zeros = zero_bytes(ZERO_RUN_BYTES);
    char want[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(compressing_kinds); i++) {
        size_t enc_len;
        unsigned char *enc = encode_or_fail(compressing_kinds[i], zeros, ZERO_RUN_BYTES, &enc_len);

        CU_ASSERT(enc_len < ZERO_RUN_BYTES / 100);
        snprintf(want, sizeof want, "%s: decoded body exceeds 1048576 bytes",
                 codec_name(compressing_kinds[i]));
        check_decode_fails(compressing_kinds[i], enc, enc_len, MIB, want);
        free(enc);
    }
    free(zeros);
}

static void test_max_out_admits_a_body_of_exactly_the_limit(void)
{
    unsigned char *body = compressible_bytes(100000);
    char want[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++) {
        size_t enc_len;
        unsigned char *enc = encode_or_fail(all_kinds[i], body, 100000, &enc_len);
        unsigned char *out = NULL;
        size_t out_len = 0;
        char err[ERR_BYTES] = "";

        CU_ASSERT_EQUAL(
            codec_decode(all_kinds[i], enc, enc_len, 100000, &out, &out_len, err, sizeof err), 0);
        CU_ASSERT(same_bytes(out, out_len, body, 100000));
        free(out);
        snprintf(want, sizeof want, "%s: decoded body exceeds 99999 bytes",
                 codec_name(all_kinds[i]));
        check_decode_fails(all_kinds[i], enc, enc_len, 99999, want);
        free(enc);
    }
    free(body);
}

static void test_max_out_zero_admits_only_an_empty_body(void)
{
    static const unsigned char one = 'x';
    char want[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(all_kinds); i++) {
        size_t enc_len;
        unsigned char *enc = encode_or_fail(all_kinds[i], NULL, 0, &enc_len);
        unsigned char *out = NULL;
        size_t out_len = 1;
        char err[ERR_BYTES] = "";

        CU_ASSERT_EQUAL(
            codec_decode(all_kinds[i], enc, enc_len, 0, &out, &out_len, err, sizeof err), 0);
        CU_ASSERT(out != NULL && out_len == 0);
        free(out);
        free(enc);
        enc = encode_or_fail(all_kinds[i], &one, 1, &enc_len);
        snprintf(want, sizeof want, "%s: decoded body exceeds 0 bytes", codec_name(all_kinds[i]));
        check_decode_fails(all_kinds[i], enc, enc_len, 0, want);
        free(enc);
    }
}

/* A growing byte buffer for building test inputs. */
struct bytes {
    unsigned char *p;
    size_t len;
    size_t cap;
};

static void bytes_append(struct bytes *b, const void *data, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap > 0 ? b->cap : 4096;
        unsigned char *p;

        while (cap - b->len < n)
            cap *= 2;
        p = realloc(b->p, cap);
        CU_ASSERT_FATAL(p != NULL);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* A zstd frame of RLE blocks (RFC 8878 3.1.1.2): 4 bytes of input for every
 * 128 KiB of output, and no content size in the header to warn the decoder. */
static unsigned char *zstd_bomb(size_t blocks, size_t *len)
{
    static const unsigned char header[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38};
    struct bytes b = {NULL, 0, 0};
    size_t i;

    bytes_append(&b, header, sizeof header);
    for (i = 0; i < blocks; i++) {
        uint32_t h = (128u * 1024u) << 3 | 1u << 1 | (i + 1 == blocks ? 1u : 0u);
        unsigned char block[4] = {(unsigned char)h, (unsigned char)(h >> 8),
                                  (unsigned char)(h >> 16), 0};

        bytes_append(&b, block, sizeof block);
    }
    *len = b.len;
    return b.p;
}

/* Deflates 1 MiB of zeros ending in a full flush, which resets the
 * compressor: the piece decodes the same wherever it is placed. */
static size_t deflate_zero_piece(z_stream *zs, const unsigned char *zeros, unsigned char *out,
                                 size_t out_size)
{
    zs->next_in = zeros;
    zs->avail_in = (unsigned int)MIB;
    zs->next_out = out;
    zs->avail_out = (unsigned int)out_size;
    CU_ASSERT_FATAL(deflate(zs, Z_FULL_FLUSH) == Z_OK);
    CU_ASSERT_FATAL(zs->avail_in == 0 && zs->avail_out > 0);
    return out_size - zs->avail_out;
}

/* A gzip or zlib stream of `pieces` MiB of zeros, from one piece repeated
 * (deflate cannot beat about 1:1000, so repetition is what keeps it cheap).
 * The trailer is missing: a bounded decoder never gets that far. */
static unsigned char *zlib_bomb(int window_bits, size_t pieces, size_t *len)
{
    z_stream zs;
    unsigned char *zeros = zero_bytes(MIB);
    unsigned char piece[64 * 1024];
    struct bytes b = {NULL, 0, 0};
    size_t n;
    size_t i;

    memset(&zs, 0, sizeof zs);
    CU_ASSERT_FATAL(deflateInit2(&zs, 9, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    n = deflate_zero_piece(&zs, zeros, piece, sizeof piece); /* with the header */
    bytes_append(&b, piece, n);
    n = deflate_zero_piece(&zs, zeros, piece, sizeof piece);
    for (i = 1; i < pieces; i++)
        bytes_append(&b, piece, n);
    deflateEnd(&zs);
    free(zeros);
    *len = b.len;
    return b.p;
}

/* Compresses 16 MiB of zeros and flushes, which ends on a byte boundary. */
static size_t brotli_zero_piece(BrotliEncoderState *s, const unsigned char *zeros,
                                unsigned char *out, size_t out_size)
{
    const uint8_t *next_in = zeros;
    size_t avail_in = 16 * MIB;
    uint8_t *next_out = out;
    size_t avail_out = out_size;

    while (avail_in > 0 || BrotliEncoderHasMoreOutput(s)) {
        CU_ASSERT_FATAL(BrotliEncoderCompressStream(s, BROTLI_OPERATION_FLUSH, &avail_in, &next_in,
                                                    &avail_out, &next_out, NULL));
        CU_ASSERT_FATAL(avail_out > 0);
    }
    return out_size - avail_out;
}

/* A brotli stream of 16 MiB of zeros per repeat. Once the window is all
 * zeros, the encoder writes the same flushed piece for every further 16 MiB,
 * so that piece can be repeated without running the encoder again. */
static unsigned char *brotli_bomb(size_t repeats, size_t *len)
{
    BrotliEncoderState *s = BrotliEncoderCreateInstance(NULL, NULL, NULL);
    unsigned char *zeros = zero_bytes(16 * MIB);
    unsigned char piece[3][4096];
    size_t n[3];
    struct bytes b = {NULL, 0, 0};
    size_t i;

    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT_FATAL(BrotliEncoderSetParameter(s, BROTLI_PARAM_QUALITY, 5));
    for (i = 0; i < 3; i++)
        n[i] = brotli_zero_piece(s, zeros, piece[i], sizeof piece[i]);
    CU_ASSERT_FATAL(n[1] == n[2] && memcmp(piece[1], piece[2], n[1]) == 0);
    bytes_append(&b, piece[0], n[0]);
    for (i = 1; i < repeats; i++)
        bytes_append(&b, piece[1], n[1]);
    BrotliEncoderDestroyInstance(s);
    free(zeros);
    *len = b.len;
    return b.p;
}

static long proc_status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, strlen(field)) == 0)
            kib = strtol(line + strlen(field), NULL, 10);
    }
    fclose(f);
    return kib;
}

/* Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS. */
static bool reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool is_reset;

    if (f == NULL)
        return false;
    is_reset = fputs("5", f) >= 0;
    return fclose(f) == 0 && is_reset;
}

/* The bomb must fail at the limit, and (where Linux lets us measure) the
 * peak RSS of the decode must stay far below what the bomb expands to. */
static void check_bomb_is_refused(enum codec_kind kind, const unsigned char *bomb, size_t len)
{
    char want[ERR_BYTES];
    bool can_measure = reset_peak_rss();
    long before = proc_status_kib("VmRSS:");
    long peak;

    snprintf(want, sizeof want, "%s: decoded body exceeds %zu bytes", codec_name(kind),
             (size_t)BOMB_MAX_OUT);
    check_decode_fails(kind, bomb, len, BOMB_MAX_OUT, want);
    peak = proc_status_kib("VmHWM:");
    if (!can_measure || before < 0 || peak < 0) {
        fprintf(stderr, "\n(peak RSS not measurable here; bound checked by outcome only)\n");
        return;
    }
    if (peak - before >= BOMB_RSS_LIMIT_KIB)
        fprintf(stderr, "\n%s: peak RSS grew by %ld KiB\n", codec_name(kind), peak - before);
    CU_ASSERT(peak - before < BOMB_RSS_LIMIT_KIB);
}

static void test_bombs_of_gigabytes_stop_at_max_out_in_bounded_memory(void)
{
    unsigned char *bomb;
    size_t len;

    bomb = zstd_bomb(256 * 1024, &len); /* 32 GiB */
    check_bomb_is_refused(CODEC_ZSTD, bomb, len);
    free(bomb);
    bomb = zlib_bomb(15 + 16, 4096, &len); /* 4 GiB */
    check_bomb_is_refused(CODEC_GZIP, bomb, len);
    free(bomb);
    bomb = zlib_bomb(15, 4096, &len);
    check_bomb_is_refused(CODEC_DEFLATE, bomb, len);
    free(bomb);
    bomb = zlib_bomb(-15, 4096, &len);
    check_bomb_is_refused(CODEC_DEFLATE, bomb, len);
    free(bomb);
    bomb = brotli_bomb(1024, &len); /* 16 GiB */
    check_bomb_is_refused(CODEC_BR, bomb, len);
    free(bomb);
}

static void test_rejects_truncated_input(void)
{
    unsigned char *body = compressible_bytes(10000);
    char want[ERR_BYTES];
    size_t i;

    for (i = 0; i < COUNT(compressing_kinds); i++) {
        enum codec_kind kind = compressing_kinds[i];
        size_t enc_len;
        unsigned char *enc = encode_or_fail(kind, body, 10000, &enc_len);

        snprintf(want, sizeof want, "%s: compressed data is truncated", codec_name(kind));
        check_decode_fails(kind, enc, enc_len - 1, MIB, want);
        check_decode_fails(kind, enc, enc_len / 2, MIB, want);
        check_decode_fails(kind, enc, 1, MIB, want);
        free(enc);
    }
    free(body);
    check_decode_fails(CODEC_GZIP, cli_gzip, sizeof cli_gzip - 4, MIB,
                       "gzip: compressed data is truncated");
    check_decode_fails(CODEC_BR, cli_brotli, sizeof cli_brotli - 1, MIB,
                       "br: compressed data is truncated");
    check_decode_fails(CODEC_ZSTD, cli_zstd_no_size, sizeof cli_zstd_no_size - 1, MIB,
                       "zstd: compressed data is truncated");
    /* A second gzip member that has only begun. */
    {
        unsigned char buf[sizeof cli_gzip + 1];

        memcpy(buf, cli_gzip, sizeof cli_gzip);
        buf[sizeof cli_gzip] = 0x1f;
        check_decode_fails(CODEC_GZIP, buf, sizeof buf, MIB, "gzip: compressed data is truncated");
    }
}

static void test_rejects_trailing_garbage(void)
{
    static const char *const tails[] = {"junk", "\0\0\0\0", "\r\n", "\x1f\x8c"};
    char want[ERR_BYTES];
    size_t i;
    size_t t;

    for (i = 0; i < COUNT(compressing_kinds); i++) {
        enum codec_kind kind = compressing_kinds[i];
        size_t enc_len;
        unsigned char *enc =
            encode_or_fail(kind, (const unsigned char *)cli_plain, strlen(cli_plain), &enc_len);

        snprintf(want, sizeof want, "%s: trailing bytes after the compressed data",
                 codec_name(kind));
        for (t = 0; t < COUNT(tails); t++) {
            size_t tail_len = t == 1 ? 4 : strlen(tails[t]);
            unsigned char *buf = malloc(enc_len + tail_len);

            CU_ASSERT_FATAL(buf != NULL);
            memcpy(buf, enc, enc_len);
            memcpy(buf + enc_len, tails[t], tail_len);
            check_decode_fails(kind, buf, enc_len + tail_len, MIB, want);
            free(buf);
        }
        free(enc);
    }
}

static void test_rejects_invalid_data_naming_the_coding(void)
{
    static const unsigned char junk[] = "this is not compressed at all";
    static const unsigned char bad_block[] = {0xff, 0x00, 0x00};
    unsigned char buf[256];

    check_decode_fails(CODEC_GZIP, junk, sizeof junk, MIB,
                       "gzip: invalid data (incorrect header check)");
    check_decode_fails(CODEC_DEFLATE, bad_block, sizeof bad_block, MIB,
                       "deflate: invalid data (invalid block type)");
    check_decode_fails(CODEC_BR, junk, sizeof junk, MIB, "br: invalid data (");
    check_decode_fails(CODEC_ZSTD, junk, sizeof junk, MIB,
                       "zstd: invalid data (Unknown frame descriptor)");
    /* Checksums are verified: CRC-32 of gzip, Adler-32 of zlib, XXH64 of zstd. */
    memcpy(buf, cli_gzip, sizeof cli_gzip);
    buf[sizeof cli_gzip - 8] ^= 1;
    check_decode_fails(CODEC_GZIP, buf, sizeof cli_gzip, MIB,
                       "gzip: invalid data (incorrect data check)");
    memcpy(buf, cli_gzip, sizeof cli_gzip);
    buf[sizeof cli_gzip - 4] ^= 1;
    check_decode_fails(CODEC_GZIP, buf, sizeof cli_gzip, MIB,
                       "gzip: invalid data (incorrect length check)");
    memcpy(buf, py_zlib, sizeof py_zlib);
    buf[sizeof py_zlib - 1] ^= 1;
    check_decode_fails(CODEC_DEFLATE, buf, sizeof py_zlib, MIB,
                       "deflate: invalid data (incorrect data check)");
    memcpy(buf, cli_zstd, sizeof cli_zstd);
    buf[sizeof cli_zstd - 1] ^= 1;
    check_decode_fails(CODEC_ZSTD, buf, sizeof cli_zstd, MIB, "zstd: invalid data (");
}

static void test_refuses_a_kind_outside_the_enum(void)
{
    static const unsigned char body[] = "body";
    unsigned char *out = NULL;
    size_t out_len = 1;
    char err[ERR_BYTES] = "";

    check_decode_fails((enum codec_kind)99, body, sizeof body, MIB, "unknown content coding 99");
    check_decode_fails((enum codec_kind)99, NULL, 0, MIB, "unknown content coding 99");
    CU_ASSERT_EQUAL(
        codec_encode((enum codec_kind)99, body, sizeof body, &out, &out_len, err, sizeof err), -1);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(out_len, 0);
    CU_ASSERT_STRING_EQUAL(err, "unknown content coding 99");
}

static void test_zstd_refuses_windows_above_8_mib(void)
{
    /* Window_Descriptor 0x70 is 2^24, 0x68 is 2^23; one RLE block of "z". */
    static const unsigned char big[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x70, 0x0b, 0x00, 0x00, 'z'};
    static const unsigned char ok[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x68, 0x0b, 0x00, 0x00, 'z'};

    check_decode_fails(CODEC_ZSTD, big, sizeof big, MIB,
                       "zstd: window larger than 8 MiB (RFC 9659)");
    check_decodes_to(CODEC_ZSTD, ok, sizeof ok, "z");
}

static void test_error_is_cut_to_the_buffer_given(void)
{
    static const unsigned char junk[] = "junk";
    unsigned char *out = NULL;
    size_t out_len = 0;
    char err[8];

    memset(err, 'X', sizeof err);
    CU_ASSERT_EQUAL(
        codec_decode(CODEC_GZIP, junk, sizeof junk, MIB, &out, &out_len, err, sizeof err), -1);
    CU_ASSERT_STRING_EQUAL(err, "gzip: i");
    CU_ASSERT_EQUAL(codec_decode(CODEC_GZIP, junk, sizeof junk, MIB, &out, &out_len, NULL, 0), -1);
    CU_ASSERT_PTR_NULL(out);
}

struct worker {
    uint32_t seed;
    int failures; /* written by the worker only; read after join */
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    size_t round;
    size_t i;

    for (round = 0; round < 4; round++) {
        size_t len = 64 * 1024 + w->seed % 1000 + round;
        unsigned char *body = random_bytes(len, w->seed + (uint32_t)round);

        memset(body, 'a', len / 2); /* half compressible, half noise */
        for (i = 0; i < COUNT(all_kinds); i++) {
            unsigned char *enc = NULL;
            unsigned char *dec = NULL;
            size_t enc_len = 0;
            size_t dec_len = 0;
            char err[ERR_BYTES];

            if (codec_encode(all_kinds[i], body, len, &enc, &enc_len, err, sizeof err) != 0 ||
                codec_decode(all_kinds[i], enc, enc_len, len, &dec, &dec_len, err, sizeof err) !=
                    0 ||
                dec_len != len || memcmp(dec, body, len) != 0)
                w->failures++;
            free(enc);
            free(dec);
        }
        free(body);
    }
    return NULL;
}

static void test_threads_encode_and_decode_concurrently(void)
{
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    size_t i;

    for (i = 0; i < THREADS; i++) {
        workers[i].seed = (uint32_t)(i * 7919 + 1);
        workers[i].failures = 0;
        CU_ASSERT_FATAL(pthread_create(&threads[i], NULL, worker_run, &workers[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        CU_ASSERT(pthread_join(threads[i], NULL) == 0);
        CU_ASSERT_EQUAL(workers[i].failures, 0);
    }
}

struct test_entry {
    const char *name;
    CU_TestFunc fn;
};

#define TEST(f)                                                                                    \
    {                                                                                              \
#f, f                                                                                      \
    }

static const struct test_entry tests[] = {
    TEST(test_parse_lists_codings_in_the_order_applied),
    TEST(test_parse_reads_x_gzip_as_gzip),
    TEST(test_parse_of_null_or_empty_value_is_no_coding),
    TEST(test_parse_leaves_out_identity),
    TEST(test_parse_ignores_empty_list_elements),
    TEST(test_parse_rejects_unknown_codings),
    TEST(test_parse_rejects_malformed_values),
    TEST(test_parse_shows_long_unknown_coding_shortened),
    TEST(test_parse_rejects_chain_longer_than_the_limit),
    TEST(test_names_are_the_http_tokens),
    TEST(test_round_trips_empty_body),
    TEST(test_round_trips_small_body),
    TEST(test_round_trips_1mib_random_body),
    TEST(test_round_trips_1mib_compressible_body),
    TEST(test_encodes_each_coding_in_its_wire_format),
    TEST(test_decodes_gzip_cli_vector),
    TEST(test_decodes_brotli_cli_vector),
    TEST(test_decodes_zstd_cli_vector),
    TEST(test_decodes_zstd_frame_without_content_size),
    TEST(test_decodes_zlib_wrapped_deflate),
    TEST(test_deflate_accepts_raw_deflate),
    TEST(test_gzip_decodes_all_concatenated_members),
    TEST(test_zstd_decodes_all_concatenated_frames),
    TEST(test_zstd_skips_skippable_frames),
    TEST(test_chain_gzip_br_round_trips),
    TEST(test_chain_decodes_in_reverse_order_of_application),
    TEST(test_chain_error_names_the_failing_coding),
    TEST(test_chain_bounds_the_decoded_body),
    TEST(test_chain_admits_a_body_whose_intermediate_is_larger),
    TEST(test_chain_bounds_intermediate_results),
    TEST(test_content_functions_reject_unknown_codings),
    TEST(test_identity_passes_the_body_through),
    TEST(test_empty_input_decodes_to_an_empty_body),
    TEST(test_max_out_stops_a_10mib_zero_run),
    TEST(test_max_out_admits_a_body_of_exactly_the_limit),
    TEST(test_max_out_zero_admits_only_an_empty_body),
    TEST(test_bombs_of_gigabytes_stop_at_max_out_in_bounded_memory),
    TEST(test_rejects_truncated_input),
    TEST(test_rejects_trailing_garbage),
    TEST(test_rejects_invalid_data_naming_the_coding),
    TEST(test_refuses_a_kind_outside_the_enum),
    TEST(test_zstd_refuses_windows_above_8_mib),
    TEST(test_error_is_cut_to_the_buffer_given),
    TEST(test_threads_encode_and_decode_concurrently),
};

int main(void)
{
    CU_pSuite suite;
    unsigned int failures = 0;
    int status = 1;
    size_t i;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 1;
    }
    suite = CU_add_suite("codec", NULL, NULL);
    if (suite == NULL)
        goto out;
    for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (CU_add_test(suite, tests[i].name, tests[i].fn) == NULL)
            goto out;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto out;
    failures = CU_get_number_of_failures();
    status = failures != 0;
out:
    if (CU_get_error() != CUE_SUCCESS)
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
    CU_cleanup_registry();
    return status;
}
