/*
 * intercept: the waiting room (hold, resume with edits, drop, timeout, a
 * client's hang-up, shutdown, the bound), the filter's sides and the edit
 * checks. Holders run on threads of their own, as connection threads do.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "intercept.h"
#include "testutil.h"

struct holding {
    struct intercept *ic;
    struct intercept_message msg;
    int client_fd;
    int cancel_fd;
    enum intercept_outcome outcome;
    struct intercept_edit edit;
    int64_t waited_ms;
    pthread_t thread;
};

static void *hold_main(void *arg)
{
    struct holding *h = arg;

    h->outcome =
        intercept_hold(h->ic, &h->msg, h->client_fd, h->cancel_fd, &h->edit, &h->waited_ms);
    return NULL;
}

static void start_holding(struct holding *h, struct intercept *ic, const char *url, bool has_body)
{
    memset(h, 0, sizeof(*h));
    h->ic = ic;
    h->msg.method = "GET";
    h->msg.url = (char *)url;
    h->msg.headers = "Host: example.com\r\n";
    h->msg.has_body = has_body;
    h->client_fd = -1;
    h->cancel_fd = -1;
}

static void run_holding(struct holding *h)
{
    CU_ASSERT_FATAL(pthread_create(&h->thread, NULL, hold_main, h) == 0);
}

/* Until n flows wait, at most 2 s. */
static bool wait_count(struct intercept *ic, size_t n)
{
    for (int i = 0; i < 400; i++) {
        if (intercept_count(ic) == n)
            return true;
        usleep(5000);
    }
    return false;
}

static uint64_t first_id(struct intercept *ic)
{
    struct intercept_waiting *list;
    size_t count;
    uint64_t id = 0;

    if (intercept_list(ic, &list, &count) == 0 && count > 0)
        id = list[0].id;
    intercept_waiting_free(list, count);
    return id;
}

static void test_resume_hands_the_edit_to_the_holder(void)
{
    struct intercept *ic = intercept_new(10000);
    struct holding h;
    struct intercept_waiting *list;
    size_t count;
    char err[INTERCEPT_ERROR_BYTES];

    CU_ASSERT_FATAL(ic != NULL);
    start_holding(&h, ic, "http://example.com/a", true);
    run_holding(&h);
    CU_ASSERT_FATAL(wait_count(ic, 1));
    CU_ASSERT_EQUAL(intercept_list(ic, &list, &count), 0);
    CU_ASSERT_EQUAL(count, 1);
    CU_ASSERT_STRING_EQUAL(list[0].msg.url, "http://example.com/a");
    CU_ASSERT_STRING_EQUAL(list[0].msg.headers, "Host: example.com\r\n");
    intercept_waiting_free(list, count);

    struct intercept_edit *e = calloc(1, sizeof(*e));
    CU_ASSERT_FATAL(e != NULL);
    e->method = strdup("POST");
    e->url = strdup("http://example.com/b?x=1");
    e->has_body = true;
    e->body = (unsigned char *)strdup("new");
    e->body_len = 3;
    CU_ASSERT_EQUAL(intercept_resume(ic, first_id(ic), e, err, sizeof(err)), 0);
    free(e);
    pthread_join(h.thread, NULL);
    CU_ASSERT_EQUAL(h.outcome, INTERCEPT_RESUMED);
    CU_ASSERT_STRING_EQUAL(h.edit.method, "POST");
    CU_ASSERT_STRING_EQUAL(h.edit.url, "http://example.com/b?x=1");
    CU_ASSERT_TRUE(h.edit.has_body && h.edit.body_len == 3 && memcmp(h.edit.body, "new", 3) == 0);
    CU_ASSERT_EQUAL(intercept_count(ic), 0);
    intercept_edit_free(&h.edit);
    intercept_free(ic);
}

