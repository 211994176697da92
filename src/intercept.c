/*
 * intercept: see intercept.h. The room is a list of holders, each on its
 * connection thread's stack, linked in under the mutex for as long as it
 * waits; the dashboard's calls copy what they show and hand edits over
 * under the same mutex, then wake the holder through its eventfd.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "intercept.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "filter.h"
#include "http1.h"

struct intercept_filter {
    int refs; /* under the room's mutex */
    struct intercept *ic;
    struct filter *filter;
    char *text;
    unsigned needs;
};

enum holder_state { HOLDER_WAITING, HOLDER_RESUMED, HOLDER_DROPPED };

struct holder {
    struct holder *prev, *next;
    uint64_t id;
    int64_t since_us, deadline_us;
    const struct intercept_message *msg;
    int wake_fd;
    enum holder_state state;
    struct intercept_edit edit; /* set with HOLDER_RESUMED */
};

struct intercept {
    pthread_mutex_t lock;
    struct intercept_filter *current; /* NULL: off */
    struct holder *first, *last;
    size_t count;
    uint64_t next_id;
    int timeout_ms;
};

struct intercept *intercept_new(int timeout_ms)
{
    struct intercept *ic = calloc(1, sizeof(*ic));

    if (ic == NULL)
        return NULL;
    if (pthread_mutex_init(&ic->lock, NULL) != 0) {
        free(ic);
        return NULL;
    }
    ic->timeout_ms = timeout_ms;
    ic->next_id = 1;
    return ic;
}

static void filter_unref_locked(struct intercept_filter *f)
{
    if (f == NULL || --f->refs > 0)
        return;
    filter_free(f->filter);
    free(f->text);
    free(f);
}

void intercept_free(struct intercept *ic)
{
    if (ic == NULL)
        return;
    pthread_mutex_lock(&ic->lock);
    filter_unref_locked(ic->current);
    pthread_mutex_unlock(&ic->lock);
    pthread_mutex_destroy(&ic->lock);
    free(ic);
}

int intercept_set_filter(struct intercept *ic, const char *text, size_t len, char *err,
                         size_t err_len)
{
    struct intercept_filter *f = NULL;
    size_t blank = 0;

    while (blank < len && (text[blank] == ' ' || text[blank] == '\t' || text[blank] == '\n' ||
                           text[blank] == '\r'))
        blank++;
    if (blank < len) {
        f = calloc(1, sizeof(*f));
        if (f == NULL || (f->text = strndup(text, len)) == NULL) {
            snprintf(err, err_len, "out of memory");
            free(f);
            return -1;
        }
        if (filter_parse(text, len, &f->filter, err, err_len) < 0) {
            free(f->text);
            free(f);
            return -1;
        }
        f->refs = 1;
        f->ic = ic;
        f->needs = filter_needs(f->filter);
    }
    pthread_mutex_lock(&ic->lock);
    filter_unref_locked(ic->current);
    ic->current = f;
    pthread_mutex_unlock(&ic->lock);
    return 0;
}

char *intercept_filter_text(struct intercept *ic)
{
    char *text;

    pthread_mutex_lock(&ic->lock);
    text = strdup(ic->current != NULL ? ic->current->text : "");
    pthread_mutex_unlock(&ic->lock);
    return text;
}

struct intercept_filter *intercept_acquire(struct intercept *ic)
{
    struct intercept_filter *f;

    if (ic == NULL)
        return NULL;
    pthread_mutex_lock(&ic->lock);
    f = ic->current;
    if (f != NULL)
        f->refs++;
    pthread_mutex_unlock(&ic->lock);
    return f;
}

void intercept_filter_release(struct intercept_filter *f)
{
    struct intercept *ic;

    if (f == NULL)
        return;
    ic = f->ic;
    pthread_mutex_lock(&ic->lock);
    filter_unref_locked(f);
    pthread_mutex_unlock(&ic->lock);
}

bool intercept_filter_is_response(const struct intercept_filter *f)
{
    return (f->needs & (FILTER_NEEDS_RESPONSE | FILTER_NEEDS_RESPONSE_HEADERS |
                        FILTER_NEEDS_RESPONSE_BODY)) != 0;
}

bool intercept_filter_reads_request_body(const struct intercept_filter *f)
{
    return (f->needs & FILTER_NEEDS_REQUEST_BODY) != 0;
}

