/*
 * Unit tests for session routing: each entry point takes a client on one end
 * of a socket pair (the test plays the client on the other), with a scripted
 * origin on an ephemeral loopback port and a real flow store, and the test
 * checks what the client got and which flow was recorded.
 *   - the explicit proxy forwards an absolute-form request, and answers an
 *     origin-form one with a 400 that is logged and recorded like any flow;
 *   - the tunnel entry (a CONNECT's, or a future transparent or SOCKS5
 *     listener's) serves plain HTTP to the destination it was given, and
 *     relays bytes that are neither TLS nor HTTP raw, as a tunnel flow.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "flowstore.h"
#include "session.h"
#include "testutil.h"

#define WAIT_MS 5000

/* ---- a scripted origin: answers each connection with one canned reply ---- */

struct origin_script {
    int listen_fd;
    uint16_t port;
    const char *reply;
    bool is_replying_after_eof; /* answer only once the proxy half-closed */
    char got[4096];             /* what the last connection sent */
    size_t got_len;
    pthread_t thread;
};

static void *origin_main(void *arg)
{
    struct origin_script *o = arg;
    struct pollfd p = {.fd = o->listen_fd, .events = POLLIN};
    int fd;
    ssize_t n;

    if (poll(&p, 1, WAIT_MS) != 1 || (fd = accept(o->listen_fd, NULL, NULL)) < 0)
        return NULL;
    p.fd = fd;
    o->got_len = 0;
    /* Until the reply's trigger (a blank line, or any bytes for raw). */
    while (o->got_len < sizeof(o->got) - 1 && poll(&p, 1, WAIT_MS) == 1 &&
           (n = read(fd, o->got + o->got_len, sizeof(o->got) - 1 - o->got_len)) > 0) {
        o->got_len += (size_t)n;
        o->got[o->got_len] = '\0';
        if (!o->is_replying_after_eof &&
            (strstr(o->got, "\r\n\r\n") != NULL || strncmp(o->got, "RAW", 3) == 0))
            break;
    }
    /* MSG_MORE holds the bytes back until the close, so that they and the
     * FIN travel in one segment: the proxy then sees them with the hang-up. */
    if (send(fd, o->reply, strlen(o->reply), o->is_replying_after_eof ? MSG_MORE : 0) < 0)
        o->got_len = 0;
    close(fd);
    return NULL;
}

