/*
 * libFuzzer target for h2relay: the glue between the two nghttp2 sessions,
 * and between the client's session and h2bridge's HTTP/1.1 connection.
 * The input is split in two: bytes a client sends and bytes an origin
 * sends (HTTP/2 frames, or HTTP/1.1 responses), each written into a socket pair before the relay
 * runs on them, so every callback (headers, trailers, data, resets, stream close) sees whatever
 * order and content the fuzzer finds. The relay must end (both peers are at EOF) without a crash, a
 * leak or a hang; each exchange it starts must be finished (the capture stubs count begins and
 * finishes).
 *
 * Capture and rules are stubbed here: they have fuzz targets and tests of
 * their own, and the glue is what is under test. So is opening an origin
 * connection for the bridge: the first one is a socket pair that gets the
 * origin's bytes as it opens (an origin speaks only when asked), and every
 * later one fails (no network in a fuzzer).
 *
 * fuzz-sources: src/h2relay.c src/message.c src/log.c src/stream.c src/errmsg.c
 * fuzz-sources: src/stacktrim.c src/grpcmsg.c src/h2bridge.c src/http1.c src/http1codec.c
 * fuzz-sources: src/buf.c src/reverse.c src/ruleaction.c src/flow.c
 * fuzz-libs: libnghttp2
 *
 * Input: first byte = the share of the rest (in 256ths) that the client
 * sends, its lowest bit set for an HTTP/1.1 origin, the next one for
 * --reverse-forwarded, the two after it the action every stream gets
 * (none, a mock, block close, a map-remote, whose bridge cannot connect);
 * the origin sends the remainder.
 */
#include "h2relay.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "capture.h"
#include "exchange.h"
#include "h2intercept.h"
#include "origin.h"
#include "log.h"
#include "rewrite.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static int begun, finished;
/* The action rule every stream gets (rewrite_action()), NULL: none. */
static const struct rule *action;
/* The HTTP/1.1 origin's bytes, for the bridge's first connection. */
static const uint8_t *origin_bytes;
static size_t origin_len;
static int origin_peer = -1;

static void feed(int fd, const uint8_t *data, size_t len);

/* ---- stubs: a recorder that keeps nothing, rules that change nothing ---- */