bool intercept_filter_reads_response_body(const struct intercept_filter *f)
{
    return (f->needs & FILTER_NEEDS_RESPONSE_BODY) != 0;
}

int intercept_filter_match(const struct intercept_filter *f, const struct flow *flow)
{
    char why[128];

    return filter_match(f->filter, flow, why, sizeof(why)) == 1;
}

struct flow *intercept_request_flow(const struct message *req, const char *scheme, const char *host,
                                    uint16_t port, const void *body, size_t body_len)
{
    struct flow *f = flow_new(body_len);

    if (f == NULL)
        return NULL;
    snprintf(f->scheme, sizeof(f->scheme), "%s", scheme);
    snprintf(f->method, sizeof(f->method), "%.*s", (int)req->method_len, req->method);
    snprintf(f->host, sizeof(f->host), "%s", host);
    f->port = port;
    f->is_tls = strcmp(scheme, "https") == 0;
    f->request_version = req->version;
    f->target = strndup(req->target != NULL ? req->target : "/", req->target_len);
    f->request_headers = capture_headers_text(&req->fields, NULL);
    if (f->target == NULL || f->request_headers == NULL ||
        (body_len > 0 && flow_body_append(&f->request_body, body, body_len) < 0)) {
        flow_free(f);
        return NULL;
    }
    return f;
}

/* ---- edits ---- */

void intercept_edit_free(struct intercept_edit *e)
{
    if (e == NULL)
        return;
    free(e->method);
    free(e->url);
    for (size_t i = 0; i < e->field_count; i++) {
        free(e->fields[i].name);
        free(e->fields[i].value);
    }
    free(e->fields);
    free(e->body);
    memset(e, 0, sizeof(*e));
}

bool intercept_edit_is_empty(const struct intercept_edit *e)
{
    return e->method == NULL && e->url == NULL && e->status == 0 && !e->has_fields && !e->has_body;
}

struct message_field *intercept_edit_message_fields(const struct intercept_edit *e)
{
    struct message_field *items;

    if (!e->has_fields || e->field_count == 0)
        return NULL;
    items = calloc(e->field_count, sizeof(*items));
    if (items == NULL)
        return NULL;
    for (size_t i = 0; i < e->field_count; i++) {
        items[i].name = e->fields[i].name;
        items[i].name_len = strlen(e->fields[i].name);
        items[i].value = e->fields[i].value;
        items[i].value_len = strlen(e->fields[i].value);
    }
    return items;
}

/* Whether a request's new URL keeps the scheme, host and port of the held
 * one: the connection is already open to them (a tunnel's TLS even names
 * the host), so only the path and query may change here; a replay can go
 * anywhere. */
static bool is_same_origin_url(const char *held, const char *edited, char *err, size_t err_len)
{
    struct http1_absolute_target a, b;

    if (http1_parse_absolute_target(edited, strlen(edited), &b) < 0) {
        snprintf(err, err_len, "the URL is not an absolute http:// or https:// URL");
        return false;
    }
    if (http1_parse_absolute_target(held, strlen(held), &a) < 0)
        return true; /* nothing to compare with: the session checks the path */
    if (a.is_https != b.is_https || a.port != b.port || strcasecmp(a.host, b.host) != 0) {
        snprintf(err, err_len,
                 "an intercepted request keeps its scheme, host and port (edit the path and "
                 "query; send it elsewhere with replay)");
        return false;
    }
    return true;
}

/* Whether edit fits what holder holds: 0, or INTERCEPT_INVALID /
 * INTERCEPT_CONFLICT with err. */
