/*
 * harimport: a HAR 1.2 document as flows for the flow store (the
 * dashboard's POST /api/har).
 *
 * The document is untrusted input (fuzzed: tests/fuzz/fuzz_harimport.c):
 * every field is checked for type, size and the characters a flow may
 * hold, and an entry that does not fit is skipped and counted, never
 * half-imported. It reads what har.c writes back into the same flow, so
 * export -> import -> export gives the same entries. This module never
 * touches the store or SQL: it hands each flow to a callback.
 * Thread safety: no shared state; any thread.
 */
#ifndef TAPWIRE_HARIMPORT_H
#define TAPWIRE_HARIMPORT_H

#include <stddef.h>

#include "flow.h"

#define HARIMPORT_MAX_ENTRIES 100000      /* entries read from one document */
#define HARIMPORT_MAX_TARGET_BYTES 65536  /* a URL's path and query */
#define HARIMPORT_MAX_HEADER_BYTES 262144 /* one header section as stored */
#define HARIMPORT_MAX_ERROR_BYTES 4096    /* the _error text */
#define HARIMPORT_REASON_BYTES 160

/* Takes flow (is_imported set; free with flow_free() or hand it to the
 * store). Returns 0 to go on, -1 to stop the import (it then fails). */
typedef int (*harimport_flow_fn)(void *arg, struct flow *flow);

struct harimport_result {
    size_t imported;                            /* flows handed to the callback */
    size_t skipped;                             /* entries that could not be flows */
    char first_skipped[HARIMPORT_REASON_BYTES]; /* why the first one was skipped, "" if none */
};

/*
 * Reads the HAR document data[0..len) and hands a flow per entry to fn,
 * oldest startedDateTime first (ties in the document's order). Bodies keep at most body_limit bytes
 * (as
 * --capture-limit). Returns 0 with *result filled, or -1 with err (not
 * JSON, no log.entries array, more than HARIMPORT_MAX_ENTRIES entries, out
 * of memory, or fn stopped it; the flows handed over so far stay handed
 * over).
 */
int harimport_parse(const char *data, size_t len, size_t body_limit, harimport_flow_fn fn,
                    void *arg, struct harimport_result *result, char *err, size_t err_len);

#endif
