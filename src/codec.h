/*
 * codec: Content-Encoding decode and encode (RFC 9110 8.4), buffer to buffer.
 *
 * Bodies reach this module whole and already bounded by the caller, so the API
 * takes and returns complete buffers. What the module must never do is trust
 * the compressed bytes: every decoder stops as soon as its output would pass
 * the caller's max_out, so a small body cannot expand into a large allocation
 * (a decompression bomb). Memory for one coding is at most max_out + 1 bytes
 * of output plus the decoder's own state, which the formats bound: 32 KiB
 * for zlib, 16 MiB for brotli, and 8 MiB for zstd (the window is capped as
 * RFC 9659 allows).
 *
 * No global state: every call creates and frees its own library contexts, so
 * any thread may call any function at any time.
 */
#ifndef TAPWIRE_CODEC_H
#define TAPWIRE_CODEC_H

#include <stddef.h>

enum codec_kind { CODEC_IDENTITY, CODEC_GZIP, CODEC_DEFLATE, CODEC_BR, CODEC_ZSTD };

#define CODEC_MAX_CHAIN 4 /* most codings accepted in one Content-Encoding value */

/* A size for the err buffers below that holds every message in full. */
#define CODEC_ERROR_BYTES 256

/*
 * Parses a Content-Encoding field value such as "gzip", "x-gzip", "GZIP , br"
 * into chain[0..count-1], in the order the codings were applied (the order
 * they are listed). Names are case-insensitive, OWS and empty list elements
 * are allowed (RFC 9110 5.6.1), "x-gzip" means gzip (RFC 9110 8.4.1.3), and
 * "identity" is left out because it means no coding at all. NULL or an empty
 * value yields 0. Returns the count, or -1 with err for an unknown or
 * malformed coding or for more than min(max, CODEC_MAX_CHAIN) codings.
 */
int codec_parse_content_encoding(const char *value, enum codec_kind *chain, size_t max, char *err,
                                 size_t err_len);

/* The coding's token as HTTP spells it: "gzip", "deflate", "br", "zstd",
 * "identity"; "unknown" for a value outside the enum. Static storage. */
const char *codec_name(enum codec_kind kind);

/*
 * Removes one coding from in[0..in_len-1] (in may be NULL when in_len is 0).
 * On success returns 0 and sets *out to a malloc'd buffer of *out_len <=
 * max_out bytes (caller frees with free(); never NULL, even when empty). On
 * failure returns -1, sets *out = NULL and *out_len = 0, and fills err with a
 * message naming the coding and the problem, e.g.
 * "gzip: compressed data is truncated" or
 * "br: decoded body exceeds 16777216 bytes".
 * An empty input decodes to an empty output for every coding: a body that is
 * absent (HEAD, 304) still carries the representation's Content-Encoding.
 * For "deflate", both the zlib format the RFC asks for and the raw deflate
 * many servers send are accepted; "gzip" accepts concatenated members and
 * "zstd" concatenated frames.
 */
int codec_decode(enum codec_kind kind, const unsigned char *in, size_t in_len, size_t max_out,
                 unsigned char **out, size_t *out_len, char *err, size_t err_len);

/*
 * Applies one coding. On success returns 0 and sets *out to a malloc'd buffer
 * of *out_len bytes (caller frees with free(); never NULL). On failure returns
 * -1 with *out = NULL, *out_len = 0 and err filled. "deflate" is written in
 * the zlib format (RFC 9110 8.4.1.2). Beware that libbrotlienc ends the
 * process if an allocation fails inside it (see encode_brotli() in codec.c).
 */
int codec_encode(enum codec_kind kind, const unsigned char *in, size_t in_len, unsigned char **out,
                 size_t *out_len, char *err, size_t err_len);

/*
 * Decodes a body whose Content-Encoding field value is content_encoding,
 * removing the codings in the reverse order of application. max_out bounds
 * the result; each intermediate (still compressed) result is bounded too, by
 * max_out plus 1/64 and 64 KiB of slack for compression overhead. Same
 * ownership and error contract as codec_decode(); a value with no coding
 * (NULL, empty, "identity") yields a copy of the input, still bounded by
 * max_out. Memory peaks at about two results' worth while a stage runs.
 */
int codec_decode_content(const char *content_encoding, const unsigned char *in, size_t in_len,
                         size_t max_out, unsigned char **out, size_t *out_len, char *err,
                         size_t err_len);

/*
 * Encodes a body so that it matches the Content-Encoding field value
 * content_encoding, applying the codings in the order listed. Same ownership
 * and error contract as codec_encode(); the caller sets Content-Length from
 * *out_len.
 */
int codec_encode_content(const char *content_encoding, const unsigned char *in, size_t in_len,
                         unsigned char **out, size_t *out_len, char *err, size_t err_len);

#endif
