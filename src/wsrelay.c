/*
 * wsrelay: see wsrelay.h. stream_relay_tapped() moves the bytes; the tap
 * here parses each chunk before it goes on, so a bad frame is caught before
 * any of it passes (when it begins in that chunk).
 */
#include "wsrelay.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <openssl/rand.h>

#include "clock.h"
#include "wsframe.h"

struct direction {
    struct wsframe_parser parser;
    struct wsinflate inflater;
    bool is_deflate;
    bool is_from_client;
    bool is_forwarded_at_boundary; /* the peer got whole frames only */
    const struct wsrelay_config *cfg;
    uint64_t messages;
};

struct relay {
    struct direction up, down; /* client -> server, server -> client */
    struct direction *failed;
};

/* "websocket" among the Upgrade field's comma-separated protocols. */
static bool upgrade_names_websocket(const struct message_field *f)
{
    const char *p = f->value, *end = f->value + f->value_len;

    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        if (e == NULL)
            e = end;
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        size_t n = (size_t)(e - s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        /* A version ("websocket/13") is not used, but allowed. */
        if (n >= 9 && strncasecmp(s, "websocket", 9) == 0 && (n == 9 || s[9] == '/'))
            return true;
        p = e + 1;
    }
    return false;
}

bool wsrelay_is_websocket(const struct message *resp, struct wsinflate_params *params)
{
    bool is_ws = false;

    memset(params, 0, sizeof(*params));
    if (resp->status != 101)
        return false;
    for (size_t i = 0; i < resp->fields.count; i++)
        if (message_field_is(&resp->fields.items[i], "Upgrade") &&
            upgrade_names_websocket(&resp->fields.items[i]))
            is_ws = true;
    if (is_ws)
        wsinflate_params_parse(resp, params);
    return is_ws;
}

static void on_frame_message(void *arg, const struct wsframe_message *fm)
{
    struct direction *d = arg;
    struct wsrelay_message m;

    d->messages++;
    if (d->cfg->message == NULL)
        return;
    memset(&m, 0, sizeof(m));
    m.is_from_client = d->is_from_client;
    m.opcode = fm->opcode;
    m.is_compressed = fm->is_compressed;
    m.time_us = clock_wall_us();
    m.data = fm->data;
    m.len = fm->len;
    m.total_len = fm->total_len;
    m.close_code = fm->close_code;
    m.is_truncated = fm->len < fm->total_len;
    if (fm->is_compressed && d->is_deflate) {
        const unsigned char *out;
        size_t out_len;
        bool is_truncated;
        if (wsinflate_message(&d->inflater, fm->data, fm->len, fm->len == fm->total_len, &out,
                              &out_len, &is_truncated) == 0) {
            m.data = out;
            m.len = out_len;
            m.is_decoded = true;
            m.is_truncated = is_truncated;
        }
    }
    d->cfg->message(d->cfg->arg, &m);
}

static int tap(void *arg, bool is_a_to_b, const char *data, size_t len, size_t *pass)
{
    struct relay *r = arg;
    struct direction *d = is_a_to_b ? &r->up : &r->down;
    bool was_at_boundary = wsframe_at_boundary(&d->parser);

    if (wsframe_feed(&d->parser, data, len, pass) == 0)
        return 0;
    /* The peer got whole frames when the bad one starts in this chunk: the
     * bytes before it go, the rest not. */
    d->is_forwarded_at_boundary = *pass > 0 || was_at_boundary;
    r->failed = d;
    return -1;
}

static void on_quiet(void *arg)
{
    struct relay *r = arg;

    r->up.cfg->quiet(r->up.cfg->arg);
}

/* Sends a Close frame to s, masked when it goes to the server (RFC 6455
 * 5.3: tapwire is the client there). */
static void send_close(struct stream *s, int code, const char *reason, bool is_to_server,
                       int timeout_ms)
{
    unsigned char frame[WSFRAME_CLOSE_FRAME_BYTES];
    unsigned char key[4] = {0, 0, 0, 0};
    size_t n;

    if (is_to_server && RAND_bytes(key, sizeof(key)) != 1)
        memset(key, 0x5a, sizeof(key)); /* still a valid frame */
    n = wsframe_close_frame(frame, code, reason, is_to_server, key);
    if (stream_put(s, frame, n, timeout_ms) == STREAM_OK)
        stream_flush(s, timeout_ms);
}

static void init_direction(struct direction *d, bool is_from_client,
                           const struct wsinflate_params *params, const struct wsrelay_config *cfg)
{
    bool no_takeover =
        is_from_client ? params->client_no_context_takeover : params->server_no_context_takeover;

    memset(d, 0, sizeof(*d));
    d->is_from_client = is_from_client;
    d->is_deflate = params->is_deflate;
    d->cfg = cfg;
    wsframe_init(&d->parser, is_from_client, params->is_deflate, cfg->limit,
                 WSRELAY_MAX_MESSAGE_BYTES, on_frame_message, d);
    wsinflate_init(&d->inflater, no_takeover, cfg->limit);
}

int wsrelay_run(struct stream *client, struct stream *server, const struct wsinflate_params *params,
                const struct wsrelay_config *cfg, struct wsrelay_result *res)
{
    struct relay r;
    struct stream_tap t = {.fn = tap, .arg = &r};

    if (cfg->quiet != NULL) {
        t.tick = on_quiet;
        t.tick_ms = WSRELAY_QUIET_MS;
    }
    int rc;

    memset(res, 0, sizeof(*res));
    memset(&r, 0, sizeof(r));
    init_direction(&r.up, true, params, cfg);
    init_direction(&r.down, false, params, cfg);
    rc = stream_relay_tapped(client, server, cfg->idle_timeout_ms, &res->bytes_up, &res->bytes_down,
                             &t);
    if (rc == STREAM_TAP_STOPPED && r.failed != NULL) {
        struct direction *bad = r.failed;
        struct direction *other = bad == &r.up ? &r.down : &r.up;
        struct stream *offender = bad->is_from_client ? client : server;
        struct stream *innocent = bad->is_from_client ? server : client;

        res->close_code = bad->parser.close_code;
        res->is_client_at_fault = bad->is_from_client;
        snprintf(res->error, sizeof(res->error), "the %s broke RFC 6455: %s (closed with %d)",
                 bad->is_from_client ? "client" : "origin", bad->parser.error,
                 bad->parser.close_code);
        /* The offender reads what the other direction forwarded; the
         * innocent side what the bad direction did. */
        if (wsframe_at_boundary(&other->parser))
            send_close(offender, bad->parser.close_code, bad->parser.error, !bad->is_from_client,
                       cfg->idle_timeout_ms);
        if (bad->is_forwarded_at_boundary)
            send_close(innocent, WSFRAME_CLOSE_GOING_AWAY, "the peer broke the protocol",
                       bad->is_from_client, cfg->idle_timeout_ms);
        rc = -1;
    } else if (rc < 0 && rc != STREAM_TIMEOUT) {
        snprintf(res->error, sizeof(res->error), "upgraded connection ended: %s",
                 stream_status_text(rc));
        rc = -1;
    } else {
        rc = 0;
    }
    res->messages_up = r.up.messages;
    res->messages_down = r.down.messages;
    wsframe_free(&r.up.parser);
    wsframe_free(&r.down.parser);
    wsinflate_free(&r.up.inflater);
    wsinflate_free(&r.down.inflater);
    return rc;
}
