/*
 * flow: allocating, filling and freeing the record of one exchange, and
 * reading what it holds as text (header sections, UTF-8 checks) for the
 * flow store, the dashboard and the HAR export.
 */
#include "flow.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

static size_t text_size(const char *text)
{
    return text != NULL ? strlen(text) + 1 : 0;
}

size_t flow_strings_bytes(const struct flow *flow)
{
    const struct flow_tls *tls = &flow->tls;

    return text_size(flow->target) + text_size(flow->request_headers) +
           text_size(flow->response_headers) + text_size(flow->error) + text_size(flow->rules) +
           text_size(flow->target_original) + text_size(flow->request_headers_original) +
           text_size(flow->response_headers_original) + text_size(flow->rules_notes) +
           text_size(tls->cert_subject) + text_size(tls->cert_issuer) + text_size(tls->cert_sans) +
           text_size(tls->verification);
}

static char *pack_text(char **at, const char *text)
{
    return pack_string(at, text, text != NULL ? strlen(text) : 0);
}

static void pack_body(char **at, struct flow_body *dst, const struct flow_body *src)
{
    *dst = *src;
    dst->data = NULL;
    dst->capacity = 0;
    if (src->len == 0)
        return;
    dst->data = (unsigned char *)*at;
    memcpy(dst->data, src->data, src->len);
    dst->capacity = src->len;
    *at += src->len;
}

/* facts, about the text was, for its copy now: noted facts hold on to the
 * section they describe by its address. */
static struct flow_header_facts repoint_facts(struct flow_header_facts facts, const char *was,
                                              const char *now)
{
    if (facts.text != NULL && facts.text == was)
        facts.text = now;
    else
        facts.text = NULL;
    return facts;
}

size_t flow_pack_bytes(const struct flow *flow)
{
    size_t bodies = flow->request_body.len + flow->response_body.len +
                    flow->request_body_original.len + flow->response_body_original.len;

    if (bodies > FLOW_PACK_BODY_MAX_BYTES || flow->ws.items != NULL)
        return 0;
    return sizeof(*flow) + bodies + flow_strings_bytes(flow);
}

struct flow *flow_pack_into(struct flow *flow, void *block, size_t bytes, int *given_back)
{
    const struct flow_tls *tls = &flow->tls;
    struct flow *p = block;
    char *at;

    *p = *flow;
    p->is_packed = true;
    p->packed_bytes = bytes;
    p->given_back = given_back;
    at = (char *)(p + 1);
    pack_body(&at, &p->request_body, &flow->request_body);
    pack_body(&at, &p->response_body, &flow->response_body);
    pack_body(&at, &p->request_body_original, &flow->request_body_original);
    pack_body(&at, &p->response_body_original, &flow->response_body_original);
    p->target = pack_text(&at, flow->target);
    p->request_headers = pack_text(&at, flow->request_headers);
    p->response_headers = pack_text(&at, flow->response_headers);
    p->request_facts =
        repoint_facts(flow->request_facts, flow->request_headers, p->request_headers);
    p->response_facts =
        repoint_facts(flow->response_facts, flow->response_headers, p->response_headers);
    p->error = pack_text(&at, flow->error);
    p->rules = pack_text(&at, flow->rules);
    p->target_original = pack_text(&at, flow->target_original);
    p->request_headers_original = pack_text(&at, flow->request_headers_original);
    p->response_headers_original = pack_text(&at, flow->response_headers_original);
    p->rules_notes = pack_text(&at, flow->rules_notes);
    p->tls.strings = NULL;
    p->tls.cert_subject = pack_text(&at, tls->cert_subject);
    p->tls.cert_issuer = pack_text(&at, tls->cert_issuer);
    p->tls.cert_sans = pack_text(&at, tls->cert_sans);
    p->tls.verification = pack_text(&at, tls->verification);
    flow->live = NULL; /* the reference moved over */
    return p;
}

struct flow *flow_pack(struct flow *flow)
{
    size_t bytes = flow_pack_bytes(flow);
    struct flow *p;

    if (bytes == 0)
        return flow;
    p = malloc(bytes);
    if (p == NULL)
        return flow;
    flow_pack_into(flow, p, bytes, NULL);
    flow_free(flow);
    return p;
}

