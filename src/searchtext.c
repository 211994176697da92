/*
 * searchtext: index text and FTS5 phrases for the flow store's search.
 *
 * The index narrows a search; it never decides it. Every candidate it
 * gives is checked against the stored flow by the same test as before the
 * index existed (flowstore.c), so the trigram tokenizer's wider notion of
 * case (it folds non-ASCII letters too) only costs a few extra candidates.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "searchtext.h"
#include "flow.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool searchtext_is_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t n, k;
        unsigned long cp;

        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

size_t searchtext_cut(const unsigned char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    /* Back off continuation bytes (10xxxxxx) to the start of a character. */
    while (max > 0 && (s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

static size_t count_chars(const unsigned char *s, size_t len)
{
    size_t i, n = 0;

    for (i = 0; i < len; i++)
        n += (s[i] & 0xc0) != 0x80;
    return n;
}

/* The byte offset of the character after the one at i. */
static size_t next_char(const unsigned char *s, size_t len, size_t i)
{
    for (i++; i < len && (s[i] & 0xc0) == 0x80; i++)
        ;
    return i;
}

/* Appends the trigram s[from..to) as a quoted FTS5 string. */
static size_t put_term(char *out, size_t pos, const unsigned char *s, size_t from, size_t to)
{
    size_t i;

    if (pos > 0) {
        memcpy(out + pos, " AND ", 5);
        pos += 5;
    }
    out[pos++] = '"';
    for (i = from; i < to; i++) {
        out[pos++] = (char)s[i];
        if (s[i] == '"')
            out[pos++] = '"';
    }
    out[pos++] = '"';
    return pos;
}

char *searchtext_query(const void *needle, size_t len)
{
    const unsigned char *s = needle;
    size_t chars, quotes = 0;
    size_t starts[4]; /* byte offsets of the characters at c .. c + 3 */
    size_t i, c, pos;
    char *out;

    if (!searchtext_is_utf8(s, len) || (chars = count_chars(s, len)) < SEARCHTEXT_MIN_CHARS)
        return NULL;
    for (i = 0; i < len; i++)
        quotes += s[i] == '"';
    /* At most a term per character: each is the trigram's bytes (each
     * '"' doubled) in quotes and " AND ". */
    out = malloc(2 * len + quotes * 3 + chars * 8 + 1);
    if (out == NULL)
        return NULL;
    pos = 0;
    for (c = 0, i = 0; c + SEARCHTEXT_MIN_CHARS <= chars; c += SEARCHTEXT_MIN_CHARS) {
        starts[0] = i;
        starts[1] = next_char(s, len, starts[0]);
        starts[2] = next_char(s, len, starts[1]);
        starts[3] = next_char(s, len, starts[2]);
        pos = put_term(out, pos, s, starts[0], starts[3]);
        i = starts[3];
    }
    if (chars % SEARCHTEXT_MIN_CHARS != 0) {
        /* The last trigram, overlapping the one before. */
        size_t from = len;

        for (c = 0; c < SEARCHTEXT_MIN_CHARS; c++)
            for (from--; from > 0 && (s[from] & 0xc0) == 0x80; from--)
                ;
        pos = put_term(out, pos, s, from, len);
    }
    out[pos] = '\0';
    return out;
}

size_t searchtext_put_header_values(const char *text, char *out)
{
    const char *name, *value;
    size_t name_len, value_len;
    size_t pos = 0, used = 0;

    while (text != NULL && flow_headers_next(text, &pos, &name, &name_len, &value, &value_len)) {
        if (used > 0)
            out[used++] = '\n';
        memcpy(out + used, value, value_len);
        used += value_len;
    }
    return used;
}

char *searchtext_header_values(const char *text)
{
    char *out = malloc(text != NULL ? strlen(text) + 1 : 1);

    if (out == NULL)
        return NULL;
    out[searchtext_put_header_values(text, out)] = '\0';
    return out;
}

static size_t pair_bit(unsigned char a, unsigned char b)
{
    return (size_t)(a & 31) << 5 | (size_t)(b & 31);
}

void searchtext_pairs_add(unsigned char bits[SEARCHTEXT_PAIRS_BYTES], const unsigned char *s,
                          size_t len)
{
    /* One 32-bit row per class of the first byte, bit = class of the
     * second: an OR into a word the loop keeps in the cache (the writer
     * runs this over every binary body up to 4 KiB). */
    uint32_t rows[32] = {0};
    unsigned prev;
    size_t i, r;

    if (len < 2)
        return;
    prev = s[0] & 31;
    /* Two bytes a round: half the loop's own instructions. */
    for (i = 1; i + 1 < len; i += 2) {
        unsigned a = s[i] & 31, b = s[i + 1] & 31;

        rows[prev] |= (uint32_t)1 << a;
        rows[a] |= (uint32_t)1 << b;
        prev = b;
    }
    if (i < len)
        rows[prev] |= (uint32_t)1 << (s[i] & 31);
    /* Row r is bits r * 32 .. r * 32 + 31: bytes r * 4 .. r * 4 + 3. */
    for (r = 0; r < 32; r++) {
        bits[r * 4] |= (unsigned char)rows[r];
        bits[r * 4 + 1] |= (unsigned char)(rows[r] >> 8);
        bits[r * 4 + 2] |= (unsigned char)(rows[r] >> 16);
        bits[r * 4 + 3] |= (unsigned char)(rows[r] >> 24);
    }
}

bool searchtext_pairs_may_hold(const unsigned char *bits, size_t bits_len,
                               const unsigned char *needle, size_t len)
{
    size_t i;

    if (bits == NULL || bits_len != SEARCHTEXT_PAIRS_BYTES)
        return true;
    for (i = 1; i < len; i++) {
        size_t bit = pair_bit(needle[i - 1], needle[i]);

        if (!(bits[bit >> 3] & (1u << (bit & 7))))
            return false;
    }
    return true;
}
