/*
 * buf: a growable byte buffer with a hard bound, for building bodies,
 * header values and text whose size depends on input.
 *
 * A buffer never holds more than its max bytes: a put that would pass it
 * adds nothing and fails, so a caller that builds from untrusted input
 * cannot be made to allocate without limit. After the first failed put
 * (past max or out of memory) the buffer is marked failed and takes
 * nothing more, so a builder may chain puts and check once at the end.
 * The data is always NUL-terminated once allocated (one byte past len is
 * reserved for it), so text can be handed out as a string.
 * One owner, no locking.
 */
#ifndef TAPWIRE_BUF_H
#define TAPWIRE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUF_MIN_CAPACITY_BYTES 256 /* the first allocation, unless max is smaller */
/* For text bounded by what it is built from (pages, commands made of
 * captured, already bounded fields): no bound of its own. */
#define BUF_UNBOUNDED_BYTES (SIZE_MAX / 2)

#define BUF_OVER_MAX (-1)  /* the put would pass max */
#define BUF_NO_MEMORY (-2) /* out of memory */

struct buf {
    char *data;       /* owned, NULL until the first byte; NUL-terminated */
    size_t len;       /* bytes held, never more than max */
    size_t cap;       /* bytes data can hold before it grows (plus the NUL) */
    size_t max;       /* the bound: set before the first put */
    bool has_failed;  /* a put failed: nothing more is added */
    bool is_over_max; /* the failure was the bound, not memory */
};

/* An empty buffer bounded at max_bytes: struct buf b = BUF_INIT(n); */
#define BUF_INIT(max_bytes)                                                                        \
    {                                                                                              \
        .max = (max_bytes)                                                                         \
    }

/* Appends len bytes. Returns 0, BUF_OVER_MAX when len + what is held would
 * pass max, or BUF_NO_MEMORY; after a failure every later put fails the
 * same way and adds nothing. A put of 0 bytes allocates nothing. */
int buf_put(struct buf *b, const void *data, size_t len);
/* Allocates room for bytes (at most max) before the first put, so that a
 * builder whose usual size is known grows once instead of doubling from
 * BUF_MIN_CAPACITY_BYTES. Returns 0 or BUF_NO_MEMORY (then failed). */
int buf_reserve(struct buf *b, size_t bytes);
/* buf_put() of a NUL-terminated string, without its NUL. */
int buf_str(struct buf *b, const char *s);
/* Frees the data and empties the buffer (max is kept). */
void buf_free(struct buf *b);

#endif
