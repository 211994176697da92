/*
 * flowspool: flows put off by the flow writer, in a file beside the
 * database, kept across a crash.
 *
 * A packed flow (flow_pack()) is one block whose pointers point into
 * itself: the spool writes the block as it is after a record header that
 * gives its size, the address it had and its sequence number, and moves
 * the pointers along (flow_packed_moved()) when it reads it back into a
 * new block. A pointer out of the block (struct flow_live, shared with the
 * connection and counted) stays as it was while this process reads its
 * own records: the reference the record holds is still good. A flow that
 * is not packed (bodies over FLOW_PACK_BODY_MAX_BYTES, WebSocket messages)
 * stays in memory in the held list; a record without a block keeps its
 * place in the order.
 *
 * Why a named file: a proxy killed (SIGKILL, the OOM killer, a crash)
 * during a burst would otherwise lose every flow the spool held, up to its
 * bound of a GiB. The kernel keeps what was written after the process is
 * gone, so the next start reads the records back (flowspool_open()) and
 * the writer stores them before anything new. The flow store records in
 * the database, in the transaction that stores them, the sequence number
 * of the last record it stored (flowspool_done()), so that no flow is
 * stored twice. A block from another process is read only when the file
 * says it was written by a build with this struct flow (flow_packed_layout())
 * and when it holds together (flow_packed_is_whole()); its live reference is
 * gone with that process, so it is made anew (records_live). Flows that
 * were in the held list are lost with the process, as the writer's queue
 * is.
 *
 * Once emptied and stored, the file is truncated, so that its blocks were
 * often never written back to the disk at all, and once closed empty it is
 * removed. Under a load that goes on it may never empty: the writer stores
 * its oldest flows while the newest join it. So the records stored are
 * also freed as it goes (free_done(): a hole punched in the file every
 * SPOOL_FREE_BYTES, the file's header first saying where the records
 * begin), and its bound is on the bytes it holds, not on how far it has
 * been written; without that a spool that filled once would take nothing
 * until emptied, and the writer's queue would fill in its place. Written
 * by pwritev() a chunk of flows at a time and read back in reads of
 * SPOOL_READ_BYTES.
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
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SPOOL_FILE_MAGIC 0x66737774u /* "twsf" */
#define SPOOL_MAGIC 0x7477736fu      /* "twso" */
#define SPOOL_PUT_CHUNK 256          /* flows per pwritev(): two iovecs each, within IOV_MAX */
#define SPOOL_READ_BYTES (1024 * 1024)
#define SPOOL_LIVE_MAX 4096 /* live flows of an earlier process matched up, at most */
#define SPOOL_FREE_BYTES (8 * 1024 * 1024) /* stored records freed at a time */
#define SPOOL_BLOCK_BYTES 4096             /* what a hole is aligned to */

/* The file's first bytes, written with its first record. */
struct spool_file_header {
    uint32_t magic;
    uint32_t layout;   /* flow_packed_layout() of the build that wrote it */
    uint64_t start_at; /* where the records begin, those before freed; 0: after this */
};

struct spool_record {
    uint32_t magic;
    uint32_t bytes;  /* the block's; 0: the flow is in the held list */
    uint64_t was;    /* the block's address when it was written */
    uint64_t seq;    /* one more than the record before, across truncations */
    int64_t live_id; /* its live flow's row when it was written (struct flow_live) */
};

/* A live flow of an earlier process: its open part, read back, made a new
 * one, which its finished part, read back later, must use too. */
struct spool_live {
    uint64_t was; /* the struct flow_live's address in that process */
    struct flow_live *live;
};

struct flowspool {
    int fd;
    char *path;
    uint64_t max_bytes;
    uint64_t write_at;      /* the end of the records written */
    uint64_t read_at;       /* the end of what was read into rbuf */
    uint64_t recovered_end; /* the end of an earlier process's records */
    uint64_t next_seq;      /* the next record's */
    uint64_t taken_seq;     /* the last record taken */
    uint64_t done_seq;      /* the last record the caller is done with */
    uint64_t done_at;       /* the end of the records done with */
    uint64_t freed_to;      /* the file's blocks before this are a hole (free_done()) */
    bool cannot_free;       /* the file system punches no holes */
    size_t count;           /* flows held, in the file and in the held list */
    bool is_broken;         /* a write failed: takes nothing until emptied */
    bool is_full;           /* at max_bytes: takes nothing until some are freed */
    uint64_t lost;
    /* The flows kept in memory, oldest first (a ring). */
    struct flow **held;
    size_t *held_sizes; /* the caller's count of each one's bytes */
    size_t held_head, held_count, held_cap;
    size_t held_bytes;
    unsigned char *rbuf;
    size_t rbuf_len, rbuf_at;
    struct spool_live *lives; /* while records_live are read back */
    size_t live_count;
};