static int edit_fits(const struct holder *h, const struct intercept_edit *e, char *err,
                     size_t err_len)
{
    const struct intercept_message *m = h->msg;

    if (m->is_response && (e->method != NULL || e->url != NULL)) {
        snprintf(err, err_len, "a response has no method or URL to edit");
        return INTERCEPT_INVALID;
    }
    if (!m->is_response && e->status != 0) {
        snprintf(err, err_len, "a request has no status to edit");
        return INTERCEPT_INVALID;
    }
    if (e->status != 0 &&
        (e->status < 200 || e->status > 999 || e->status == 204 || e->status == 304)) {
        snprintf(err, err_len, "the status must be 200-999 (not 204 or 304)");
        return INTERCEPT_INVALID;
    }
    if (e->has_body && !m->has_body) {
        snprintf(err, err_len,
                 m->is_response ? "this response's body was not held (none, larger than the "
                                  "intercept limit, or not decodable): only its head can be "
                                  "edited"
                                : "this request's body was not held (none, chunked on "
                                  "HTTP/1.1, or larger than the intercept limit): only its "
                                  "head can be edited");
        return INTERCEPT_CONFLICT;
    }
    if (e->method != NULL && (e->method[0] == '\0' ||
                              strspn(e->method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                "abcdefghijklmnopqrstuvwxyz0123456789"
                                                "!#$%&'*+-.^_`|~") != strlen(e->method) ||
                              strcmp(e->method, "CONNECT") == 0)) {
        snprintf(err, err_len, "the method must be a token (and not CONNECT)");
        return INTERCEPT_INVALID;
    }
    if (e->url != NULL && !is_same_origin_url(m->url, e->url, err, err_len))
        return INTERCEPT_INVALID;
    for (size_t i = 0; i < e->field_count; i++) {
        const char *name = e->fields[i].name, *value = e->fields[i].value;
        if (name[0] == '\0' ||
            strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                         "!#$%&'*+-.^_`|~") != strlen(name) ||
            strpbrk(value, "\r\n") != NULL) {
            snprintf(err, err_len, "header %zu: a name must be a token, a value one line", i + 1);
            return INTERCEPT_INVALID;
        }
    }
    return 0;
}

/* ---- holding ---- */

static void link_holder(struct intercept *ic, struct holder *h)
{
    h->prev = ic->last;
    h->next = NULL;
    if (ic->last != NULL)
        ic->last->next = h;
    else
        ic->first = h;
    ic->last = h;
    ic->count++;
}

static void unlink_holder(struct intercept *ic, struct holder *h)
{
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        ic->first = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    else
        ic->last = h->prev;
    ic->count--;
}

static struct holder *find_locked(struct intercept *ic, uint64_t id)
{
    for (struct holder *h = ic->first; h != NULL; h = h->next)
        if (h->id == id && h->state == HOLDER_WAITING)
            return h;
    return NULL;
}

static void wake(struct holder *h)
{
    uint64_t one = 1;
    ssize_t n = write(h->wake_fd, &one, sizeof(one));
    (void)n; /* an eventfd counter only fails to add at 2^64 - 1 */
}

enum intercept_outcome intercept_hold(struct intercept *ic, const struct intercept_message *msg,
                                      int client_fd, int cancel_fd, struct intercept_edit *edit,
                                      int64_t *waited_ms)
{
    struct holder h = {.msg = msg, .state = HOLDER_WAITING};
    enum intercept_outcome outcome = INTERCEPT_FAILED;
    int64_t started = clock_mono_ms();

    memset(edit, 0, sizeof(*edit));
    *waited_ms = 0;
    h.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h.wake_fd < 0)
        return INTERCEPT_FAILED;
    h.since_us = clock_wall_us();
    h.deadline_us = h.since_us + (int64_t)ic->timeout_ms * 1000;
    pthread_mutex_lock(&ic->lock);
    if (ic->count >= INTERCEPT_MAX_WAITING) {
        pthread_mutex_unlock(&ic->lock);
        outcome = INTERCEPT_FULL;
        goto out;
    }
    h.id = ic->next_id++;
    link_holder(ic, &h);
    pthread_mutex_unlock(&ic->lock);

    for (;;) {
        int left = (int)(started + ic->timeout_ms - clock_mono_ms());
        /* POLLIN is not asked of the client: a pipelined next request is
         * not a hang-up, and would wake the wait at once, again and again. */
        struct pollfd p[3] = {{.fd = h.wake_fd, .events = POLLIN},
                              {.fd = client_fd, .events = POLLRDHUP},
                              {.fd = cancel_fd, .events = POLLIN}};
        int r;

        if (left <= 0) {
            outcome = INTERCEPT_TIMED_OUT;
            break;
        }
        r = poll(p, 3, left);
        if (r < 0 && errno != EINTR) {
            outcome = INTERCEPT_TIMED_OUT;
            break;
        }
        if (r <= 0)
            continue;
        if (p[0].revents != 0)
            break; /* resumed or dropped: the state says which */
        if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
            outcome = INTERCEPT_CLIENT_GONE;
            break;
        }
        if (p[2].revents != 0) {
            outcome = INTERCEPT_RELEASED;
            break;
        }
    }
    pthread_mutex_lock(&ic->lock);
    /* A resume or a drop that came first wins over what woke us. */
    if (h.state == HOLDER_RESUMED) {
        outcome = INTERCEPT_RESUMED;
        *edit = h.edit;
        memset(&h.edit, 0, sizeof(h.edit));
    } else if (h.state == HOLDER_DROPPED) {
        outcome = INTERCEPT_DROPPED;
    }
    unlink_holder(ic, &h);
    pthread_mutex_unlock(&ic->lock);
    *waited_ms = clock_mono_ms() - started;
