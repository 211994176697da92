/*
 * flowspool: flows the flow writer has put off, in a file, oldest first.
 *
 * While the proxy is busy the writer leaves flows for later (flowstore.c,
 * defer_while_busy()); in memory it keeps at most FLOWSTORE_DEFER_BYTES of
 * them. The spool holds the rest of a burst, for a write() per chunk of
 * flows (a few µs a flow, where storing one in SQLite costs about 25), so
 * that the proxy keeps its cores until the burst ends.
 * Owned by the flow writer thread alone: nothing here locks.
 */
#ifndef TAPWIRE_FLOWSPOOL_H
#define TAPWIRE_FLOWSPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flow.h"

struct flowspool;

/* What flowspool_open() found of an earlier process. */
struct flowspool_recovery {
    size_t flows;       /* flows it left that the spool holds, to be taken first */
    uint64_t abandoned; /* flows it left that cannot be read back: held in
                           its memory, or written by another build */
};

/*
 * Opens the spool in the file at path, made when missing, which holds at
 * most max_bytes. Records an earlier process left there (killed before it
 * stored them) become the spool's first flows, those up to done_seq (the
 * last the caller stored, flowspool_done()) left out; *recovery says what
 * was found. The file is removed when the spool closes empty. Returns 0
 * and *out, or -1 with err.
 */
int flowspool_open(const char *path, uint64_t max_bytes, uint64_t done_seq,
                   struct flowspool_recovery *recovery, struct flowspool **out, char *err,
                   size_t err_len);
/* Frees the flows the spool still holds and closes it: the file is
 * removed when every flow put was taken and done with (flowspool_done()),
 * and kept for the next start otherwise. NULL is fine. */
void flowspool_close(struct flowspool *spool);
/* A new bound, for the flows put from now on. */
void flowspool_set_max(struct flowspool *spool, uint64_t max_bytes);

/*
 * Appends flows[0..count) in order and takes them over (sizes: the
 * caller's count of each one's bytes, for flowspool_held_bytes()); returns how many
 * it took, a prefix of flows: all of them, or none of those past its
 * max_bytes or past a write that failed (then it takes no more until it
 * has been emptied: it is "broken", flowspool_is_usable()). A packed flow
 * (flow_pack()) goes to the file; another one (large bodies, WebSocket
 * messages) stays in memory in the spool, its place kept in the file.
 */
size_t flowspool_put(struct flowspool *spool, struct flow **flows, const size_t *sizes,
                     size_t count);
/* Takes up to max of the oldest flows into out, in order; returns how many
 * (0 when empty, or when reading fails: those flows are then lost, and
 * counted in flowspool_lost()). The caller owns them. *last_seq is the
 * sequence number of the last one taken, for flowspool_done(). */
size_t flowspool_take(struct flowspool *spool, struct flow **out, size_t max, uint64_t *last_seq);
/* The caller is done with the flows taken up to seq (stored, or given up):
 * once it is with all of them and the spool is empty, the file is cut to
 * nothing; before that, their records' room in the file is freed now and
 * then, so that a spool that never empties (a load that goes on) holds at
 * most its max_bytes, not all it was ever given. Until then a crash leaves
 * them to the next start, which reads back those past the seq the caller
 * stored with them. */
void flowspool_done(struct flowspool *spool, uint64_t seq);

/* Flows held (in the file and in memory). */
size_t flowspool_count(const struct flowspool *spool);
/* The bytes (as given to flowspool_put()) of the flows held in memory. */
size_t flowspool_held_bytes(const struct flowspool *spool);
/* Whether a put may take flows now: not broken, not full (a full one takes
 * flows again once those done with are freed). */
bool flowspool_is_usable(const struct flowspool *spool);
/* Bytes of the file in use (records not yet taken). */
uint64_t flowspool_file_bytes(const struct flowspool *spool);
/* Flows lost to a failed read since open. */
uint64_t flowspool_lost(const struct flowspool *spool);

#endif
