/*
 * membudget: see membudget.h. A compare-and-swap loop rather than an
 * add-then-check, so two threads racing for the last bytes can never both
 * pass the limit, and a refused reservation leaves the count untouched.
 */
#include "membudget.h"

bool membudget_reserve(struct membudget *b, size_t bytes, size_t limit)
{
    size_t used = atomic_load(&b->used);
    do {
        if (bytes > limit || used > limit - bytes)
            return false;
    } while (!atomic_compare_exchange_weak(&b->used, &used, used + bytes));
    return true;
}

void membudget_charge(struct membudget *b, size_t bytes)
{
    atomic_fetch_add(&b->used, bytes);
}

void membudget_release(struct membudget *b, size_t bytes)
{
    atomic_fetch_sub(&b->used, bytes);
}

size_t membudget_used(struct membudget *b)
{
    return atomic_load(&b->used);
}
