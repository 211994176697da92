/*
 * stacktrim: give the unused part of the calling thread's stack back to the
 * kernel.
 *
 * A connection thread touches tens of KiB of stack during a TLS handshake
 * and a request (OpenSSL's deepest paths, our head and error buffers), and
 * those pages stay resident for as long as the thread lives, long after it
 * went back to waiting for the next request on a mostly shallow stack. With
 * a thousand idle keep-alive connections that is tens of MiB of dead stack.
 * Called when a connection has been idle for a moment, it drops the pages
 * below the current frame; they come back zeroed on demand.
 */
#ifndef TAPWIRE_STACKTRIM_H
#define TAPWIRE_STACKTRIM_H

#include <stddef.h>

/* Releases the calling thread's stack pages below the caller's frame.
 * Returns the bytes handed back (0 when there was nothing to release or the
 * stack's bounds are unknown). Never fails in a way that matters: the worst
 * case is that the memory stays resident. */
size_t stacktrim_release(void);

#endif
