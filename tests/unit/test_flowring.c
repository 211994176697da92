/*
 * Unit tests for flowring: slots are lent in order, aligned, within the
 * ring; a full ring lends nothing; slots given back out of order are taken
 * back only once the older ones are; a slot never crosses the end; a
 * packed flow in a slot gives it back when freed, on another thread too.
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "flow.h"
#include "flowring.h"
#include "testutil.h"

#define RING_BYTES 4096

static void give_back(int *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

static void test_slots_are_lent_in_order_until_full(void)
{
    struct flowring *ring = flowring_new(RING_BYTES);
    int *flags[64];
    unsigned char *slots[64];
    int n = 0, i;

    CU_ASSERT_FATAL(ring != NULL);
    /* 1000 bytes and a header take 1024: four fit. */
    while (n < 64 && (slots[n] = flowring_lend(ring, 1000, &flags[n])) != NULL)
        n++;
    CU_ASSERT_EQUAL(n, 4);
    for (i = 0; i < n; i++) {
        CU_ASSERT_EQUAL((uintptr_t)slots[i] % 16, 0);
        memset(slots[i], 0xa5, 1000); /* ASan: the slot is there */
        if (i > 0)
            CU_ASSERT(slots[i] > slots[i - 1]);
    }
    /* Larger than the ring, never. */
    CU_ASSERT_PTR_NULL(flowring_lend(ring, RING_BYTES + 1, &flags[63]));
    /* The second given back first: still full, the first holds it. */
    give_back(flags[1]);
    CU_ASSERT_PTR_NULL(flowring_lend(ring, 1000, &flags[63]));
    give_back(flags[0]);
    slots[4] = flowring_lend(ring, 1000, &flags[4]);
    slots[5] = flowring_lend(ring, 1000, &flags[5]);
    CU_ASSERT_PTR_NOT_NULL(slots[4]);
    CU_ASSERT_PTR_NOT_NULL(slots[5]);
    CU_ASSERT_PTR_NULL(flowring_lend(ring, 1000, &flags[63]));
    /* They took the first two's place: the ring starts over. */
    CU_ASSERT_PTR_EQUAL(slots[4], slots[0]);
    CU_ASSERT_PTR_EQUAL(slots[5], slots[1]);
    for (i = 2; i < 6; i++)
        give_back(flags[i]);
    flowring_free(ring);
}

static void test_a_slot_never_crosses_the_end(void)
{
    struct flowring *ring = flowring_new(RING_BYTES);
    unsigned char *a, *b, *c;
    int *fa, *fb, *fc;

    CU_ASSERT_FATAL(ring != NULL);
    a = flowring_lend(ring, 2500, &fa); /* 2560 of 4096 */
    b = flowring_lend(ring, 1000, &fb); /* 1024: 512 left before the end */
    CU_ASSERT_FATAL(a != NULL && b != NULL);
    give_back(fa);
    /* 1000 does not fit in the 512 at the end: it starts at the
     * beginning, in a's place. */
    c = flowring_lend(ring, 1000, &fc);
    CU_ASSERT_PTR_EQUAL(c, a);
    CU_ASSERT(c + 1000 <= b);
    memset(c, 0x5a, 1000);
    give_back(fb);
    give_back(fc);
    /* Empty again: the whole ring is there for one slot. */
    CU_ASSERT_PTR_NOT_NULL(flowring_lend(ring, RING_BYTES - 64, &fa));
    give_back(fa);
    flowring_free(ring);
}

static void *free_flow(void *arg)
{
    flow_free(arg);
    return NULL;
}

static void test_packed_flow_gives_its_slot_back_when_freed(void)
{
    struct flowring *ring = flowring_new(RING_BYTES);
    struct flow *flow = flow_new(1024), *packed;
    size_t bytes;
    pthread_t thread;
    int *flag;
    void *slot;

    CU_ASSERT_FATAL(ring != NULL && flow != NULL);
    flow->target = strdup("/ring");
    flow->request_headers = strdup("Host: ring.test\r\n");
    CU_ASSERT_EQUAL(flow_body_append(&flow->response_body, "body", 4), 0);
    bytes = flow_pack_bytes(flow);
    CU_ASSERT_FATAL(bytes > sizeof(*flow) && bytes < RING_BYTES / 2);
    slot = flowring_lend(ring, bytes, &flag);
    CU_ASSERT_FATAL(slot != NULL);
    packed = flow_pack_into(flow, slot, bytes, flag);
    flow_free(flow);
    CU_ASSERT_PTR_EQUAL(packed, slot);
    CU_ASSERT_STRING_EQUAL(packed->target, "/ring");
    CU_ASSERT_EQUAL(packed->response_body.len, 4);
    CU_ASSERT(memcmp(packed->response_body.data, "body", 4) == 0);
    CU_ASSERT_EQUAL(__atomic_load_n(flag, __ATOMIC_ACQUIRE), 0);
    /* Freed on another thread (the writer's): given back, not free()d
     * (ASan would say so). */
    CU_ASSERT_EQUAL_FATAL(pthread_create(&thread, NULL, free_flow, packed), 0);
    pthread_join(thread, NULL);
    CU_ASSERT_EQUAL(__atomic_load_n(flag, __ATOMIC_ACQUIRE), 1);
    /* The ring has all its room again. */
    CU_ASSERT_PTR_NOT_NULL(flowring_lend(ring, RING_BYTES - 64, &flag));
    give_back(flag);
    flowring_free(ring);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("flowring", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "slots_are_lent_in_order_until_full",
                     test_slots_are_lent_in_order_until_full) ||
        !CU_add_test(s, "a_slot_never_crosses_the_end", test_a_slot_never_crosses_the_end) ||
        !CU_add_test(s, "packed_flow_gives_its_slot_back_when_freed",
                     test_packed_flow_gives_its_slot_back_when_freed)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
