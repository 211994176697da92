/*
 * Unit tests for flowspool: flows go to a file and come back in order,
 * whole (every string, body and TLS fact, the pointers into the block
 * moved along, a live reference kept), flows too large to pack wait in
 * memory in their place, a full or emptied spool behaves, and one that
 * never empties gives back the room of what was stored. A file an
 * earlier process left (a copy of the file made while the spool was open,
 * as the kernel keeps it when the process is killed) is read back past
 * the records stored, with live flows made anew, and a torn or foreign
 * file gives no flow that does not hold together.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flow.h"
#include "flowspool.h"
#include "testutil.h"

#define LARGE_BODY_BYTES (FLOW_PACK_BODY_MAX_BYTES + 100)

static char dir[64];
static char path[128];  /* the spool's file */
static char crash[128]; /* a copy of it, as a killed process leaves it */

static int setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tw-spool-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/flows.db-spool", dir);
    snprintf(crash, sizeof(crash), "%s/crashed.db-spool", dir);
    return 0;
}

static int teardown(void)
{
    testutil_remove_dir(dir);
    return 0;
}

static char *dup_text(const char *text)
{
    char *copy = strdup(text);

    if (copy == NULL)
        abort();
    return copy;
}

/* Flow number i: packed unless body_len is over FLOW_PACK_BODY_MAX_BYTES. */
static struct flow *make_flow(int i, size_t body_len, struct flow_live *live)
{
    struct flow *f = flow_new(1024 * 1024);
    char text[64];
    size_t k;

    if (f == NULL)
        abort();
    snprintf(text, sizeof(text), "/item/%d", i);
    f->target = dup_text(text);
    f->request_headers = dup_text("Host: spool.test\r\nAccept: */*\r\n");
    f->response_headers = dup_text("Content-Type: text/plain\r\n");
    f->response_facts.text = f->response_headers;
    f->response_facts.has_content_type = true;
    f->response_facts.content_type_at = 14;
    f->response_facts.content_type_len = 10;
    f->status = 200;
    snprintf(f->host, sizeof(f->host), "spool.test");
    f->tls.cert_subject = dup_text("CN=spool.test");
    f->tls.verification = dup_text("ok");
    f->error = i % 2 == 0 ? dup_text("an error") : NULL;
    for (k = 0; k < body_len; k++) {
        unsigned char b = (unsigned char)('a' + (k + (size_t)i) % 26);

        CU_ASSERT_EQUAL(flow_body_append(&f->response_body, &b, 1), 0);
    }
    f->response_body.size = body_len;
    if (live != NULL)
        f->live = flow_live_ref(live);
    return flow_pack(f);
}

static void expect_flow(const struct flow *f, int i, size_t body_len)
{
    char text[64];
    size_t k;
    bool same = true;

    snprintf(text, sizeof(text), "/item/%d", i);
    CU_ASSERT_STRING_EQUAL(f->target, text);
    CU_ASSERT_STRING_EQUAL(f->request_headers, "Host: spool.test\r\nAccept: */*\r\n");
    CU_ASSERT_STRING_EQUAL(f->response_headers, "Content-Type: text/plain\r\n");
    /* The noted facts point at the flow's own section, wherever it is now. */
    CU_ASSERT_PTR_EQUAL(f->response_facts.text, f->response_headers);
    CU_ASSERT_STRING_EQUAL(f->host, "spool.test");
    CU_ASSERT_STRING_EQUAL(f->tls.cert_subject, "CN=spool.test");
    CU_ASSERT_STRING_EQUAL(f->tls.verification, "ok");
    CU_ASSERT_PTR_NULL(f->tls.cert_issuer);
    if (i % 2 == 0) {
        CU_ASSERT_STRING_EQUAL(f->error, "an error");
    } else {
        CU_ASSERT_PTR_NULL(f->error);
    }
    CU_ASSERT_EQUAL(f->response_body.len, body_len);
    for (k = 0; k < body_len && k < f->response_body.len; k++)
        same &= f->response_body.data[k] == (unsigned char)('a' + (k + (size_t)i) % 26);
    CU_ASSERT_TRUE(same);
    if (f->is_packed) {
        /* Every pointer into the block is into this block. */
        const char *from = (const char *)f, *to = from + f->packed_bytes;

        CU_ASSERT(f->target > from && f->target < to);
        CU_ASSERT(f->tls.verification > from && f->tls.verification < to);
        CU_ASSERT(body_len == 0 || ((const char *)f->response_body.data > from &&
                                    (const char *)f->response_body.data < to));
    }
}

