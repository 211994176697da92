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
 * The FTS5 query that finds rows whose column holds needle[0..len) as a
 * substring: the phrase {column} : "needle" with '"' doubled. Returns a
 * malloc'd string (caller frees), or NULL when the index cannot answer
 * (needle not UTF-8, or shorter than SEARCHTEXT_MIN_CHARS characters) or
 * out of memory: the caller then searches without the index.
 */
char *searchtext_phrase(const char *column, const void *needle, size_t len);

#endif
