/*
 * Unit tests for flowspool: flows go to an unlinked file and come back in
 * order, whole (every string, body and TLS fact, the pointers into the
 * block moved along, a live reference kept), flows too large to pack wait
 * in memory in their place, and a full or emptied spool behaves.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flow.h"
#include "flowspool.h"
#include "testutil.h"

#define LARGE_BODY_BYTES (FLOW_PACK_BODY_MAX_BYTES + 100)

static char dir[64];

static int setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tw-spool-XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
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

/* Files in the test's directory: the spool's file has no name. */
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

static void test_flows_come_back_in_order_and_whole(void)
{
    struct flowspool *spool = NULL;
    struct flow *flows[40], *out[64];
    size_t sizes[40] = {0};
    char err[256];
    size_t n, total = 0;
    int i;

    CU_ASSERT_EQUAL_FATAL(flowspool_open(dir, 1 << 30, &spool, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(files_in_dir(), 0);
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
    n = flowspool_take(spool, out, 25);
    CU_ASSERT_EQUAL(n, 25);
    n += flowspool_take(spool, out + n, 64 - n);
    CU_ASSERT_EQUAL_FATAL(n, 40);
    for (i = 0; i < 40; i++) {
        expect_flow(out[i], i, i % 7 == 3 ? LARGE_BODY_BYTES : (size_t)i * 10);
        total += out[i]->response_body.len;
        flow_free(out[i]);
    }
    CU_ASSERT(total > 0);
    CU_ASSERT_EQUAL(flowspool_count(spool), 0);
    CU_ASSERT_EQUAL(flowspool_held_bytes(spool), 0);
    /* Emptied: the file is cut to nothing. */
    CU_ASSERT_EQUAL(flowspool_file_bytes(spool), 0);
    CU_ASSERT_EQUAL(flowspool_lost(spool), 0);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(files_in_dir(), 0);
}

static void test_live_reference_is_held_while_spooled(void)
{
    struct flowspool *spool = NULL;
    struct flow_live *live = flow_live_new();
    struct flow *flow, *out[1];
    size_t size = 100;
    char err[256];

    CU_ASSERT_FATAL(live != NULL);
    CU_ASSERT_EQUAL_FATAL(flowspool_open(dir, 1 << 30, &spool, err, sizeof(err)), 0);
    flow = make_flow(1, 10, live);
    CU_ASSERT_EQUAL(live->refs, 2);
    CU_ASSERT_EQUAL(flowspool_put(spool, &flow, &size, 1), 1);
    /* The block in memory is gone; the record holds the reference. */
    CU_ASSERT_EQUAL(live->refs, 2);
    CU_ASSERT_EQUAL(flowspool_take(spool, out, 1), 1);
    CU_ASSERT_PTR_EQUAL(out[0]->live, live);
    flow_free(out[0]);
    CU_ASSERT_EQUAL(live->refs, 1);
    /* One left in the spool at close: its reference is released too. */
    flow = make_flow(2, 10, live);
    CU_ASSERT_EQUAL(flowspool_put(spool, &flow, &size, 1), 1);
    flowspool_close(spool);
    CU_ASSERT_EQUAL(live->refs, 1);
    flow_live_release(live);
}

static void test_full_spool_takes_a_prefix_then_nothing_until_emptied(void)
{
    struct flowspool *spool = NULL;
    struct flow *flows[10], *out[10];
    size_t sizes[10] = {0};
    size_t block, taken, n;
    char err[256];
    int i;

    for (i = 0; i < 10; i++)
        flows[i] = make_flow(i, 100, NULL);
    block = flows[0]->packed_bytes;
    /* Room for three and a half records. */
    CU_ASSERT_EQUAL_FATAL(
        flowspool_open(dir, (uint64_t)(block + 16) * 7 / 2, &spool, err, sizeof(err)), 0);
    taken = flowspool_put(spool, flows, sizes, 10);
    CU_ASSERT_EQUAL(taken, 3);
    CU_ASSERT_FALSE(flowspool_is_usable(spool));
    CU_ASSERT_EQUAL(flowspool_put(spool, flows + taken, sizes + taken, 10 - taken), 0);
    n = flowspool_take(spool, out, 10);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    for (i = 0; i < 3; i++) {
        expect_flow(out[i], i, 100);
        flow_free(out[i]);
    }
    /* Emptied: it takes flows again. */
    CU_ASSERT_TRUE(flowspool_is_usable(spool));
    CU_ASSERT_EQUAL(flowspool_put(spool, flows + 3, sizes + 3, 1), 1);
    for (i = 4; i < 10; i++)
        flow_free(flows[i]);
    flowspool_close(spool);
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
                     test_full_spool_takes_a_prefix_then_nothing_until_emptied)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
