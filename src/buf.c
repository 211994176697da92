/*
 * buf: the bounded growable byte buffer. Capacity doubles from
 * BUF_MIN_CAPACITY_BYTES and is never allocated past max, so a bound of a
 * few kilobytes costs at most that.
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

static int fail(struct buf *b, bool is_over_max)
{
    b->has_failed = true;
    b->is_over_max = is_over_max;
    return is_over_max ? BUF_OVER_MAX : BUF_NO_MEMORY;
}

static int grow(struct buf *b, size_t want)
{
    size_t cap = b->cap < BUF_MIN_CAPACITY_BYTES ? BUF_MIN_CAPACITY_BYTES : b->cap;
    char *grown;

    while (cap < want)
        cap = cap > SIZE_MAX / 4 ? want : cap * 2;
    if (cap > b->max)
        cap = b->max;
    grown = realloc(b->data, cap + 1); /* +1: room for the NUL */
    if (grown == NULL)
        return fail(b, false);
    b->data = grown;
    b->cap = cap;
    return 0;
}

int buf_put(struct buf *b, const void *data, size_t len)
{
    if (b->has_failed)
        return b->is_over_max ? BUF_OVER_MAX : BUF_NO_MEMORY;
    if (len > b->max - b->len)
        return fail(b, true);
    if (len == 0)
        return 0;
    if (len > b->cap - b->len && grow(b, b->len + len) != 0)
        return BUF_NO_MEMORY;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int buf_reserve(struct buf *b, size_t bytes)
{
    if (b->has_failed)
        return b->is_over_max ? BUF_OVER_MAX : BUF_NO_MEMORY;
    if (bytes > b->max)
        bytes = b->max;
    return bytes > b->cap ? grow(b, bytes) : 0;
}

int buf_str(struct buf *b, const char *s)
{
    return buf_put(b, s, strlen(s));
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->has_failed = b->is_over_max = false;
}