void capture_begin(struct capture *c, struct flowstore *store, const struct capture_start *start)
{
    (void)store;
    (void)start;
    memset(c, 0, sizeof(*c));
    begun++;
}
void capture_request(struct capture *c, const struct message *sent, const struct message *received,
                     char *target_original)
{
    (void)c;
    CHECK(sent->method != NULL && sent->target != NULL);
    (void)received;
    free(target_original);
}
const struct exchange_capture *capture_hooks(struct capture *c)
{
    (void)c;
    return NULL;
}
void capture_rules(struct capture *c, const char *applied, const char *notes)
{
    (void)c;
    (void)applied;
    (void)notes;
}
void capture_finish(struct capture *c, const struct capture_connection *conn, int status,
                    const char *error)
{
    (void)c;
    (void)conn;
    (void)status;
    (void)error;
}
void capture_abandon(struct capture *c)
{
    (void)c;
    finished++;
}
/* The intercept is off here (env.intercept is NULL): nothing parks. */
void h2intercept_init(struct h2intercept *hi, struct intercept *ic, int stop_fd)
{
    memset(hi, 0, sizeof(*hi));
    hi->ic = ic;
    hi->wake_fd = -1;
    hi->stop_fd = stop_fd;
}
void h2intercept_close(struct h2intercept *hi)
{
    (void)hi;
}
int h2intercept_fd(const struct h2intercept *hi)
{
    return hi->wake_fd;
}
void h2intercept_drain(struct h2intercept *hi)
{
    (void)hi;
}
int h2intercept_request(struct h2intercept *hi, struct h2intercept_stream *s,
                        const struct message *req, const char *host, uint16_t port, const char *url,
                        struct capture *cap, bool has_body)
{
    (void)hi, (void)s, (void)req, (void)host, (void)port, (void)url, (void)cap, (void)has_body;
    return H2INTERCEPT_ON;
}
int h2intercept_response(struct h2intercept *hi, struct h2intercept_stream *s,
                         const struct message *resp, const char *url, struct capture *cap,
                         bool has_body)
{
    (void)hi, (void)s, (void)resp, (void)url, (void)cap, (void)has_body;
    return H2INTERCEPT_ON;
}
int h2intercept_body(struct h2intercept *hi, struct h2intercept_stream *s,
                     const struct message *head, const unsigned char *body, size_t len,
                     bool is_whole, const char *url, struct capture *cap)
{
    (void)hi, (void)s, (void)head, (void)body, (void)len, (void)is_whole, (void)url, (void)cap;
    return H2INTERCEPT_ON;
}
enum h2intercept_verdict h2intercept_check(struct h2intercept *hi, struct h2intercept_stream *s,
                                           const struct message *held, struct message *edited,
                                           struct capture *cap, int *left_ms)
{
    (void)hi, (void)s, (void)held, (void)edited, (void)cap, (void)left_ms;
    return H2INTERCEPT_GO;
}
void h2intercept_end(struct h2intercept *hi, struct h2intercept_stream *s, struct capture *cap,
                     const char *why)
{
    (void)hi, (void)s, (void)cap, (void)why;
}
int rewrite_begin(struct rewrite *rw, struct rules_current *rules, const struct message *req,
                  const char *site, const char *path, size_t limit, size_t memory_limit)
{
    (void)rules;
    (void)req;
    (void)site;
    (void)path;
    (void)limit;
    (void)memory_limit;
    memset(rw, 0, sizeof(*rw));
    return 0;
}
int rewrite_url(struct rewrite *rw, char **new_path)
{
    (void)rw;
    *new_path = NULL;
    return 0;
}
static char *mock_fields[] = {"Content-Type: text/plain", "X-Mock: 1"};
static const struct rule mock_rule = {
    .label = "mock",
    .target = RULES_TARGET_MOCK,
    .answer_status = 200,
    .answer_fields = mock_fields,
    .answer_field_count = 2,
    .answer_body = "mocked",
    .answer_body_len = 6,
};
static const struct rule close_rule = {
    .label = "close",
    .target = RULES_TARGET_BLOCK,
    .answer_status = 403,
    .is_close = true,
};
static const struct rule remote_rule = {
    .label = "remote",
    .target = RULES_TARGET_MAP_REMOTE,
    .remote = {.is_tls = false,
               .host = "remote.test",
               .port = 8080,
               .authority = "remote.test:8080",
               .prefix = ""},
};
const struct rule *rewrite_action(struct rewrite *rw)
{
    (void)rw;
    return action;
}
char *rules_remote_target(const struct rule *rule, const char *target)
{
    (void)rule;
    return strdup(target);
}
void capture_note(struct capture *c, const char *label, const char *note)
{
    (void)c, (void)label, (void)note;
}
const struct exchange_rewrite *rewrite_hooks(struct rewrite *rw)
{
    (void)rw;
    return NULL;
}
const char *rewrite_applied(const struct rewrite *rw)
{
    (void)rw;
    return "";
}
const char *rewrite_notes(const struct rewrite *rw)
{
    (void)rw;
    return "";
}
void rewrite_end(struct rewrite *rw)
{
    (void)rw;
}
int exchange_rewrite_body(const struct exchange_rewrite *rw, const char *content_encoding,
                          const unsigned char *raw, size_t raw_len,
                          struct exchange_body_rewrite *out)
{
    (void)rw;
    (void)content_encoding;
    (void)raw;
    (void)raw_len;
    memset(out, 0, sizeof(*out));
    return 0;
}
void exchange_body_rewrite_free(struct exchange_body_rewrite *br)
{
    (void)br;
}
bool exchange_rewrite_reserve(const struct exchange_rewrite *rw, size_t bytes)
{
    (void)rw;
    (void)bytes;
    return true;
}
void exchange_rewrite_release(size_t bytes)
{
    (void)bytes;
}
int exchange_rewrite_head(const struct exchange_rewrite *rw, const struct message *in,
                          struct message *out)
{
    (void)rw;
    (void)in;
    (void)out;
    return 0;
}

