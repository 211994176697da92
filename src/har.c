/*
 * har: the HAR 1.2 export, one flow read and encoded per piece.
 *
 * Every value in the document (the creator and each entry) is encoded by
 * jansson; only the fixed envelope around them is written here. Flows are
 * read through the flow store's read connection, so an export's memory does
 * not grow with its length.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "har.h"
#include "harcookie.h"
#include "errmsg.h"
#include "filter.h"
#include "jsontext.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#define HAR_PAGE_FLOWS 100 /* flows listed per query when exporting "all" */

/* The first field called want: true with *value and *value_len; false
 * (outputs untouched) when there is none. */
static bool header_find(const char *text, const char *want, const char **value, size_t *value_len)
{
    const char *name, *v;
    size_t name_len, v_len;
    size_t pos = 0;

    while (flow_headers_next(text, &pos, &name, &name_len, &v, &v_len)) {
        if (strlen(want) == name_len && strncasecmp(name, want, name_len) == 0) {
            *value = v;
            *value_len = v_len;
            return true;
        }
    }
    return false;
}

enum har_state { HAR_START, HAR_ENTRIES, HAR_DONE };

struct har {
    struct flowstore *store;
    har_decode_fn decode;
    enum har_state state;
    int64_t *ids; /* the ids to export, or the current page of "all" */
    size_t id_count;
    size_t next_index;
    bool is_all;                    /* page through the newest flows */
    struct flowstore_filter filter; /* "all": which; its texts are owned copies */
    char *texts[6];                 /* the copies behind filter's strings */
    struct filter *expr;            /* filter.expr: compiled again from its text */
    struct filter_sql expr_sql;
    void *body_bytes; /* the copy behind filter.body_bytes */
    int64_t cursor;   /* "all": the lowest id listed so far */
    size_t remaining; /* "all": flows still to list */
    size_t entries_done;
    char *piece;
};

static char *base64(const unsigned char *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t i, o = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];

        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);

        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static json_t *har_headers(const char *text)
{
    json_t *array = json_array();
    const char *name, *value;
    size_t name_len, value_len;
    size_t pos = 0;

    while (array != NULL && flow_headers_next(text, &pos, &name, &name_len, &value, &value_len)) {
        json_t *h = json_object();

        if (!jsontext_append(array, h) || !jsontext_set(h, "name", jsontext_n(name, name_len)) ||
            !jsontext_set(h, "value", jsontext_n(value, value_len))) {
            json_decref(array);
            array = NULL;
        }
    }
    return array;
}