/* Reads len bytes at at; 0, or -1 when the file ends before them. */
static int pread_exact(int fd, void *dst, size_t len, uint64_t at)
{
    unsigned char *to = dst;

    while (len > 0) {
        ssize_t got = pread(fd, to, len, (off_t)at);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        to += got;
        len -= (size_t)got;
        at += (uint64_t)got;
    }
    return 0;
}

/*
 * Finds what an earlier process left in the file: the records past
 * done_seq, up to the first one that is torn or not a record. Sets
 * read_at (the first to read back), write_at, recovered_end, count and
 * next_seq; the file is cut after the last good record. *abandoned counts
 * the flows that cannot be read back (held in that process's memory, or
 * written by another build).
 */
static void recover(struct flowspool *spool, uint64_t done_seq, uint64_t *abandoned)
{
    struct spool_file_header header;
    struct spool_record record;
    uint64_t at = sizeof(header), last_seq = done_seq, prev = 0;
    bool has_prev = false;
    struct stat st;

    if (fstat(spool->fd, &st) != 0 || st.st_size < (off_t)sizeof(header) ||
        pread_exact(spool->fd, &header, sizeof(header), 0) != 0 || header.magic != SPOOL_FILE_MAGIC)
        goto cut;
    /* Records before start_at were stored, and their blocks freed. */
    if (header.start_at > at && header.start_at <= (uint64_t)st.st_size) {
        at = header.start_at;
        spool->freed_to = at / SPOOL_BLOCK_BYTES * SPOOL_BLOCK_BYTES;
    }
    spool->read_at = at;
    /* pread_exact() read the record: at + sizeof(record) <= st_size. */
    while (pread_exact(spool->fd, &record, sizeof(record), at) == 0 &&
           record.magic == SPOOL_MAGIC && (!has_prev || record.seq == prev + 1) &&
           (record.bytes == 0 || record.bytes >= sizeof(struct flow)) &&
           record.bytes <= (uint64_t)st.st_size - at - sizeof(record)) {
        has_prev = true;
        prev = record.seq;
        at += sizeof(record) + record.bytes;
        if (record.seq <= done_seq) {
            spool->read_at = at; /* stored before that process ended */
            continue;
        }
        last_seq = record.seq;
        if (header.layout != flow_packed_layout() || record.bytes == 0)
            (*abandoned)++;
        else
            spool->count++;
    }
    if (header.layout != flow_packed_layout() || spool->count == 0)
        goto cut;
    spool->write_at = at;
    spool->recovered_end = at;
    spool->next_seq = last_seq + 1;
    spool->taken_seq = spool->done_seq = done_seq;
    spool->done_at = spool->read_at;
    if (ftruncate(spool->fd, (off_t)at) != 0)
        spool->is_broken = true; /* read back, then cut to nothing */
    return;
cut:
    spool->count = 0;
    spool->read_at = spool->write_at = spool->recovered_end = 0;
    spool->freed_to = 0;
    spool->next_seq = last_seq + 1;
    spool->taken_seq = spool->done_seq = last_seq;
    if (ftruncate(spool->fd, 0) != 0)
        spool->is_broken = true;
}