static void test_edits_that_do_not_fit_are_refused(void)
{
    struct intercept *ic = intercept_new(10000);
    struct holding h;
    struct intercept_edit e = {0};
    char err[INTERCEPT_ERROR_BYTES];
    uint64_t id;

    CU_ASSERT_FATAL(ic != NULL);
    start_holding(&h, ic, "https://example.com/a", false);
    run_holding(&h);
    CU_ASSERT_FATAL(wait_count(ic, 1));
    id = first_id(ic);

    e.url = strdup("https://elsewhere.example/a");
    CU_ASSERT_EQUAL(intercept_resume(ic, id, &e, err, sizeof(err)), INTERCEPT_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "scheme, host and port"));
    e.url = strdup("http://example.com/a");
    CU_ASSERT_EQUAL(intercept_resume(ic, id, &e, err, sizeof(err)), INTERCEPT_INVALID);
    e.has_body = true;
    e.body = malloc(1);
    e.body_len = 0;
    CU_ASSERT_EQUAL(intercept_resume(ic, id, &e, err, sizeof(err)), INTERCEPT_CONFLICT);
    e.method = strdup("BAD METHOD");
    CU_ASSERT_EQUAL(intercept_resume(ic, id, &e, err, sizeof(err)), INTERCEPT_INVALID);
    e.has_fields = true;
    e.fields = calloc(1, sizeof(*e.fields));
    e.fields[0].name = strdup("X-A");
    e.fields[0].value = strdup("one\r\nX-Smuggled: 1");
    e.field_count = 1;
    CU_ASSERT_EQUAL(intercept_resume(ic, id, &e, err, sizeof(err)), INTERCEPT_INVALID);
    e.status = 500;
    CU_ASSERT_EQUAL(intercept_resume(ic, id, &e, err, sizeof(err)), INTERCEPT_INVALID);
    /* Still waiting after every refusal; an unknown id is not found. */
    CU_ASSERT_EQUAL(intercept_count(ic), 1);
    CU_ASSERT_EQUAL(intercept_resume(ic, id + 100, NULL, err, sizeof(err)), INTERCEPT_NOT_FOUND);
    CU_ASSERT_EQUAL(intercept_drop(ic, id), 0);
    pthread_join(h.thread, NULL);
    CU_ASSERT_EQUAL(h.outcome, INTERCEPT_DROPPED);
    CU_ASSERT_EQUAL(intercept_drop(ic, id), INTERCEPT_NOT_FOUND);
    intercept_free(ic);
}

static void test_timeout_resumes_unchanged(void)
{
    struct intercept *ic = intercept_new(150);
    struct holding h;

    CU_ASSERT_FATAL(ic != NULL);
    start_holding(&h, ic, "http://example.com/", false);
    int64_t started = clock_mono_ms();
    run_holding(&h);
    pthread_join(h.thread, NULL);
    CU_ASSERT_EQUAL(h.outcome, INTERCEPT_TIMED_OUT);
    CU_ASSERT_TRUE(clock_mono_ms() - started >= 140);
    CU_ASSERT_TRUE(intercept_edit_is_empty(&h.edit));
    CU_ASSERT_EQUAL(intercept_count(ic), 0);
    intercept_free(ic);
}

static void test_client_hang_up_ends_the_wait(void)
{
    struct intercept *ic = intercept_new(10000);
    struct holding h;
    int sv[2];

    CU_ASSERT_FATAL(ic != NULL);
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    start_holding(&h, ic, "http://example.com/", false);
    h.client_fd = sv[0];
    run_holding(&h);
    CU_ASSERT_FATAL(wait_count(ic, 1));
    /* A pipelined byte is not a hang-up. */
    CU_ASSERT_EQUAL(write(sv[1], "G", 1), 1);
    usleep(50000);
    CU_ASSERT_EQUAL(intercept_count(ic), 1);
    close(sv[1]);
    pthread_join(h.thread, NULL);
    CU_ASSERT_EQUAL(h.outcome, INTERCEPT_CLIENT_GONE);
    CU_ASSERT_TRUE(h.waited_ms < 5000);
    close(sv[0]);
    intercept_free(ic);
}

