/*
 * clock: the two clocks the proxy reads. Monotonic time for deadlines and
 * durations (immune to clock changes); wall time for what flows record.
 */
#ifndef TAPWIRE_CLOCK_H
#define TAPWIRE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The coarse monotonic clock is a few nanoseconds to read and good to a few
 * milliseconds: enough for a budget of seconds checked once per match (the
 * rules' time budget), where the precise clock's cost would show. */
static inline int64_t clock_mono_coarse_ms(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Microseconds since the Unix epoch. */
static inline int64_t clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The time ms milliseconds from now on clock, for the waits that take an
 * absolute deadline: CLOCK_REALTIME for pthread_mutex_timedlock() and for
 * condition variables made without a clock attribute, CLOCK_MONOTONIC for
 * those made with it. */
static inline struct timespec clock_deadline_ms(clockid_t clock, int64_t ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

#endif