/* p moved along with a block that was at was (bytes long) and is at now;
 * a pointer outside the block stays. */
static void *moved(const void *p, uintptr_t was, size_t bytes, void *now)
{
    uintptr_t at = (uintptr_t)p;

    if (p == NULL || at < was || at - was >= bytes)
        return (void *)(uintptr_t)p;
    return (char *)now + (at - was);
}

void flow_packed_moved(struct flow *flow, uintptr_t was)
{
    size_t n = flow->packed_bytes;

    flow->given_back = NULL; /* a copy: the block is its own */
    flow->target = moved(flow->target, was, n, flow);
    flow->request_headers = moved(flow->request_headers, was, n, flow);
    flow->response_headers = moved(flow->response_headers, was, n, flow);
    flow->request_facts.text = moved(flow->request_facts.text, was, n, flow);
    flow->response_facts.text = moved(flow->response_facts.text, was, n, flow);
    flow->request_body.data = moved(flow->request_body.data, was, n, flow);
    flow->response_body.data = moved(flow->response_body.data, was, n, flow);
    flow->request_body_original.data = moved(flow->request_body_original.data, was, n, flow);
    flow->response_body_original.data = moved(flow->response_body_original.data, was, n, flow);
    flow->error = moved(flow->error, was, n, flow);
    flow->rules = moved(flow->rules, was, n, flow);
    flow->target_original = moved(flow->target_original, was, n, flow);
    flow->request_headers_original = moved(flow->request_headers_original, was, n, flow);
    flow->response_headers_original = moved(flow->response_headers_original, was, n, flow);
    flow->rules_notes = moved(flow->rules_notes, was, n, flow);
    flow->tls.cert_subject = moved(flow->tls.cert_subject, was, n, flow);
    flow->tls.cert_issuer = moved(flow->tls.cert_issuer, was, n, flow);
    flow->tls.cert_sans = moved(flow->tls.cert_sans, was, n, flow);
    flow->tls.verification = moved(flow->tls.verification, was, n, flow);
}

/* FNV-1a over n sizes. */
static uint32_t hash_sizes(const size_t *sizes, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i, b;

    for (i = 0; i < n; i++)
        for (b = 0; b < sizeof(sizes[i]); b++) {
            h ^= (uint32_t)((sizes[i] >> (8 * b)) & 0xff);
            h *= 16777619u;
        }
    return h;
}

uint32_t flow_packed_layout(void)
{
    /* Where flow_packed_moved() and flow_packed_is_whole() look: a field
     * added, removed or moved changes one of them (sizeof the flow, most
     * often). */
    static const size_t layout[] = {
        sizeof(struct flow),
        sizeof(struct flow_body),
        sizeof(struct flow_tls),
        sizeof(struct flow_header_facts),
        offsetof(struct flow, kind),
        offsetof(struct flow, host),
        offsetof(struct flow, target),
        offsetof(struct flow, request_headers),
        offsetof(struct flow, response_headers),
        offsetof(struct flow, request_facts),
        offsetof(struct flow, response_facts),
        offsetof(struct flow, request_body),
        offsetof(struct flow, response_body),
        offsetof(struct flow, status),
        offsetof(struct flow, timings),
        offsetof(struct flow, tls),
        offsetof(struct flow, error),
        offsetof(struct flow, rules),
        offsetof(struct flow, target_original),
        offsetof(struct flow, request_headers_original),
        offsetof(struct flow, response_headers_original),
        offsetof(struct flow, request_body_original),
        offsetof(struct flow, response_body_original),
        offsetof(struct flow, rules_notes),
        offsetof(struct flow, ws),
        offsetof(struct flow, live),
        offsetof(struct flow, live_part),
        offsetof(struct flow, listener),
        offsetof(struct flow, is_packed),
        offsetof(struct flow, packed_bytes),
        offsetof(struct flow, given_back),
    };

    return hash_sizes(layout, sizeof(layout) / sizeof(layout[0]));
}

/* Whether [p, p + len) lies in flow's block. */
static bool is_in_block(const struct flow *flow, const void *p, size_t len)
{
    uintptr_t start = (uintptr_t)flow, at = (uintptr_t)p;

    return at >= start && at - start <= flow->packed_bytes &&
           len <= flow->packed_bytes - (at - start);
}