out:
    close(h.wake_fd);
    return outcome;
}

/* ---- parking: a hold without a waiting thread ---- */

struct intercept_ticket {
    struct holder h; /* first: the room links it like any other */
    struct intercept_message msg;
    int64_t started_ms;
};

static int copy_message(struct intercept_message *dst, const struct intercept_message *src);
static void free_message(struct intercept_message *m);

struct intercept_ticket *intercept_park(struct intercept *ic, const struct intercept_message *msg,
                                        int wake_fd, enum intercept_outcome *outcome)
{
    struct intercept_ticket *t = calloc(1, sizeof(*t));

    *outcome = INTERCEPT_FAILED;
    if (t == NULL)
        return NULL;
    if (copy_message(&t->msg, msg) < 0) {
        free_message(&t->msg);
        free(t);
        return NULL;
    }
    t->h.msg = &t->msg;
    t->h.state = HOLDER_WAITING;
    t->h.wake_fd = wake_fd;
    t->h.since_us = clock_wall_us();
    t->h.deadline_us = t->h.since_us + (int64_t)ic->timeout_ms * 1000;
    t->started_ms = clock_mono_ms();
    pthread_mutex_lock(&ic->lock);
    if (ic->count >= INTERCEPT_MAX_WAITING) {
        pthread_mutex_unlock(&ic->lock);
        free_message(&t->msg);
        free(t);
        *outcome = INTERCEPT_FULL;
        return NULL;
    }
    t->h.id = ic->next_id++;
    link_holder(ic, &t->h);
    pthread_mutex_unlock(&ic->lock);
    return t;
}

static void ticket_free(struct intercept_ticket *t)
{
    intercept_edit_free(&t->h.edit);
    free_message(&t->msg);
    free(t);
}

bool intercept_ticket_waits(struct intercept *ic, struct intercept_ticket *t,
                            enum intercept_outcome *outcome, struct intercept_edit *edit,
                            int64_t *waited_ms, int *left_ms)
{
    int64_t waited = clock_mono_ms() - t->started_ms;

    memset(edit, 0, sizeof(*edit));
    pthread_mutex_lock(&ic->lock);
    if (t->h.state == HOLDER_WAITING && waited < ic->timeout_ms) {
        pthread_mutex_unlock(&ic->lock);
        *left_ms = (int)(ic->timeout_ms - waited);
        return true;
    }
    if (t->h.state == HOLDER_RESUMED) {
        *outcome = INTERCEPT_RESUMED;
        *edit = t->h.edit;
        memset(&t->h.edit, 0, sizeof(t->h.edit));
    } else {
        *outcome = t->h.state == HOLDER_DROPPED ? INTERCEPT_DROPPED : INTERCEPT_TIMED_OUT;
    }
    unlink_holder(ic, &t->h);
    pthread_mutex_unlock(&ic->lock);
    *waited_ms = waited;
    ticket_free(t);
    return false;
}

int64_t intercept_ticket_cancel(struct intercept *ic, struct intercept_ticket *t)
{
    int64_t waited;

    if (t == NULL)
        return 0;
    waited = clock_mono_ms() - t->started_ms;
    pthread_mutex_lock(&ic->lock);
    unlink_holder(ic, &t->h);
    pthread_mutex_unlock(&ic->lock);
    ticket_free(t);
    return waited;
}

void intercept_outcome_note(enum intercept_outcome outcome, bool is_edited, int64_t waited_ms,
                            char *out, size_t out_len)
{
    double s = (double)waited_ms / 1000.0;

    switch (outcome) {
    case INTERCEPT_RESUMED:
        snprintf(out, out_len, "intercept: resumed%s after %.1f s", is_edited ? " edited" : "", s);
        break;
    case INTERCEPT_DROPPED:
        snprintf(out, out_len, "intercept: dropped after %.1f s", s);
        break;
    case INTERCEPT_TIMED_OUT:
        snprintf(out, out_len, "intercept: --intercept-timeout after %.1f s, resumed unchanged", s);
        break;
    case INTERCEPT_CLIENT_GONE:
        snprintf(out, out_len, "intercept: the client hung up after %.1f s of waiting", s);
        break;
    case INTERCEPT_RELEASED:
        snprintf(out, out_len, "intercept: released unchanged at shutdown after %.1f s", s);
        break;
    case INTERCEPT_FULL:
        snprintf(out, out_len, "intercept: matched, not held: %d flows already wait",
                 INTERCEPT_MAX_WAITING);
        break;
    case INTERCEPT_FAILED:
        snprintf(out, out_len, "intercept: matched, not held: out of resources");
        break;
    }
}

