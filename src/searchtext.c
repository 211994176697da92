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

char *searchtext_phrase(const char *column, const void *needle, size_t len)
{
    const unsigned char *s = needle;
    size_t col_len = strlen(column);
    size_t quotes = 0;
    size_t i, pos;
    char *out;

    if (!searchtext_is_utf8(s, len) || count_chars(s, len) < SEARCHTEXT_MIN_CHARS)
        return NULL;
    for (i = 0; i < len; i++)
        quotes += s[i] == '"';
    /* "{" column "} : \"" needle (quotes doubled) "\"" NUL */
    out = malloc(col_len + len + quotes + 8);
    if (out == NULL)
        return NULL;
    pos = 0;
    out[pos++] = '{';
    memcpy(out + pos, column, col_len);
    pos += col_len;
    memcpy(out + pos, "} : \"", 5);
    pos += 5;
    for (i = 0; i < len; i++) {
        out[pos++] = (char)s[i];
        if (s[i] == '"')
            out[pos++] = '"';
    }
    out[pos++] = '"';
    out[pos] = '\0';
    return out;
}
