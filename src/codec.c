/*
 * codec: Content-Encoding decode and encode with zlib, libbrotli and libzstd.
 *
 * Every decoder writes into a struct sink whose capacity never passes
 * max_out + 1. The one spare byte is how a decoder that still has output
 * tells us the limit was passed, without the buffer ever holding more; the
 * streaming APIs of all three libraries are used for that reason, even though
 * input and output are whole buffers.
 *
 * The module must not log and must not keep state between calls: it returns
 * a reason, and the caller decides whether that becomes a 502, a note on the
 * dashboard, or a rule that is skipped.
 */
#define ZLIB_CONST
#include "codec.h"
#include "errmsg.h"
#include "httptoken.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#define FIRST_OUTPUT_MIN_BYTES 4096          /* first output buffer of a decoder */
#define FIRST_OUTPUT_MAX_BYTES (1024 * 1024) /* ...and the most it starts with */
#define SHOWN_TOKEN_BYTES 32                 /* an unknown coding as shown in an error */
#define BROTLI_REASON_BYTES 64
#define INTERMEDIATE_SLACK_DIVISOR 64 /* see intermediate_limit() */
#define INTERMEDIATE_SLACK_BYTES (64 * 1024)

/*
 * Levels for re-encoding. A rewritten body is encoded while the client waits,
 * once per response, so speed matters more than the last few percent of
 * size. Measured on 8 MiB of text: zlib 6, its own default and what most
 * origins send, costs 3x level 1 for output a quarter smaller, and level 9
 * costs more again for almost nothing. Brotli 5 is what on-the-fly
 * compressors use (CDNs run 4 to 6): faster than zlib 6 and a third smaller,
 * while 11, the CLI default, is meant for static assets and runs about 60x
 * slower. Zstd 3 is the library default, its authors' speed/size balance.
 */
#define ZLIB_LEVEL 6
#define ZLIB_MEM_LEVEL 8 /* zlib's default */
#define BROTLI_QUALITY 5
#define ZSTD_LEVEL 3

/*
 * RFC 9659 section 3: a zstd content coding must not need a window above
 * 8 MiB, so a decoder may refuse frames that ask for more. That keeps a hostile
 * frame from making the decoder allocate a window of up to 128 MiB (the
 * library's default limit). Encoding at ZSTD_LEVEL uses at most 2 MiB, and
 * levels up to 19 stay within 8 MiB.
 */
#define ZSTD_WINDOW_LOG_MAX 23

#define GZIP_WINDOW_BITS (15 + 16) /* zlib: 32 KiB window, gzip wrapper */
#define ZLIB_WINDOW_BITS 15        /* zlib: 32 KiB window, zlib wrapper */
#define RAW_WINDOW_BITS (-15)      /* zlib: 32 KiB window, no wrapper */

/* Any valid pointer for an empty input, since some library entry points do
 * not promise to accept NULL even with a zero length. */
static const unsigned char no_bytes[1];

struct sink {
    unsigned char *buf; /* owned */
    size_t len;
    size_t cap;
    size_t limit; /* cap never grows past this: max_out + 1 when decoding */
};

const char *codec_name(enum codec_kind kind)
{
    switch (kind) {
    case CODEC_IDENTITY:
        return "identity";
    case CODEC_GZIP:
        return "gzip";
    case CODEC_DEFLATE:
        return "deflate";
    case CODEC_BR:
        return "br";
    case CODEC_ZSTD:
        return "zstd";
    }
    return "unknown";
}

static bool is_known(enum codec_kind kind)
{
    return kind == CODEC_IDENTITY || kind == CODEC_GZIP || kind == CODEC_DEFLATE ||
           kind == CODEC_BR || kind == CODEC_ZSTD;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* ASCII case-insensitive, independent of the locale. */
static bool token_is(const char *tok, size_t tok_len, const char *name)
{
    size_t i;

    if (strlen(name) != tok_len)
        return false;
    for (i = 0; i < tok_len; i++) {
        unsigned char c = (unsigned char)tok[i];

        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)name[i])
            return false;
    }
    return true;
}