static void origin_start(struct origin_script *o, const char *reply, bool is_replying_after_eof)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);

    memset(o, 0, sizeof(*o));
    o->reply = reply;
    o->is_replying_after_eof = is_replying_after_eof;
    o->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(o->listen_fd >= 0);
    CU_ASSERT_FATAL(bind(o->listen_fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(listen(o->listen_fd, 4) == 0);
    CU_ASSERT_FATAL(getsockname(o->listen_fd, (struct sockaddr *)&a, &len) == 0);
    o->port = ntohs(a.sin_port);
    CU_ASSERT_FATAL(pthread_create(&o->thread, NULL, origin_main, o) == 0);
}

static void origin_stop(struct origin_script *o)
{
    pthread_join(o->thread, NULL);
    close(o->listen_fd);
}

/* ---- the environment every session shares ---- */

static char dir[64];
static struct config cfg;
static struct flowstore *flows;
static struct proxy_env env;
static int stop_pipe[2], cancel_pipe[2];

static void setup(void)
{
    char db[128], err[256];
    char *argv[] = {"tapwire", "--listen", "127.0.0.1:1", "--no-dashboard", NULL};

    snprintf(dir, sizeof(dir), "/tmp/tapwire-test-session.XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    CU_ASSERT_FATAL(config_parse(&cfg, 4, argv) == CONFIG_OK);
    cfg.idle_timeout_ms = 500; /* a client that stops sending ends soon */
    snprintf(db, sizeof(db), "%s/tapwire.db", dir);
    CU_ASSERT_FATAL(flowstore_open(db, 1000, &flows, err, sizeof(err)) == 0);
    CU_ASSERT_FATAL(pipe(stop_pipe) == 0 && pipe(cancel_pipe) == 0);
    env = (struct proxy_env){
        .cfg = &cfg,
        .flows = flows,
        .stop_fd = stop_pipe[0],
        .cancel_fd = cancel_pipe[0],
    };
}

static void teardown(void)
{
    flowstore_close(flows);
    config_free(&cfg);
    close(stop_pipe[0]);
    close(stop_pipe[1]);
    close(cancel_pipe[0]);
    close(cancel_pipe[1]);
    testutil_remove_dir(dir);
}

/* ---- driving a session ---- */

/* Sends request as the client (then closes its sending side when
 * is_done_sending), runs the session on the other end with entry (explicit
 * when host is NULL, else the tunnel to host:port) and returns what the
 * client got. */
static char *run_session(const char *request, const char *host, uint16_t port, bool is_done_sending)
{
    struct sockaddr_storage peer = {0};
    struct sockaddr_in *in = (struct sockaddr_in *)&peer;
    char *got = calloc(1, 65536);
    size_t got_len = 0;
    ssize_t n;
    int sp[2];

    CU_ASSERT_FATAL(got != NULL);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in->sin_port = htons(40000);
    CU_ASSERT_FATAL(write(sp[0], request, strlen(request)) == (ssize_t)strlen(request));
    if (is_done_sending)
        shutdown(sp[0], SHUT_WR);
    if (host == NULL)
        session_serve_explicit(&env, sp[1], &peer);
    else
        session_serve_tunnel(&env, sp[1], &peer, SESSION_LISTENER_SOCKS5, host, port);
    while (got_len < 65535 && (n = read(sp[0], got + got_len, 65535 - got_len)) > 0)
        got_len += (size_t)n;
    close(sp[0]);
    return got;
}

/* The newest flow, written. Caller frees. */
static struct flowstore_record *newest_flow(void)
{
    struct flowstore_filter filter = {.limit = 1};
    struct flowstore_record **records = NULL;
    struct flowstore_record *rec = NULL;
    size_t count = 0;
    char err[256];

    CU_ASSERT_FATAL(flowstore_sync(flows, WAIT_MS) == 0);
    CU_ASSERT_FATAL(flowstore_list(flows, &filter, &records, &count, err, sizeof(err)) == 0);
    CU_ASSERT_FATAL(count == 1);
    CU_ASSERT_FATAL(flowstore_get(flows, records[0]->flow.id, &rec, err, sizeof(err)) == 0);
    flowstore_records_free(records, count);
    return rec;
}

static void test_explicit_proxy_forwards_an_absolute_form_request(void)
{
    struct origin_script o;
    struct flowstore_record *rec;
    char request[256];
    char *got;

    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", false);
    snprintf(request, sizeof(request),
             "GET http://127.0.0.1:%u/path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", o.port,
             o.port);
    got = run_session(request, NULL, 0, true);
    origin_stop(&o);
    CU_ASSERT_EQUAL(strncmp(got, "HTTP/1.1 200 OK\r\n", 17), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\r\n\r\nhi"));
    /* The origin got the origin-form target. */
    CU_ASSERT_EQUAL(strncmp(o.got, "GET /path?q=1 HTTP/1.1\r\n", 24), 0);
    rec = newest_flow();
    CU_ASSERT_STRING_EQUAL(rec->flow.method, "GET");
    CU_ASSERT_STRING_EQUAL(rec->flow.host, "127.0.0.1");
    CU_ASSERT_EQUAL(rec->flow.port, o.port);
    CU_ASSERT_STRING_EQUAL(rec->flow.target, "/path?q=1");
    CU_ASSERT_EQUAL(rec->flow.status, 200);
    flowstore_record_free(rec);
    free(got);
}

static void test_explicit_proxy_refuses_an_origin_form_request_and_records_it(void)
{
    struct flowstore_record *rec;
    char *got = run_session("GET /local HTTP/1.1\r\nHost: example.test\r\n\r\n", NULL, 0, true);

    CU_ASSERT_EQUAL(strncmp(got, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "this is a proxy"));
    rec = newest_flow();
    CU_ASSERT_STRING_EQUAL(rec->flow.method, "GET");
    CU_ASSERT_EQUAL(rec->flow.status, 400);
    CU_ASSERT_EQUAL(rec->flow.response_version, 11);
    CU_ASSERT_PTR_NOT_NULL(rec->flow.response_headers);
    CU_ASSERT_PTR_NOT_NULL(strstr(rec->flow.response_headers, "Content-Type: text/plain"));
    CU_ASSERT_PTR_NOT_NULL(rec->flow.error);
    flowstore_record_free(rec);
    free(got);
}

static void test_tunnel_entry_serves_plain_http_to_its_destination(void)
{
    struct origin_script o;
    struct flowstore_record *rec;
    char *got;

    origin_start(&o, "HTTP/1.1 201 Created\r\nContent-Length: 3\r\nConnection: close\r\n\r\nnew",
                 false);
    got = run_session("PUT /item HTTP/1.1\r\nHost: site.example\r\nContent-Length: 0\r\n\r\n",
                      "127.0.0.1", o.port, true);
    origin_stop(&o);
    CU_ASSERT_EQUAL(strncmp(got, "HTTP/1.1 201 Created\r\n", 22), 0);
    CU_ASSERT_EQUAL(strncmp(o.got, "PUT /item HTTP/1.1\r\n", 20), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(o.got, "\r\nHost: site.example\r\n"));
    rec = newest_flow();
    CU_ASSERT_STRING_EQUAL(rec->flow.method, "PUT");
    CU_ASSERT_EQUAL(rec->flow.port, o.port);
    CU_ASSERT_EQUAL(rec->flow.status, 201);
    CU_ASSERT_EQUAL(rec->flow.kind, FLOW_HTTP);
    flowstore_record_free(rec);
    free(got);
}

/* The client sends and half-closes; the origin answers only after tapwire
 * passed the half-close on, so its answer and its close arrive together:
 * the answer must still reach the client. */
static void test_raw_relay_delivers_the_answer_after_a_half_close(void)
{
    struct origin_script o;
    struct flowstore_record *rec;
    char *got;

    origin_start(&o, "answer after eof", true);
    got = run_session("RAW\x01 request then eof", "127.0.0.1", o.port, true);
    origin_stop(&o);
    CU_ASSERT_STRING_EQUAL(o.got, "RAW\x01 request then eof");
    CU_ASSERT_STRING_EQUAL(got, "answer after eof");
    rec = newest_flow();
    CU_ASSERT_EQUAL(rec->flow.bytes_down, 16);
    flowstore_record_free(rec);
    free(got);
}

static void test_tunnel_entry_relays_other_bytes_raw(void)
{
    struct origin_script o;
    struct flowstore_record *rec;
    char *got;

    origin_start(&o, "raw reply", false);
    /* The client keeps its side open: the origin's close ends the relay. */
    got = run_session("RAW\x01\x02 not http", "127.0.0.1", o.port, false);
    origin_stop(&o);
    CU_ASSERT_STRING_EQUAL(got, "raw reply");
    CU_ASSERT_EQUAL(strncmp(o.got, "RAW\x01\x02", 5), 0);
    rec = newest_flow();
    CU_ASSERT_EQUAL(rec->flow.kind, FLOW_TUNNEL);
    CU_ASSERT_STRING_EQUAL(rec->flow.method, "CONNECT");
    CU_ASSERT_EQUAL(rec->flow.bytes_down, 9);
    flowstore_record_free(rec);
    free(got);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite_with_setup_and_teardown("session", NULL, NULL, setup, teardown);
    if (suite == NULL ||
        !CU_add_test(suite, "explicit_proxy_forwards_an_absolute_form_request",
                     test_explicit_proxy_forwards_an_absolute_form_request) ||
        !CU_add_test(suite, "explicit_proxy_refuses_an_origin_form_request_and_records_it",
                     test_explicit_proxy_refuses_an_origin_form_request_and_records_it) ||
        !CU_add_test(suite, "tunnel_entry_serves_plain_http_to_its_destination",
                     test_tunnel_entry_serves_plain_http_to_its_destination) ||
        !CU_add_test(suite, "tunnel_entry_relays_other_bytes_raw",
                     test_tunnel_entry_relays_other_bytes_raw) ||
        !CU_add_test(suite, "raw_relay_delivers_the_answer_after_a_half_close",
                     test_raw_relay_delivers_the_answer_after_a_half_close))
        goto fail;
    return testutil_run();
fail:
    CU_cleanup_registry();
    return 1;
}
