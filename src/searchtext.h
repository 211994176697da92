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

#endif
