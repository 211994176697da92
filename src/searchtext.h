/*
 * searchtext: what the flow store's full-text index holds of a body, and a
 * dashboard search as an FTS5 query (sql/schema.sql, version 10).
 *
 * The index uses FTS5's trigram tokenizer: it finds any substring of at
 * least SEARCHTEXT_MIN_CHARS characters, ignoring case. Texts are UTF-8;
 * anything else (binary bodies, a search for bytes that are not UTF-8)
 * stays out of the index, and the search reads those bodies itself.
 * Pure functions: no state, no SQL, any thread.
 */
#ifndef TAPWIRE_SEARCHTEXT_H
#define TAPWIRE_SEARCHTEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Of each body, at most this many bytes (decoded) go into the index. */
#define SEARCHTEXT_BODY_MAX_BYTES (64 * 1024)
/* Shorter searches have no trigram to look up. */
#define SEARCHTEXT_MIN_CHARS 3

/* Whether s[0..len) is well-formed UTF-8 without NUL (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
bool searchtext_is_utf8(const unsigned char *s, size_t len);

/* The longest prefix of the UTF-8 text s[0..len) that is at most max bytes
 * and ends on a character boundary. */
size_t searchtext_cut(const unsigned char *s, size_t len, size_t max);

/*
 * The FTS5 query that finds (a superset of) the rows whose text holds
 * needle[0..len) as a substring, for an index with detail=none, which
 * answers no phrases: "t1" AND "t2" AND ... over trigrams of the needle
 * that cover it (every third one and the last), '"' doubled. Returns a
 * malloc'd string (caller frees), or NULL when the index cannot answer
 * (needle not UTF-8, or shorter than SEARCHTEXT_MIN_CHARS characters) or
 * out of memory: the caller then searches without the index.
 */
char *searchtext_query(const void *needle, size_t len);

/*
 * The values of the header section text ("Name: value\r\n" per field, as
 * struct flow keeps it) joined by '\n', for the index. Returns a malloc'd
 * string (caller frees; "" for NULL or no fields), NULL when out of
 * memory.
 */
char *searchtext_header_values(const char *text);

/* The same into out, which has room for strlen(text) bytes; no NUL is
 * added. Returns the length. For a caller that reuses one buffer. */
size_t searchtext_put_header_values(const char *text, char *out);

/*
 * A byte-pair filter of a body the trigram index does not hold (binary, or
 * not UTF-8): bit (a & 31) * 32 + (b & 31) of SEARCHTEXT_PAIRS_BYTES is set
 * for every two adjacent bytes a, b. Masking to five bits puts 'A' and
 * 'a' (and every ASCII letter's two cases) on one bit, so the filter
 * answers folded and exact searches alike. A body holding a needle has
 * every pair of it, so a body whose filter lacks one of them cannot hold
 * it: the search skips reading it. With 1,024 bits a body up to a few KiB
 * leaves most bits clear; a larger one would set nearly all of them, so
 * the store keeps none for it (SEARCHTEXT_PAIRS_MAX_BODY_BYTES).
 */
#define SEARCHTEXT_PAIRS_BYTES 128
#define SEARCHTEXT_PAIRS_MAX_BODY_BYTES 4096

/* Sets the bits of s[0..len)'s byte pairs in bits (not cleared first). */
void searchtext_pairs_add(unsigned char bits[SEARCHTEXT_PAIRS_BYTES], const unsigned char *s,
                          size_t len);

/* Whether a body with filter bits[0..bits_len) may hold needle[0..len):
 * true unless bits is a whole filter that lacks one of the needle's pairs
 * (a needle of one byte, or a filter of another size, is never ruled out). */
bool searchtext_pairs_may_hold(const unsigned char *bits, size_t bits_len,
                               const unsigned char *needle, size_t len);

#endif