/* The query of target as name/value pairs, as they appear (not decoded). */
static json_t *har_query(const char *target)
{
    json_t *array = json_array();
    const char *q = target != NULL ? strchr(target, '?') : NULL;

    if (array == NULL || q == NULL)
        return array;
    q++;
    while (*q != '\0' && *q != '#') {
        size_t len = strcspn(q, "&#");

        if (len > 0) {
            const char *eq = memchr(q, '=', len);
            size_t name_len = eq != NULL ? (size_t)(eq - q) : len;
            json_t *p = json_object();

            if (!jsontext_append(array, p) || !jsontext_set(p, "name", jsontext_n(q, name_len)) ||
                !jsontext_set(p, "value",
                              eq != NULL ? jsontext_n(eq + 1, len - name_len - 1)
                                         : json_string(""))) {
                json_decref(array);
                return NULL;
            }
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return array;
}

/* scheme://host[:port]target, the port left out when it is the default. */
static char *flow_url(const struct flow *f)
{
    bool is_default = (strcmp(f->scheme, "http") == 0 && f->port == 80) ||
                      (strcmp(f->scheme, "https") == 0 && f->port == 443);
    bool is_v6 = strchr(f->host, ':') != NULL;
    const char *target = f->target != NULL && f->target[0] == '/' ? f->target : "/";
    char port[8] = "";
    size_t len;
    char *url;

    if (!is_default && f->port != 0)
        snprintf(port, sizeof(port), ":%u", (unsigned)f->port);
    len = strlen(f->scheme) + strlen(f->host) + strlen(port) + strlen(target) + 8;
    url = malloc(len);
    if (url != NULL)
        snprintf(url, len, "%s://%s%s%s%s%s", f->scheme, is_v6 ? "[" : "", f->host,
                 is_v6 ? "]" : "", port, target);
    return url;
}

/* Milliseconds from one mark to the next, -1 when either is unknown. */
static double span_ms(int64_t from_us, int64_t to_us)
{
    if (from_us == 0 || to_us == 0 || to_us < from_us)
        return -1;
    return (double)(to_us - from_us) / 1000.0;
}

static json_t *har_number(double ms)
{
    return ms < 0 ? json_integer(-1) : json_real(ms);
}

/*
 * HAR timings from the proxy's marks. The proxy does not separate DNS from
 * connecting, and "connect" includes "ssl" as HAR 1.2 asks. A reused
 * upstream connection has no connect marks: both phases are then -1.
 * Inside a CONNECT tunnel the origin is connected while the client's TLS
 * handshake is still under way, so the first request's connect marks come
 * before its start and the beginning of the TCP connect is not recorded:
 * "connect" is then the part that is known, the TLS handshake, and a
 * comment says so. "ssl" is never more than "connect".
 */
static json_t *har_timings(const struct flow_timings *t, double *total_ms)
{
    int64_t open_done = t->tls_done != 0 ? t->tls_done : t->connected;
    bool is_opened_before = t->connected != 0 && t->connected < t->start;
    double ssl = t->tls_done != 0 ? span_ms(t->connected, t->tls_done) : -1;
    double connect = is_opened_before ? ssl : span_ms(t->start, open_done);
    double send =
        span_ms(open_done != 0 && open_done >= t->start ? open_done : t->start, t->request_sent);
    double wait = span_ms(t->request_sent, t->first_byte);
    double receive = span_ms(t->first_byte, t->done);
    json_t *obj = json_object();

    if (connect < 0 || ssl > connect)
        ssl = -1;
    /* HAR: time is the sum of the known phases ("ssl" is inside "connect"). */
    *total_ms = (connect > 0 ? connect : 0) + (send > 0 ? send : 0) + (wait > 0 ? wait : 0) +
                (receive > 0 ? receive : 0);
    if (*total_ms == 0 && span_ms(t->start, t->done) > 0)
        *total_ms = span_ms(t->start, t->done);
    if (obj == NULL || !jsontext_set(obj, "blocked", json_integer(-1)) ||
        !jsontext_set(obj, "dns", json_integer(-1)) ||
        !jsontext_set(obj, "connect", har_number(connect)) ||
        !jsontext_set(obj, "ssl", har_number(ssl)) ||
        !jsontext_set(obj, "send", har_number(send)) ||
        !jsontext_set(obj, "wait", har_number(wait)) ||
        !jsontext_set(obj, "receive", har_number(receive)) ||
        (is_opened_before && connect >= 0 &&
         !jsontext_set(obj, "comment",
                       json_string("connect is the upstream TLS handshake only: the connection "
                                   "was opened during the client's handshake")))) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* text (with "encoding": "base64" when the bytes are not text) and
 * "comment" into obj for a captured body; decodes Content-Encoding first
 * when it can. *size gets the length of what was exported. */
static bool har_body(struct har *har, json_t *obj, const char *encoding, const unsigned char *data,
                     size_t len, bool is_truncated, size_t *size)
{
    unsigned char *decoded = NULL;
    size_t decoded_len = 0;
    char reason[200] = "";
    char comment[300] = "";
    bool is_ok = true;

    *size = len;
    if (encoding != NULL && encoding[0] != '\0' && strcasecmp(encoding, "identity") != 0) {
        if (is_truncated)
            snprintf(reason, sizeof(reason), "truncated at the capture limit");
        else if (har->decode == NULL)
            snprintf(reason, sizeof(reason), "no decoder");
        else if (har->decode(encoding, data, len, HAR_MAX_DECODED_BYTES, &decoded, &decoded_len,
                             reason, sizeof(reason)) == 0) {
            data = decoded;
            len = decoded_len;
            *size = len;
        }
        if (decoded == NULL)
            snprintf(comment, sizeof(comment), "Content-Encoding %s not decoded (%s)", encoding,
                     reason);
    } else if (is_truncated) {
        snprintf(comment, sizeof(comment), "truncated at the capture limit");
    }
    if (len > 0 && flow_is_text(data, len)) {
        is_ok = jsontext_set(obj, "text", jsontext_n((const char *)data, len));
    } else if (len > 0) {
        char *b64 = base64(data, len);

        is_ok = b64 != NULL && jsontext_set(obj, "text", json_string(b64)) &&
                jsontext_set(obj, "encoding", json_string("base64"));
        free(b64);
    }
    if (is_ok && comment[0] != '\0')
        is_ok = jsontext_set(obj, "comment", json_string(comment));
    free(decoded);
    return is_ok;
}

/* Bytes of a head: the start line "A B C\r\n", the fields, "\r\n". */
static int64_t head_size(const char *a, const char *b, const char *c, const char *headers)
{
    if (headers == NULL)
        return -1;
    return (int64_t)(strlen(a) + strlen(b) + strlen(c) + 4 + strlen(headers) + 2);
}

static json_t *har_request(struct har *har, const struct flowstore_record *rec,
                           const unsigned char *body, size_t body_len)
{
    const struct flow *f = &rec->flow;
    json_t *req = json_object();
    char version[16];
    const char *http_version = flow_version_text(f->request_version, version, sizeof(version));
    char *url = flow_url(f);
    bool is_ok = req != NULL && url != NULL;

    is_ok = is_ok && jsontext_set(req, "method", jsontext_str(f->method)) &&
            jsontext_set(req, "url", jsontext_str(url)) &&
            jsontext_set(req, "httpVersion", json_string(http_version)) &&
            jsontext_set(req, "cookies", harcookie_request(f->request_headers)) &&
            jsontext_set(req, "headers", har_headers(f->request_headers)) &&
            jsontext_set(req, "queryString", har_query(f->target));
    if (is_ok && (f->request_body.size > 0 || body_len > 0)) {
        json_t *post = json_object();
        size_t size;

        is_ok =
            jsontext_set(req, "postData", post) &&
            jsontext_set(
                post, "mimeType",
                jsontext_str(rec->request_content_type != NULL ? rec->request_content_type : "")) &&
            jsontext_set(post, "params", json_array()) &&
            har_body(har, post, rec->request_content_encoding, body, body_len,
                     f->request_body.truncated, &size);
    }
    is_ok = is_ok &&
            jsontext_set(req, "headersSize",
                         json_integer(head_size(f->method, f->target != NULL ? f->target : "",
                                                http_version, f->request_headers))) &&
            jsontext_set(req, "bodySize", json_integer((json_int_t)f->request_body.size));
    free(url);
    if (!is_ok) {
        json_decref(req);
        return NULL;
    }
    return req;
}

static json_t *har_response(struct har *har, const struct flowstore_record *rec,
                            const unsigned char *body, size_t body_len)
{
    const struct flow *f = &rec->flow;
    bool has_response = f->status != 0;
    json_t *resp = json_object();
    json_t *content = json_object(); /* our reference, dropped at the end */
    const char *location = NULL;
    size_t location_len = 0;
    char version[16] = "";
    char status[16];
    size_t size = 0;
    bool is_ok = resp != NULL && content != NULL && json_object_set(resp, "content", content) == 0;

    if (has_response) {
        char other[16];
        snprintf(version, sizeof(version), "%s",
                 flow_version_text(f->response_version, other, sizeof(other)));
    }
    snprintf(status, sizeof(status), "%d", f->status);
    if (!header_find(f->response_headers, "Location", &location, &location_len))
        location = "";
    is_ok =
        is_ok && jsontext_set(resp, "status", json_integer(f->status)) &&
        jsontext_set(resp, "statusText", jsontext_str(f->reason)) &&
        jsontext_set(resp, "httpVersion", json_string(version)) &&
        jsontext_set(resp, "cookies",
                     harcookie_response(f->response_headers, f->timings.first_byte != 0
                                                                 ? f->timings.first_byte
                                                                 : f->timings.start)) &&
        jsontext_set(resp, "headers", har_headers(f->response_headers)) &&
        jsontext_set(
            content, "mimeType",
            jsontext_str(rec->response_content_type != NULL ? rec->response_content_type : "")) &&
        har_body(har, content, rec->response_content_encoding, body, body_len,
                 f->response_body.truncated, &size);
    /* HAR 1.2: compression is the number of bytes saved, decoded minus sent
     * (the body's size on the wire: the stored bytes of a whole captured
     * body, and what an imported flow's bodySize said). */
    if (is_ok && !f->response_body.truncated && size != body_len)
        is_ok = jsontext_set(content, "compression",
                             json_integer((json_int_t)size - (json_int_t)f->response_body.size));
    is_ok = is_ok &&
            jsontext_set(content, "size",
                         json_integer(size != body_len || f->response_body.truncated
                                          ? (json_int_t)size
                                          : (json_int_t)f->response_body.size)) &&
            jsontext_set(resp, "redirectURL", jsontext_n(location, location_len)) &&
            jsontext_set(resp, "headersSize",
                         json_integer(has_response ? head_size(version, status, f->reason,
                                                               f->response_headers)
                                                   : -1)) &&
            jsontext_set(resp, "bodySize",
                         json_integer(has_response ? (json_int_t)f->response_body.size : -1));
    json_decref(content);
    if (!is_ok) {
        json_decref(resp);
        return NULL;
    }
    return resp;
}

static json_t *har_entry(struct har *har, const struct flowstore_record *rec,
                         const unsigned char *req_body, size_t req_len,
                         const unsigned char *resp_body, size_t resp_len)
{
    const struct flow *f = &rec->flow;
    json_t *entry = json_object();
    char started[40];
    double total_ms = 0;
    json_t *timings = har_timings(&f->timings, &total_ms); /* our reference */
    bool is_ok;

    harcookie_iso8601(f->timings.start, started, sizeof(started));
    is_ok = entry != NULL && timings != NULL &&
            jsontext_set(entry, "startedDateTime", json_string(started)) &&
            jsontext_set(entry, "time", json_real(total_ms)) &&
            jsontext_set(entry, "request", har_request(har, rec, req_body, req_len)) &&
            jsontext_set(entry, "response", har_response(har, rec, resp_body, resp_len)) &&
            jsontext_set(entry, "cache", json_object()) &&
            json_object_set(entry, "timings", timings) == 0;
    if (is_ok && f->error != NULL)
        is_ok = jsontext_set(entry, "_error", jsontext_str(f->error));
    /* The listener the flow came through, when known (tapwire-db(5)). */
    if (is_ok && f->listener[0] != '\0')
        is_ok = jsontext_set(entry, "_listener", json_string(f->listener));
    is_ok = is_ok && jsontext_set(entry, "_tapwire_id", json_integer(f->id));
    json_decref(timings);
    if (!is_ok) {
        json_decref(entry);
        return NULL;
    }
    return entry;
}

int har_open(struct flowstore *store, const int64_t *ids, size_t count, har_decode_fn decode,
             struct har **out, char *err, size_t err_len)
{
    struct har *har = calloc(1, sizeof(*har));

    *out = NULL;
    if (har == NULL) {
        errmsg_set(err, err_len, "har: out of memory");
        return -1;
    }
    har->store = store;
    har->decode = decode;
    if (ids == NULL) {
        har->is_all = true;
        har->remaining = HAR_MAX_FLOWS;
    } else if (count > 0) {
        har->ids = malloc(count * sizeof(ids[0]));
        if (har->ids == NULL) {
            free(har);
            errmsg_set(err, err_len, "har: out of memory");
            return -1;
        }
        memcpy(har->ids, ids, count * sizeof(ids[0]));
        har->id_count = count;
    }
    *out = har;
    return 0;
}

/* "All": the next page of ids, newest first. Returns 0 (id_count 0 at the
 * end) or -1. */
static int har_next_page(struct har *har, char *err, size_t err_len)
{
    struct flowstore_filter filter = {0};
    struct flowstore_record **records = NULL;
    size_t count = 0;
    size_t i;

    filter = har->filter;
    filter.before_id = har->cursor;
    filter.limit = har->remaining < HAR_PAGE_FLOWS ? har->remaining : HAR_PAGE_FLOWS;
    har->id_count = 0;
    har->next_index = 0;
    if (filter.limit == 0)
        return 0;
    if (flowstore_list(har->store, &filter, &records, &count, err, err_len) != 0)
        return -1;
    free(har->ids);
    har->ids = count > 0 ? malloc(count * sizeof(har->ids[0])) : NULL;
    if (count > 0 && har->ids == NULL) {
        flowstore_records_free(records, count);
        errmsg_set(err, err_len, "har: out of memory");
        return -1;
    }
    for (i = 0; i < count; i++)
        har->ids[i] = records[i]->flow.id;
    har->id_count = count;
    har->remaining -= count;
    if (count > 0)
        har->cursor = har->ids[count - 1];
    if (count < filter.limit)
        har->remaining = 0;
    flowstore_records_free(records, count);
    return 0;
}

/* The next entry as compact JSON, NULL at the end or on error (ret -1). */
static char *har_next_entry(struct har *har, int *ret, char *err, size_t err_len)
{
    struct flowstore_record *rec = NULL;
    unsigned char *req = NULL, *resp = NULL;
    size_t req_len = 0, resp_len = 0;
    json_t *entry = NULL;
    char *text = NULL;

    *ret = 0;
    while (rec == NULL) {
        if (har->next_index >= har->id_count) {
            if (!har->is_all)
                goto out;
            if (har_next_page(har, err, err_len) != 0) {
                *ret = -1;
                goto out;
            }
            if (har->id_count == 0)
                goto out;
        }
        if (flowstore_get(har->store, har->ids[har->next_index++], &rec, err, err_len) != 0) {
            *ret = -1;
            goto out;
        }
        /* NULL: deleted or pruned since it was listed; skip it. */
    }
    if (flowstore_get_body(har->store, rec->flow.id, FLOWSTORE_REQUEST, &req, &req_len, err,
                           err_len) != 0 ||
        flowstore_get_body(har->store, rec->flow.id, FLOWSTORE_RESPONSE, &resp, &resp_len, err,
                           err_len) != 0) {
        *ret = -1;
        goto out;
    }
    entry = har_entry(har, rec, req, req_len, resp, resp_len);
    text = entry != NULL ? json_dumps(entry, JSON_COMPACT | JSON_REAL_PRECISION(16)) : NULL;
    if (text == NULL) {
        errmsg_set(err, err_len, "har: out of memory encoding flow %" PRId64, rec->flow.id);
        *ret = -1;
    }
out:
    json_decref(entry);
    free(req);
    free(resp);
    flowstore_record_free(rec);
    return text;
}

/*
 * The document is streamed: its fixed envelope is written here, and every
 * value in it (the creator and each entry) is encoded by jansson.
 */
int har_read(struct har *har, const char **data, size_t *len, char *err, size_t err_len)
{
    json_t *creator = NULL;
    char *text = NULL;
    int ret = -1;

    free(har->piece);
    har->piece = NULL;
    switch (har->state) {
    case HAR_START: {
        static const char head[] = "{\"log\":{\"version\":\"1.2\",\"creator\":";
        static const char tail[] = ",\"entries\":[";

        creator = json_pack("{s:s,s:s}", "name", "tapwire", "version",
#ifdef TAPWIRE_VERSION
                            TAPWIRE_VERSION
#else
                            "unknown"
#endif
        );
        text = creator != NULL ? json_dumps(creator, JSON_COMPACT) : NULL;
        har->piece = text != NULL ? malloc(sizeof(head) + strlen(text) + sizeof(tail)) : NULL;
        if (har->piece == NULL) {
            errmsg_set(err, err_len, "har: out of memory");
            goto out;
        }
        snprintf(har->piece, sizeof(head) + strlen(text) + sizeof(tail), "%s%s%s", head, text,
                 tail);
        har->state = HAR_ENTRIES;
        break;
    }
    case HAR_ENTRIES: {
        int rc;

        text = har_next_entry(har, &rc, err, err_len);
        if (rc != 0)
            goto out;
        if (text == NULL) {
            har->piece = strdup("]}}\n");
            har->state = HAR_DONE;
        } else {
            size_t n = strlen(text) + 2;

            har->piece = malloc(n);
            if (har->piece != NULL)
                snprintf(har->piece, n, "%s%s", har->entries_done > 0 ? "," : "", text);
            har->entries_done++;
        }
        if (har->piece == NULL) {
            errmsg_set(err, err_len, "har: out of memory");
            goto out;
        }
        break;
    }
    case HAR_DONE:
        ret = 0;
        goto out;
    }
    *data = har->piece;
    *len = strlen(har->piece);
    ret = 1;
out:
    free(text);
    json_decref(creator);
    return ret;
}

void har_close(struct har *har)
{
    if (har == NULL)
        return;
    free(har->piece);
    free(har->ids);
    for (size_t i = 0; i < sizeof(har->texts) / sizeof(har->texts[0]); i++)
        free(har->texts[i]);
    free(har->body_bytes);
    filter_free(har->expr);
    filter_sql_free(&har->expr_sql);
    free(har);
}

/* A copy of text kept in har->texts[slot]; false when out of memory. */
static bool keep_text(struct har *har, int slot, const char **text)
{
    if (*text == NULL)
        return true;
    har->texts[slot] = strdup(*text);
    *text = har->texts[slot];
    return *text != NULL;
}

int har_open_filtered(struct flowstore *store, const struct flowstore_filter *filter,
                      har_decode_fn decode, struct har **out, char *err, size_t err_len)
{
    struct har *har = NULL;
    struct flowstore_filter *f;

    *out = NULL;
    if (har_open(store, NULL, 0, decode, &har, err, err_len) != 0)
        return -1;
    f = &har->filter;
    *f = *filter;
    f->before_id = 0;
    f->is_oldest_first = false;
    if (!keep_text(har, 0, &f->host_glob) || !keep_text(har, 1, &f->host_text) ||
        !keep_text(har, 2, &f->method) || !keep_text(har, 3, &f->content_type) ||
        !keep_text(har, 4, &f->url_text))
        goto fail;
    f->expr = NULL;
    f->expr_sql = NULL;
    if (!keep_text(har, 5, &f->expr_text))
        goto fail;
    if (f->expr_text != NULL) {
        /* The caller's compiled filter ends with its request; the export
         * runs on, page by page, with its own. */
        char why[FILTER_ERROR_BYTES];
        if (filter_parse(f->expr_text, strlen(f->expr_text), &har->expr, why, sizeof(why)) != 0 ||
            filter_to_sql(har->expr, &har->expr_sql, why, sizeof(why)) != 0) {
            har_close(har);
            errmsg_set(err, err_len, "har: the filter: %s", why);
            return -1;
        }
        f->expr = har->expr;
        f->expr_sql = &har->expr_sql;
    }
    if (f->body_bytes != NULL && f->body_len > 0) {
        har->body_bytes = malloc(f->body_len);
        if (har->body_bytes == NULL)
            goto fail;
        memcpy(har->body_bytes, f->body_bytes, f->body_len);
        f->body_bytes = har->body_bytes;
    } else {
        f->body_bytes = NULL;
        f->body_len = 0;
    }
    *out = har;
    return 0;
fail:
    har_close(har);
    errmsg_set(err, err_len, "har: out of memory");
    return -1;
}
