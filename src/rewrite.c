/*
 * rewrite: see rewrite.h.
 */
#include "rewrite.h"

#include "buf.h"
#include "flow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A header section as a flow stores it, "Name: value\r\n" per field, for
 * match= (filter.h reads flows). NULL when out of memory. */
static char *fields_text(const struct message_fields *fields)
{
    struct buf t = BUF_INIT(BUF_UNBOUNDED_BYTES);

    for (size_t i = 0; i < fields->count; i++) {
        const struct message_field *f = &fields->items[i];

        buf_put(&t, f->name, f->name_len);
        buf_str(&t, ": ");
        buf_put(&t, f->value, f->value_len);
        buf_str(&t, "\r\n");
    }
    if (t.has_failed) {
        free(t.data);
        return NULL;
    }
    return t.data != NULL ? t.data : strdup("");
}

/* The port of an authority "host[:port]" or "[v6][:port]"; 0: none. */
static uint16_t authority_port(const char *a, size_t len)
{
    size_t i = len;
    unsigned long port = 0;

    while (i > 0 && a[i - 1] >= '0' && a[i - 1] <= '9')
        i--;
    if (i == 0 || i == len || a[i - 1] != ':' || len - i > 5)
        return 0;
    for (size_t k = i; k < len; k++)
        port = port * 10 + (unsigned long)(a[k] - '0');
    return port > 0 && port <= 65535 ? (uint16_t)port : 0;
}

/* The request as it arrived, as a flow: what match= of every rule of the
 * exchange is decided on (the response is added when it comes). */
static struct flow *request_flow(const struct message *req, const char *site, const char *path)
{
    struct flow *f = flow_new(0);
    bool is_tls = req->scheme != NULL && strcmp(req->scheme, "https") == 0;
    const struct message_field *host = req->authority == NULL ? message_find(req, "Host") : NULL;
    uint16_t port = req->authority != NULL ? authority_port(req->authority, req->authority_len)
                    : host != NULL         ? authority_port(host->value, host->value_len)
                                           : 0;

    if (f == NULL)
        return NULL;
    snprintf(f->scheme, sizeof(f->scheme), "%s", is_tls ? "https" : "http");
    snprintf(f->method, sizeof(f->method), "%.*s", (int)req->method_len, req->method);
    snprintf(f->host, sizeof(f->host), "%s", site != NULL ? site : "");
    f->port = port != 0 ? port : is_tls ? 443 : 80;
    f->is_tls = is_tls;
    f->request_version = req->version;
    f->target = strdup(path != NULL ? path : "/");
    f->request_headers = fields_text(&req->fields);
    if (f->target == NULL || f->request_headers == NULL) {
        flow_free(f);
        return NULL;
    }
    return f;
}

static void set_content_type(struct rules_ctx *ctx, const struct message *m, bool is_response)
{
    const struct message_field *ct = message_find(m, "Content-Type");
    char type[RULES_MAX_CONTENT_TYPE_BYTES];

    if (ct)
        snprintf(type, sizeof(type), "%.*s", (int)ct->value_len, ct->value);
    if (is_response)
        rules_ctx_set_response(ctx, m->status, ct ? type : NULL);
    else if (ct)
        rules_ctx_set_content_type(ctx, type);
}

static void on_response(void *arg, const struct message *resp)
{
    struct rewrite *rw = arg;

    set_content_type(&rw->ctx, resp, true);
    if (rw->flow != NULL) {
        /* Without the response's fields a match= that reads them simply
         * does not match (out of memory). */
        free(rw->flow->response_headers);
        rw->flow->response_headers = fields_text(&resp->fields);
        rw->flow->status = resp->status;
        rw->flow->response_version = resp->version;
    }
}

static int on_fields(void *arg, const struct message *in, struct message_fields *out)
{
    struct rewrite *rw = arg;

    rules_headers_free(&rw->last_fields);
    /* struct rules_header has struct message_field's layout (rules.h). */
    if (rules_apply_headers(rw->set, &rw->ctx, (const struct rules_header *)in->fields.items,
                            in->fields.count, &rw->last_fields) < 0)
        return -1;
    *out = (struct message_fields){(const struct message_field *)rw->last_fields.fields,
                                   rw->last_fields.count};
    return rw->last_fields.fields != NULL ? 1 : 0;
}

static bool on_wants_body(void *arg)
{
    struct rewrite *rw = arg;

    return rules_wants_body(rw->set, &rw->ctx);
}

static int on_body(void *arg, const unsigned char *in, size_t len, size_t limit,
                   unsigned char **out, size_t *out_len)
{
    struct rewrite *rw = arg;

    return rules_apply_body(rw->set, &rw->ctx, in, len, limit, out, out_len);
}

static void on_note(void *arg, const char *note)
{
    struct rewrite *rw = arg;
    size_t used = strlen(rw->ctx.notes);

    snprintf(rw->ctx.notes + used, sizeof(rw->ctx.notes) - used, "%s%s", used ? "; " : "", note);
}

static const struct exchange_rewrite_ops rules_ops = {
    .response = on_response,
    .fields = on_fields,
    .wants_body = on_wants_body,
    .body = on_body,
    .note = on_note,
};

int rewrite_begin(struct rewrite *rw, struct rules_current *rules, const struct message *req,
                  const char *site, const char *path, size_t limit, size_t memory_limit)
{
    char method[32];
    struct rule_set *set;

    memset(rw, 0, sizeof(*rw));
    set = rules != NULL ? rules_acquire(rules) : NULL;
    if (set == NULL || rules_set_count(set) == 0) {
        rules_set_unref(set);
        return 0;
    }
    snprintf(method, sizeof(method), "%.*s", (int)req->method_len, req->method);
    if (rules_ctx_init(&rw->ctx, method, site, path) < 0) {
        rules_set_unref(set);
        return -1;
    }
    rw->set = set;
    if (rules_set_has_match(set)) {
        rw->flow = request_flow(req, site, path);
        if (rw->flow == NULL) {
            rules_ctx_free(&rw->ctx);
            rules_set_unref(set);
            rw->set = NULL;
            return -1;
        }
        rw->ctx.flow = rw->flow;
    }
    rw->hooks = (struct exchange_rewrite){
        .ops = &rules_ops, .arg = rw, .limit = limit, .memory_limit = memory_limit};
    set_content_type(&rw->ctx, req, false);
    return 0;
}

int rewrite_url(struct rewrite *rw, char **new_path)
{
    *new_path = NULL;
    if (rw->set == NULL)
        return 0;
    return rules_apply_url(rw->set, &rw->ctx, new_path);
}

const struct rule *rewrite_action(struct rewrite *rw)
{
    if (rw->set == NULL || rw->ctx.phase != RULES_REQUEST)
        return NULL;
    return rules_find_action(rw->set, &rw->ctx);
}

const struct exchange_rewrite *rewrite_hooks(struct rewrite *rw)
{
    return rw->set != NULL ? &rw->hooks : NULL;
}

const char *rewrite_applied(const struct rewrite *rw)
{
    return rw->set != NULL ? rw->ctx.applied : "";
}

const char *rewrite_notes(const struct rewrite *rw)
{
    return rw->set != NULL ? rw->ctx.notes : "";
}

void rewrite_end(struct rewrite *rw)
{
    rules_headers_free(&rw->last_fields);
    flow_free(rw->flow);
    if (rw->set != NULL) {
        rules_ctx_free(&rw->ctx);
        rules_set_unref(rw->set);
    }
    memset(rw, 0, sizeof(*rw));
}
