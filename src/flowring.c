/*
 * flowring: see flowring.h.
 *
 * Positions count bytes lent (head) and taken back (tail) since the ring
 * was made; a slot is at position % capacity. Each slot starts with a
 * header of 16 bytes (its size and the flag that gives it back) and takes
 * a multiple of 64 bytes, so that the payloads are aligned and a flag the
 * writer's thread stores shares no cache line with a flow being packed. A
 * slot that would cross the end is not lent: the bytes up to the end
 * become a slot given back at once, and the slot starts over at 0.
 */
#include "flowring.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define SLOT_ALIGN 64

struct slot_header {
    uint32_t bytes;  /* the whole slot's, header included */
    int given_back;  /* atomic: 1 once its flow was freed */
    uint64_t unused; /* the payload starts 16 bytes in */
};

struct flowring {
    unsigned char *base;
    size_t capacity;
    uint64_t head, tail;
};

struct flowring *flowring_new(size_t capacity)
{
    struct flowring *ring = calloc(1, sizeof(*ring));

    if (ring == NULL || capacity == 0 || capacity % SLOT_ALIGN != 0 || capacity > UINT32_MAX)
        goto fail;
    ring->base = mmap(NULL, capacity, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ring->base == MAP_FAILED)
        goto fail;
    ring->capacity = capacity;
    return ring;
fail:
    free(ring);
    return NULL;
}

void flowring_free(struct flowring *ring)
{
    if (ring == NULL)
        return;
    munmap(ring->base, ring->capacity);
    free(ring);
}

static struct slot_header *slot_at(const struct flowring *ring, uint64_t position)
{
    return (struct slot_header *)(ring->base + position % ring->capacity);
}

/* Takes back the oldest slots as far as they were given back. */
static void take_back(struct flowring *ring)
{
    while (ring->tail != ring->head) {
        struct slot_header *slot = slot_at(ring, ring->tail);

        if (!__atomic_load_n(&slot->given_back, __ATOMIC_ACQUIRE))
            break;
        ring->tail += slot->bytes;
    }
}

/* Lends the slot at head, of bytes; given_back 1 for the end's filler. */
static struct slot_header *lend_at_head(struct flowring *ring, size_t bytes, int given_back)
{
    struct slot_header *slot = slot_at(ring, ring->head);

    slot->bytes = (uint32_t)bytes;
    __atomic_store_n(&slot->given_back, given_back, __ATOMIC_RELAXED);
    ring->head += bytes;
    return slot;
}

void *flowring_lend(struct flowring *ring, size_t bytes, int **given_back)
{
    size_t need = (sizeof(struct slot_header) + bytes + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    size_t to_end, room;
    struct slot_header *slot;

    if (bytes > ring->capacity)
        return NULL;
    take_back(ring);
    if (ring->head == ring->tail)
        ring->head = ring->tail = 0; /* empty: the next slot starts at the beginning */
    room = ring->capacity - (size_t)(ring->head - ring->tail);
    to_end = ring->capacity - (size_t)(ring->head % ring->capacity);
    if (need > to_end) {
        if (room < to_end + need)
            return NULL;
        lend_at_head(ring, to_end, 1);
    } else if (room < need) {
        return NULL;
    }
    slot = lend_at_head(ring, need, 0);
    *given_back = &slot->given_back;
    return slot + 1;
}
