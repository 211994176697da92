/*
 * membudget: a process-wide count of bytes that some kind of buffer holds,
 * bounded by a limit given at each reservation. Lock-free (one atomic
 * counter), so any thread may reserve and release without waiting. It owns
 * no memory: callers reserve before they grow a buffer and release what they
 * reserved when they free it.
 */
#ifndef TAPWIRE_MEMBUDGET_H
#define TAPWIRE_MEMBUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct membudget {
    atomic_size_t used; /* bytes reserved now */
};

#define MEMBUDGET_INIT                                                                             \
    {                                                                                              \
        0                                                                                          \
    }

/* Reserves bytes when used + bytes stays within limit, and returns true;
 * otherwise reserves nothing and returns false. */
bool membudget_reserve(struct membudget *b, size_t bytes, size_t limit);

/* Counts bytes already allocated whatever the limit (an allocation whose
 * size was known only once made); release them like reserved ones. */
void membudget_charge(struct membudget *b, size_t bytes);

/* Gives back bytes reserved or charged before. */
void membudget_release(struct membudget *b, size_t bytes);

size_t membudget_used(struct membudget *b);

#endif
