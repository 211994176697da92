/*
 * Unit tests for http1codec: messages written as HTTP/1.1 heads for the
 * next hop, and bodies read and written through the body source and sink
 * interfaces over a socket pair.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http1codec.h"
#include "testutil.h"

#define IO_MS 2000
#define FIELD(n, v)                                                                                \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static void test_a_request_head_declares_its_own_framing_and_drops_hop_fields(void)
{
    struct message_field items[] = {
        FIELD("Host", "client.test"),  FIELD("Connection", "X-Hop"),    FIELD("X-Hop", "1"),
        FIELD("Content-Length", "99"), FIELD("Expect", "100-continue"), FIELD("Accept", "*/*")};
    struct message m = {.method = "PUT",
                        .method_len = 3,
                        .target = "/up",
                        .target_len = 3,
                        .authority = "origin.test:8080",
                        .authority_len = 16,
                        .version = 11,
                        .fields = {items, 6},
                        .body = MESSAGE_BODY_LENGTH,
                        .content_length = 4,
                        .expect_continue = true};
    size_t len = 0;
    char *head = http1codec_request_head(&m, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(head);
    CU_ASSERT_EQUAL(strlen(head), len);
    CU_ASSERT_EQUAL(strncmp(head, "PUT /up HTTP/1.1\r\nHost: origin.test:8080\r\n", 42), 0);
    /* The authority replaces the client's Host (RFC 9112 3.2.2). */
    CU_ASSERT_PTR_NULL(strstr(head, "client.test"));
    CU_ASSERT_PTR_NULL(strstr(head, "X-Hop"));
    CU_ASSERT_PTR_NULL(strstr(head, "Expect"));
    CU_ASSERT_PTR_NULL(strstr(head, ": 99"));
    CU_ASSERT_PTR_NOT_NULL(strstr(head, "\r\nAccept: */*\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(head, "\r\nContent-Length: 4\r\n"));
    CU_ASSERT(len > 4 && strcmp(head + len - 4, "\r\n\r\n") == 0);
    free(head);
}

static void test_an_http10_request_loses_its_expectation(void)
{
    struct message_field items[] = {FIELD("Expect", "100-continue")};
    struct message m = {.method = "GET",
                        .method_len = 3,
                        .target = "/",
                        .target_len = 1,
                        .authority = "a.test",
                        .authority_len = 6,
                        .version = 10,
                        .fields = {items, 1}};
    size_t len = 0;
    char *head = http1codec_request_head(&m, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(head);
    /* RFC 9110 10.1.1: ignored, not made real by the HTTP/1.1 head. */
    CU_ASSERT_PTR_NULL(strstr(head, "Expect"));
    free(head);
}

static void test_a_stream_of_unknown_length_is_chunked_for_11_and_closed_for_10(void)
{
    struct message_field items[] = {FIELD("Content-Type", "text/plain"),
                                    FIELD("Transfer-Encoding", "chunked")};
    struct message m = {.status = 200,
                        .reason = "OK",
                        .reason_len = 2,
                        .version = 11,
                        .fields = {items, 2},
                        .body = MESSAGE_BODY_STREAM,
                        .keep_alive = true};
    bool keep = true, is_chunked = false;
    size_t len = 0;
    char *head = http1codec_response_head(&m, 1, &keep, &is_chunked, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(head);
    CU_ASSERT_TRUE(keep);
    CU_ASSERT_TRUE(is_chunked);
    CU_ASSERT_PTR_NOT_NULL(strstr(head, "\r\nTransfer-Encoding: chunked\r\n"));
    free(head);
    keep = true;
    head = http1codec_response_head(&m, 0, &keep, &is_chunked, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(head);
    CU_ASSERT_FALSE(keep);
    CU_ASSERT_FALSE(is_chunked);
    CU_ASSERT_PTR_NULL(strstr(head, "Transfer-Encoding"));
    CU_ASSERT_PTR_NOT_NULL(strstr(head, "\r\nConnection: close\r\n"));
    free(head);
}

static void test_a_bodiless_response_keeps_the_origins_length(void)
{
    struct message_field items[] = {FIELD("Content-Length", "1234")};
    struct message m = {.status = 304,
                        .reason = "Not Modified",
                        .reason_len = 12,
                        .fields = {items, 1},
                        .body = MESSAGE_BODY_NONE};
    bool keep = true, is_chunked = true;
    size_t len = 0;
    char *head = http1codec_response_head(&m, 1, &keep, &is_chunked, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(head);
    CU_ASSERT_FALSE(is_chunked);
    CU_ASSERT_PTR_NOT_NULL(strstr(head, "\r\nContent-Length: 1234\r\n"));
    free(head);
}

/* Everything readable on fd now, NUL-terminated. */
static char *read_now(int fd, size_t *len)
{
    char *buf = calloc(1, 65536);
    int flags = fcntl(fd, F_GETFL);

    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    *len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + *len, 65535 - *len);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    fcntl(fd, F_SETFL, flags);
    return buf;
}

static void test_a_chunked_body_passes_with_its_trailers_as_fields(void)
{
    static const char wire[] = "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-Sum: 5\r\nX-Two:  b \r\n\r\nNEXT";
    int in[2], out[2];
    struct stream src, dst;
    struct http1codec_reader r;
    struct http1codec_writer w;
    const char *data;
    size_t len, got_len = 0;
    char got[64];
    int n;

    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, in) == 0);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, out) == 0);
    CU_ASSERT_FATAL(stream_init(&src, in[1], 65536, -1) == 0);
    CU_ASSERT_FATAL(stream_init(&dst, out[1], 65536, -1) == 0);
    CU_ASSERT_FATAL(write(in[0], wire, sizeof(wire) - 1) == (ssize_t)(sizeof(wire) - 1));
    CU_ASSERT_FATAL(http1codec_reader_init(&r, &src, MESSAGE_BODY_STREAM, 0) == 0);
    http1codec_writer_init(&w, &dst, true);
    while ((n = r.source.next(&r.source, IO_MS, &data, &len)) > 0) {
        CU_ASSERT_FATAL(got_len + len <= sizeof(got));
        memcpy(got + got_len, data, len);
        got_len += len;
        CU_ASSERT_EQUAL(w.sink.write(&w.sink, data, len, IO_MS), 0);
    }
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(got_len, 5);
    CU_ASSERT_EQUAL(memcmp(got, "abcde", 5), 0);
    struct message_fields trailers = r.source.trailers(&r.source);
    CU_ASSERT_EQUAL_FATAL(trailers.count, 2);
    CU_ASSERT_PTR_NOT_NULL(message_fields_find(&trailers, "x-sum"));
    CU_ASSERT_EQUAL(trailers.items[1].value_len, 1);
    CU_ASSERT_EQUAL(trailers.items[1].value[0], 'b');
    CU_ASSERT_EQUAL(w.sink.end(&w.sink, &trailers, IO_MS), 0);
    /* The bytes after the body are the next message's: still unread. */
    CU_ASSERT_EQUAL(stream_buffered(&src), 4);

    size_t out_len = 0;
    char *sent = read_now(out[0], &out_len);
    CU_ASSERT_STRING_EQUAL(sent, "3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\nX-Two: b\r\n\r\n");
    free(sent);
    http1codec_reader_free(&r);
    stream_close(&src);
    stream_close(&dst);
    close(in[0]);
    close(out[0]);
}

static void test_a_short_body_is_a_source_fault(void)
{
    int in[2];
    struct stream src;
    struct http1codec_reader r;
    const char *data;
    size_t len, total = 0;
    int n;

    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, in) == 0);
    CU_ASSERT_FATAL(stream_init(&src, in[1], 65536, -1) == 0);
    CU_ASSERT_FATAL(write(in[0], "abc", 3) == 3);
    shutdown(in[0], SHUT_WR);
    CU_ASSERT_FATAL(http1codec_reader_init(&r, &src, MESSAGE_BODY_LENGTH, 10) == 0);
    while ((n = r.source.next(&r.source, IO_MS, &data, &len)) > 0)
        total += len;
    CU_ASSERT_EQUAL(n, -1);
    CU_ASSERT_EQUAL(total, 3);
    CU_ASSERT_EQUAL(r.source.fault, BODY_FAULT_SOURCE);
    http1codec_reader_free(&r);
    stream_close(&src);
    close(in[0]);
}

