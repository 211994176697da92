/*
 * harimport: HAR 1.2 entries into flows.
 *
 * What comes back from an export is exactly what went in: the marks of
 * struct flow_timings are rebuilt from the HAR phases the way har.c made
 * the phases from them, and a body HAR carries decoded (HAR 1.2:
 * content.text is decoded) is encoded again with the Content-Encoding its
 * headers name, so the store keeps bytes as they went over the wire, as for
 * a captured flow, and the detail view, the search and the next export
 * decode it as usual. bodySize is the size on the wire. A body har.c could
 * not decode (its comment says so) is kept as it is.
 *
 * An entry whose method, URL, header or status cannot be a flow (a scheme
 * other than http and https, CR or LF in a header, a field too long) is
 * skipped whole.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* timegm() */
#endif

#include "harimport.h"
#include "codec.h"
#include "errmsg.h"
#include "textcode.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

/* A string member, NULL when absent or not a string; *len its bytes. */
static const char *member_string(const json_t *obj, const char *key, size_t *len)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_string(v))
        return NULL;
    if (len != NULL)
        *len = json_string_length(v);
    return json_string_value(v);
}

/* A number member in milliseconds; -1 when absent, negative or not a
 * number (HAR: -1 is "does not apply"). */
static double member_ms(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    double ms;

    if (!json_is_number(v))
        return -1;
    ms = json_number_value(v);
    return isfinite(ms) && ms >= 0 && ms < 1e12 ? ms : -1;
}

/* Digits at text[0..n) as a number; -1 when any is not a digit. */
static int digits(const char *text, int n)
{
    int v = 0;
    int i;

    for (i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    return v;
}

/* ISO 8601 as HAR writes it: 2023-11-14T22:13:20.123Z, or with an offset
 * +01:00 instead of Z; the fraction may have any number of digits. */
static bool parse_time(const char *text, int64_t *us)
{
    struct tm tm = {0};
    int64_t frac = 0, scale = 1000000;
    const char *p = text + 19;
    int offset_min = 0;
    time_t t;

    if (strlen(text) < 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' ||
        text[13] != ':' || text[16] != ':')
        return false;
    tm.tm_year = digits(text, 4) - 1900;
    tm.tm_mon = digits(text + 5, 2) - 1;
    tm.tm_mday = digits(text + 8, 2);
    tm.tm_hour = digits(text + 11, 2);
    tm.tm_min = digits(text + 14, 2);
    tm.tm_sec = digits(text + 17, 2);
    if (tm.tm_year < 70 || tm.tm_year > 8000 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 ||
        tm.tm_sec < 0 || tm.tm_sec > 60)
        return false;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (scale > 1) {
                scale /= 10;
                frac += (*p - '0') * scale;
            }
        }
    }
    if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int h = digits(p + 1, 2), m = digits(p + 4, 2);

        if (h < 0 || h > 23 || m < 0 || m > 59)
            return false;
        offset_min = (h * 60 + m) * (*p == '+' ? 1 : -1);
    } else if (strcmp(p, "Z") != 0) {
        return false;
    }
    t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *us = ((int64_t)t - (int64_t)offset_min * 60) * 1000000 + frac;
    return true;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s, size_t len)
{
    size_t i;

    if (len == 0)
        return false;
    for (i = 0; i < len; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* Text a header value or a reason may hold: no control characters but tab. */
static bool is_field_text(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* scheme://host[:port]/target into f; false with *why when it is not an
 * http or https URL a flow can hold. The fragment is left out. */
static bool parse_url(const char *url, struct flow *f, const char **why)
{
    const char *p, *host, *host_end, *end;
    size_t host_len, target_len;
    long port;

    if (strncasecmp(url, "http://", 7) == 0) {
        snprintf(f->scheme, sizeof(f->scheme), "http");
        port = 80;
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        snprintf(f->scheme, sizeof(f->scheme), "https");
        port = 443;
        p = url + 8;
    } else {
        *why = "the URL is not http or https";
        return false;
    }
    end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(end - p)) != NULL) {
        *why = "the URL has user information";
        return false;
    }
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (host_end == NULL) {
            *why = "the URL's IPv6 address has no ']'";
            return false;
        }
        p = host_end + 1;
    } else {
        host = p;
        host_end = host + strcspn(host, ":/?#");
        p = host_end;
    }
    host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof(f->host)) {
        *why = "the URL's host is empty or too long";
        return false;
    }
    for (const char *c = host; c < host_end; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || strchr("\"<>\\^`{|}%", *c) != NULL) {
            *why = "the URL's host has a character a host cannot have";
            return false;
        }
    }
    if (*p == ':') {
        size_t n = (size_t)(end - p - 1);
        int v = n >= 1 && n <= 5 ? digits(p + 1, (int)n) : -1;

        if (v < 1 || v > 65535) {
            *why = "the URL's port is not 1..65535";
            return false;
        }
        port = v;
        p = end;
    } else if (p != end) {
        *why = "the URL's host is followed by something else";
        return false;
    }
    memcpy(f->host, host, host_len);
    f->host[host_len] = '\0';
    f->port = (uint16_t)port;
    target_len = strcspn(p, "#");
    if (target_len >= HARIMPORT_MAX_TARGET_BYTES || !is_field_text(p, target_len) ||
        memchr(p, ' ', target_len) != NULL) {
        *why = "the URL's path is too long or has spaces or control characters";
        return false;
    }
    /* Origin form, as a captured flow keeps it: "/" when there is no path. */
    f->target = malloc(target_len + 2);
    if (f->target == NULL) {
        *why = "out of memory";
        return false;
    }
    snprintf(f->target, target_len + 2, "%s%.*s", p[0] == '/' ? "" : "/", (int)target_len, p);
    return true;
}

