/*
 * wsinflate: see wsinflate.h. zlib's raw inflate (no zlib or gzip wrapper)
 * with the largest window, which decodes whatever window size the peers
 * agreed on (RFC 7692 7.1.2: max_window_bits only ever shrinks it).
 */
#include "wsinflate.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OUT_START_BYTES 4096

/* The next element of a comma- or semicolon-separated list in [*p, end),
 * blanks trimmed; *sep gets the separator that ended it (0 at the end). */
static bool next_item(const char **p, const char *end, const char **item, size_t *len, char *sep)
{
    const char *s = *p, *e;

    if (s >= end)
        return false;
    e = s;
    while (e < end && *e != ',' && *e != ';')
        e++;
    *sep = e < end ? *e : 0;
    *p = e < end ? e + 1 : end;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *item = s;
    *len = (size_t)(e - s);
    return true;
}

static bool item_is(const char *item, size_t len, const char *name)
{
    size_t n = strlen(name);
    /* A parameter may carry a value ("client_max_window_bits=10"). */
    return len >= n && strncasecmp(item, name, n) == 0 && (len == n || item[n] == '=');
}

void wsinflate_params_parse(const struct message *resp, struct wsinflate_params *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < resp->fields.count; i++) {
        const struct message_field *f = &resp->fields.items[i];
        const char *p = f->value, *end = f->value + f->value_len, *item;
        size_t len;
        char sep;
        bool is_first = true, is_ours = false;

        if (!message_field_is(f, "Sec-WebSocket-Extensions"))
            continue;
        /* "name; param; param, name; param": the first item of each
         * comma-separated element names the extension. */
        while (next_item(&p, end, &item, &len, &sep)) {
            if (is_first) {
                is_ours = item_is(item, len, "permessage-deflate");
                if (is_ours)
                    out->is_deflate = true;
            } else if (is_ours && item_is(item, len, "client_no_context_takeover")) {
                out->client_no_context_takeover = true;
            } else if (is_ours && item_is(item, len, "server_no_context_takeover")) {
                out->server_no_context_takeover = true;
            }
            is_first = sep == ',';
        }
    }
}

void wsinflate_init(struct wsinflate *w, bool no_context_takeover, size_t limit)
{
    memset(w, 0, sizeof(*w));
    w->no_context_takeover = no_context_takeover;
    w->limit = limit;
}

void wsinflate_free(struct wsinflate *w)
{
    if (w->is_open)
        inflateEnd(&w->z);
    w->is_open = false;
    free(w->out);
    w->out = NULL;
    w->out_cap = 0;
}

/* Runs inflate over in until it is used up or the output is full. Returns
 * Z_OK, Z_BUF_ERROR (needs more input: fine at a message end), or an error. */
static int run_inflate(struct wsinflate *w, const unsigned char *in, size_t len, size_t *out_len)
{
    int zr = Z_OK;

    w->z.next_in = (unsigned char *)in;
    w->z.avail_in = (uInt)len;
    while (w->z.avail_in > 0 && *out_len < w->limit) {
        if (*out_len == w->out_cap) {
            size_t cap = w->out_cap ? w->out_cap * 2 : OUT_START_BYTES;
            if (cap > w->limit)
                cap = w->limit;
            unsigned char *grown = realloc(w->out, cap);
            if (grown == NULL)
                return Z_MEM_ERROR;
            w->out = grown;
            w->out_cap = cap;
        }
        w->z.next_out = w->out + *out_len;
        w->z.avail_out = (uInt)(w->out_cap - *out_len);
        zr = inflate(&w->z, Z_SYNC_FLUSH);
        *out_len = w->out_cap - w->z.avail_out;
        if (zr == Z_STREAM_END || (zr != Z_OK && zr != Z_BUF_ERROR))
            break;
        if (zr == Z_BUF_ERROR && w->z.avail_out > 0)
            break;
    }
    return zr;
}

int wsinflate_message(struct wsinflate *w, const unsigned char *in, size_t len, bool is_whole,
                      const unsigned char **out, size_t *out_len, bool *is_truncated)
{
    /* RFC 7692 7.2.2: the sender removed the empty stored block's tail. */
    static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
    size_t n = 0;
    int zr;

    *out = NULL;
    *out_len = 0;
    *is_truncated = !is_whole;
    if (w->is_out_of_step || w->limit == 0 || len > (size_t)UINT32_MAX)
        return -1;
    if (!w->is_open) {
        memset(&w->z, 0, sizeof(w->z));
        if (inflateInit2(&w->z, -15) != Z_OK)
            return -1;
        w->is_open = true;
    } else if (w->no_context_takeover && inflateReset(&w->z) != Z_OK) {
        return -1;
    }
    zr = run_inflate(w, in, len, &n);
    if (zr != Z_OK && zr != Z_BUF_ERROR && zr != Z_STREAM_END) {
        w->is_out_of_step = true;
        return -1;
    }
    if (w->z.avail_in > 0 || n >= w->limit) {
        /* Stopped at the limit: the rest of this message never went
         * through the window. */
        *is_truncated = true;
    } else if (is_whole && zr != Z_STREAM_END) {
        zr = run_inflate(w, tail, sizeof(tail), &n);
        if (zr != Z_OK && zr != Z_BUF_ERROR && zr != Z_STREAM_END) {
            w->is_out_of_step = true;
            return -1;
        }
        if (w->z.avail_in > 0)
            *is_truncated = true;
    }
    if (zr == Z_STREAM_END && !w->no_context_takeover)
        /* A final block ends the deflate stream; the sender starts a new
         * one (and a new window) with the next message. */
        inflateReset(&w->z);
    if (*is_truncated && !w->no_context_takeover)
        w->is_out_of_step = true;
    *out = w->out;
    *out_len = n;
    return 0;
}