/* A string of the block: NULL, or in it and ended in it. */
static bool is_block_text(const struct flow *flow, const char *text)
{
    uintptr_t end = (uintptr_t)flow + flow->packed_bytes;

    return text == NULL ||
           (is_in_block(flow, text, 1) && memchr(text, '\0', end - (uintptr_t)text) != NULL);
}

static bool is_block_body(const struct flow *flow, const struct flow_body *body)
{
    return body->data == NULL ? body->len == 0 : is_in_block(flow, body->data, body->len);
}

/* facts about text: none, or the section itself with its values in it. */
static bool are_facts_whole(const struct flow_header_facts *facts, const char *text)
{
    size_t len;

    if (facts->text == NULL)
        return true;
    if (facts->text != text)
        return false;
    len = strlen(text);
    return (!facts->has_content_type ||
            (facts->content_type_at <= len &&
             facts->content_type_len <= len - facts->content_type_at)) &&
           (!facts->has_content_encoding ||
            (facts->content_encoding_at <= len &&
             facts->content_encoding_len <= len - facts->content_encoding_at));
}

#define END_FIXED(field) ((field)[sizeof(field) - 1] = '\0')

/* A bool read from a file may hold any byte, which C does not allow it:
 * made true or false through its byte. */
static void fix_bool(bool *b)
{
    unsigned char byte;

    memcpy(&byte, b, 1);
    byte = byte != 0;
    memcpy(b, &byte, 1);
}

static void fix_bools(struct flow *flow)
{
    struct flow_body *bodies[] = {&flow->request_body, &flow->response_body,
                                  &flow->request_body_original, &flow->response_body_original};
    struct flow_header_facts *facts[] = {&flow->request_facts, &flow->response_facts};
    size_t i;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        fix_bool(&bodies[i]->truncated);
    for (i = 0; i < sizeof(facts) / sizeof(facts[0]); i++) {
        fix_bool(&facts[i]->has_content_type);
        fix_bool(&facts[i]->has_content_encoding);
        fix_bool(&facts[i]->has_more_encodings);
    }
    fix_bool(&flow->is_tls);
    fix_bool(&flow->has_request_body_original);
    fix_bool(&flow->has_response_body_original);
    fix_bool(&flow->is_imported);
    fix_bool(&flow->are_bodies_dropped);
    fix_bool(&flow->is_packed);
}

bool flow_packed_is_whole(struct flow *flow)
{
    const struct flow_tls *tls = &flow->tls;

    fix_bools(flow);
    if (!flow->is_packed || flow->packed_bytes < sizeof(*flow) || flow->ws.items != NULL ||
        flow->ws.count != 0 || tls->strings != NULL || (unsigned)flow->kind > FLOW_WEBSOCKET ||
        (unsigned)flow->live_part > FLOW_LIVE_FINAL)
        return false;
    if (!is_block_text(flow, flow->target) || !is_block_text(flow, flow->request_headers) ||
        !is_block_text(flow, flow->response_headers) || !is_block_text(flow, flow->error) ||
        !is_block_text(flow, flow->rules) || !is_block_text(flow, flow->target_original) ||
        !is_block_text(flow, flow->request_headers_original) ||
        !is_block_text(flow, flow->response_headers_original) ||
        !is_block_text(flow, flow->rules_notes) || !is_block_text(flow, tls->cert_subject) ||
        !is_block_text(flow, tls->cert_issuer) || !is_block_text(flow, tls->cert_sans) ||
        !is_block_text(flow, tls->verification))
        return false;
    if (!is_block_body(flow, &flow->request_body) || !is_block_body(flow, &flow->response_body) ||
        !is_block_body(flow, &flow->request_body_original) ||
        !is_block_body(flow, &flow->response_body_original))
        return false;
    if (!are_facts_whole(&flow->request_facts, flow->request_headers) ||
        !are_facts_whole(&flow->response_facts, flow->response_headers))
        return false;
    END_FIXED(flow->client_addr);
    END_FIXED(flow->scheme);
    END_FIXED(flow->method);
    END_FIXED(flow->host);
    END_FIXED(flow->reason);
    END_FIXED(flow->listener);
    END_FIXED(flow->tls.client_sni);
    END_FIXED(flow->tls.client_alpn);
    END_FIXED(flow->tls.client_version);
    END_FIXED(flow->tls.client_cipher);
    END_FIXED(flow->tls.upstream_version);
    END_FIXED(flow->tls.upstream_cipher);
    return true;
}