static bool lookup_coding(const char *tok, size_t tok_len, enum codec_kind *kind)
{
    /* RFC 9110 8.4.1.3: x-gzip is to be read as gzip. */
    if (token_is(tok, tok_len, "gzip") || token_is(tok, tok_len, "x-gzip"))
        *kind = CODEC_GZIP;
    else if (token_is(tok, tok_len, "deflate"))
        *kind = CODEC_DEFLATE;
    else if (token_is(tok, tok_len, "br"))
        *kind = CODEC_BR;
    else if (token_is(tok, tok_len, "zstd"))
        *kind = CODEC_ZSTD;
    else if (token_is(tok, tok_len, "identity"))
        *kind = CODEC_IDENTITY;
    else
        return false;
    return true;
}

int codec_parse_content_encoding(const char *value, enum codec_kind *chain, size_t max, char *err,
                                 size_t err_len)
{
    size_t limit = max < CODEC_MAX_CHAIN ? max : CODEC_MAX_CHAIN;
    size_t count = 0;
    const char *p = value;

    if (value == NULL)
        return 0;
    for (;;) {
        const char *tok;
        size_t tok_len;
        enum codec_kind kind;

        while (is_ows(*p))
            p++;
        if (*p == '\0')
            break;
        if (*p == ',') {
            /* Separator, or an empty element: RFC 9110 5.6.1 says to ignore those. */
            p++;
            continue;
        }
        tok = p;
        while (httptoken_is_tchar((unsigned char)*p))
            p++;
        tok_len = (size_t)(p - tok);
        while (is_ows(*p))
            p++;
        if (tok_len == 0 || (*p != ',' && *p != '\0')) {
            if (*p > ' ' && *p < 0x7f)
                errmsg_set(err, err_len, "invalid Content-Encoding value: unexpected '%c'", *p);
            else
                errmsg_set(err, err_len, "invalid Content-Encoding value: unexpected byte 0x%02x",
                           (unsigned char)*p);
            return -1;
        }
        if (!lookup_coding(tok, tok_len, &kind)) {
            errmsg_set(err, err_len, "unsupported content coding \"%.*s\"%s",
                       (int)(tok_len < SHOWN_TOKEN_BYTES ? tok_len : SHOWN_TOKEN_BYTES), tok,
                       tok_len > SHOWN_TOKEN_BYTES ? "..." : "");
            return -1;
        }
        if (kind == CODEC_IDENTITY)
            continue;
        if (count == limit) {
            errmsg_set(err, err_len, "Content-Encoding lists more than %zu codings", limit);
            return -1;
        }
        chain[count++] = kind;
    }
    return (int)count;
}

/*
 * Makes room for at least one more byte. Callers keep s->len below s->limit
 * (a decoder fails as soon as it passes max_out), so there is always a size
 * to grow to. Growth doubles,
 * clamped to the limit, so a bounded decode reallocates O(log max_out) times.
 */
static int sink_reserve(struct sink *s)
{
    size_t cap;
    unsigned char *p;

    if (s->len < s->cap)
        return 0;
    cap = s->cap <= s->limit / 2 ? s->cap * 2 : s->limit;
    if (cap <= s->len)
        cap = s->len + 1;
    p = realloc(s->buf, cap);
    if (p == NULL)
        return -1;
    s->buf = p;
    s->cap = cap;
    return 0;
}

/* Free space in the sink, as much as a 32-bit zlib length can say. */
static unsigned int sink_room_uint(const struct sink *s)
{
    size_t room = s->cap - s->len;

    return room < UINT_MAX ? (unsigned int)room : UINT_MAX;
}

/* A first guess for the decoded size: expansion is usual, so start at a few
 * times the input, within bounds that avoid both many reallocs for small
 * bodies and a large allocation for a body that turns out to be small. */
static size_t first_output_bytes(size_t in_len, size_t limit)
{
    size_t n = in_len < SIZE_MAX / 4 ? in_len * 4 : SIZE_MAX;

    if (n < FIRST_OUTPUT_MIN_BYTES)
        n = FIRST_OUTPUT_MIN_BYTES;
    if (n > FIRST_OUTPUT_MAX_BYTES)
        n = FIRST_OUTPUT_MAX_BYTES;
    return n < limit ? n : limit;
}

static void set_exceeded(const char *name, size_t max_out, char *err, size_t err_len)
{
    errmsg_set(err, err_len, "%s: decoded body exceeds %zu bytes", name, max_out);
}