/* ---- the dashboard's side ---- */

static int copy_message(struct intercept_message *dst, const struct intercept_message *src)
{
    *dst = *src;
    dst->method = strdup(src->method != NULL ? src->method : "");
    dst->url = strdup(src->url != NULL ? src->url : "");
    dst->headers = strdup(src->headers != NULL ? src->headers : "");
    dst->body = NULL;
    if (src->body_len > 0 && (dst->body = malloc(src->body_len)) != NULL)
        memcpy(dst->body, src->body, src->body_len);
    if (dst->method == NULL || dst->url == NULL || dst->headers == NULL ||
        (src->body_len > 0 && dst->body == NULL))
        return -1;
    return 0;
}

static void free_message(struct intercept_message *m)
{
    free(m->method);
    free(m->url);
    free(m->headers);
    free(m->body);
}

void intercept_waiting_free(struct intercept_waiting *list, size_t count)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free_message(&list[i].msg);
    free(list);
}

int intercept_list(struct intercept *ic, struct intercept_waiting **out, size_t *count)
{
    struct intercept_waiting *list;
    size_t n = 0;
    int rc = 0;

    *out = NULL;
    *count = 0;
    pthread_mutex_lock(&ic->lock);
    list = calloc(ic->count > 0 ? ic->count : 1, sizeof(*list));
    if (list == NULL) {
        rc = -1;
        goto out;
    }
    for (struct holder *h = ic->first; h != NULL; h = h->next) {
        if (h->state != HOLDER_WAITING)
            continue;
        list[n].id = h->id;
        list[n].since_us = h->since_us;
        list[n].deadline_us = h->deadline_us;
        if (copy_message(&list[n++].msg, h->msg) < 0) {
            rc = -1;
            break;
        }
    }
out:
    pthread_mutex_unlock(&ic->lock);
    if (rc < 0) {
        intercept_waiting_free(list, n);
        return -1;
    }
    *out = list;
    *count = n;
    return 0;
}

int intercept_resume(struct intercept *ic, uint64_t id, struct intercept_edit *edit, char *err,
                     size_t err_len)
{
    struct holder *h;
    int rc = 0;

    pthread_mutex_lock(&ic->lock);
    h = find_locked(ic, id);
    if (h == NULL) {
        snprintf(err, err_len, "no flow waits with id %llu", (unsigned long long)id);
        rc = INTERCEPT_NOT_FOUND;
    } else if (edit == NULL || (rc = edit_fits(h, edit, err, err_len)) == 0) {
        h->state = HOLDER_RESUMED;
        if (edit != NULL) {
            h->edit = *edit;
            memset(edit, 0, sizeof(*edit));
        }
        wake(h);
    }
    pthread_mutex_unlock(&ic->lock);
    intercept_edit_free(edit);
    return rc;
}

int intercept_drop(struct intercept *ic, uint64_t id)
{
    struct holder *h;

    pthread_mutex_lock(&ic->lock);
    h = find_locked(ic, id);
    if (h != NULL) {
        h->state = HOLDER_DROPPED;
        wake(h);
    }
    pthread_mutex_unlock(&ic->lock);
    return h != NULL ? 0 : INTERCEPT_NOT_FOUND;
}

size_t intercept_resume_all(struct intercept *ic)
{
    size_t n = 0;

    pthread_mutex_lock(&ic->lock);
    for (struct holder *h = ic->first; h != NULL; h = h->next) {
        if (h->state != HOLDER_WAITING)
            continue;
        h->state = HOLDER_RESUMED;
        wake(h);
        n++;
    }
    pthread_mutex_unlock(&ic->lock);
    return n;
}

size_t intercept_count(struct intercept *ic)
{
    size_t n = 0;

    pthread_mutex_lock(&ic->lock);
    for (struct holder *h = ic->first; h != NULL; h = h->next)
        n += h->state == HOLDER_WAITING;
    pthread_mutex_unlock(&ic->lock);
    return n;
}

