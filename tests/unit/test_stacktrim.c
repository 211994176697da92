/* Unit tests for giving dead stack pages back (src/stacktrim.c). */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stacktrim.h"

#define TEST_STACK_BYTES (512 * 1024)
#define DEEP_BYTES (192 * 1024)

struct probe {
    uintptr_t low;          /* the thread's stack, lowest address */
    uintptr_t deep_low;     /* lowest address the deep call touched */
    size_t resident_before; /* pages resident in [low, frame - 64 KiB) */
    size_t resident_after;
    size_t released;
    unsigned long sum_first, sum_again;
};

/* Pages of [from, to) that are resident. */
static size_t resident_pages(uintptr_t from, uintptr_t to)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char vec[(TEST_STACK_BYTES / 4096) + 2];
    size_t n, count = 0;

    from &= ~(uintptr_t)(page - 1);
    if (to <= from)
        return 0;
    n = (to - from + page - 1) / page;
    if (n > sizeof(vec) || mincore((void *)from, to - from, vec) != 0)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        count += vec[i] & 1;
    return count;
}

/* Touches DEEP_BYTES of stack and sums it, like a TLS handshake's deepest path. */
static __attribute__((noinline)) unsigned long go_deep(struct probe *p, unsigned seed)
{
    volatile unsigned char big[DEEP_BYTES];
    unsigned long sum = 0;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * seed);
    for (size_t i = 0; i < sizeof(big); i += 97)
        sum += big[i];
    p->deep_low = (uintptr_t)&big[0];
    return sum;
}

static void *probe_thread(void *arg)
{
    struct probe *p = arg;
    pthread_attr_t attr;
    void *addr;
    size_t size;
    volatile char here;

    pthread_getattr_np(pthread_self(), &attr);
    pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    p->low = (uintptr_t)addr;

    p->sum_first = go_deep(p, 7);
    /* Well below this frame: dead once go_deep returned. */
    uintptr_t dead_top = (uintptr_t)&here - 64 * 1024;
    p->resident_before = resident_pages(p->deep_low, dead_top);
    p->released = stacktrim_release();
    p->resident_after = resident_pages(p->deep_low, dead_top);
    /* Released pages come back zeroed on demand: going deep again works. */
    p->sum_again = go_deep(p, 7);
    return NULL;
}

static void run_probe(struct probe *p)
{
    pthread_attr_t attr;
    pthread_t tid;

    memset(p, 0, sizeof(*p));
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, TEST_STACK_BYTES);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tid, &attr, probe_thread, p), 0);
    pthread_join(tid, NULL);
    pthread_attr_destroy(&attr);
}

static void test_dead_stack_pages_are_released(void)
{
    struct probe p;

    run_probe(&p);
    CU_ASSERT(p.deep_low > p.low);
    /* The deep call left well over a hundred KiB of pages resident. */
    CU_ASSERT(p.resident_before != (size_t)-1 && p.resident_before >= 16);
    CU_ASSERT(p.released >= DEEP_BYTES - 64 * 1024);
    CU_ASSERT_EQUAL(p.resident_after, 0);
}

static void test_stack_works_after_release(void)
{
    struct probe p;

    run_probe(&p);
    CU_ASSERT_NOT_EQUAL(p.sum_first, 0);
    CU_ASSERT_EQUAL(p.sum_again, p.sum_first);
}

static void test_live_frames_are_kept(void)
{
    volatile unsigned char mine[8192];

    for (size_t i = 0; i < sizeof(mine); i++)
        mine[i] = (unsigned char)(i ^ 0x5a);
    stacktrim_release();
    /* This frame is above the cut: its bytes are intact. */
    size_t wrong = 0;
    for (size_t i = 0; i < sizeof(mine); i++)
        wrong += mine[i] != (unsigned char)(i ^ 0x5a);
    CU_ASSERT_EQUAL(wrong, 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("stacktrim", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "dead stack pages are released", test_dead_stack_pages_are_released) ||
        !CU_add_test(s, "the stack works after a release", test_stack_works_after_release) ||
        !CU_add_test(s, "live frames are kept", test_live_frames_are_kept)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