/* A header section "Name: value\r\n"... from HAR's [{name, value}], with
 * the Content-Encoding values joined by ", " into *encoding (malloc'd,
 * NULL when none). NULL with *why when a header cannot be stored. */
static char *header_section(const json_t *array, char **encoding, const char **why)
{
    size_t i, used = 0, cap = 256, enc_len = 0;
    char *text = malloc(cap);
    const json_t *h;

    *encoding = NULL;
    if (text == NULL) {
        *why = "out of memory";
        return NULL;
    }
    text[0] = '\0';
    json_array_foreach(array, i, h)
    {
        size_t name_len = 0, value_len = 0;
        const char *name = member_string(h, "name", &name_len);
        const char *value = member_string(h, "value", &value_len);
        size_t need;

        /* HTTP/2 pseudo-headers (":authority") are not fields. */
        if (name != NULL && name[0] == ':')
            continue;
        if (name == NULL || value == NULL || !is_token(name, name_len) ||
            !is_field_text(value, value_len)) {
            *why = "a header has no name or value, or characters a field cannot have";
            goto fail;
        }
        need = used + name_len + value_len + 5;
        if (need > HARIMPORT_MAX_HEADER_BYTES) {
            *why = "the headers are too long";
            goto fail;
        }
        if (need > cap) {
            char *grown;

            while (cap < need)
                cap *= 2;
            grown = realloc(text, cap);
            if (grown == NULL) {
                *why = "out of memory";
                goto fail;
            }
            text = grown;
        }
        used += (size_t)snprintf(text + used, cap - used, "%.*s: %.*s\r\n", (int)name_len, name,
                                 (int)value_len, value);
        if (name_len == 16 && strncasecmp(name, "Content-Encoding", 16) == 0 && value_len > 0) {
            char *grown = realloc(*encoding, enc_len + value_len + 3);

            if (grown == NULL) {
                *why = "out of memory";
                goto fail;
            }
            *encoding = grown;
            enc_len += (size_t)snprintf(*encoding + enc_len, value_len + 3, "%s%.*s",
                                        enc_len > 0 ? ", " : "", (int)value_len, value);
        }
    }
    return text;
fail:
    free(text);
    free(*encoding);
    *encoding = NULL;
    return NULL;
}

