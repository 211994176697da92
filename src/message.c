/*
 * message: see message.h.
 */
#include "message.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool message_field_is(const struct message_field *f, const char *name)
{
    size_t n = strlen(name);

    return f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

const struct message_field *message_fields_find(const struct message_fields *fields,
                                                const char *name)
{
    if (fields == NULL)
        return NULL;
    for (size_t i = 0; i < fields->count; i++) {
        if (message_field_is(&fields->items[i], name))
            return &fields->items[i];
    }
    return NULL;
}

const struct message_field *message_find(const struct message *m, const char *name)
{
    return m != NULL ? message_fields_find(&m->fields, name) : NULL;
}

/* True when the comma-separated list value names f (RFC 9110 5.6.1). */
static bool list_names(const char *value, size_t len, const struct message_field *f)
{
    const char *p = value, *end = value + len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *a = p, *z = comma != NULL ? comma : end;

        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
            z--;
        if ((size_t)(z - a) == f->name_len && f->name_len > 0 &&
            strncasecmp(a, f->name, f->name_len) == 0)
            return true;
        p = comma != NULL ? comma + 1 : end;
    }
    return false;
}

bool message_is_hop_by_hop(const struct message_fields *all, const struct message_field *f)
{
    static const char *const fixed[] = {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    };

    if (f == NULL)
        return false;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (message_field_is(f, fixed[i]))
            return true;
    }
    if (all == NULL)
        return false;
    for (size_t i = 0; i < all->count; i++) {
        const struct message_field *c = &all->items[i];

        if (message_field_is(c, "connection") && list_names(c->value, c->value_len, f))
            return true;
    }
    return false;
}

static size_t fields_bytes(const struct message_fields *fields)
{
    size_t n = fields->count * sizeof(struct message_field);

    for (size_t i = 0; i < fields->count; i++)
        n += fields->items[i].name_len + fields->items[i].value_len + 2;
    return n;
}

/* Copies text into *at (NUL-terminated, so the copies read as strings too). */
static const char *put_text(char **at, const char *text, size_t len)
{
    char *out = *at;

    if (text == NULL)
        return NULL;
    memcpy(out, text, len);
    out[len] = '\0';
    *at += len + 1;
    return out;
}

static void put_fields(struct message_fields *dst, const struct message_fields *src,
                       struct message_field *items, char **at)
{
    for (size_t i = 0; i < src->count; i++) {
        const struct message_field *f = &src->items[i];

        items[i].name = put_text(at, f->name, f->name_len);
        items[i].name_len = f->name_len;
        items[i].value = put_text(at, f->value != NULL ? f->value : "", f->value_len);
        items[i].value_len = f->value_len;
    }
    dst->items = src->count > 0 ? items : NULL;
    dst->count = src->count;
}

int message_copy(struct message *dst, const struct message *src,
                 const struct message_fields *fields)
{
    const struct message_fields *use = fields != NULL ? fields : &src->fields;
    size_t scheme_len = src->scheme != NULL ? strlen(src->scheme) : 0;
    /* Field arrays first: they want pointer alignment. */
    size_t size = fields_bytes(use) + fields_bytes(&src->trailers) + src->method_len +
                  src->authority_len + src->target_len + src->reason_len + scheme_len + 5;
    char *store = malloc(size);
    char *at;

    memset(dst, 0, sizeof(*dst));
    if (store == NULL)
        return -1;
    *dst = *src;
    dst->storage = store;
    dst->next_hop = (struct message_fields){NULL, 0};
    dst->is_to_proxy = false;
    struct message_field *items = (struct message_field *)store;
    struct message_field *trailer_items = items + use->count;
    at = (char *)(trailer_items + src->trailers.count);
    put_fields(&dst->fields, use, items, &at);
    put_fields(&dst->trailers, &src->trailers, trailer_items, &at);
    dst->method = put_text(&at, src->method, src->method_len);
    dst->authority = put_text(&at, src->authority, src->authority_len);
    dst->target = put_text(&at, src->target, src->target_len);
    dst->reason = put_text(&at, src->reason, src->reason_len);
    dst->scheme = put_text(&at, src->scheme, scheme_len);
    return 0;
}

void message_free(struct message *m)
{
    if (m == NULL)
        return;
    free(m->storage);
    memset(m, 0, sizeof(*m));
}