/* is_in_block: body's flow is packed, its bytes in the flow's block. */
static void body_drop(struct flow_body *body, bool is_in_block)
{
    if (!is_in_block)
        free(body->data);
    body->data = NULL;
    body->len = 0;
    body->capacity = 0;
    /* size stays: the flow still says how large the body was. */
    body->truncated = body->size > 0;
}

struct flow *flow_drop_bodies(struct flow *flow)
{
    size_t i;

    body_drop(&flow->request_body, flow->is_packed);
    body_drop(&flow->response_body, flow->is_packed);
    body_drop(&flow->request_body_original, flow->is_packed);
    body_drop(&flow->response_body_original, flow->is_packed);
    for (i = 0; i < flow->ws.count; i++) {
        struct flow_ws_message *m = &flow->ws.items[i];

        free(m->data);
        m->data = NULL;
        m->len = 0;
        m->flags |= FLOW_WS_TRUNCATED;
    }
    flow->ws.bytes = 0;
    flow->are_bodies_dropped = true;
    return flow->is_packed ? flow_pack(flow) : flow;
}

void flow_free(struct flow *flow)
{
    if (flow == NULL)
        return;
    if (flow->is_packed) {
        flow_live_release(flow->live);
        if (flow->given_back != NULL)
            __atomic_store_n(flow->given_back, 1, __ATOMIC_RELEASE); /* flowring.h */
        else
            free(flow);
        return;
    }
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
    flow_ws_clear(&flow->ws);
    flow_live_release(flow->live);
    free(flow);
}

struct flow_live *flow_live_new(void)
{
    struct flow_live *live = calloc(1, sizeof(*live));

    if (live != NULL)
        live->refs = 1;
    return live;
}

struct flow_live *flow_live_ref(struct flow_live *live)
{
    __atomic_add_fetch(&live->refs, 1, __ATOMIC_RELAXED);
    return live;
}