/* ---- responses ---- */

static void on_response_head(void *arg, const struct message *sent, const struct message *received)
{
    const struct exchange_capture *in = capture_hooks(((struct intercept_response *)arg)->cap);
    if (in && in->ops->response_head)
        in->ops->response_head(in->arg, sent, received);
}

static void on_body(void *arg, enum exchange_side side, const void *data, size_t len)
{
    const struct exchange_capture *in = capture_hooks(((struct intercept_response *)arg)->cap);
    if (in && in->ops->body)
        in->ops->body(in->arg, side, data, len);
}

static void on_body_original(void *arg, enum exchange_side side, const void *data, size_t len)
{
    const struct exchange_capture *in = capture_hooks(((struct intercept_response *)arg)->cap);
    if (in && in->ops->body_original)
        in->ops->body_original(in->arg, side, data, len);
}

static void on_reframed(void *arg, enum exchange_side side, uint64_t content_length,
                        bool is_rewritten)
{
    const struct exchange_capture *in = capture_hooks(((struct intercept_response *)arg)->cap);
    if (in && in->ops->reframed)
        in->ops->reframed(in->arg, side, content_length, is_rewritten);
}

static void on_moment(void *arg, enum exchange_moment moment, int64_t wall_us)
{
    const struct exchange_capture *in = capture_hooks(((struct intercept_response *)arg)->cap);
    if (in && in->ops->moment)
        in->ops->moment(in->arg, moment, wall_us);
}

static void on_upgraded(void *arg, uint64_t bytes_up, uint64_t bytes_down)
{
    const struct exchange_capture *in = capture_hooks(((struct intercept_response *)arg)->cap);
    if (in && in->ops->upgraded)
        in->ops->upgraded(in->arg, bytes_up, bytes_down);
}

int intercept_edited_head(const struct message *in, const struct intercept_edit *e,
                          bool is_lowercase, struct message *out)
{
    struct message view = *in;
    struct message_field *items = intercept_edit_message_fields(e);
    struct message_fields fields = {items, items != NULL ? e->field_count : 0};
    struct http1_absolute_target at;
    char *path = NULL, *names = NULL;
    size_t names_len = 0;
    int rc = -1;

    if (e->has_fields && e->field_count > 0 && items == NULL)
        goto out;
    if (is_lowercase && items != NULL) {
        /* HTTP/2 field names are lowercase (RFC 9113 8.2.1). */
        for (size_t i = 0; i < fields.count; i++)
            names_len += items[i].name_len + 1;
        names = malloc(names_len);
        if (names == NULL)
            goto out;
        for (size_t i = 0, at_name = 0; i < fields.count; i++) {
            char *n = names + at_name;
            for (size_t k = 0; k < items[i].name_len; k++)
                n[k] = (char)tolower((unsigned char)items[i].name[k]);
            n[items[i].name_len] = '\0';
            items[i].name = n;
            at_name += items[i].name_len + 1;
        }
    }
    if (e->method != NULL) {
        view.method = e->method;
        view.method_len = strlen(e->method);
    }
    if (e->url != NULL) {
        if (http1_parse_absolute_target(e->url, strlen(e->url), &at) < 0)
            goto out;
        bool needs_slash = at.path_len == 0 || at.path[0] != '/';
        path = malloc(at.path_len + 2);
        if (path == NULL)
            goto out;
        path[0] = '/';
        memcpy(path + needs_slash, at.path, at.path_len);
        path[at.path_len + needs_slash] = '\0';
        view.target = path;
        view.target_len = strlen(path);
    }
    if (e->status != 0) {
        view.status = e->status;
        view.reason = http1_reason_phrase(e->status);
        view.reason_len = strlen(view.reason);
    }
    rc = message_copy(out, &view, e->has_fields ? &fields : NULL);
out:
    free(path);
    free(names);
    free(items);
    return rc;
}