/* Files in the test's directory. */
static int files_in_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static struct flowspool *open_at(const char *file, uint64_t max_bytes, uint64_t done_seq,
                                 struct flowspool_recovery *found)
{
    struct flowspool_recovery ignored;
    struct flowspool *spool = NULL;
    char err[256] = "";

    if (flowspool_open(file, max_bytes, done_seq, found != NULL ? found : &ignored, &spool, err,
                       sizeof(err)) != 0)
        fprintf(stderr, "flowspool_open: %s\n", err);
    return spool;
}

static off_t file_size(const char *file)
{
    struct stat st;

    return stat(file, &st) == 0 ? st.st_size : -1;
}

/* Copies the file from_path as it is now to to_path. */
static void copy_file(const char *from_path, const char *to_path)
{
    char buf[65536];
    int from = open(from_path, O_RDONLY), to = open(to_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ssize_t n;

    CU_ASSERT_FATAL(from >= 0 && to >= 0);
    while ((n = read(from, buf, sizeof(buf))) > 0)
        CU_ASSERT_EQUAL(write(to, buf, (size_t)n), n);
    close(from);
    close(to);
}

/* Copies the spool's file as it is now to crash. */
static void copy_as_crashed(void)
{
    copy_file(path, crash);
}

static void test_flows_come_back_in_order_and_whole(void)
{
    struct flowspool_recovery found;
    struct flowspool *spool = open_at(path, 1 << 30, 0, &found);
    struct flow *flows[40], *out[64];
    size_t sizes[40] = {0};
    size_t n, total = 0;
    uint64_t seq;
    int i;

    CU_ASSERT_FATAL(spool != NULL);
    CU_ASSERT_EQUAL(found.flows, 0);
    CU_ASSERT_EQUAL(found.abandoned, 0);
    /* Every seventh one too large to pack: it waits in memory. */
    for (i = 0; i < 40; i++) {
        flows[i] = make_flow(i, i % 7 == 3 ? LARGE_BODY_BYTES : (size_t)i * 10, NULL);
        sizes[i] = i % 7 == 3 ? 5000 : 100;
    }
    CU_ASSERT_FALSE(flows[3]->is_packed);
    CU_ASSERT_TRUE(flows[4]->is_packed);
    CU_ASSERT_EQUAL(flowspool_put(spool, flows, sizes, 20), 20);
    CU_ASSERT_EQUAL(flowspool_put(spool, flows + 20, sizes + 20, 20), 20);
    CU_ASSERT_EQUAL(flowspool_count(spool), 40);
    CU_ASSERT_EQUAL(flowspool_held_bytes(spool), 6 * 5000);
    CU_ASSERT(flowspool_file_bytes(spool) > 0);
    /* Taken in two goes, in the order put. */
    n = flowspool_take(spool, out, 25, &seq);
    CU_ASSERT_EQUAL(n, 25);
    CU_ASSERT_EQUAL(seq, 25);
    n += flowspool_take(spool, out + n, 64 - n, &seq);
    CU_ASSERT_EQUAL_FATAL(n, 40);
    CU_ASSERT_EQUAL(seq, 40);
    for (i = 0; i < 40; i++) {
        expect_flow(out[i], i, i % 7 == 3 ? LARGE_BODY_BYTES : (size_t)i * 10);
        total += out[i]->response_body.len;
        flow_free(out[i]);
    }
    CU_ASSERT(total > 0);
    CU_ASSERT_EQUAL(flowspool_count(spool), 0);
    CU_ASSERT_EQUAL(flowspool_held_bytes(spool), 0);
    CU_ASSERT_EQUAL(flowspool_file_bytes(spool), 0);
    /* Emptied, but not done with: the file stays until they are stored. */
    CU_ASSERT(file_size(path) > 0);
    flowspool_done(spool, 25);
    CU_ASSERT(file_size(path) > 0);
    flowspool_done(spool, 40);
    CU_ASSERT_EQUAL(file_size(path), 0);
    CU_ASSERT_EQUAL(flowspool_lost(spool), 0);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(files_in_dir(), 0);
}

static void test_live_reference_is_held_while_spooled(void)
{
    struct flowspool *spool = open_at(path, 1 << 30, 0, NULL);
    struct flow_live *live = flow_live_new();
    struct flow *flow, *out[1];
    size_t size = 100;
    uint64_t seq;

    CU_ASSERT_FATAL(live != NULL && spool != NULL);
    flow = make_flow(1, 10, live);
    CU_ASSERT_EQUAL(live->refs, 2);
    CU_ASSERT_EQUAL(flowspool_put(spool, &flow, &size, 1), 1);
    /* The block in memory is gone; the record holds the reference. */
    CU_ASSERT_EQUAL(live->refs, 2);
    CU_ASSERT_EQUAL(flowspool_take(spool, out, 1, &seq), 1);
    CU_ASSERT_PTR_EQUAL(out[0]->live, live);
    flow_free(out[0]);
    CU_ASSERT_EQUAL(live->refs, 1);
    /* One left in the spool at close: its reference is released too. */
    flow = make_flow(2, 10, live);
    CU_ASSERT_EQUAL(flowspool_put(spool, &flow, &size, 1), 1);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(live->refs, 1);
    flow_live_release(live);
    /* Not stored: the file stays for the next start. */
    CU_ASSERT(file_size(path) > 0);
    unlink(path);
}

static void test_full_spool_takes_a_prefix_then_nothing_until_emptied(void)
{
    struct flowspool *spool;
    struct flow *flows[10], *out[10];
    size_t sizes[10] = {0};
    size_t block, taken, n;
    uint64_t seq;
    int i;

    for (i = 0; i < 10; i++)
        flows[i] = make_flow(i, 100, NULL);
    block = flows[0]->packed_bytes;
    /* Room for three and a half records (32 bytes ahead of each, 16 ahead
     * of all). */
    spool = open_at(path, 16 + (uint64_t)(block + 32) * 7 / 2, 0, NULL);
    CU_ASSERT_FATAL(spool != NULL);
    taken = flowspool_put(spool, flows, sizes, 10);
    CU_ASSERT_EQUAL(taken, 3);
    CU_ASSERT_FALSE(flowspool_is_usable(spool));
    CU_ASSERT_EQUAL(flowspool_put(spool, flows + taken, sizes + taken, 10 - taken), 0);
    n = flowspool_take(spool, out, 10, &seq);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    for (i = 0; i < 3; i++) {
        expect_flow(out[i], i, 100);
        flow_free(out[i]);
    }
    /* Emptied and done with: it takes flows again. */
    CU_ASSERT_FALSE(flowspool_is_usable(spool));
    flowspool_done(spool, seq);
    CU_ASSERT_TRUE(flowspool_is_usable(spool));
    CU_ASSERT_EQUAL(flowspool_put(spool, flows + 3, sizes + 3, 1), 1);
    for (i = 4; i < 10; i++)
        flow_free(flows[i]);
    flowspool_close(spool);
    unlink(path);
}

/* Puts flows from..from+count) with body_len bytes of body each, packed,
 * in chunks as the writer does; returns how many the spool took. */
static int put_bodies(struct flowspool *spool, int from, int count, size_t body_len)
{
    int put = 0;

    while (put < count) {
        struct flow *flows[64];
        size_t sizes[64] = {0};
        int n = count - put < 64 ? count - put : 64, i;
        size_t taken;

        for (i = 0; i < n; i++)
            flows[i] = make_flow(from + put + i, body_len, NULL);
        taken = flowspool_put(spool, flows, sizes, (size_t)n);
        for (i = (int)taken; i < n; i++)
            flow_free(flows[i]);
        put += (int)taken;
        if ((int)taken < n)
            break;
    }
    return put;
}

/* Takes count flows as the writer does (a chunk, then done with it) and
 * checks they are numbers from.. in order; returns the last seq. */
static uint64_t take_expecting(struct flowspool *spool, int from, int count, size_t body_len)
{
    uint64_t seq = 0;
    int got = 0;

    while (got < count) {
        struct flow *out[64];
        size_t want = count - got < 64 ? (size_t)(count - got) : 64, n, k;

        n = flowspool_take(spool, out, want, &seq);
        CU_ASSERT_EQUAL_FATAL(n, want);
        for (k = 0; k < n; k++) {
            expect_flow(out[k], from + got + (int)k, body_len);
            flow_free(out[k]);
        }
        flowspool_done(spool, seq);
        got += (int)n;
    }
    return seq;
}

static off_t disk_bytes(const char *file)
{
    struct stat st;

    return stat(file, &st) == 0 ? (off_t)st.st_blocks * 512 : -1;
}

/* Whether the test's file system frees a file's blocks in its middle. */
static bool can_punch_holes(void)
{
    char probe[160];
    char block[8192] = {0};
    bool can = false;
    int fd;

    snprintf(probe, sizeof(probe), "%s/probe", dir);
    fd = open(probe, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    if (write(fd, block, sizeof(block)) == (ssize_t)sizeof(block))
        can = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
    close(fd);
    unlink(probe);
    return can;
}

/* Under a load that goes on the spool never empties: the records stored
 * give their room back as it goes, so a spool that filled takes flows
 * again, the disk holds about what is left, and a crash then still reads
 * back exactly the flows not stored. */
static void test_stored_records_are_freed_while_the_spool_never_empties(void)
{
    const size_t body = 6000;
    const uint64_t max = 24 * 1024 * 1024;
    struct flowspool_recovery found;
    struct flowspool *spool = open_at(path, max, 0, NULL), *again;
    int filled, taken, more;
    uint64_t seq;
    off_t full_disk;

    CU_ASSERT_FATAL(spool != NULL);
    if (!can_punch_holes()) {
        /* The spool then keeps what it stored until it empties, as the
         * full-spool test checks. */
        fprintf(stderr, "(skipped: %s punches no holes) ", dir);
        flowspool_close(spool);
        return;
    }
    filled = put_bodies(spool, 0, 100000, body);
    CU_ASSERT_FATAL(filled > 1000 && filled < 100000);
    CU_ASSERT_FALSE(flowspool_is_usable(spool));
    full_disk = disk_bytes(path);
    CU_ASSERT(full_disk >= (off_t)(max / 2));

    taken = filled * 2 / 3;
    seq = take_expecting(spool, 0, taken, body);
    /* Two thirds stored and freed: room again, and less on the disk. */
    CU_ASSERT_TRUE(flowspool_is_usable(spool));
    CU_ASSERT(disk_bytes(path) <= full_disk - (off_t)(max / 4));
    CU_ASSERT(file_size(path) > full_disk / 2); /* a hole, not a shorter file */
    copy_as_crashed();

    more = put_bodies(spool, 1000000, 500, body);
    CU_ASSERT_EQUAL(more, 500);
    take_expecting(spool, taken, filled - taken, body);
    take_expecting(spool, 1000000, more, body);
    CU_ASSERT_EQUAL(flowspool_count(spool), 0);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(file_size(path), -1);

    /* Killed after the two thirds were stored: the next start reads back
     * the third left, past the hole, and nothing before it. */
    again = open_at(crash, max, seq, &found);
    CU_ASSERT_FATAL(again != NULL);
    CU_ASSERT_EQUAL(found.flows, (size_t)(filled - taken));
    CU_ASSERT_EQUAL(found.abandoned, 0);
    take_expecting(again, taken, filled - taken, body);
    flowspool_close(again);
    CU_ASSERT_EQUAL(files_in_dir(), 0);
}

/* Puts flows 0..count) made by make_flow(), every seventh one too large to
 * pack (held in memory). */
static void put_numbered(struct flowspool *spool, int from, int count)
{
    struct flow *flows[64];
    size_t sizes[64] = {0};
    int i;

    CU_ASSERT_FATAL(count <= 64);
    for (i = 0; i < count; i++)
        flows[i] = make_flow(from + i, (from + i) % 7 == 3 ? LARGE_BODY_BYTES : 50, NULL);
    CU_ASSERT_EQUAL(flowspool_put(spool, flows, sizes, (size_t)count), (size_t)count);
}

/* The file a process killed with flows 0..count) in its spool leaves, in
 * crash. */
static void leave_crashed_spool(int count)
{
    struct flowspool *spool = open_at(path, 1 << 30, 0, NULL);

    CU_ASSERT_FATAL(spool != NULL);
    put_numbered(spool, 0, count);
    copy_as_crashed();
    flowspool_close(spool);
    unlink(path);
}

static void test_crashed_spool_is_read_back_past_what_was_stored(void)
{
    struct flowspool_recovery found;
    struct flowspool *again;
    struct flow *out[64];
    uint64_t seq;
    size_t n, k;
    int i;

    leave_crashed_spool(30);

    /* Flows 0..9 (seq 1..10) were stored before the crash; of 10..29, the
     * held ones (10, 17 and 24) were in that process's memory. */
    again = open_at(crash, 1 << 30, 10, &found);
    CU_ASSERT_FATAL(again != NULL);
    CU_ASSERT_EQUAL(found.flows, 17);
    CU_ASSERT_EQUAL(found.abandoned, 3);
    CU_ASSERT_EQUAL(flowspool_count(again), 17);
    n = flowspool_take(again, out, 64, &seq);
    CU_ASSERT_EQUAL_FATAL(n, 17);
    CU_ASSERT_EQUAL(seq, 30);
    for (k = 0, i = 10; k < n; k++, i++) {
        if (i % 7 == 3)
            i++;
        expect_flow(out[k], i, 50);
        CU_ASSERT_PTR_NULL(out[k]->live);
        flow_free(out[k]);
    }
    /* The sequence goes on after what the file held: a second crash now
     * leaves the new flows alone to read back. */
    put_numbered(again, 200, 5);
    flowspool_done(again, seq);
    copy_file(crash, path);
    flowspool_close(again);
    unlink(crash);
    again = open_at(path, 1 << 30, 30, &found);
    CU_ASSERT_FATAL(again != NULL);
    CU_ASSERT_EQUAL(found.flows, 5);
    n = flowspool_take(again, out, 64, &seq);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    CU_ASSERT_EQUAL(seq, 35);
    for (k = 0; k < n; k++) {
        expect_flow(out[k], 200 + (int)k, 50);
        flow_free(out[k]);
    }
    flowspool_done(again, seq);
    flowspool_close(again);
    /* Everything read back and done with: nothing left behind. */
    CU_ASSERT_EQUAL(files_in_dir(), 0);
}

/* A finished part of a live flow (a WebSocket's last row) of a crashed
 * process: it takes up its open part read back with it, replaces the row
 * its open part was stored as, or is a flow of its own. */
static void test_crashed_live_flows_are_made_anew(void)
{
    struct flow_live *a = flow_live_new(), *b = flow_live_new(), *c = flow_live_new();
    struct flowspool *spool = open_at(path, 1 << 30, 0, NULL);
    struct flow *flows[4], *out[4];
    size_t sizes[4] = {0};
    uint64_t seq;
    int i;

    CU_ASSERT_FATAL(a != NULL && b != NULL && c != NULL && spool != NULL);
    b->id = 77; /* its open part was stored as row 77 */
    flows[0] = make_flow(0, 10, a);
    flows[0]->live_part = FLOW_LIVE_OPEN;
    flows[1] = make_flow(1, 10, b);
    flows[1]->live_part = FLOW_LIVE_FINAL;
    flows[2] = make_flow(2, 10, a);
    flows[2]->live_part = FLOW_LIVE_FINAL;
    flows[3] = make_flow(3, 10, c);
    flows[3]->live_part = FLOW_LIVE_FINAL;
    CU_ASSERT_EQUAL(flowspool_put(spool, flows, sizes, 4), 4);
    copy_as_crashed();
    flowspool_close(spool);
    unlink(path);
    CU_ASSERT_EQUAL(a->refs, 1);
    flow_live_release(a);
    flow_live_release(b);
    flow_live_release(c);

    spool = open_at(crash, 1 << 30, 0, NULL);
    CU_ASSERT_FATAL(spool != NULL);
    CU_ASSERT_EQUAL_FATAL(flowspool_take(spool, out, 4, &seq), 4);
    /* The open part and its finished part share a new live flow. */
    CU_ASSERT_EQUAL(out[0]->live_part, FLOW_LIVE_OPEN);
    CU_ASSERT_FATAL(out[0]->live != NULL);
    CU_ASSERT_EQUAL(out[0]->live->id, 0);
    CU_ASSERT_EQUAL(out[2]->live_part, FLOW_LIVE_FINAL);
    CU_ASSERT_PTR_EQUAL(out[2]->live, out[0]->live);
    /* The one stored before the crash is replaced. */
    CU_ASSERT_EQUAL(out[1]->live_part, FLOW_LIVE_FINAL);
    CU_ASSERT_FATAL(out[1]->live != NULL);
    CU_ASSERT_EQUAL(out[1]->live->id, 77);
    /* The one with neither is a flow of its own. */
    CU_ASSERT_EQUAL(out[3]->live_part, FLOW_LIVE_NONE);
    CU_ASSERT_PTR_NULL(out[3]->live);
    for (i = 0; i < 4; i++)
        flow_free(out[i]);
    flowspool_done(spool, seq);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(files_in_dir(), 0);
}

/* Writes len bytes at at in file. */
static void write_at(const char *file, const void *bytes, size_t len, off_t at)
{
    int fd = open(file, O_WRONLY);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(pwrite(fd, bytes, len, at), (ssize_t)len);
    close(fd);
}

static void test_torn_or_foreign_spool_gives_no_broken_flow(void)
{
    struct flowspool_recovery found;
    struct flowspool *spool;
    struct flow *out[64];
    uint32_t other_layout = flow_packed_layout() + 1;
    uint64_t seq;
    size_t n, k;
    off_t size;

    leave_crashed_spool(3); /* 0, 1, 2: all packed */

    /* Torn in its last block: the first two come back. */
    size = file_size(crash);
    CU_ASSERT_EQUAL(truncate(crash, size - 10), 0);
    spool = open_at(crash, 1 << 30, 0, &found);
    CU_ASSERT_FATAL(spool != NULL);
    CU_ASSERT_EQUAL(found.flows, 2);
    n = flowspool_take(spool, out, 64, &seq);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    for (k = 0; k < n; k++) {
        expect_flow(out[k], (int)k, 50);
        flow_free(out[k]);
    }
    flowspool_done(spool, seq);
    flowspool_close(spool);

    /* A block whose pointer leads out of it: lost alone, the rest read. */
    leave_crashed_spool(3);
    {
        /* The second record's block: after the file header (16), the
         * first record (32 + its block) and the second's header. */
        struct flow probe;
        int fd = open(crash, O_RDWR);
        uint32_t first_bytes;
        off_t block_at;

        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(pread(fd, &first_bytes, 4, 16 + 4), 4);
        block_at = 16 + 32 + (off_t)first_bytes + 32;
        CU_ASSERT_EQUAL(pread(fd, &probe, sizeof(probe), block_at), (ssize_t)sizeof(probe));
        /* Out of the block, and of any block the test's heap may hand
         * out when it is read back. */
        probe.target = (char *)(uintptr_t)16;
        CU_ASSERT_EQUAL(pwrite(fd, &probe, sizeof(probe), block_at), (ssize_t)sizeof(probe));
        close(fd);
    }
    spool = open_at(crash, 1 << 30, 0, &found);
    CU_ASSERT_FATAL(spool != NULL);
    CU_ASSERT_EQUAL(found.flows, 3);
    n = flowspool_take(spool, out, 64, &seq);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(flowspool_lost(spool), 1);
    expect_flow(out[0], 0, 50);
    expect_flow(out[1], 2, 50);
    flow_free(out[0]);
    flow_free(out[1]);
    flowspool_done(spool, seq);
    flowspool_close(spool);

    /* Written by a build with another struct flow: none is read, the file
     * is cut. */
    leave_crashed_spool(3);
    write_at(crash, &other_layout, sizeof(other_layout), 4);
    spool = open_at(crash, 1 << 30, 0, &found);
    CU_ASSERT_FATAL(spool != NULL);
    CU_ASSERT_EQUAL(found.flows, 0);
    CU_ASSERT_EQUAL(found.abandoned, 3);
    CU_ASSERT_EQUAL(flowspool_take(spool, out, 64, &seq), 0);
    CU_ASSERT_EQUAL(file_size(crash), 0);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(files_in_dir(), 0);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("flowspool", setup, teardown);
    if (!s ||
        !CU_add_test(s, "flows_come_back_in_order_and_whole",
                     test_flows_come_back_in_order_and_whole) ||
        !CU_add_test(s, "live_reference_is_held_while_spooled",
                     test_live_reference_is_held_while_spooled) ||
        !CU_add_test(s, "full_spool_takes_a_prefix_then_nothing_until_emptied",
                     test_full_spool_takes_a_prefix_then_nothing_until_emptied) ||
        !CU_add_test(s, "stored_records_are_freed_while_the_spool_never_empties",
                     test_stored_records_are_freed_while_the_spool_never_empties) ||
        !CU_add_test(s, "crashed_spool_is_read_back_past_what_was_stored",
                     test_crashed_spool_is_read_back_past_what_was_stored) ||
        !CU_add_test(s, "crashed_live_flows_are_made_anew",
                     test_crashed_live_flows_are_made_anew) ||
        !CU_add_test(s, "torn_or_foreign_spool_gives_no_broken_flow",
                     test_torn_or_foreign_spool_gives_no_broken_flow)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