/* Standard base64 with '=' padding; false when malformed. *out malloc'd. */
static bool base64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
    size_t i, o = 0;
    uint32_t acc = 0;
    int bits = 0;
    size_t pad = 0;

    *out = malloc(len / 4 * 3 + 3);
    if (*out == NULL)
        return false;
    for (i = 0; i < len; i++) {
        int v;

        if (in[i] == '=') {
            pad++;
            continue;
        }
        v = textcode_base64_value((unsigned char)in[i]);
        if (v < 0 || pad > 0)
            goto bad;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            (*out)[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (pad > 2 || (len % 4 != 0 && pad > 0))
        goto bad;
    *out_len = o;
    return true;
bad:
    free(*out);
    *out = NULL;
    return false;
}

/* A body from HAR's postData or content (text, encoding, comment) into
 * body, encoded again with encoding unless har.c said it could not decode
 * it, and its size on the wire from body_size (-1: unknown). false with
 * *why when it cannot be read. */
static bool read_body(const json_t *obj, const char *encoding, int64_t body_size,
                      struct flow_body *body, const char **why)
{
    size_t text_len = 0;
    const char *text = member_string(obj, "text", &text_len);
    const char *how = member_string(obj, "encoding", NULL);
    const char *comment = member_string(obj, "comment", NULL);
    unsigned char *decoded = NULL, *encoded = NULL;
    const unsigned char *data = (const unsigned char *)text;
    size_t len = text_len;
    char reason[128];
    bool is_ok = false;

    if (text == NULL || text_len == 0) {
        body->size = body_size > 0 ? (uint64_t)body_size : 0;
        return true;
    }
    if (how != NULL && strcmp(how, "base64") == 0) {
        if (!base64_decode(text, text_len, &decoded, &len)) {
            *why = "a body's base64 is malformed";
            goto out;
        }
        data = decoded;
    } else if (how != NULL && how[0] != '\0') {
        *why = "a body's encoding is not base64";
        goto out;
    }
    /* Not decoded by the export (its comment says so): already wire bytes. */
    if (encoding != NULL && strcasecmp(encoding, "identity") != 0 &&
        !(comment != NULL && strstr(comment, "not decoded") != NULL) &&
        codec_encode_content(encoding, data, len, &encoded, &len, reason, sizeof(reason)) == 0)
        data = encoded;
    flow_body_append(body, data, len);
    body->size = body_size >= 0 && (uint64_t)body_size >= len ? (uint64_t)body_size : len;
    is_ok = true;
out:
    free(decoded);
    free(encoded);
    return is_ok;
}

/* A HAR's httpVersion as a flow's (10, 11 or 20, see flow_version_parse()),
 * in any case and with the spellings browsers write for HTTP/2 ("h2",
 * "HTTP/2.0"); anything else (missing, or a version a flow cannot name
 * such as h3) is HTTP/1.1. */
static int har_version(const char *text)
{
    char upper[16];
    size_t i;
    int version;

    if (text == NULL || strlen(text) >= sizeof(upper))
        return 11;
    if (strcasecmp(text, "h2") == 0)
        return 20;
    for (i = 0; text[i] != '\0'; i++)
        upper[i] = text[i] >= 'a' && text[i] <= 'z' ? (char)(text[i] - ('a' - 'A')) : text[i];
    upper[i] = '\0';
    if (strcmp(upper, "HTTP/2.0") == 0)
        return 20;
    version = flow_version_parse(upper);
    return version == 10 || version == 11 || version == 20 ? version : 11;
}

static int64_t member_int(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* ms is never negative here (member_ms()). */
static int64_t ms_to_us(double ms)
{
    return (int64_t)(ms * 1000.0 + 0.5);
}

/*
 * The marks from HAR's phases, the inverse of har.c's har_timings(): connect
 * ends at the upstream connection being ready (after TLS), ssl is the end
 * of connect, send follows it (or the start), then wait and receive. A
 * phase of -1 leaves its mark unknown (0) and the next phase starts from
 * the last known mark. total is the entry's time.
 */
static void read_timings(const json_t *t, double total, int64_t start, struct flow_timings *out)
{
    double connect = member_ms(t, "connect"), ssl = member_ms(t, "ssl");
    double send = member_ms(t, "send"), wait = member_ms(t, "wait");
    double receive = member_ms(t, "receive");
    int64_t at = start;

    out->start = start;
    if (connect >= 0) {
        int64_t open_done = start + ms_to_us(connect);

        if (ssl >= 0 && ssl <= connect) {
            out->tls_done = open_done;
            out->connected = open_done - ms_to_us(ssl);
        } else {
            out->connected = open_done;
        }
        at = open_done;
    }
    if (send >= 0) {
        out->request_sent = at + ms_to_us(send);
        at = out->request_sent;
    }
    if (wait >= 0 && out->request_sent != 0) {
        out->first_byte = at + ms_to_us(wait);
        at = out->first_byte;
    }
    if (receive >= 0 && out->first_byte != 0)
        out->done = at + ms_to_us(receive);
    /* No phase known (har.c then gives the whole time, start to done). */
    if (out->done == 0 && total >= 0 && connect < 0 && send < 0)
        out->done = start + ms_to_us(total);
}

/* One entry as a flow, NULL with *why when it cannot be one. */
/* tapwire's own "_listener" (har.c) when it names a listener tapwire has,
 * so that an export of imported flows says what the first export did;
 * anything else leaves the listener unknown. */
static void read_listener(const char *name, struct flow *f)
{
    static const char *const known[] = {"proxy", "socks5", "transparent", "reverse", "replay"};
    size_t i;

    if (name == NULL)
        return;
    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(name, known[i]) == 0) {
            snprintf(f->listener, sizeof(f->listener), "%s", known[i]);
            return;
        }
}

static struct flow *read_entry(const json_t *entry, size_t body_limit, const char **why)
{
    const json_t *req = json_object_get(entry, "request");
    const json_t *resp = json_object_get(entry, "response");
    const json_t *post = json_object_get(req, "postData");
    const json_t *content = json_object_get(resp, "content");
    const char *method, *url, *started, *reason, *error;
    size_t method_len = 0, reason_len = 0, error_len = 0;
    char *req_encoding = NULL, *resp_encoding = NULL;
    int64_t start = 0, status;
    struct flow *f = flow_new(body_limit);

    *why = "out of memory";
    if (f == NULL)
        return NULL;
    f->is_imported = true;
    method = member_string(req, "method", &method_len);
    url = member_string(req, "url", NULL);
    started = member_string(entry, "startedDateTime", NULL);
    if (!json_is_object(req) || method == NULL || url == NULL) {
        *why = "an entry has no request method or URL";
        goto fail;
    }
    if (!is_token(method, method_len) || method_len >= sizeof(f->method)) {
        *why = "the request method is not a token of at most 31 characters";
        goto fail;
    }
    memcpy(f->method, method, method_len + 1);
    if (started == NULL || !parse_time(started, &start)) {
        *why = "startedDateTime is not an ISO 8601 time";
        goto fail;
    }
    if (!parse_url(url, f, why))
        goto fail;
    f->request_version = har_version(member_string(req, "httpVersion", NULL));
    f->request_headers = header_section(json_object_get(req, "headers"), &req_encoding, why);
    if (f->request_headers == NULL)
        goto fail;
    if (json_is_object(post) &&
        !read_body(post, req_encoding, member_int(req, "bodySize"), &f->request_body, why))
        goto fail;

    status = member_int(resp, "status");
    if (status < 0 || status > 999) {
        *why = "the response status is not 0..999";
        goto fail;
    }
    f->status = (int)status;
    reason = member_string(resp, "statusText", &reason_len);
    if (reason != NULL && (reason_len >= sizeof(f->reason) || !is_field_text(reason, reason_len))) {
        *why = "the status text is too long or has control characters";
        goto fail;
    }
    if (reason != NULL)
        memcpy(f->reason, reason, reason_len + 1);
    f->response_version = har_version(member_string(resp, "httpVersion", NULL));
    /* Status 0 is no response (har.c writes no headers then): keep it
     * absent, not an empty section. */
    if (f->status != 0 || json_array_size(json_object_get(resp, "headers")) > 0) {
        f->response_headers = header_section(json_object_get(resp, "headers"), &resp_encoding, why);
        if (f->response_headers == NULL)
            goto fail;
    }
    if (json_is_object(content) &&
        !read_body(content, resp_encoding, member_int(resp, "bodySize"), &f->response_body, why))
        goto fail;
    read_timings(json_object_get(entry, "timings"), member_ms(entry, "time"), start, &f->timings);
    error = member_string(entry, "_error", &error_len);
    if (error != NULL && error_len > 0) {
        if (error_len > HARIMPORT_MAX_ERROR_BYTES) {
            *why = "_error is too long";
            goto fail;
        }
        f->error = strdup(error);
        if (f->error == NULL)
            goto fail;
    }
    read_listener(member_string(entry, "_listener", NULL), f);
    free(req_encoding);
    free(resp_encoding);
    return f;
fail:
    free(req_encoding);
    free(resp_encoding);
    flow_free(f);
    return NULL;
}

struct entry_order {
    size_t index;
    int64_t start_us; /* INT64_MAX when it has none: last, and skipped there */
};

static int by_start(const void *a, const void *b)
{
    const struct entry_order *x = a, *y = b;

    if (x->start_us != y->start_us)
        return x->start_us < y->start_us ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

int harimport_parse(const char *data, size_t len, size_t body_limit, harimport_flow_fn fn,
                    void *arg, struct harimport_result *result, char *err, size_t err_len)
{
    json_error_t jerr;
    json_t *root;
    const json_t *entries, *entry;
    struct entry_order *order = NULL;
    size_t i, k;
    int ret = -1;

    memset(result, 0, sizeof(*result));
    root = json_loadb(data, len, 0, &jerr);
    if (root == NULL) {
        errmsg_set(err, err_len, "not a HAR file: line %d: %s", jerr.line, jerr.text);
        goto out;
    }
    entries = json_object_get(json_object_get(root, "log"), "entries");
    if (!json_is_array(entries)) {
        errmsg_set(err, err_len, "not a HAR file: it has no log.entries array");
        goto out;
    }
    if (json_array_size(entries) > HARIMPORT_MAX_ENTRIES) {
        errmsg_set(err, err_len, "the HAR file has more than %d entries", HARIMPORT_MAX_ENTRIES);
        goto out;
    }
    /* Oldest first, whatever the document's order (tapwire's export is
     * newest first, a browser's oldest first): flow ids follow time, as for
     * captured flows, and an export of the imported flows lists them as the
     * document it came from did. */
    order = malloc((json_array_size(entries) + 1) * sizeof(order[0]));
    if (order == NULL) {
        errmsg_set(err, err_len, "importing the HAR file: out of memory");
        goto out;
    }
    json_array_foreach(entries, i, entry)
    {
        const char *started = member_string(entry, "startedDateTime", NULL);

        order[i].index = i;
        if (started == NULL || !parse_time(started, &order[i].start_us))
            order[i].start_us = INT64_MAX;
    }
    qsort(order, json_array_size(entries), sizeof(order[0]), by_start);
    for (k = 0; k < json_array_size(entries); k++) {
        const char *why = "";
        struct flow *f;

        i = order[k].index;
        entry = json_array_get(entries, i);
        f = json_is_object(entry) ? read_entry(entry, body_limit, &why) : NULL;

        if (!json_is_object(entry))
            why = "an entry is not an object";
        if (f == NULL) {
            if (strcmp(why, "out of memory") == 0) {
                errmsg_set(err, err_len, "importing the HAR file: out of memory");
                goto out;
            }
            if (result->skipped++ == 0)
                snprintf(result->first_skipped, sizeof(result->first_skipped), "entry %zu: %s",
                         i + 1, why);
            continue;
        }
        if (fn(arg, f) != 0) {
            errmsg_set(err, err_len, "importing the HAR file: the flow store refused entry %zu",
                       i + 1);
            goto out;
        }
        result->imported++;
    }
    ret = 0;
out:
    free(order);
    json_decref(root);
    return ret;
}
