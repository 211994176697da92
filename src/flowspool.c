/*
 * flowspool: flows put off by the flow writer, in an unlinked file.
 *
 * A packed flow (flow_pack()) is one block whose pointers point into
 * itself: the spool writes the block as it is after a record header that
 * gives its size and the address it had, and moves the pointers along
 * (flow_packed_moved()) when it reads it back into a new block. A pointer
 * out of the block (struct flow_live, shared with the connection and
 * counted) stays as it was: the file lives no longer than the process, so
 * the reference the record holds is still good when it comes back. A flow
 * that is not packed (bodies over FLOW_PACK_BODY_MAX_BYTES, WebSocket
 * messages) stays in memory in the held list; a record without a block
 * keeps its place in the order.
 *
 * The file is made without a name (O_TMPFILE, or unlinked at once), so it
 * leaves nothing behind and a crash loses what it held, as a crash loses
 * the writer's queue; once emptied it is truncated, so that its blocks
 * were often never written back to the disk at all. Written by pwritev()
 * a chunk of flows at a time and read back in reads of SPOOL_READ_BYTES.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#endif

#include "flowspool.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define SPOOL_MAGIC 0x7477736fu /* "twso" */
#define SPOOL_PUT_CHUNK 256     /* flows per pwritev(): two iovecs each, within IOV_MAX */
#define SPOOL_READ_BYTES (1024 * 1024)

struct spool_record {
    uint32_t magic;
    uint32_t bytes; /* the block's; 0: the flow is in the held list */
    uint64_t was;   /* the block's address when it was written */
};

struct flowspool {
    int fd;
    uint64_t max_bytes;
    uint64_t write_at; /* the end of the records written */
    uint64_t read_at;  /* the end of what was read into rbuf */
    size_t count;      /* flows held, in the file and in the held list */
    bool is_broken;    /* a write failed: takes nothing until emptied */
    bool is_full;      /* at max_bytes: takes nothing until emptied */
    uint64_t lost;
    /* The flows kept in memory, oldest first (a ring). */
    struct flow **held;
    size_t *held_sizes; /* the caller's count of each one's bytes */
    size_t held_head, held_count, held_cap;
    size_t held_bytes;
    unsigned char *rbuf;
    size_t rbuf_len, rbuf_at;
};

static int open_unnamed(const char *dir, char *err, size_t err_len)
{
    char path[PATH_MAX];
    int fd;

#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    /* File systems without O_TMPFILE: a name, gone at once. */
    if (snprintf(path, sizeof(path), "%s/.tapwire-spool-XXXXXX", dir) >= (int)sizeof(path)) {
        errmsg_set(err, err_len, "flow spool: the directory's name is too long");
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        errmsg_set(err, err_len, "flow spool: cannot make a file in %s: %s", dir, strerror(errno));
        return -1;
    }
    unlink(path);
    return fd;
}

int flowspool_open(const char *dir, uint64_t max_bytes, struct flowspool **out, char *err,
                   size_t err_len)
{
    struct flowspool *spool = calloc(1, sizeof(*spool));

    *out = NULL;
    if (spool == NULL || (spool->rbuf = malloc(SPOOL_READ_BYTES)) == NULL) {
        errmsg_set(err, err_len, "flow spool: out of memory");
        goto fail;
    }
    spool->fd = open_unnamed(dir, err, err_len);
    if (spool->fd < 0)
        goto fail;
    spool->max_bytes = max_bytes;
    *out = spool;
    return 0;
fail:
    if (spool != NULL)
        free(spool->rbuf);
    free(spool);
    return -1;
}

static struct flow *held_pop(struct flowspool *spool)
{
    struct flow *flow;

    if (spool->held_count == 0)
        return NULL;
    flow = spool->held[spool->held_head];
    spool->held_bytes -= spool->held_sizes[spool->held_head];
    spool->held_head = (spool->held_head + 1) % spool->held_cap;
    spool->held_count--;
    return flow;
}

