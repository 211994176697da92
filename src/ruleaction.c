/*
 * ruleaction: see ruleaction.h.
 */
#include "ruleaction.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http1.h"

int ruleaction_answer(const struct rule *act, bool is_closing, struct ruleaction_answer *a)
{
    struct buf fields = BUF_INIT(BUF_UNBOUNDED_BYTES);
    bool has_body = act->answer_status != 204 && act->answer_status != 304;

    memset(a, 0, sizeof(*a));
    a->status = act->answer_status;
    a->reason_phrase = http1_reason_phrase(a->status);
    a->is_block = act->target == RULES_TARGET_BLOCK;
    a->is_close = act->is_close;
    a->body = "";
    snprintf(a->why, sizeof(a->why), "%s by rule %s",
             a->is_block ? (act->is_close ? "connection closed" : "blocked") : "answered",
             act->label);
    if (a->is_close)
        return 0;
    if (has_body && a->is_block) {
        int n = snprintf(a->page, sizeof(a->page), "%d %s\n\ntapwire: blocked by rule %s\n",
                         a->status, a->reason_phrase, act->label);
        a->body = a->page;
        a->body_len = n < 0 ? 0 : (size_t)n >= sizeof(a->page) ? sizeof(a->page) - 1 : (size_t)n;
        buf_str(&fields, "Content-Type: text/plain; charset=utf-8\r\n"
                         "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    } else if (has_body && act->answer_body != NULL) {
        a->body = act->answer_body;
        a->body_len = act->answer_body_len;
    }
    for (size_t i = 0; i < act->answer_field_count; i++) {
        buf_str(&fields, act->answer_fields[i]);
        buf_str(&fields, "\r\n");
    }
    if (has_body) {
        char cl[48];

        snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", a->body_len);
        buf_str(&fields, cl);
    }
    if (is_closing)
        buf_str(&fields, "Connection: close\r\n");
    if (fields.has_failed) {
        buf_free(&fields);
        return -1;
    }
    a->fields = fields.data != NULL ? fields.data : strdup("");
    return a->fields != NULL ? 0 : -1;
}

void ruleaction_answer_free(struct ruleaction_answer *a)
{
    free(a->fields);
    a->fields = NULL;
}

int ruleaction_map_remote(const struct rule *act, const char *asked, const struct message *req,
                          const char *target, struct ruleaction_remote *out)
{
    struct message view = *req;
    struct message_field *items = NULL;
    const char *scheme = act->remote.is_tls ? "https" : "http";
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->is_tls = act->remote.is_tls;
    out->host = act->remote.host;
    out->port = act->remote.port;
    out->authority = act->remote.authority;
    out->target = rules_remote_target(act, target);
    if (out->target == NULL)
        goto out;
    items = calloc(req->fields.count + 1, sizeof(*items));
    if (items == NULL)
        goto out;
    for (size_t i = 0; i < req->fields.count; i++) {
        items[i] = req->fields.items[i];
        if (message_field_is(&items[i], "Host")) {
            items[i].value = act->remote.authority;
            items[i].value_len = strlen(act->remote.authority);
        }
    }
    size_t n = strlen(asked) + strlen(act->remote.authority) + strlen(out->target) + 64;
    out->note = malloc(n);
    if (out->note == NULL)
        goto out;
    snprintf(out->note, n, "map-remote: asked for %s, sent to %s://%s%s", asked, scheme,
             act->remote.authority, out->target);
    view.scheme = scheme;
    view.authority = act->remote.authority;
    view.authority_len = strlen(act->remote.authority);
    view.target = out->target;
    view.target_len = strlen(out->target);
    if (message_copy(&out->req, &view, &(struct message_fields){items, req->fields.count}) < 0)
        goto out;
    rc = 0;
out:
    free(items);
    if (rc != 0)
        ruleaction_remote_free(out);
    return rc;
}

void ruleaction_remote_free(struct ruleaction_remote *r)
{
    free(r->target);
    free(r->note);
    message_free(&r->req);
    memset(r, 0, sizeof(*r));
}