void origin_init(struct origin *o, int cancel_fd)
{
    memset(o, 0, sizeof(*o));
    stream_clear(&o->stream, cancel_fd);
}
int origin_open(struct origin *o, const struct origin_settings *settings,
                const struct origin_target *target, struct upstream_error *err, X509 **peer)
{
    int sv[2];

    (void)settings;
    (void)target;
    (void)peer;
    memset(err, 0, sizeof(*err));
    if (origin_peer < 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
        feed(sv[0], origin_bytes, origin_len);
        origin_peer = sv[0];
        CHECK(stream_init(&o->stream, sv[1], 65536, -1) == 0);
        return 0;
    }
    err->status = UPSTREAM_DNS_FAILED;
    snprintf(err->reason, sizeof(err->reason), "no network in a fuzzer");
    return -1;
}
void origin_close(struct origin *o)
{
    stream_close(&o->stream);
}
void origin_free(struct origin *o)
{
    origin_close(o);
}
int upstream_error_http_status(const struct upstream_error *err)
{
    (void)err;
    return 502;
}
int upstreamproxy_prepare(const struct upstreamproxy *p, const struct message *req,
                          const char *host, uint16_t port, struct message *out,
                          struct upstreamproxy_request *state)
{
    (void)p;
    (void)host;
    (void)port;
    (void)state;
    *out = *req;
    return 0;
}
void upstreamproxy_request_free(struct upstreamproxy_request *state)
{
    (void)state;
}

static void feed(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0)
            break;
        data += n;
        len -= (size_t)n;
    }
    shutdown(fd, SHUT_WR);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int c[2], o[2];
    struct stream client;
    struct origin origin;
    struct origin_settings settings = {.cancel_fd = -1, .timeout_ms = 20, .in_max_bytes = 65536};
    struct flow_tls tls;

    if (size < 1 || size > 60000) /* both halves fit the socket buffers */
        return 0;
    signal(SIGPIPE, SIG_IGN);
    log_init(-1, LOG_ERROR); /* the relay's log lines are not under test */
    size_t client_len = (size - 1) * data[0] / 256;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, o) == 0);
    feed(c[0], data + 1, client_len);
    bool is_bridged = (data[0] & 1) != 0;
    origin_bytes = data + 1 + client_len;
    origin_len = size - 1 - client_len;
    origin_peer = -1;
    if (!is_bridged)
        feed(o[0], origin_bytes, origin_len);
    CHECK(stream_init(&client, c[1], 65536, -1) == 0);
    origin_init(&origin, -1);
    CHECK(stream_init(&origin.stream, o[1], 65536, -1) == 0);
    memset(&tls, 0, sizeof(tls));
    struct h2relay_env env = {
        .client = &client,
        .origin = is_bridged ? NULL : &origin.stream,
        .bridge_settings = &settings,
        .bridge_target = {.host = "fuzz.test", .port = 443, .is_tls = true},
        .bridge_first = NULL,
        .forwarded_for = (data[0] & 2) != 0 ? "192.0.2.1" : NULL,
        .client_name = "fuzz",
        .listener = "proxy",
        .site = "fuzz.test",
        .port = 443,
        .capture_limit = 1024,
        .tls = &tls,
        .idle_ms = 20,
        .io_ms = 20,
    };
    const struct rule *actions[] = {NULL, &mock_rule, &close_rule, &remote_rule};
    action = actions[(data[0] >> 2) & 3];
    begun = finished = 0;
    (void)h2relay_run(&env);
    /* Every exchange begun was finished (recorded or abandoned). */
    CHECK(finished >= begun);
    stream_close(&client);
    origin_free(&origin);
    close(c[0]);
    close(o[0]);
    if (origin_peer >= 0)
        close(origin_peer);
    return 0;
}