static bool on_response_holds(void *arg, const struct message *sent, size_t *body_limit)
{
    struct intercept_response *r = arg;

    *body_limit = INTERCEPT_MAX_BODY_BYTES;
    if (r->flow == NULL)
        return false;
    r->flow->status = sent->status;
    snprintf(r->flow->reason, sizeof(r->flow->reason), "%.*s", (int)sent->reason_len,
             sent->reason != NULL ? sent->reason : "");
    r->flow->response_version = sent->version;
    free(r->flow->response_headers);
    r->flow->response_headers = capture_headers_text(&sent->fields, NULL);
    if (r->flow->response_headers == NULL)
        return false;
    /* A filter that reads the response body (~bs, ~b) is matched in
     * on_response_hold(), once the exchange has read the body. */
    r->match_with_body = intercept_filter_reads_response_body(r->filter);
    return r->match_with_body || intercept_filter_match(r->filter, r->flow);
}

/* Whether the filter matches with the body held in h (decoded; none when
 * it was not held: larger than the limit, not decodable, or no body). */
static bool response_matches_with_body(struct intercept_response *r, const struct exchange_held *h)
{
    struct flow_body *b = &r->flow->response_body;

    free(b->data);
    memset(b, 0, sizeof(*b));
    b->limit = h->has_body ? h->body_len : 0;
    if (h->has_body && h->body_len > 0 && flow_body_append(b, h->body, h->body_len) < 0)
        return false;
    /* The bytes are decoded already: the filter's own decoding by the
     * Content-Encoding then fails, and it reads them as they are. */
    return intercept_filter_match(r->filter, r->flow) == 1;
}

static int on_response_hold(void *arg, struct exchange_held *h)
{
    struct intercept_response *r = arg;
    struct intercept_message msg = {.is_response = true};
    struct intercept_edit edit;
    int64_t waited = 0;
    char note[160];
    int rc = 0;

    if (r->match_with_body && !response_matches_with_body(r, h))
        return 0;
    msg.method = r->flow->method;
    msg.url = (char *)r->url;
    msg.status = h->head->status;
    msg.headers = r->flow->response_headers;
    msg.has_body = h->has_body;
    msg.body = (unsigned char *)h->body;
    msg.body_len = h->body_len;
    r->was_held = true;
    r->outcome = intercept_hold(r->ic, &msg, r->client_fd, r->cancel_fd, &edit, &waited);
    /* The page sends the body back as it showed it: the same bytes are no
     * edit (and an encoded body then goes on as it came). */
    if (edit.has_body && edit.body_len == h->body_len &&
        (h->body_len == 0 || memcmp(edit.body, h->body, h->body_len) == 0)) {
        free(edit.body);
        edit.body = NULL;
        edit.body_len = 0;
        edit.has_body = false;
    }
    bool is_edited = r->outcome == INTERCEPT_RESUMED && !intercept_edit_is_empty(&edit);
    intercept_outcome_note(r->outcome, is_edited, waited, note, sizeof(note));
    capture_note(r->cap, is_edited ? "intercept" : NULL, note);
    if (r->outcome == INTERCEPT_DROPPED || r->outcome == INTERCEPT_CLIENT_GONE) {
        rc = -1;
    } else if (is_edited && intercept_edited_head(h->head, &edit, false, &h->edited) == 0) {
        if (edit.status != 0 && edit.status != h->head->status) {
            snprintf(note, sizeof(note), "intercept: the status was %d", h->head->status);
            capture_note(r->cap, NULL, note);
        }
        if (edit.has_body) {
            h->has_edited_body = true;
            h->edited_body = edit.body;
            h->edited_body_len = edit.body_len;
            edit.body = NULL;
        }
        rc = 1;
    }
    intercept_edit_free(&edit);
    return rc;
}

static const struct exchange_capture_ops response_ops = {
    .response_head = on_response_head,
    .body = on_body,
    .body_original = on_body_original,
    .reframed = on_reframed,
    .moment = on_moment,
    .upgraded = on_upgraded,
    .response_holds = on_response_holds,
    .response_hold = on_response_hold,
};

void intercept_response_begin(struct intercept_response *r, struct intercept *ic,
                              struct intercept_filter *filter, struct flow *flow,
                              struct capture *cap, const char *url, int client_fd, int cancel_fd)
{
    memset(r, 0, sizeof(*r));
    r->ic = ic;
    r->filter = filter;
    r->flow = flow;
    r->cap = cap;
    r->url = url;
    r->client_fd = client_fd;
    r->cancel_fd = cancel_fd;
    r->hooks.ops = &response_ops;
    r->hooks.arg = r;
}

void intercept_response_end(struct intercept_response *r)
{
    intercept_filter_release(r->filter);
    flow_free(r->flow);
    r->filter = NULL;
    r->flow = NULL;
}
