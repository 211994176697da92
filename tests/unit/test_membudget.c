/* Unit tests for the process-wide buffer budget (src/membudget.c). */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdint.h>

#include "membudget.h"

#define RACE_THREADS 4
#define RACE_ROUNDS 20000

static void test_reserves_up_to_the_limit(void)
{
    struct membudget b = MEMBUDGET_INIT;
    CU_ASSERT_TRUE(membudget_reserve(&b, 600, 1000));
    CU_ASSERT_TRUE(membudget_reserve(&b, 400, 1000));
    CU_ASSERT_EQUAL(membudget_used(&b), 1000);
    CU_ASSERT_FALSE(membudget_reserve(&b, 1, 1000));
}

static void test_refused_reservation_takes_nothing(void)
{
    struct membudget b = MEMBUDGET_INIT;
    CU_ASSERT_TRUE(membudget_reserve(&b, 700, 1000));
    CU_ASSERT_FALSE(membudget_reserve(&b, 301, 1000));
    CU_ASSERT_EQUAL(membudget_used(&b), 700);
    CU_ASSERT_TRUE(membudget_reserve(&b, 300, 1000));
}

static void test_release_gives_room_back(void)
{
    struct membudget b = MEMBUDGET_INIT;
    CU_ASSERT_TRUE(membudget_reserve(&b, 1000, 1000));
    membudget_release(&b, 1000);
    CU_ASSERT_EQUAL(membudget_used(&b), 0);
    CU_ASSERT_TRUE(membudget_reserve(&b, 1000, 1000));
}

static void test_more_than_the_limit_is_refused_without_overflow(void)
{
    struct membudget b = MEMBUDGET_INIT;
    CU_ASSERT_FALSE(membudget_reserve(&b, 1001, 1000));
    CU_ASSERT_TRUE(membudget_reserve(&b, 10, 1000));
    CU_ASSERT_FALSE(membudget_reserve(&b, SIZE_MAX, 1000));
    CU_ASSERT_FALSE(membudget_reserve(&b, SIZE_MAX - 5, SIZE_MAX));
    CU_ASSERT_EQUAL(membudget_used(&b), 10);
}

static void test_charge_counts_past_the_limit(void)
{
    struct membudget b = MEMBUDGET_INIT;
    CU_ASSERT_TRUE(membudget_reserve(&b, 900, 1000));
    membudget_charge(&b, 500);
    CU_ASSERT_EQUAL(membudget_used(&b), 1400);
    CU_ASSERT_FALSE(membudget_reserve(&b, 1, 1000));
    membudget_release(&b, 1400);
    CU_ASSERT_EQUAL(membudget_used(&b), 0);
}

static struct membudget race_budget = MEMBUDGET_INIT;
static atomic_size_t race_peak;

/* Each thread reserves and releases in a loop; the count must never pass the
 * limit, whatever the interleaving. */
static void *race_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        if (!membudget_reserve(&race_budget, 300, 1000))
            continue;
        size_t now = membudget_used(&race_budget);
        size_t peak = atomic_load(&race_peak);
        while (now > peak && !atomic_compare_exchange_weak(&race_peak, &peak, now))
            ;
        membudget_release(&race_budget, 300);
    }
    return NULL;
}

static void test_concurrent_reservations_never_pass_the_limit(void)
{
    pthread_t t[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, race_thread, NULL), 0);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT(atomic_load(&race_peak) <= 1000);
    CU_ASSERT(atomic_load(&race_peak) >= 300);
    CU_ASSERT_EQUAL(membudget_used(&race_budget), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("membudget", NULL, NULL);
    if (!s || !CU_add_test(s, "reserves up to the limit", test_reserves_up_to_the_limit) ||
        !CU_add_test(s, "a refused reservation takes nothing",
                     test_refused_reservation_takes_nothing) ||
        !CU_add_test(s, "release gives room back", test_release_gives_room_back) ||
        !CU_add_test(s, "more than the limit is refused without overflow",
                     test_more_than_the_limit_is_refused_without_overflow) ||
        !CU_add_test(s, "charge counts past the limit", test_charge_counts_past_the_limit) ||
        !CU_add_test(s, "concurrent reservations never pass the limit",
                     test_concurrent_reservations_never_pass_the_limit)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
