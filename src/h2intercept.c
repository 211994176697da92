/*
 * h2intercept: see h2intercept.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "h2intercept.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "flow.h"

void h2intercept_init(struct h2intercept *hi, struct intercept *ic, int stop_fd)
{
    hi->ic = ic;
    hi->wake_fd = -1;
    hi->stop_fd = stop_fd;
    hi->is_stopping = false;
    hi->parked = 0;
}

void h2intercept_close(struct h2intercept *hi)
{
    if (hi->wake_fd >= 0)
        close(hi->wake_fd);
    hi->wake_fd = -1;
}

int h2intercept_fd(const struct h2intercept *hi)
{
    return hi->wake_fd;
}

void h2intercept_drain(struct h2intercept *hi)
{
    uint64_t n;

    if (hi->wake_fd >= 0 && read(hi->wake_fd, &n, sizeof(n)) < 0)
        return; /* EAGAIN: nothing was written since the last drain */
}

/* Parks msg for s. Returns 1 when parked, 0 when not (noted). */
static int park(struct h2intercept *hi, struct h2intercept_stream *s,
                const struct intercept_message *msg, struct capture *cap)
{
    enum intercept_outcome outcome = INTERCEPT_FAILED;
    char note[160];

    /* The eventfd is made when a stream of the connection first parks:
     * most connections never need it. */
    if (hi->wake_fd < 0)
        hi->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (hi->wake_fd >= 0)
        s->ticket = intercept_park(hi->ic, msg, hi->wake_fd, &outcome);
    if (s->ticket == NULL) {
        intercept_outcome_note(outcome, false, 0, note, sizeof(note));
        capture_note(cap, NULL, note);
        return 0;
    }
    s->is_response = msg->is_response;
    hi->parked++;
    return 1;
}

int h2intercept_request(struct h2intercept *hi, struct h2intercept_stream *s,
                        const struct message *req, const char *host, uint16_t port, const char *url,
                        struct capture *cap)
{
    struct intercept_filter *f;
    int rc = 0;

    if (hi->ic == NULL || (f = intercept_acquire(hi->ic)) == NULL)
        return 0;
    s->flow = intercept_request_flow(req, "https", host, port, NULL, 0);
    if (s->flow == NULL) {
        intercept_filter_release(f);
        return 0;
    }
    if (intercept_filter_match(f, s->flow)) {
        struct intercept_message msg = {
            .method = s->flow->method,
            .url = (char *)url,
            .headers = s->flow->request_headers,
        };
        rc = park(hi, s, &msg, cap);
    }
    if (intercept_filter_is_response(f))
        s->filter = f; /* matched again at the response head */
    else
        intercept_filter_release(f);
    return rc;
}

int h2intercept_response(struct h2intercept *hi, struct h2intercept_stream *s,
                         const struct message *resp, const char *url, struct capture *cap)
{
    struct flow *flow = s->flow;
    int rc = 0;

    if (s->filter == NULL || flow == NULL)
        return 0;
    flow->status = resp->status;
    flow->response_version = resp->version;
    free(flow->response_headers);
    flow->response_headers = capture_headers_text(&resp->fields, NULL);
    if (flow->response_headers != NULL && intercept_filter_match(s->filter, flow)) {
        struct intercept_message msg = {
            .is_response = true,
            .method = flow->method,
            .url = (char *)url,
            .status = resp->status,
            .headers = flow->response_headers,
        };
        rc = park(hi, s, &msg, cap);
    }
    intercept_filter_release(s->filter);
    s->filter = NULL;
    return rc;
}

enum h2intercept_verdict h2intercept_check(struct h2intercept *hi, struct h2intercept_stream *s,
                                           const struct message *held, struct message *edited,
                                           struct capture *cap, int *left_ms)
{
    enum intercept_outcome outcome;
    struct intercept_edit edit;
    enum h2intercept_verdict verdict = H2INTERCEPT_GO;
    int64_t waited = 0;
    int left = 0;
    char note[160];

    if (s->ticket == NULL)
        return H2INTERCEPT_GO;
    if (hi->is_stopping) {
        waited = intercept_ticket_cancel(hi->ic, s->ticket);
        s->ticket = NULL;
        hi->parked--;
        intercept_outcome_note(INTERCEPT_RELEASED, false, waited, note, sizeof(note));
        capture_note(cap, NULL, note);
        return H2INTERCEPT_GO;
    }
    if (intercept_ticket_waits(hi->ic, s->ticket, &outcome, &edit, &waited, &left)) {
        if (*left_ms < 0 || left < *left_ms)
            *left_ms = left;
        return H2INTERCEPT_WAITS;
    }
    s->ticket = NULL;
    hi->parked--;
    bool is_edited = outcome == INTERCEPT_RESUMED && !intercept_edit_is_empty(&edit);
    intercept_outcome_note(outcome, is_edited, waited, note, sizeof(note));
    capture_note(cap, is_edited ? "intercept" : NULL, note);
    if (outcome == INTERCEPT_DROPPED) {
        verdict = H2INTERCEPT_DROP;
    } else if (is_edited && intercept_edited_head(held, &edit, true, edited) == 0) {
        verdict = H2INTERCEPT_EDITED;
        if (!s->is_response) {
            if (edit.method != NULL) {
                snprintf(note, sizeof(note), "intercept: the method was %.*s",
                         (int)held->method_len, held->method);
                capture_note(cap, NULL, note);
            }
            capture_request_edited(cap, edited, NULL, 0);
        } else if (edit.status != 0 && edit.status != held->status) {
            snprintf(note, sizeof(note), "intercept: the status was %d", held->status);
            capture_note(cap, NULL, note);
        }
    }
    intercept_edit_free(&edit);
    return verdict;
}

void h2intercept_end(struct h2intercept *hi, struct h2intercept_stream *s, struct capture *cap,
                     const char *why)
{
    if (s->ticket != NULL) {
        int64_t waited = intercept_ticket_cancel(hi->ic, s->ticket);
        char note[200];
        snprintf(note, sizeof(note), "intercept: %s after %.1f s of waiting", why,
                 (double)waited / 1000.0);
        capture_note(cap, NULL, note);
        s->ticket = NULL;
        hi->parked--;
    }
    if (s->filter != NULL)
        intercept_filter_release(s->filter);
    flow_free(s->flow);
    s->filter = NULL;
    s->flow = NULL;
}
