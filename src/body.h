/*
 * body: a message body as a stream of slices, read from a source and
 * written to a sink, so that the exchange moves, records and rewrites
 * bodies without knowing the framing of either side (Content-Length or
 * chunked on HTTP/1.1, DATA frames on HTTP/2). A codec implements both for
 * its wire; the exchange only calls these.
 *
 * The interfaces are structs of function pointers embedded first in the
 * codec's reader or writer, which owns its state; nothing here allocates.
 */
#ifndef TAPWIRE_BODY_H
#define TAPWIRE_BODY_H

#include <stddef.h>

#include "message.h"

/* Which side failed while a body moved. */
enum body_fault {
    BODY_FAULT_NONE,
    BODY_FAULT_SOURCE,  /* the sender broke off, went quiet or went away */
    BODY_FAULT_SINK,    /* the receiver stopped taking bytes */
    BODY_FAULT_FRAMING, /* the sender's framing was invalid (a chunk line, a length) */
};

struct body_source {
    /* Returns 1 with the next slice (valid until the next call), 0 at the
     * end of the body, or -1 with fault set. */
    int (*next)(struct body_source *src, int timeout_ms, const char **data, size_t *len);
    /* After next() returned 0: the trailer fields (count 0 when none),
     * valid as long as the source. */
    struct message_fields (*trailers)(struct body_source *src);
    enum body_fault fault;
};

struct body_sink {
    /* Each returns 0 or a negative value when the receiver failed. */
    int (*write)(struct body_sink *dst, const void *data, size_t len, int timeout_ms);
    /* The end of the body, with its trailers (may be NULL), sent on. */
    int (*end)(struct body_sink *dst, const struct message_fields *trailers, int timeout_ms);
    /* Sends on what was written so far: after a source fault the receiver
     * gets a short body rather than nothing. */
    int (*flush)(struct body_sink *dst, int timeout_ms);
};

#endif