/*
 * RFC 1950 2.2: CM = 8, CINFO <= 7 and the 16-bit header a multiple of 31. A
 * raw deflate stream from a real encoder cannot pass: CM = 8 would mean a
 * stored block whose padding bits are not zero.
 */
static bool has_zlib_header(const unsigned char *in, size_t in_len)
{
    return in_len >= 2 && (in[0] & 0x0f) == 8 && (in[0] >> 4) <= 7 &&
           ((unsigned int)in[0] << 8 | in[1]) % 31 == 0;
}

/* A gzip member starts with 1f 8b (RFC 1952 2.3.1); one lone 1f is the start
 * of a member that was cut short. */
static bool starts_gzip_member(const unsigned char *p, size_t n)
{
    return n >= 1 && p[0] == 0x1f && (n == 1 || p[1] == 0x8b);
}

static int decode_zlib(enum codec_kind kind, const unsigned char *in, size_t in_len, size_t max_out,
                       struct sink *s, char *err, size_t err_len)
{
    const char *name = codec_name(kind);
    z_stream zs;
    bool is_open = false;
    size_t in_left = in_len; /* not yet handed to zlib */
    int window_bits;
    int zr;
    int ret = -1;

    memset(&zs, 0, sizeof zs);
    /* RFC 9110 8.4.1.2 says "deflate" is the zlib format, but servers sent
     * raw deflate for years and every browser accepts it. */
    if (kind == CODEC_GZIP)
        window_bits = GZIP_WINDOW_BITS;
    else
        window_bits = has_zlib_header(in, in_len) ? ZLIB_WINDOW_BITS : RAW_WINDOW_BITS;
    zr = inflateInit2(&zs, window_bits);
    if (zr != Z_OK) {
        errmsg_set(err, err_len, "%s: cannot start the decoder (%s)", name,
                   zr == Z_MEM_ERROR ? "out of memory" : zError(zr));
        goto out;
    }
    is_open = true;
    zs.next_in = in;
    for (;;) {
        unsigned int room;
        size_t consumed;

        if (zs.avail_in == 0 && in_left > 0) {
            zs.avail_in = in_left < UINT_MAX ? (unsigned int)in_left : UINT_MAX;
            in_left -= zs.avail_in;
        }
        if (sink_reserve(s) < 0) {
            errmsg_set(err, err_len, "%s: out of memory", name);
            goto out;
        }
        room = sink_room_uint(s);
        zs.next_out = s->buf + s->len;
        zs.avail_out = room;
        zr = inflate(&zs, Z_NO_FLUSH);
        s->len += room - zs.avail_out;
        if (s->len > max_out) {
            set_exceeded(name, max_out, err, err_len);
            goto out;
        }
        if (zr == Z_STREAM_END) {
            consumed = in_len - in_left - zs.avail_in;
            if (consumed == in_len)
                break;
            /* Concatenated members are one gzip file (RFC 1952 2.2), and
             * gunzip decodes them all; some servers send them. */
            if (kind == CODEC_GZIP && starts_gzip_member(in + consumed, in_len - consumed)) {
                zr = inflateReset(&zs);
                if (zr != Z_OK) {
                    errmsg_set(err, err_len, "%s: cannot restart the decoder (%s)", name,
                               zError(zr));
                    goto out;
                }
                continue;
            }
            errmsg_set(err, err_len, "%s: trailing bytes after the compressed data", name);
            goto out;
        }
        if (zr == Z_NEED_DICT) {
            errmsg_set(err, err_len, "%s: invalid data (needs a preset dictionary)", name);
            goto out;
        }
        if (zr == Z_DATA_ERROR) {
            errmsg_set(err, err_len, "%s: invalid data (%s)", name,
                       zs.msg != NULL ? zs.msg : "corrupt stream");
            goto out;
        }
        if (zr == Z_MEM_ERROR) {
            errmsg_set(err, err_len, "%s: out of memory", name);
            goto out;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            errmsg_set(err, err_len, "%s: decoder failed (%s)", name, zError(zr));
            goto out;
        }
        /* inflate() returns when it runs out of input or of room; with room
         * left and no input left, the stream simply stops early. */
        if (zs.avail_in == 0 && in_left == 0 && zs.avail_out > 0) {
            errmsg_set(err, err_len, "%s: compressed data is truncated", name);
            goto out;
        }
    }
    ret = 0;
out:
    if (is_open)
        inflateEnd(&zs);
    return ret;
}

