/*
 * libFuzzer target for flowspool's reading back of a file an earlier
 * process left (flowspool_open() after a crash, then flowspool_take()).
 * The file is tapwire's own, in its private data directory, but a crash
 * (or a machine that stopped) may leave it torn or stale, and nothing in it
 * may then be read as a flow that does not hold together.
 *
 * A random file would almost never get past the headers, so the target
 * writes a good spool of a few flows (packed, held in memory, live parts)
 * and the input changes it: its first byte picks the stored sequence
 * number and a truncation, the rest are (offset, byte) edits. Every flow
 * read back is walked whole (its strings to their NUL, its bodies to their
 * length, its header facts), which AddressSanitizer checks.
 *
 * fuzz-sources: src/flowspool.c src/flow.c src/errmsg.c
 */
#include "flow.h"
#include "flowspool.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLOWS 6

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static char path[64];

static char *dup_text(const char *text)
{
    char *copy = strdup(text);

    CHECK(copy != NULL);
    return copy;
}

static struct flow *make_flow(int i, struct flow_live *live)
{
    struct flow *f = flow_new(64 * 1024);
    size_t body = i == 2 ? FLOW_PACK_BODY_MAX_BYTES + 10 : (size_t)i * 40;
    char text[32];
    size_t k;

    CHECK(f != NULL);
    snprintf(text, sizeof(text), "/f/%d", i);
    f->target = dup_text(text);
    f->request_headers = dup_text("Host: fuzz.test\r\n");
    f->response_headers = dup_text("Content-Type: text/html\r\n");
    f->response_facts.text = f->response_headers;
    f->response_facts.has_content_type = true;
    f->response_facts.content_type_at = 14;
    f->response_facts.content_type_len = 9;
    f->tls.verification = dup_text("ok");
    f->error = i % 2 != 0 ? dup_text("err") : NULL;
    snprintf(f->host, sizeof(f->host), "fuzz.test");
    for (k = 0; k < body; k++) {
        unsigned char b = (unsigned char)k;

        CHECK(flow_body_append(&f->response_body, &b, 1) == 0);
    }
    if (live != NULL) {
        f->live = flow_live_ref(live);
        f->live_part = i == 3 ? FLOW_LIVE_OPEN : FLOW_LIVE_FINAL;
    }
    return flow_pack(f);
}

/* A good spool of FLOWS flows in path: one held in memory (2), a live
 * flow's open and finished parts (3, 4). */
static void write_spool(void)
{
    struct flowspool_recovery found;
    struct flowspool *spool = NULL;
    struct flow_live *live = flow_live_new();
    struct flow *flows[FLOWS];
    size_t sizes[FLOWS] = {0};
    char err[256];
    int i;

    CHECK(live != NULL);
    unlink(path);
    CHECK(flowspool_open(path, 1 << 20, 0, &found, &spool, err, sizeof(err)) == 0);
    for (i = 0; i < FLOWS; i++)
        flows[i] = make_flow(i, i == 3 || i == 4 ? live : NULL);
    CHECK(flowspool_put(spool, flows, sizes, FLOWS) == FLOWS);
    flowspool_close(spool); /* not done with: the file stays */
    flow_live_release(live);
}

static size_t walk_text(const char *text)
{
    return text != NULL ? strlen(text) : 0;
}

static size_t walk_body(const struct flow_body *body)
{
    size_t sum = 0, k;

    for (k = 0; k < body->len; k++)
        sum += body->data[k];
    return sum;
}

static void walk(const struct flow *f)
{
    volatile size_t sum = 0;
    const struct flow_header_facts *facts = &f->response_facts;

    sum += walk_text(f->target) + walk_text(f->request_headers) + walk_text(f->response_headers);
    sum += walk_text(f->error) + walk_text(f->rules) + walk_text(f->target_original);
    sum += walk_text(f->request_headers_original) + walk_text(f->response_headers_original);
    sum += walk_text(f->rules_notes) + walk_text(f->tls.cert_subject);
    sum += walk_text(f->tls.cert_issuer) + walk_text(f->tls.cert_sans);
    sum += walk_text(f->tls.verification);
    sum += strlen(f->host) + strlen(f->method) + strlen(f->client_addr) + strlen(f->listener);
    sum += walk_body(&f->request_body) + walk_body(&f->response_body);
    sum += walk_body(&f->request_body_original) + walk_body(&f->response_body_original);
    if (facts->text != NULL && facts->has_content_type && facts->content_type_len > 0)
        sum += (size_t)facts->text[facts->content_type_at + facts->content_type_len - 1];
    CHECK(f->live_part == FLOW_LIVE_NONE || f->live != NULL);
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct flowspool_recovery found;
    struct flowspool *spool = NULL;
    struct flow *out[FLOWS + 1];
    struct stat st;
    char err[256];
    uint64_t seq;
    size_t n, i;
    int fd;

    if (path[0] == '\0')
        snprintf(path, sizeof(path), "/tmp/tapwire-fuzz-spool-%d", (int)getpid());
    write_spool();
    fd = open(path, O_RDWR);
    CHECK(fd >= 0 && fstat(fd, &st) == 0);
    if (size > 0) {
        /* Low bits: the sequence number stored; high bits: a truncation. */
        if (data[0] >> 3 != 0)
            CHECK(ftruncate(fd, st.st_size * (data[0] >> 3) / 32) == 0);
        for (i = 1; i + 3 <= size; i += 3) {
            off_t at = (off_t)(data[i] | data[i + 1] << 8) % (st.st_size > 0 ? st.st_size : 1);

            CHECK(pwrite(fd, &data[i + 2], 1, at) == 1);
        }
    }
    close(fd);
    CHECK(flowspool_open(path, 1 << 20, size > 0 ? data[0] & 7 : 0, &found, &spool, err,
                         sizeof(err)) == 0);
    CHECK(found.flows + found.abandoned <= FLOWS);
    n = flowspool_take(spool, out, FLOWS + 1, &seq);
    CHECK(n <= found.flows);
    for (i = 0; i < n; i++) {
        walk(out[i]);
        flow_free(out[i]);
    }
    flowspool_done(spool, seq);
    flowspool_close(spool);
    unlink(path);
    return 0;
}
