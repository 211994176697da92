/*
 * stacktrim: see stacktrim.h. Linux- and glibc-specific
 * (pthread_getattr_np, MADV_DONTNEED on private anonymous memory, which reads
 * back as zeros). The bounds are looked up once per thread and kept in
 * thread-local storage: per-thread state, so no lock.
 */
#include "stacktrim.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Left alone below the current frame: the few hundred bytes that the
 * frames of madvise() and of the wait that follows need right away. (What
 * is released reads back as zeros, so being wrong costs a page fault, not
 * correctness.) */
#define STACKTRIM_MARGIN_BYTES 1024

static __thread uintptr_t stack_low; /* lowest usable address; 0: not looked up */
static __thread int stack_unknown;   /* the lookup failed: do nothing */

static int look_up_bounds(void)
{
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    int rc;

    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return -1;
    rc = pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    if (rc != 0 || addr == NULL || size == 0)
        return -1;
    stack_low = (uintptr_t)addr;
    return 0;
}

size_t stacktrim_release(void)
{
    volatile char here = 0;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t top, low;

    if (stack_unknown)
        return 0;
    if (stack_low == 0 && look_up_bounds() != 0) {
        stack_unknown = 1;
        return 0;
    }
    /* The stack grows down: everything below this frame, less the
     * margin, is dead. */
    top = ((uintptr_t)&here - STACKTRIM_MARGIN_BYTES) & ~(page - 1);
    low = (stack_low + page - 1) & ~(page - 1);
    if (top <= low)
        return 0;
    if (madvise((void *)low, top - low, MADV_DONTNEED) != 0)
        return 0;
    return top - low;
}