static void test_shutdown_and_resume_all_release_every_wait(void)
{
    struct intercept *ic = intercept_new(10000);
    struct holding a, b, c;
    int stop[2];

    CU_ASSERT_FATAL(ic != NULL && pipe(stop) == 0);
    start_holding(&a, ic, "http://example.com/a", false);
    start_holding(&b, ic, "http://example.com/b", false);
    start_holding(&c, ic, "http://example.com/c", false);
    a.cancel_fd = b.cancel_fd = stop[0];
    run_holding(&a);
    run_holding(&b);
    CU_ASSERT_FATAL(wait_count(ic, 2));
    CU_ASSERT_EQUAL(write(stop[1], "x", 1), 1);
    pthread_join(a.thread, NULL);
    pthread_join(b.thread, NULL);
    CU_ASSERT_EQUAL(a.outcome, INTERCEPT_RELEASED);
    CU_ASSERT_EQUAL(b.outcome, INTERCEPT_RELEASED);
    run_holding(&c);
    CU_ASSERT_FATAL(wait_count(ic, 1));
    CU_ASSERT_EQUAL(intercept_resume_all(ic), 1);
    pthread_join(c.thread, NULL);
    CU_ASSERT_EQUAL(c.outcome, INTERCEPT_RESUMED);
    CU_ASSERT_TRUE(intercept_edit_is_empty(&c.edit));
    close(stop[0]);
    close(stop[1]);
    intercept_free(ic);
}

static void test_room_is_bounded(void)
{
    struct intercept *ic = intercept_new(10000);
    struct holding *hs = calloc(INTERCEPT_MAX_WAITING + 1, sizeof(*hs));

    CU_ASSERT_FATAL(ic != NULL && hs != NULL);
    for (int i = 0; i < INTERCEPT_MAX_WAITING; i++) {
        start_holding(&hs[i], ic, "http://example.com/", false);
        run_holding(&hs[i]);
    }
    CU_ASSERT_FATAL(wait_count(ic, INTERCEPT_MAX_WAITING));
    struct holding *extra = &hs[INTERCEPT_MAX_WAITING];
    start_holding(extra, ic, "http://example.com/", false);
    run_holding(extra);
    pthread_join(extra->thread, NULL);
    CU_ASSERT_EQUAL(extra->outcome, INTERCEPT_FULL);
    CU_ASSERT_EQUAL(intercept_resume_all(ic), INTERCEPT_MAX_WAITING);
    for (int i = 0; i < INTERCEPT_MAX_WAITING; i++) {
        pthread_join(hs[i].thread, NULL);
        CU_ASSERT_EQUAL(hs[i].outcome, INTERCEPT_RESUMED);
    }
    free(hs);
    intercept_free(ic);
}