/* "_ERROR_FORMAT_EXUBERANT_NIBBLE" style names, or "PADDING_1", made
 * readable: "exuberant nibble", "padding 1". */
static void brotli_reason(BrotliDecoderErrorCode code, char *buf, size_t buf_len)
{
    const char *s = BrotliDecoderErrorString(code);
    size_t i = 0;

    while (*s == '_')
        s++;
    if (strncmp(s, "ERROR_", 6) == 0)
        s += 6;
    if (strncmp(s, "FORMAT_", 7) == 0)
        s += 7;
    for (; *s != '\0' && i + 1 < buf_len; s++, i++) {
        char c = *s;

        if (c == '_')
            c = ' ';
        else if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        buf[i] = c;
    }
    buf[i] = '\0';
}

static int decode_brotli(const unsigned char *in, size_t in_len, size_t max_out, struct sink *s,
                         char *err, size_t err_len)
{
    BrotliDecoderState *bs;
    BrotliDecoderResult r;
    const uint8_t *next_in = in;
    size_t avail_in = in_len;
    char reason[BROTLI_REASON_BYTES];
    int ret = -1;

    bs = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (bs == NULL) {
        errmsg_set(err, err_len, "br: out of memory");
        goto out;
    }
    for (;;) {
        uint8_t *next_out;
        size_t avail_out;
        size_t before_in = avail_in;

        if (sink_reserve(s) < 0) {
            errmsg_set(err, err_len, "br: out of memory");
            goto out;
        }
        next_out = s->buf + s->len;
        avail_out = s->cap - s->len;
        r = BrotliDecoderDecompressStream(bs, &avail_in, &next_in, &avail_out, &next_out, NULL);
        s->len = (size_t)(next_out - s->buf);
        if (s->len > max_out) {
            set_exceeded("br", max_out, err, err_len);
            goto out;
        }
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            if (avail_in > 0) {
                errmsg_set(err, err_len, "br: trailing bytes after the compressed data");
                goto out;
            }
            break;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) {
            errmsg_set(err, err_len, "br: compressed data is truncated");
            goto out;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) {
            /* The library only asks for room after filling what it had; if
             * that ever changes, fail rather than spin. */
            if (avail_out > 0 && avail_in == before_in) {
                errmsg_set(err, err_len, "br: decoder made no progress");
                goto out;
            }
            continue;
        }
        if (BrotliDecoderGetErrorCode(bs) <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
            BrotliDecoderGetErrorCode(bs) >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES) {
            errmsg_set(err, err_len, "br: out of memory");
            goto out;
        }
        brotli_reason(BrotliDecoderGetErrorCode(bs), reason, sizeof reason);
        errmsg_set(err, err_len, "br: invalid data (%s)", reason);
        goto out;
    }
    ret = 0;
out:
    if (bs != NULL)
        BrotliDecoderDestroyInstance(bs);
    return ret;
}

