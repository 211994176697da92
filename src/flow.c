/*
 * flow: allocating, filling and freeing the record of one exchange.
 */
#include "flow.h"

#include <stdlib.h>
#include <string.h>

#define FLOW_BODY_MIN_CAPACITY_BYTES 4096

struct flow *flow_new(size_t capture_limit)
{
    struct flow *flow = calloc(1, sizeof(*flow));

    if (flow == NULL)
        return NULL;
    flow->request_body.limit = capture_limit;
    flow->response_body.limit = capture_limit;
    flow->request_body_original.limit = capture_limit;
    flow->response_body_original.limit = capture_limit;
    return flow;
}

void flow_tls_clear(struct flow_tls *tls)
{
    if (tls->strings != NULL) {
        free(tls->strings);
        return;
    }
    free(tls->cert_subject);
    free(tls->cert_issuer);
    free(tls->cert_sans);
    free(tls->verification);
}

/* Copies text to *at and moves *at past it; NULL stays NULL. */
static char *pack_string(char **at, const char *text, size_t len)
{
    char *copy = *at;

    if (text == NULL)
        return NULL;
    memcpy(copy, text, len + 1);
    *at += len + 1;
    return copy;
}

void flow_tls_copy(struct flow_tls *dst, const struct flow_tls *src)
{
    size_t subject = src->cert_subject != NULL ? strlen(src->cert_subject) : 0;
    size_t issuer = src->cert_issuer != NULL ? strlen(src->cert_issuer) : 0;
    size_t sans = src->cert_sans != NULL ? strlen(src->cert_sans) : 0;
    size_t verification = src->verification != NULL ? strlen(src->verification) : 0;
    char *at;

    *dst = *src;
    dst->cert_subject = dst->cert_issuer = dst->cert_sans = dst->verification = NULL;
    dst->strings = NULL;
    if (src->cert_subject == NULL && src->cert_issuer == NULL && src->cert_sans == NULL &&
        src->verification == NULL)
        return;
    dst->strings = malloc(subject + issuer + sans + verification + 4);
    if (dst->strings == NULL)
        return;
    at = dst->strings;
    dst->cert_subject = pack_string(&at, src->cert_subject, subject);
    dst->cert_issuer = pack_string(&at, src->cert_issuer, issuer);
    dst->cert_sans = pack_string(&at, src->cert_sans, sans);
    dst->verification = pack_string(&at, src->verification, verification);
}

void flow_free(struct flow *flow)
{
    if (flow == NULL)
        return;
    free(flow->target);
    free(flow->request_headers);
    free(flow->response_headers);
    free(flow->request_body.data);
    free(flow->response_body.data);
    flow_tls_clear(&flow->tls);
    free(flow->error);
    free(flow->rules);
    free(flow->target_original);
    free(flow->request_headers_original);
    free(flow->response_headers_original);
    free(flow->request_body_original.data);
    free(flow->response_body_original.data);
    free(flow->rules_notes);
    free(flow);
}

int flow_body_append(struct flow_body *body, const void *data, size_t len)
{
    size_t take;
    size_t need;
    size_t cap;
    unsigned char *grown;
    int rc = 0;

    body->size += len;
    if (len == 0 || body->len >= body->limit)
        goto out;
    take = body->limit - body->len < len ? body->limit - body->len : len;
    need = body->len + take;
    if (need > body->capacity) {
        cap = body->capacity != 0 ? body->capacity : FLOW_BODY_MIN_CAPACITY_BYTES;
        if (cap > body->limit)
            cap = body->limit;
        while (cap < need)
            cap = cap > body->limit / 2 ? body->limit : cap * 2;
        grown = realloc(body->data, cap);
        if (grown == NULL) {
            /* Holding later bytes after a gap would store a body that never
             * crossed the wire; stop capturing here instead. */
            body->limit = body->len;
            rc = -1;
            goto out;
        }
        body->data = grown;
        body->capacity = cap;
    }
    memcpy(body->data + body->len, data, take);
    body->len += take;
out:
    body->truncated = body->size > body->len;
    return rc;
}