static void test_filter_sides_and_errors(void)
{
    struct intercept *ic = intercept_new(1000);
    struct intercept_filter *f;
    char err[INTERCEPT_ERROR_BYTES];
    char *text;

    CU_ASSERT_FATAL(ic != NULL);
    CU_ASSERT_PTR_NULL(intercept_acquire(ic));
    CU_ASSERT_EQUAL(intercept_set_filter(ic, "~d example.com", 14, err, sizeof(err)), 0);
    f = intercept_acquire(ic);
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FALSE(intercept_filter_is_response(f));
    CU_ASSERT_FALSE(intercept_filter_reads_request_body(f));
    /* A change leaves the acquired filter whole. */
    CU_ASSERT_EQUAL(intercept_set_filter(ic, "~s & ~bq secret", 15, err, sizeof(err)), 0);
    CU_ASSERT_FALSE(intercept_filter_is_response(f));
    intercept_filter_release(f);
    f = intercept_acquire(ic);
    CU_ASSERT_TRUE(intercept_filter_is_response(f));
    CU_ASSERT_TRUE(intercept_filter_reads_request_body(f));
    intercept_filter_release(f);
    CU_ASSERT_EQUAL(intercept_set_filter(ic, "~c (", 4, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "column"));
    text = intercept_filter_text(ic);
    CU_ASSERT_STRING_EQUAL(text, "~s & ~bq secret");
    free(text);
    CU_ASSERT_EQUAL(intercept_set_filter(ic, "  ", 2, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NULL(intercept_acquire(ic));
    intercept_free(ic);
}

/* A parked ticket: no thread waits; the wake fd says when to look. */
static void test_parked_ticket_resumed_drops_and_times_out(void)
{
    struct intercept *ic = intercept_new(150);
    struct intercept_message msg = {
        .method = "GET", .url = "https://example.com/a", .headers = "user-agent: x\r\n"};
    enum intercept_outcome outcome = INTERCEPT_FAILED;
    struct intercept_edit edit;
    int64_t waited = -1;
    int left = 0;
    uint64_t n = 0;
    char err[INTERCEPT_ERROR_BYTES];
    int fd = eventfd(0, EFD_NONBLOCK);

    CU_ASSERT_FATAL(ic != NULL && fd >= 0);
    struct intercept_ticket *t = intercept_park(ic, &msg, fd, &outcome);
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_EQUAL(intercept_count(ic), 1);
    CU_ASSERT_TRUE(intercept_ticket_waits(ic, t, &outcome, &edit, &waited, &left));
    CU_ASSERT_TRUE(left > 0 && left <= 150);
    CU_ASSERT_EQUAL(read(fd, &n, sizeof(n)), -1); /* nothing to say yet */

    struct intercept_edit *e = calloc(1, sizeof(*e));
    CU_ASSERT_FATAL(e != NULL);
    e->method = strdup("PUT");
    CU_ASSERT_EQUAL(intercept_resume(ic, first_id(ic), e, err, sizeof(err)), 0);
    free(e);
    CU_ASSERT_EQUAL(read(fd, &n, sizeof(n)), (ssize_t)sizeof(n));
    CU_ASSERT_FALSE(intercept_ticket_waits(ic, t, &outcome, &edit, &waited, &left));
    CU_ASSERT_EQUAL(outcome, INTERCEPT_RESUMED);
    CU_ASSERT_STRING_EQUAL(edit.method, "PUT");
    CU_ASSERT_EQUAL(intercept_count(ic), 0);
    intercept_edit_free(&edit);

    t = intercept_park(ic, &msg, fd, &outcome);
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_EQUAL(intercept_drop(ic, first_id(ic)), 0);
    CU_ASSERT_FALSE(intercept_ticket_waits(ic, t, &outcome, &edit, &waited, &left));
    CU_ASSERT_EQUAL(outcome, INTERCEPT_DROPPED);

    t = intercept_park(ic, &msg, fd, &outcome);
    CU_ASSERT_FATAL(t != NULL);
    usleep(200000);
    CU_ASSERT_FALSE(intercept_ticket_waits(ic, t, &outcome, &edit, &waited, &left));
    CU_ASSERT_EQUAL(outcome, INTERCEPT_TIMED_OUT);
    CU_ASSERT_TRUE(waited >= 150);

    t = intercept_park(ic, &msg, fd, &outcome);
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_TRUE(intercept_ticket_cancel(ic, t) >= 0);
    CU_ASSERT_EQUAL(intercept_count(ic), 0);
    CU_ASSERT_EQUAL(intercept_resume(ic, 999, NULL, err, sizeof(err)), INTERCEPT_NOT_FOUND);
    close(fd);
    intercept_free(ic);
}

/* A parked message was copied: the room shows it after the caller's is gone,
 * and a body edit is refused when it holds no body. */
static void test_parked_ticket_owns_its_message(void)
{
    struct intercept *ic = intercept_new(10000);
    char url[] = "https://example.com/a";
    struct intercept_message msg = {.method = "GET", .url = url, .headers = ""};
    enum intercept_outcome outcome;
    struct intercept_waiting *list;
    size_t count;
    char err[INTERCEPT_ERROR_BYTES];
    int fd = eventfd(0, EFD_NONBLOCK);

    CU_ASSERT_FATAL(ic != NULL && fd >= 0);
    struct intercept_ticket *t = intercept_park(ic, &msg, fd, &outcome);
    CU_ASSERT_FATAL(t != NULL);
    url[8] = 'X';
    CU_ASSERT_EQUAL(intercept_list(ic, &list, &count), 0);
    CU_ASSERT_EQUAL(count, 1);
    CU_ASSERT_STRING_EQUAL(list[0].msg.url, "https://example.com/a");
    intercept_waiting_free(list, count);
    struct intercept_edit *e = calloc(1, sizeof(*e));
    CU_ASSERT_FATAL(e != NULL);
    e->has_body = true;
    e->body = (unsigned char *)strdup("x");
    e->body_len = 1;
    CU_ASSERT_EQUAL(intercept_resume(ic, first_id(ic), e, err, sizeof(err)), INTERCEPT_CONFLICT);
    free(e);
    intercept_ticket_cancel(ic, t);
    close(fd);
    intercept_free(ic);
}

/* An edit on a head: the path of the URL, the method, fields lowercased
 * for HTTP/2; the status of a response. */
static void test_edited_head(void)
{
    struct message_field in_fields[] = {{"user-agent", 10, "curl", 4}};
    struct message in = {.method = "GET",
                         .method_len = 3,
                         .target = "/a",
                         .target_len = 2,
                         .version = 20,
                         .fields = {in_fields, 1}};
    struct intercept_field fields[] = {{"User-Agent", "edited"}, {"X-New", "1"}};
    struct intercept_edit e = {.method = "POST",
                               .url = "https://example.com/b?q=1",
                               .has_fields = true,
                               .fields = fields,
                               .field_count = 2};
    struct message out;

    CU_ASSERT_EQUAL_FATAL(intercept_edited_head(&in, &e, true, &out), 0);
    CU_ASSERT_EQUAL(out.method_len, 4);
    CU_ASSERT_NSTRING_EQUAL(out.method, "POST", 4);
    CU_ASSERT_EQUAL(out.target_len, 6);
    CU_ASSERT_NSTRING_EQUAL(out.target, "/b?q=1", 6);
    CU_ASSERT_EQUAL_FATAL(out.fields.count, 2);
    CU_ASSERT_NSTRING_EQUAL(out.fields.items[0].name, "user-agent", 10);
    CU_ASSERT_NSTRING_EQUAL(out.fields.items[0].value, "edited", 6);
    CU_ASSERT_NSTRING_EQUAL(out.fields.items[1].name, "x-new", 5);
    message_free(&out);

    struct message resp = {.status = 200, .version = 11, .fields = {in_fields, 1}};
    struct intercept_edit status = {.status = 203};
    CU_ASSERT_EQUAL_FATAL(intercept_edited_head(&resp, &status, false, &out), 0);
    CU_ASSERT_EQUAL(out.status, 203);
    CU_ASSERT_EQUAL(out.fields.count, 1);
    CU_ASSERT_NSTRING_EQUAL(out.fields.items[0].name, "user-agent", 10);
    message_free(&out);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("intercept", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "resume hands the edit to the holder",
                     test_resume_hands_the_edit_to_the_holder) ||
        !CU_add_test(s, "edits that do not fit are refused",
                     test_edits_that_do_not_fit_are_refused) ||
        !CU_add_test(s, "timeout resumes unchanged", test_timeout_resumes_unchanged) ||
        !CU_add_test(s, "client hang-up ends the wait", test_client_hang_up_ends_the_wait) ||
        !CU_add_test(s, "shutdown and resume-all release every wait",
                     test_shutdown_and_resume_all_release_every_wait) ||
        !CU_add_test(s, "room is bounded", test_room_is_bounded) ||
        !CU_add_test(s, "filter sides and errors", test_filter_sides_and_errors) ||
        !CU_add_test(s, "parked ticket resumed, dropped, timed out, cancelled",
                     test_parked_ticket_resumed_drops_and_times_out) ||
        !CU_add_test(s, "parked ticket owns its message", test_parked_ticket_owns_its_message) ||
        !CU_add_test(s, "edited head", test_edited_head)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