/* Room in the held list for n more; false when out of memory. */
static bool held_reserve(struct flowspool *spool, size_t n)
{
    struct flow **grown;
    size_t *grown_sizes;
    size_t cap, i;

    if (spool->held_count + n <= spool->held_cap)
        return true;
    cap = spool->held_cap > 0 ? spool->held_cap : 64;
    while (cap < spool->held_count + n)
        cap *= 2;
    grown = malloc(cap * sizeof(*grown));
    grown_sizes = malloc(cap * sizeof(*grown_sizes));
    if (grown == NULL || grown_sizes == NULL) {
        free(grown);
        free(grown_sizes);
        return false;
    }
    for (i = 0; i < spool->held_count; i++) {
        grown[i] = spool->held[(spool->held_head + i) % spool->held_cap];
        grown_sizes[i] = spool->held_sizes[(spool->held_head + i) % spool->held_cap];
    }
    free(spool->held);
    free(spool->held_sizes);
    spool->held = grown;
    spool->held_sizes = grown_sizes;
    spool->held_head = 0;
    spool->held_cap = cap;
    return true;
}

/* Empty again: the file is cut to nothing (its pages, dirty or not, go). */
static void reset(struct flowspool *spool)
{
    struct flow *flow;

    while ((flow = held_pop(spool)) != NULL)
        flow_free(flow);
    spool->count = 0;
    spool->write_at = 0;
    spool->read_at = 0;
    spool->rbuf_len = 0;
    spool->rbuf_at = 0;
    spool->is_broken = false;
    spool->is_full = false;
    if (ftruncate(spool->fd, 0) != 0)
        spool->is_broken = true; /* the file may not be written over */
}

void flowspool_close(struct flowspool *spool)
{
    if (spool == NULL)
        return;
    /* A flow in the file may hold a live reference: read them back to
     * release it. */
    while (spool->count > 0) {
        struct flow *flows[64];
        size_t n = flowspool_take(spool, flows, 64), i;

        for (i = 0; i < n; i++)
            flow_free(flows[i]);
        if (n == 0)
            break;
    }
    reset(spool);
    free(spool->held);
    free(spool->held_sizes);
    free(spool->rbuf);
    close(spool->fd);
    free(spool);
}

