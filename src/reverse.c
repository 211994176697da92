/*
 * reverse: see reverse.h. The URL is parsed by the same code that parses an
 * absolute-form request target (http1.c), so the host rules are the ones
 * every other destination follows.
 */
#include "reverse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"

/* A path prefix a person types: segments of unreserved and sub-delim
 * characters, ':' '@' and percent-escapes (RFC 3986 3.3), nothing that
 * would change how the target that follows it is read. */
static bool is_simple_path(const char *p, size_t len)
{
    static const char extra[] = "-._~!$&'()*+,;=:@%/";

    if (len > 0 && p[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c != '\0' && strchr(extra, c) != NULL);
        if (!ok)
            return false;
    }
    return true;
}

int reverse_parse_url(const char *url, struct reverse_target *out, char *err, size_t err_len)
{
    struct http1_absolute_target at;
    size_t len = strlen(url);
    size_t path_len;
    bool v6;

    if (http1_parse_absolute_target(url, len, &at) < 0) {
        errmsg_set(err, err_len, "'%s' is not an http:// or https:// URL with a host", url);
        return -1;
    }
    /* http1_parse_absolute_target() drops a fragment; a person who wrote
     * one, or a query, meant something this option does not do. */
    if (memchr(url, '#', len) != NULL || memchr(at.path, '?', at.path_len) != NULL ||
        !is_simple_path(at.path, at.path_len)) {
        errmsg_set(err, err_len, "'%s': only a plain path prefix may follow the host", url);
        return -1;
    }
    path_len = at.path_len;
    while (path_len > 0 && at.path[path_len - 1] == '/')
        path_len--;
    if (path_len >= sizeof(out->prefix)) {
        errmsg_set(err, err_len, "'%s': the path prefix is too long", url);
        return -1;
    }
    out->is_tls = at.is_https;
    memcpy(out->host, at.host, sizeof(out->host));
    out->port = at.port;
    memcpy(out->prefix, at.path, path_len);
    out->prefix[path_len] = '\0';
    /* The Host the origin gets, in one spelling whatever was typed: the
     * default port left out (RFC 9110 7.2), IPv6 in brackets. */
    v6 = strchr(out->host, ':') != NULL;
    if (out->port == (out->is_tls ? 443 : 80))
        snprintf(out->authority, sizeof(out->authority), "%s%s%s", v6 ? "[" : "", out->host,
                 v6 ? "]" : "");
    else
        snprintf(out->authority, sizeof(out->authority), "%s%s%s:%u", v6 ? "[" : "", out->host,
                 v6 ? "]" : "", out->port);
    return 0;
}

char *reverse_map_target(const struct reverse_target *rt, const char *target, size_t len)
{
    size_t prefix_len = strlen(rt->prefix);
    char *out;

    if (len == 1 && target[0] == '*' && prefix_len > 0)
        len = 0; /* OPTIONS * under a prefix asks about the prefix */
    out = malloc(prefix_len + len + 2);
    if (out == NULL)
        return NULL;
    memcpy(out, rt->prefix, prefix_len);
    if (len == 0 || (target[0] != '/' && target[0] != '*') || (target[0] == '*' && prefix_len > 0))
        out[prefix_len++] = '/';
    memcpy(out + prefix_len, target, len);
    out[prefix_len + len] = '\0';
    return out;
}

static bool is_forwarded_field(const struct message_field *f)
{
    return message_field_is(f, "X-Forwarded-For") || message_field_is(f, "X-Forwarded-Proto") ||
           message_field_is(f, "X-Forwarded-Host");
}

int reverse_forwarded_fields(const struct message_fields *in, const char *client_ip,
                             bool is_tls_client, struct reverse_forwarded *fw,
                             struct message_fields *out)
{
    const struct message_field *host = message_fields_find(in, "Host");
    size_t for_len = strlen(client_ip) + 1;
    size_t n = 0;
    char *p;

    memset(fw, 0, sizeof(*fw));
    for (size_t i = 0; i < in->count; i++)
        if (message_field_is(&in->items[i], "X-Forwarded-For"))
            for_len += in->items[i].value_len + 2;
    fw->items = malloc((in->count + 3) * sizeof(*fw->items));
    fw->forwarded_for = malloc(for_len);
    if (fw->items == NULL || fw->forwarded_for == NULL) {
        reverse_forwarded_free(fw);
        return -1;
    }
    p = fw->forwarded_for;
    for (size_t i = 0; i < in->count; i++) {
        const struct message_field *f = &in->items[i];
        if (!is_forwarded_field(f)) {
            fw->items[n++] = *f;
        } else if (message_field_is(f, "X-Forwarded-For") && f->value_len > 0) {
            memcpy(p, f->value, f->value_len);
            p += f->value_len;
            memcpy(p, ", ", 2);
            p += 2;
        }
    }
    strcpy(p, client_ip);
    fw->items[n++] =
        (struct message_field){"X-Forwarded-For", 15, fw->forwarded_for, strlen(fw->forwarded_for)};
    fw->items[n++] = (struct message_field){
        "X-Forwarded-Proto", 17, is_tls_client ? "https" : "http", is_tls_client ? 5 : 4};
    if (host != NULL)
        fw->items[n++] =
            (struct message_field){"X-Forwarded-Host", 16, host->value, host->value_len};
    *out = (struct message_fields){fw->items, n};
    return 0;
}

void reverse_forwarded_free(struct reverse_forwarded *fw)
{
    free(fw->items);
    free(fw->forwarded_for);
    fw->items = NULL;
    fw->forwarded_for = NULL;
}
