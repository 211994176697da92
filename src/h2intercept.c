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

#include "codec.h"
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

/* The request's body, once the response parks. */
static void forget_body(struct h2intercept_stream *s)
{
    free(s->body);
    free(s->edited_body);
    s->body = s->edited_body = NULL;
    s->body_len = s->edited_body_len = 0;
    s->has_body = s->has_edited_body = false;
}

/* The stream's body is to be collected before its head parks: f stays in
 * s->filter until h2intercept_body(). */
static int collect(struct h2intercept_stream *s, struct intercept_filter *f, bool is_response,
                   bool match_with_body)
{
    if (s->filter != NULL && s->filter != f)
        intercept_filter_release(s->filter);
    s->filter = f;
    s->is_response = is_response;
    s->is_collecting = true;
    s->match_with_body = match_with_body;
    return H2INTERCEPT_COLLECT;
}

int h2intercept_request(struct h2intercept *hi, struct h2intercept_stream *s,
                        const struct message *req, const char *host, uint16_t port, const char *url,
                        struct capture *cap, bool has_body)
{
    struct intercept_filter *f;
    int rc = H2INTERCEPT_ON;

    if (hi->ic == NULL || (f = intercept_acquire(hi->ic)) == NULL)
        return H2INTERCEPT_ON;
    s->flow = intercept_request_flow(req, "https", host, port, NULL, 0);
    if (s->flow == NULL) {
        intercept_filter_release(f);
        return H2INTERCEPT_ON;
    }
    bool reads_body = intercept_filter_reads_request_body(f);
    if (has_body && (reads_body || intercept_filter_match(f, s->flow)))
        return collect(s, f, false, reads_body);
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
                         const struct message *resp, const char *url, struct capture *cap,
                         bool has_body)
{
    struct flow *flow = s->flow;
    int rc = H2INTERCEPT_ON;

    if (s->filter == NULL || flow == NULL)
        return H2INTERCEPT_ON;
    flow->status = resp->status;
    flow->response_version = resp->version;
    free(flow->response_headers);
    flow->response_headers = capture_headers_text(&resp->fields, NULL);
    if (flow->response_headers != NULL) {
        bool reads_body = intercept_filter_reads_response_body(s->filter);
        if (has_body && (reads_body || intercept_filter_match(s->filter, flow)))
            return collect(s, s->filter, true, reads_body);
        if (intercept_filter_match(s->filter, flow)) {
            struct intercept_message msg = {
                .is_response = true,
                .method = flow->method,
                .url = (char *)url,
                .status = resp->status,
                .headers = flow->response_headers,
            };
            forget_body(s);
            rc = park(hi, s, &msg, cap);
        }
    }
    intercept_filter_release(s->filter);
    s->filter = NULL;
    return rc;
}

/* What the room shows of a collected body: a request's as it came (as on
 * HTTP/1.1), a response's decoded by its Content-Encoding within the
 * limit. Sets s->body; false when it cannot be shown. */
static bool take_shown_body(struct h2intercept_stream *s, const struct message *head,
                            const unsigned char *body, size_t len)
{
    const struct message_field *ce = message_find(head, "content-encoding");
    char encoding[128] = "", err[256];

    if (s->is_response && ce != NULL)
        snprintf(encoding, sizeof(encoding), "%.*s", (int)ce->value_len, ce->value);
    if (codec_decode_content(encoding, body, len, INTERCEPT_MAX_BODY_BYTES, &s->body, &s->body_len,
                             err, sizeof(err)) < 0) {
        s->body = NULL;
        s->body_len = 0;
        return false;
    }
    s->has_body = true;
    return true;
}

int h2intercept_body(struct h2intercept *hi, struct h2intercept_stream *s,
                     const struct message *head, const unsigned char *body, size_t len,
                     bool is_whole, const char *url, struct capture *cap)
{
    struct flow *flow = s->flow;
    struct flow_body *fb;
    int rc = H2INTERCEPT_ON;
    bool is_match = true;

    s->is_collecting = false;
    if (s->filter == NULL || flow == NULL)
        return H2INTERCEPT_ON;
    if (s->match_with_body) {
        /* As received: the filter decodes by the Content-Encoding itself.
         * A body past the limit is matched as none. */
        fb = s->is_response ? &flow->response_body : &flow->request_body;
        free(fb->data);
        memset(fb, 0, sizeof(*fb));
        fb->limit = is_whole ? len : 0;
        is_match = !(is_whole && len > 0 && flow_body_append(fb, body, len) < 0) &&
                   intercept_filter_match(s->filter, flow);
    }
    if (is_match) {
        forget_body(s);
        bool is_shown = is_whole && take_shown_body(s, head, body, len);
        struct intercept_message msg = {
            .is_response = s->is_response,
            .method = flow->method,
            .url = (char *)url,
            .status = s->is_response ? head->status : 0,
            .headers = s->is_response ? flow->response_headers : flow->request_headers,
            .has_body = is_shown,
            .body = s->body,
            .body_len = s->body_len,
        };
        rc = park(hi, s, &msg, cap);
    }
    if (!s->is_response && intercept_filter_is_response(s->filter))
        return rc; /* matched again at the response head */
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
    /* The page sends the body back as it showed it: the same bytes are no
     * edit (and the body goes on as it came). */
    if (edit.has_body && s->has_body && edit.body_len == s->body_len &&
        (s->body_len == 0 || memcmp(edit.body, s->body, s->body_len) == 0)) {
        free(edit.body);
        edit.body = NULL;
        edit.body_len = 0;
        edit.has_body = false;
    }
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
            capture_request_edited(cap, edited, edit.has_body ? s->body : NULL,
                                   edit.has_body ? s->body_len : 0);
        } else if (edit.status != 0 && edit.status != held->status) {
            snprintf(note, sizeof(note), "intercept: the status was %d", held->status);
            capture_note(cap, NULL, note);
        }
        if (edit.has_body) {
            s->has_edited_body = true;
            s->edited_body = edit.body;
            s->edited_body_len = edit.body_len;
            edit.body = NULL;
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
    free(s->body);
    free(s->edited_body);
    memset(s, 0, sizeof(*s));
}
