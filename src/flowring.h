/*
 * flowring: memory the flow store lends the connection threads for the
 * flows they queue, so that queueing a flow allocates nothing.
 *
 * Why: a packed flow (flow_pack()) of a few KiB from malloc() lives in the
 * queue until the writer spools or stores it, thousands of flows later,
 * and is freed on the writer's thread. glibc serves blocks of that size
 * from its sorted bins, not its per-thread caches, and with hundreds of
 * them alive per arena each malloc() and free() got slower: capture cost
 * the connection threads 7-9 µs a request where building and packing a
 * flow that was freed at once cost 2 (bench/README.md, "The spool
 * outlives a crash"). A ring is one block, used in order.
 *
 * A slot is lent with the flow packed into it (flow_pack_into()); whoever
 * frees that flow (flow_free(), on any thread) gives the slot back by a
 * flag, and the ring takes its slots back in order, from the oldest, as
 * those flags say. Slots given back out of order wait for the older ones.
 * Not locked: its lender serialises flowring_lend() (the flow store's
 * lock); flow_free() only stores a flag.
 */
#ifndef TAPWIRE_FLOWRING_H
#define TAPWIRE_FLOWRING_H

#include <stddef.h>

struct flowring;

/* A ring of capacity bytes (a multiple of 64), mapped but not touched.
 * NULL when out of memory. */
struct flowring *flowring_new(size_t capacity);
/* Unmaps it. Every slot must have been given back. NULL is fine. */
void flowring_free(struct flowring *ring);

/* A slot of at least bytes, 16-byte aligned, and *given_back, the flag
 * that gives it back (for flow_pack_into()); NULL when the ring has no
 * room for it now. */
void *flowring_lend(struct flowring *ring, size_t bytes, int **given_back);

#endif