void flow_live_release(struct flow_live *live)
{
    /* The writer's last use of id happens before its release: acquire and
     * release order it before the free. */
    if (live != NULL && __atomic_sub_fetch(&live->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(live);
}

/* strdup() of NULL is NULL; *ok goes false when a copy fails. */
static char *dup_or_null(const char *text, bool *ok)
{
    char *copy;

    if (text == NULL)
        return NULL;
    copy = strdup(text);
    if (copy == NULL)
        *ok = false;
    return copy;
}

struct flow *flow_snapshot(const struct flow *flow)
{
    struct flow *copy = flow_new(flow->request_body.limit);
    bool ok = copy != NULL;

    if (!ok)
        return NULL;
    copy->kind = flow->kind;
    memcpy(copy->client_addr, flow->client_addr, sizeof(copy->client_addr));
    memcpy(copy->scheme, flow->scheme, sizeof(copy->scheme));
    memcpy(copy->method, flow->method, sizeof(copy->method));
    memcpy(copy->host, flow->host, sizeof(copy->host));
    memcpy(copy->reason, flow->reason, sizeof(copy->reason));
    memcpy(copy->listener, flow->listener, sizeof(copy->listener));
    copy->port = flow->port;
    copy->request_version = flow->request_version;
    copy->response_version = flow->response_version;
    copy->status = flow->status;
    copy->timings = flow->timings;
    copy->is_tls = flow->is_tls;
    copy->target = dup_or_null(flow->target, &ok);
    copy->request_headers = dup_or_null(flow->request_headers, &ok);
    copy->response_headers = dup_or_null(flow->response_headers, &ok);
    if (!ok) {
        flow_free(copy);
        return NULL;
    }
    return copy;
}

int flow_ws_append(struct flow_ws *ws, const struct flow_ws_message *m)
{
    struct flow_ws_message *slot;

    if (ws->count >= FLOW_WS_MAX_MESSAGES || m->len > FLOW_WS_MAX_BYTES - ws->bytes)
        goto dropped;
    if (ws->count == ws->capacity) {
        size_t cap = ws->capacity ? ws->capacity * 2 : 16;
        if (cap > FLOW_WS_MAX_MESSAGES)
            cap = FLOW_WS_MAX_MESSAGES;
        struct flow_ws_message *grown = realloc(ws->items, cap * sizeof(*grown));
        if (grown == NULL)
            goto dropped;
        ws->items = grown;
        ws->capacity = cap;
    }
    slot = &ws->items[ws->count];
    *slot = *m;
    slot->data = NULL;
    if (m->len > 0) {
        slot->data = malloc(m->len);
        if (slot->data == NULL)
            goto dropped;
        memcpy(slot->data, m->data, m->len);
    }
    ws->count++;
    ws->bytes += m->len;
    return 0;
dropped:
    ws->dropped++;
    return -1;
}

void flow_ws_clear(struct flow_ws *ws)
{
    for (size_t i = 0; i < ws->count; i++)
        free(ws->items[i].data);
    free(ws->items);
    memset(ws, 0, sizeof(*ws));
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

/* ---- header sections ---- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

bool flow_headers_next(const char *text, size_t *pos, const char **name, size_t *name_len,
                       const char **value, size_t *value_len)
{
    while (text != NULL && text[*pos] != '\0') {
        const char *line = text + *pos;
        size_t line_len = strcspn(line, "\r\n");
        const char *colon = memchr(line, ':', line_len);
        const char *v;
        size_t vlen;

        *pos += line_len;
        if (text[*pos] == '\r')
            (*pos)++;
        if (text[*pos] == '\n')
            (*pos)++;
        if (colon == NULL || colon == line)
            continue;
        v = colon + 1;
        vlen = line_len - (size_t)(v - line);
        while (vlen > 0 && is_blank(*v)) {
            v++;
            vlen--;
        }
        while (vlen > 0 && is_blank(v[vlen - 1]))
            vlen--;
        *name = line;
        *name_len = (size_t)(colon - line);
        *value = v;
        *value_len = vlen;
        return true;
    }
    return false;
}

/* ---- text ---- */

static bool is_continuation(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0 when it is not one. */
static size_t utf8_sequence(const unsigned char *s, size_t len)
{
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        return len >= 2 && is_continuation(s[1]) ? 2 : 0;
    if (s[0] >= 0xe0 && s[0] <= 0xef) {
        if (len < 3 || !is_continuation(s[1]) || !is_continuation(s[2]))
            return 0;
        if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))
            return 0;
        return 3;
    }
    if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        if (len < 4 || !is_continuation(s[1]) || !is_continuation(s[2]) || !is_continuation(s[3]))
            return 0;
        if ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

bool flow_is_text(const void *data, size_t len)
{
    const unsigned char *s = data;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_sequence(s + i, len - i);

        if (n == 0 || s[i] == '\0')
            return false;
        i += n;
    }
    return true;
}

char *flow_text_utf8(const char *text, size_t len, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)text;
    char *clean = malloc(len * 3 + 1); /* each bad byte may become 3 */
    size_t i = 0, o = 0;

    if (clean == NULL)
        return NULL;
    while (i < len) {
        size_t n = utf8_sequence(s + i, len - i);

        if (n == 0) {
            memcpy(clean + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(clean + o, s + i, n);
            o += n;
            i += n;
        }
    }
    clean[o] = '\0';
    *out_len = o;
    return clean;
}

const char *flow_version_text(int version, char *buf, size_t len)
{
    /* Constants for the common versions: the writer pays for each flow. */
    if (version == 11)
        return "HTTP/1.1";
    if (version == 10)
        return "HTTP/1.0";
    if (version == 20)
        return "HTTP/2";
    snprintf(buf, len, "HTTP/%d.%d", version / 10, version % 10);
    return buf;
}

int flow_version_parse(const char *text)
{
    if (text == NULL || strncmp(text, "HTTP/", 5) != 0 || text[5] < '0' || text[5] > '9')
        return 0;
    if (text[6] == '\0')
        return (text[5] - '0') * 10;
    if (text[6] != '.' || text[7] < '0' || text[7] > '9')
        return 0;
    return (text[5] - '0') * 10 + (text[7] - '0');
}