/* A zstd frame or a skippable frame starts here (RFC 8878 3.1). */
static bool starts_zstd_frame(const unsigned char *p, size_t n)
{
    uint32_t magic;

    if (n < 4)
        return false;
    magic = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return magic == ZSTD_MAGICNUMBER ||
           (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

static int decode_zstd(const unsigned char *in, size_t in_len, size_t max_out, struct sink *s,
                       char *err, size_t err_len)
{
    ZSTD_DCtx *dctx;
    ZSTD_inBuffer inb = {in, in_len, 0};
    size_t zr;
    int ret = -1;

    dctx = ZSTD_createDCtx();
    if (dctx == NULL) {
        errmsg_set(err, err_len, "zstd: out of memory");
        goto out;
    }
    zr = ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
    if (ZSTD_isError(zr)) {
        errmsg_set(err, err_len, "zstd: cannot limit the window (%s)", ZSTD_getErrorName(zr));
        goto out;
    }
    for (;;) {
        ZSTD_outBuffer outb;

        if (sink_reserve(s) < 0) {
            errmsg_set(err, err_len, "zstd: out of memory");
            goto out;
        }
        outb.dst = s->buf + s->len;
        outb.size = s->cap - s->len;
        outb.pos = 0;
        zr = ZSTD_decompressStream(dctx, &outb, &inb);
        s->len += outb.pos;
        if (s->len > max_out) {
            set_exceeded("zstd", max_out, err, err_len);
            goto out;
        }
        if (ZSTD_isError(zr)) {
            if (ZSTD_getErrorCode(zr) == ZSTD_error_frameParameter_windowTooLarge)
                errmsg_set(err, err_len, "zstd: window larger than 8 MiB (RFC 9659)");
            else if (ZSTD_getErrorCode(zr) == ZSTD_error_memory_allocation)
                errmsg_set(err, err_len, "zstd: out of memory");
            else
                errmsg_set(err, err_len, "zstd: invalid data (%s)", ZSTD_getErrorName(zr));
            goto out;
        }
        if (zr == 0) {
            /* A frame is complete and flushed; the next call starts a new one.
             * RFC 8878 3.1 allows several frames, so only bytes that cannot
             * begin a frame are garbage. */
            if (inb.pos == inb.size)
                break;
            if (!starts_zstd_frame(in + inb.pos, inb.size - inb.pos)) {
                errmsg_set(err, err_len, "zstd: trailing bytes after the compressed data");
                goto out;
            }
            continue;
        }
        /* With room left, the decoder has flushed all it could: it is
         * waiting for input that is not there. */
        if (inb.pos == inb.size && outb.pos < outb.size) {
            errmsg_set(err, err_len, "zstd: compressed data is truncated");
            goto out;
        }
    }
    ret = 0;
out:
    ZSTD_freeDCtx(dctx);
    return ret;
}

/* Gives the sink's buffer to the caller at its exact size (at least one byte,
 * so that success never means NULL). */
static void sink_hand_over(struct sink *s, unsigned char **out, size_t *out_len)
{
    unsigned char *p = realloc(s->buf, s->len > 0 ? s->len : 1);

    if (p != NULL)
        s->buf = p;
    *out = s->buf;
    *out_len = s->len;
    s->buf = NULL;
}

int codec_decode(enum codec_kind kind, const unsigned char *in, size_t in_len, size_t max_out,
                 unsigned char **out, size_t *out_len, char *err, size_t err_len)
{
    struct sink s = {NULL, 0, 0, max_out < SIZE_MAX ? max_out + 1 : SIZE_MAX};
    const char *name = codec_name(kind);
    int r = -1;
    int ret = -1;

    *out = NULL;
    *out_len = 0;
    if (in == NULL)
        in = no_bytes;
    if (!is_known(kind)) {
        errmsg_set(err, err_len, "unknown content coding %d", (int)kind);
        goto out;
    }
    if (kind == CODEC_IDENTITY) {
        if (in_len > max_out) {
            set_exceeded(name, max_out, err, err_len);
            goto out;
        }
        s.cap = in_len;
    } else {
        s.cap = in_len > 0 ? first_output_bytes(in_len, s.limit) : 0;
    }
    s.buf = malloc(s.cap > 0 ? s.cap : 1);
    if (s.buf == NULL) {
        errmsg_set(err, err_len, "%s: out of memory", name);
        goto out;
    }
    if (in_len == 0) {
        /* Nothing was sent, so there is no stream to check: a HEAD or 304
         * response, or an empty body some servers label with the coding. */
        r = 0;
    } else {
        switch (kind) {
        case CODEC_IDENTITY:
            memcpy(s.buf, in, in_len);
            s.len = in_len;
            r = 0;
            break;
        case CODEC_GZIP:
        case CODEC_DEFLATE:
            r = decode_zlib(kind, in, in_len, max_out, &s, err, err_len);
            break;
        case CODEC_BR:
            r = decode_brotli(in, in_len, max_out, &s, err, err_len);
            break;
        case CODEC_ZSTD:
            r = decode_zstd(in, in_len, max_out, &s, err, err_len);
            break;
        }
    }
    if (r < 0)
        goto out;
    sink_hand_over(&s, out, out_len);
    ret = 0;
out:
    free(s.buf);
    return ret;
}

static int encode_zlib(enum codec_kind kind, const unsigned char *in, size_t in_len, struct sink *s,
                       char *err, size_t err_len)
{
    const char *name = codec_name(kind);
    z_stream zs;
    bool is_open = false;
    size_t in_left = in_len;
    int zr;
    int ret = -1;

    memset(&zs, 0, sizeof zs);
    /* "deflate" is written the way RFC 9110 8.4.1.2 asks: zlib-wrapped. */
    zr = deflateInit2(&zs, ZLIB_LEVEL, Z_DEFLATED,
                      kind == CODEC_GZIP ? GZIP_WINDOW_BITS : ZLIB_WINDOW_BITS, ZLIB_MEM_LEVEL,
                      Z_DEFAULT_STRATEGY);
    if (zr != Z_OK) {
        errmsg_set(err, err_len, "%s: cannot start the encoder (%s)", name,
                   zr == Z_MEM_ERROR ? "out of memory" : zError(zr));
        goto out;
    }
    is_open = true;
    /* deflateBound() is exact enough that the loop below grows only for
     * inputs past what a 32-bit zlib length holds. */
    s->cap = deflateBound(&zs, in_len < ULONG_MAX ? (unsigned long)in_len : ULONG_MAX);
    s->buf = malloc(s->cap > 0 ? s->cap : 1);
    if (s->buf == NULL) {
        errmsg_set(err, err_len, "%s: out of memory", name);
        goto out;
    }
    zs.next_in = in;
    for (;;) {
        unsigned int room;

        if (zs.avail_in == 0 && in_left > 0) {
            zs.avail_in = in_left < UINT_MAX ? (unsigned int)in_left : UINT_MAX;
            in_left -= zs.avail_in;
        }
        if (sink_reserve(s) < 0) {
            errmsg_set(err, err_len, "%s: out of memory", name);
            goto out;
        }
        room = sink_room_uint(s);
        zs.next_out = s->buf + s->len;
        zs.avail_out = room;
        zr = deflate(&zs, in_left == 0 ? Z_FINISH : Z_NO_FLUSH);
        s->len += room - zs.avail_out;
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            errmsg_set(err, err_len, "%s: encoder failed (%s)", name, zError(zr));
            goto out;
        }
    }
    ret = 0;
out:
    if (is_open)
        deflateEnd(&zs);
    return ret;
}

/*
 * libbrotlienc as built by Debian (and by default upstream, where
 * BROTLI_ENCODER_EXIT_ON_OOM is the default) calls exit() when an allocation
 * fails inside the encoder, so "out of memory" cannot be returned from here;
 * the one-shot API at least keeps its allocations to one call. The decoder
 * does not have this problem.
 */
static int encode_brotli(const unsigned char *in, size_t in_len, struct sink *s, char *err,
                         size_t err_len)
{
    size_t cap = BrotliEncoderMaxCompressedSize(in_len);
    size_t len;

    if (cap == 0) {
        errmsg_set(err, err_len, "br: body of %zu bytes is too large to encode", in_len);
        return -1;
    }
    s->buf = malloc(cap);
    if (s->buf == NULL) {
        errmsg_set(err, err_len, "br: out of memory");
        return -1;
    }
    s->cap = cap;
    len = cap;
    if (!BrotliEncoderCompress(BROTLI_QUALITY, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, in_len,
                               in, &len, s->buf)) {
        errmsg_set(err, err_len, "br: encoder failed");
        return -1;
    }
    s->len = len;
    return 0;
}

static int encode_zstd(const unsigned char *in, size_t in_len, struct sink *s, char *err,
                       size_t err_len)
{
    size_t cap = ZSTD_compressBound(in_len);
    size_t zr;

    if (ZSTD_isError(cap) || cap == 0) {
        errmsg_set(err, err_len, "zstd: body of %zu bytes is too large to encode", in_len);
        return -1;
    }
    s->buf = malloc(cap);
    if (s->buf == NULL) {
        errmsg_set(err, err_len, "zstd: out of memory");
        return -1;
    }
    s->cap = cap;
    /* One-shot compression records the content size in the frame header, so
     * a decoder can size its buffer before it starts. */
    zr = ZSTD_compress(s->buf, cap, in, in_len, ZSTD_LEVEL);
    if (ZSTD_isError(zr)) {
        errmsg_set(err, err_len, "zstd: encoder failed (%s)", ZSTD_getErrorName(zr));
        return -1;
    }
    s->len = zr;
    return 0;
}

int codec_encode(enum codec_kind kind, const unsigned char *in, size_t in_len, unsigned char **out,
                 size_t *out_len, char *err, size_t err_len)
{
    struct sink s = {NULL, 0, 0, SIZE_MAX};
    int r = -1;
    int ret = -1;

    *out = NULL;
    *out_len = 0;
    if (in == NULL)
        in = no_bytes;
    switch (kind) {
    case CODEC_IDENTITY:
        s.buf = malloc(in_len > 0 ? in_len : 1);
        if (s.buf == NULL) {
            errmsg_set(err, err_len, "identity: out of memory");
            break;
        }
        if (in_len > 0)
            memcpy(s.buf, in, in_len);
        s.cap = s.len = in_len;
        r = 0;
        break;
    case CODEC_GZIP:
    case CODEC_DEFLATE:
        r = encode_zlib(kind, in, in_len, &s, err, err_len);
        break;
    case CODEC_BR:
        r = encode_brotli(in, in_len, &s, err, err_len);
        break;
    case CODEC_ZSTD:
        r = encode_zstd(in, in_len, &s, err, err_len);
        break;
    default:
        errmsg_set(err, err_len, "unknown content coding %d", (int)kind);
        break;
    }
    if (r < 0)
        goto out;
    sink_hand_over(&s, out, out_len);
    ret = 0;
out:
    free(s.buf);
    return ret;
}

/*
 * An intermediate result of a chain is still compressed: it may be a little
 * larger than the body it decodes to (stored blocks, frame headers, a gzip
 * file name), so holding it to max_out would refuse honest bodies near the
 * limit. Every encoder's worst case stays within this slack: zstd, the
 * largest, adds 1/256 plus a few hundred bytes (ZSTD_compressBound()).
 */
static size_t intermediate_limit(size_t max_out)
{
    size_t slack = max_out / INTERMEDIATE_SLACK_DIVISOR + INTERMEDIATE_SLACK_BYTES;

    return max_out < SIZE_MAX - slack ? max_out + slack : SIZE_MAX;
}

int codec_decode_content(const char *content_encoding, const unsigned char *in, size_t in_len,
                         size_t max_out, unsigned char **out, size_t *out_len, char *err,
                         size_t err_len)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    unsigned char *cur = NULL; /* owned: the latest intermediate result */
    size_t cur_len = in_len;
    int n;
    int ret = -1;

    *out = NULL;
    *out_len = 0;
    n = codec_parse_content_encoding(content_encoding, chain, CODEC_MAX_CHAIN, err, err_len);
    if (n < 0)
        goto out;
    if (n == 0) {
        ret = codec_decode(CODEC_IDENTITY, in, in_len, max_out, out, out_len, err, err_len);
        goto out;
    }
    /* The last coding listed was applied last (RFC 9110 8.4), so it comes
     * off first. Every stage is bounded, not only the final one. */
    while (n-- > 0) {
        unsigned char *next;
        size_t next_len;
        size_t limit = n > 0 ? intermediate_limit(max_out) : max_out;

        if (codec_decode(chain[n], cur != NULL ? cur : in, cur_len, limit, &next, &next_len, err,
                         err_len) < 0)
            goto out;
        free(cur);
        cur = next;
        cur_len = next_len;
    }
    *out = cur;
    *out_len = cur_len;
    cur = NULL;
    ret = 0;
out:
    free(cur);
    return ret;
}

int codec_encode_content(const char *content_encoding, const unsigned char *in, size_t in_len,
                         unsigned char **out, size_t *out_len, char *err, size_t err_len)
{
    enum codec_kind chain[CODEC_MAX_CHAIN];
    unsigned char *cur = NULL; /* owned: the latest intermediate result */
    size_t cur_len = in_len;
    int n;
    int i;
    int ret = -1;

    *out = NULL;
    *out_len = 0;
    n = codec_parse_content_encoding(content_encoding, chain, CODEC_MAX_CHAIN, err, err_len);
    if (n < 0)
        goto out;
    if (n == 0) {
        ret = codec_encode(CODEC_IDENTITY, in, in_len, out, out_len, err, err_len);
        goto out;
    }
    for (i = 0; i < n; i++) {
        unsigned char *next;
        size_t next_len;

        if (codec_encode(chain[i], cur != NULL ? cur : in, cur_len, &next, &next_len, err,
                         err_len) < 0)
            goto out;
        free(cur);
        cur = next;
        cur_len = next_len;
    }
    *out = cur;
    *out_len = cur_len;
    cur = NULL;
    ret = 0;
out:
    free(cur);
    return ret;
}