/* pwritev() until every byte of iov is written. Returns 0 or -1. */
static int write_all(int fd, struct iovec *iov, int iovcnt, uint64_t at)
{
    while (iovcnt > 0) {
        ssize_t n = pwritev(fd, iov, iovcnt, (off_t)at);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        at += (uint64_t)n;
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

size_t flowspool_put(struct flowspool *spool, struct flow **flows, const size_t *sizes,
                     size_t count)
{
    struct spool_record records[SPOOL_PUT_CHUNK];
    struct iovec iov[2 * SPOOL_PUT_CHUNK];
    size_t taken = 0;

    while (taken < count && flowspool_is_usable(spool)) {
        uint64_t bytes = 0;
        size_t n = 0, held = 0, i;
        int iovcnt = 0;

        for (; n < SPOOL_PUT_CHUNK && taken + n < count; n++) {
            struct flow *flow = flows[taken + n];
            uint64_t block = flow->is_packed ? flow->packed_bytes : 0;

            if (spool->write_at + bytes + sizeof(records[0]) + block > spool->max_bytes ||
                block > UINT32_MAX)
                break;
            records[n].magic = SPOOL_MAGIC;
            records[n].bytes = (uint32_t)block;
            records[n].was = (uint64_t)(uintptr_t)flow;
            iov[iovcnt].iov_base = &records[n];
            iov[iovcnt++].iov_len = sizeof(records[n]);
            if (block > 0) {
                iov[iovcnt].iov_base = flow;
                iov[iovcnt++].iov_len = (size_t)block;
            } else {
                held++;
            }
            bytes += sizeof(records[n]) + block;
        }
        if (n == 0) {
            spool->is_full = true;
            break;
        }
        if (!held_reserve(spool, held))
            break;
        if (write_all(spool->fd, iov, iovcnt, spool->write_at) != 0) {
            /* What a short write left is past write_at: never read. */
            spool->is_broken = true;
            break;
        }
        spool->write_at += bytes;
        for (i = 0; i < n; i++) {
            struct flow *flow = flows[taken + i];

            if (flow->is_packed) {
                flow->live = NULL; /* the record holds the reference now */
                flow_free(flow);
            } else {
                size_t at = (spool->held_head + spool->held_count) % spool->held_cap;

                spool->held[at] = flow;
                spool->held_sizes[at] = sizes[taken + i];
                spool->held_bytes += sizes[taken + i];
                spool->held_count++;
            }
        }
        spool->count += n;
        taken += n;
    }
    return taken;
}

/* Reads len bytes of the records into dst. Returns 0 or -1. */
static int read_exact(struct flowspool *spool, void *dst, size_t len)
{
    unsigned char *to = dst;

    while (len > 0) {
        size_t have = spool->rbuf_len - spool->rbuf_at;
        size_t n;

        if (have == 0) {
            uint64_t left = spool->write_at - spool->read_at;
            size_t want = left < SPOOL_READ_BYTES ? (size_t)left : SPOOL_READ_BYTES;
            ssize_t got;

            if (want == 0)
                return -1;
            do
                got = pread(spool->fd, spool->rbuf, want, (off_t)spool->read_at);
            while (got < 0 && errno == EINTR);
            if (got <= 0)
                return -1;
            spool->read_at += (uint64_t)got;
            spool->rbuf_len = (size_t)got;
            spool->rbuf_at = 0;
            have = (size_t)got;
        }
        n = len < have ? len : have;
        memcpy(to, spool->rbuf + spool->rbuf_at, n);
        spool->rbuf_at += n;
        to += n;
        len -= n;
    }
    return 0;
}

/* The next flow in the order; NULL when it cannot be read (then the rest
 * of the file cannot either) and *is_lost for one out of memory. */
static struct flow *take_one(struct flowspool *spool, bool *is_lost)
{
    struct spool_record record;
    struct flow *flow;

    *is_lost = false;
    if (read_exact(spool, &record, sizeof(record)) != 0 || record.magic != SPOOL_MAGIC ||
        (record.bytes != 0 && record.bytes < sizeof(struct flow)))
        return NULL;
    if (record.bytes == 0)
        return held_pop(spool);
    flow = malloc(record.bytes);
    if (flow == NULL) {
        /* Skip its bytes; its live reference, if any, is not released. */
        unsigned char skip[4096];
        size_t left = record.bytes;

        *is_lost = true;
        while (left > 0) {
            size_t n = left < sizeof(skip) ? left : sizeof(skip);

            if (read_exact(spool, skip, n) != 0)
                return NULL;
            left -= n;
        }
        return NULL;
    }
    if (read_exact(spool, flow, record.bytes) != 0 || flow->packed_bytes != record.bytes) {
        free(flow);
        return NULL;
    }
    flow_packed_moved(flow, (uintptr_t)record.was);
    return flow;
}

size_t flowspool_take(struct flowspool *spool, struct flow **out, size_t max)
{
    size_t n = 0;

    while (n < max && spool->count > 0) {
        bool is_lost;
        struct flow *flow = take_one(spool, &is_lost);

        if (flow == NULL && !is_lost) {
            /* The file cannot be read on: what it holds is lost. */
            spool->lost += spool->count;
            reset(spool);
            break;
        }
        spool->count--;
        if (flow == NULL)
            spool->lost++;
        else
            out[n++] = flow;
    }
    if (spool->count == 0 && (spool->write_at > 0 || spool->is_broken))
        reset(spool);
    return n;
}

size_t flowspool_count(const struct flowspool *spool)
{
    return spool->count;
}

bool flowspool_is_usable(const struct flowspool *spool)
{
    return !spool->is_broken && !spool->is_full;
}

size_t flowspool_held_bytes(const struct flowspool *spool)
{
    return spool->held_bytes;
}

uint64_t flowspool_file_bytes(const struct flowspool *spool)
{
    return spool->write_at - (spool->read_at - (spool->rbuf_len - spool->rbuf_at));
}

uint64_t flowspool_lost(const struct flowspool *spool)
{
    return spool->lost;
}