int flowspool_open(const char *path, uint64_t max_bytes, uint64_t done_seq,
                   struct flowspool_recovery *recovery, struct flowspool **out, char *err,
                   size_t err_len)
{
    struct flowspool *spool = calloc(1, sizeof(*spool));

    *out = NULL;
    memset(recovery, 0, sizeof(*recovery));
    if (spool == NULL || (spool->rbuf = malloc(SPOOL_READ_BYTES)) == NULL ||
        (spool->path = strdup(path)) == NULL) {
        errmsg_set(err, err_len, "flow spool: out of memory");
        goto fail;
    }
    spool->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (spool->fd < 0) {
        errmsg_set(err, err_len, "flow spool: cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    spool->max_bytes = max_bytes;
    recover(spool, done_seq, &recovery->abandoned);
    recovery->flows = spool->count;
    *out = spool;
    return 0;
fail:
    if (spool != NULL) {
        free(spool->rbuf);
        free(spool->path);
    }
    free(spool);
    return -1;
}

void flowspool_set_max(struct flowspool *spool, uint64_t max_bytes)
{
    spool->max_bytes = max_bytes;
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

/* Empty again: the file is cut to nothing (its pages, dirty or not, go).
 * The sequence goes on. */
static void reset(struct flowspool *spool)
{
    struct flow *flow;

    while ((flow = held_pop(spool)) != NULL)
        flow_free(flow);
    spool->count = 0;
    spool->write_at = 0;
    spool->read_at = 0;
    spool->recovered_end = 0;
    spool->done_at = 0;
    spool->freed_to = 0;
    spool->rbuf_len = 0;
    spool->rbuf_at = 0;
    spool->is_broken = false;
    spool->is_full = false;
    if (ftruncate(spool->fd, 0) != 0)
        spool->is_broken = true; /* the file may not be written over */
}

/* Empty, and every record taken is done with: the file may go. */
static bool is_spent(const struct flowspool *spool)
{
    return spool->count == 0 && spool->done_seq >= spool->taken_seq;
}

void flowspool_close(struct flowspool *spool)
{
    bool is_kept;

    if (spool == NULL)
        return;
    /* Records not stored stay in the file for the next start; a flow in
     * the file may hold a live reference: read them back to release it. */
    is_kept = !is_spent(spool) && spool->write_at > 0;
    while (spool->count > 0) {
        struct flow *flows[64];
        uint64_t seq;
        size_t n = flowspool_take(spool, flows, 64, &seq), i;

        for (i = 0; i < n; i++)
            flow_free(flows[i]);
        if (n == 0)
            break;
    }
    while (spool->live_count > 0)
        flow_live_release(spool->lives[--spool->live_count].live);
    if (is_kept) {
        struct flow *flow;

        while ((flow = held_pop(spool)) != NULL)
            flow_free(flow);
    } else {
        reset(spool);
        unlink(spool->path);
    }
    free(spool->lives);
    free(spool->held);
    free(spool->held_sizes);
    free(spool->rbuf);
    free(spool->path);
    close(spool->fd);
    free(spool);
}

/* The bytes the file takes on the disk: what was written less the hole. */
static uint64_t bytes_in_file(const struct flowspool *spool)
{
    return spool->write_at -
           (spool->freed_to > SPOOL_BLOCK_BYTES ? spool->freed_to - SPOOL_BLOCK_BYTES : 0);
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
    struct iovec iov[2 * SPOOL_PUT_CHUNK + 1];
    struct spool_file_header header = {SPOOL_FILE_MAGIC, flow_packed_layout(), 0};
    size_t taken = 0;

    while (taken < count && flowspool_is_usable(spool)) {
        uint64_t bytes = 0;
        size_t n = 0, held = 0, i;
        int iovcnt = 0;

        if (spool->write_at == 0) {
            iov[iovcnt].iov_base = &header;
            iov[iovcnt++].iov_len = sizeof(header);
            bytes = sizeof(header);
        }

        for (; n < SPOOL_PUT_CHUNK && taken + n < count; n++) {
            struct flow *flow = flows[taken + n];
            uint64_t block = flow->is_packed ? flow->packed_bytes : 0;

            if (bytes_in_file(spool) + bytes + sizeof(records[0]) + block > spool->max_bytes ||
                block > UINT32_MAX)
                break;
            records[n].magic = SPOOL_MAGIC;
            records[n].bytes = (uint32_t)block;
            records[n].was = (uint64_t)(uintptr_t)flow;
            records[n].seq = spool->next_seq + n;
            records[n].live_id = flow->live != NULL ? flow->live->id : 0;
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
        if (spool->write_at == 0)
            spool->read_at = sizeof(header); /* nothing read yet: rbuf is empty */
        spool->write_at += bytes;
        spool->next_seq += n;
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

/* Where the next record to take begins: the end of those taken. */
static uint64_t read_position(const struct flowspool *spool)
{
    return spool->read_at - (spool->rbuf_len - spool->rbuf_at);
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

/* The new struct flow_live for one of an earlier process (was), made by
 * its open part: the live reference moves to the caller. */
static struct flow_live *live_claim(struct flowspool *spool, uint64_t was)
{
    size_t i;

    for (i = 0; i < spool->live_count; i++)
        if (spool->lives[i].was == was) {
            struct flow_live *live = spool->lives[i].live;

            spool->lives[i] = spool->lives[--spool->live_count];
            return live;
        }
    return NULL;
}

/*
 * A flow of an earlier process read back: its live reference (a pointer
 * into that process) is made anew. Its open part gets a new struct
 * flow_live, which its finished part takes up if it is in the file too; a
 * finished part whose open part was stored before that process ended
 * takes that row (live_id, from its record); one with neither is a flow of
 * its own. Out of memory or past SPOOL_LIVE_MAX, the parts become flows of
 * their own.
 */
static void relive(struct flowspool *spool, struct flow *flow, int64_t live_id)
{
    uint64_t was = (uint64_t)(uintptr_t)flow->live;
    struct flow_live *live = NULL;

    flow->live = NULL;
    if (flow->live_part == FLOW_LIVE_OPEN && spool->live_count < SPOOL_LIVE_MAX) {
        if (spool->lives == NULL)
            spool->lives = malloc(SPOOL_LIVE_MAX * sizeof(*spool->lives));
        live = spool->lives != NULL ? flow_live_new() : NULL;
        if (live != NULL) {
            spool->lives[spool->live_count].was = was;
            spool->lives[spool->live_count++].live = flow_live_ref(live);
        }
    } else if (flow->live_part == FLOW_LIVE_FINAL) {
        live = live_claim(spool, was);
        if (live == NULL && live_id != 0 && (live = flow_live_new()) != NULL)
            live->id = live_id;
    }
    flow->live = live;
    if (live == NULL)
        flow->live_part = FLOW_LIVE_NONE;
}

/* The next flow in the order; NULL when it cannot be read (then the rest
 * of the file cannot either) and *is_lost for one that is lost alone (out
 * of memory, or an earlier process's block that does not hold together). */
static struct flow *take_one(struct flowspool *spool, bool *is_lost)
{
    struct spool_record record;
    struct flow *flow;
    bool is_recovered;

    *is_lost = false;
    do {
        is_recovered = read_position(spool) < spool->recovered_end;
        if (read_exact(spool, &record, sizeof(record)) != 0 || record.magic != SPOOL_MAGIC ||
            (record.bytes != 0 && record.bytes < sizeof(struct flow)))
            return NULL;
        /* An earlier process held that one in memory (counted at open). */
    } while (is_recovered && record.bytes == 0);
    spool->taken_seq = record.seq;
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
    if (is_recovered) {
        if (!flow_packed_is_whole(flow)) {
            free(flow);
            *is_lost = true;
            return NULL;
        }
        relive(spool, flow, record.live_id);
    }
    return flow;
}

size_t flowspool_take(struct flowspool *spool, struct flow **out, size_t max, uint64_t *last_seq)
{
    size_t n = 0;

    while (n < max && spool->count > 0) {
        bool is_lost;
        struct flow *flow = take_one(spool, &is_lost);

        if (flow == NULL && !is_lost) {
            /* The file cannot be read on: what it holds is lost. */
            spool->lost += spool->count;
            spool->done_seq = spool->taken_seq = spool->next_seq - 1;
            reset(spool);
            break;
        }
        spool->count--;
        if (flow == NULL)
            spool->lost++;
        else
            out[n++] = flow;
    }
    *last_seq = spool->taken_seq;
    if (spool->is_broken && is_spent(spool))
        reset(spool);
    return n;
}

/*
 * Frees the file's blocks of the records done with, once there are
 * SPOOL_FREE_BYTES of them: a hole punched from the end of the header's
 * block, the header first saying where the records now begin, so that a
 * crash between the two leaves the next start reading past the hole. A
 * file system that punches no holes keeps them until the spool is
 * emptied, as before.
 */
static void free_done(struct flowspool *spool)
{
#ifdef FALLOC_FL_PUNCH_HOLE
    struct spool_file_header header = {SPOOL_FILE_MAGIC, flow_packed_layout(), spool->done_at};
    uint64_t from = spool->freed_to > SPOOL_BLOCK_BYTES ? spool->freed_to : SPOOL_BLOCK_BYTES;
    uint64_t to = spool->done_at / SPOOL_BLOCK_BYTES * SPOOL_BLOCK_BYTES;

    if (spool->cannot_free || spool->is_broken || to < from + SPOOL_FREE_BYTES)
        return;
    if (pwrite(spool->fd, &header, sizeof(header), 0) != (ssize_t)sizeof(header))
        return;
    if (fallocate(spool->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
                  (off_t)(to - from)) != 0) {
        if (errno == EOPNOTSUPP || errno == ENOSYS)
            spool->cannot_free = true;
        return;
    }
    spool->freed_to = to;
    spool->is_full = false;
#else
    (void)spool;
#endif
}

void flowspool_done(struct flowspool *spool, uint64_t seq)
{
    if (seq > spool->done_seq)
        spool->done_seq = seq;
    if (is_spent(spool) && (spool->write_at > 0 || spool->is_broken)) {
        reset(spool);
        return;
    }
    /* Every record taken is done with: the file up to there may go. */
    if (spool->done_seq >= spool->taken_seq && read_position(spool) > spool->done_at) {
        spool->done_at = read_position(spool);
        free_done(spool);
    }
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
    return spool->write_at - read_position(spool);
}

uint64_t flowspool_lost(const struct flowspool *spool)
{
    return spool->lost;
}
