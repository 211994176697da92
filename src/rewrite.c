/*
 * rewrite: see rewrite.h.
 */
#include "rewrite.h"

#include <stdio.h>
#include <string.h>

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
    if (rw->set != NULL) {
        rules_ctx_free(&rw->ctx);
        rules_set_unref(rw->set);
    }
    memset(rw, 0, sizeof(*rw));
}