static void test_trailer_lines_split_into_trimmed_fields(void)
{
    static const char raw[] = "A: 1\r\nnocolon\r\n: empty-name\r\nB:\t two  \r\n";
    struct message_field f[4];
    size_t n = http1codec_split_fields(raw, sizeof(raw) - 1, f, 4);

    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(f[0].name_len, 1);
    CU_ASSERT_EQUAL(strncmp(f[1].value, "two", f[1].value_len), 0);
    CU_ASSERT_EQUAL(f[1].value_len, 3);
    CU_ASSERT_EQUAL(http1codec_split_fields(raw, sizeof(raw) - 1, f, 1), 1);
}

#define ADD(s, t) CU_add_test(s, #t, t)

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("http1codec", NULL, NULL);
    if (suite == NULL ||
        !ADD(suite, test_a_request_head_declares_its_own_framing_and_drops_hop_fields) ||
        !ADD(suite, test_an_http10_request_loses_its_expectation) ||
        !ADD(suite, test_a_stream_of_unknown_length_is_chunked_for_11_and_closed_for_10) ||
        !ADD(suite, test_a_bodiless_response_keeps_the_origins_length) ||
        !ADD(suite, test_a_chunked_body_passes_with_its_trailers_as_fields) ||
        !ADD(suite, test_a_short_body_is_a_source_fault) ||
        !ADD(suite, test_trailer_lines_split_into_trimmed_fields))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
