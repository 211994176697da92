/*
 * libFuzzer target for codec: decoders fed hostile bytes, with the contract
 * the dashboard and the rewrite rules rely on checked after every call (a
 * violation traps, so the fuzzer reports it like a crash).
 *
 * fuzz-sources: src/codec.c src/errmsg.c
 * fuzz-libs: zlib libbrotlidec libbrotlienc libzstd
 *
 * The first byte selects what the rest is. Bits 0-2: 0-4 one coding (enum
 * codec_kind order) through codec_decode(); 5-6 a Content-Encoding chain
 * through codec_decode_content(), picked by bits 3-5; 7 a Content-Encoding
 * field value for the parser.
 */
#include "codec.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OUT_BYTES (1024 * 1024)
#define SINGLE_MODES 5
#define PARSE_MODE 7

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static const char *const chains[] = {
    "gzip, br",
    "br, zstd",
    "deflate, gzip",
    "zstd, deflate",
    "x-gzip, identity, br",
    "br, br",
    "gzip, deflate, br, zstd",
    "identity",
};

/* An exact-size heap copy, so that ASan sees any read past len. */
static unsigned char *copy_of(const uint8_t *data, size_t len)
{
    unsigned char *p = malloc(len > 0 ? len : 1);

    CHECK(p != NULL);
    if (len > 0)
        memcpy(p, data, len);
    return p;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Decodes with kind, or with the chain value when kind is NULL. */
static int decode(const enum codec_kind *kind, const char *value, const unsigned char *in,
                  size_t in_len, size_t max_out, unsigned char **out, size_t *out_len, char *err)
{
    if (kind != NULL)
        return codec_decode(*kind, in, in_len, max_out, out, out_len, err, CODEC_ERROR_BYTES);
    return codec_decode_content(value, in, in_len, max_out, out, out_len, err, CODEC_ERROR_BYTES);
}

static int encode(const enum codec_kind *kind, const char *value, const unsigned char *in,
                  size_t in_len, unsigned char **out, size_t *out_len, char *err)
{
    if (kind != NULL)
        return codec_encode(*kind, in, in_len, out, out_len, err, CODEC_ERROR_BYTES);
    return codec_encode_content(value, in, in_len, out, out_len, err, CODEC_ERROR_BYTES);
}

/*
 * What a decode must guarantee: success means a buffer of at most max_out
 * bytes that our own encoder reproduces exactly, with the bound inclusive
 * (max_out = out_len decodes, out_len - 1 does not); failure means no buffer
 * and a reason (naming the coding, for a single one).
 */
static void check_decode(const enum codec_kind *kind, const char *value, const unsigned char *in,
                         size_t in_len)
{
    unsigned char *out = NULL;
    unsigned char *enc = NULL;
    unsigned char *again = NULL;
    size_t out_len = 1;
    size_t enc_len = 0;
    size_t again_len = 0;
    char err[CODEC_ERROR_BYTES] = "";

    if (decode(kind, value, in, in_len, MAX_OUT_BYTES, &out, &out_len, err) != 0) {
        CHECK(out == NULL && out_len == 0 && err[0] != '\0');
        CHECK(kind == NULL ||
              (starts_with(err, codec_name(*kind)) && err[strlen(codec_name(*kind))] == ':'));
        return;
    }
    CHECK(out != NULL && out_len <= MAX_OUT_BYTES);
    CHECK(encode(kind, value, out, out_len, &enc, &enc_len, err) == 0);
    CHECK(enc != NULL);
    CHECK(decode(kind, value, enc, enc_len, out_len, &again, &again_len, err) == 0);
    CHECK(again_len == out_len && memcmp(again, out, out_len) == 0);
    free(again);
    again = NULL;
    if (out_len > 0) {
        CHECK(decode(kind, value, enc, enc_len, out_len - 1, &again, &again_len, err) != 0);
        CHECK(again == NULL && strstr(err, "decoded body exceeds") != NULL);
    }
    free(enc);
    free(out);
}

static void check_parse(const uint8_t *data, size_t len)
{
    static const unsigned char body[] = "tapwire";
    char *value = malloc(len + 1);
    enum codec_kind chain[CODEC_MAX_CHAIN];
    char err[CODEC_ERROR_BYTES] = "";
    unsigned char *enc = NULL;
    unsigned char *dec = NULL;
    size_t enc_len = 0;
    size_t dec_len = 0;
    int n;
    int i;

    CHECK(value != NULL);
    memcpy(value, data, len);
    value[len] = '\0';
    n = codec_parse_content_encoding(value, chain, CODEC_MAX_CHAIN, err, sizeof err);
    CHECK(n >= -1 && n <= CODEC_MAX_CHAIN);
    if (n < 0) {
        CHECK(err[0] != '\0');
        free(value);
        return;
    }
    for (i = 0; i < n; i++)
        CHECK(chain[i] == CODEC_GZIP || chain[i] == CODEC_DEFLATE || chain[i] == CODEC_BR ||
              chain[i] == CODEC_ZSTD);
    CHECK(codec_encode_content(value, body, sizeof body, &enc, &enc_len, err, sizeof err) == 0);
    CHECK(codec_decode_content(value, enc, enc_len, sizeof body, &dec, &dec_len, err, sizeof err) ==
          0);
    CHECK(dec_len == sizeof body && memcmp(dec, body, sizeof body) == 0);
    free(dec);
    free(enc);
    free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *in;
    unsigned int mode;

    if (size == 0)
        return 0;
    mode = data[0] & 7u;
    if (mode == PARSE_MODE) {
        check_parse(data + 1, size - 1);
        return 0;
    }
    in = copy_of(data + 1, size - 1);
    if (mode < SINGLE_MODES) {
        enum codec_kind kind = (enum codec_kind)mode;

        check_decode(&kind, NULL, in, size - 1);
    } else {
        check_decode(NULL, chains[(data[0] >> 3) & 7u], in, size - 1);
    }
    free(in);
    return 0;
}
