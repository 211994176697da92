/*
 * wsframe: see wsframe.h. A byte-at-a-time state machine for the frame head
 * (at most 14 bytes, so the cost does not matter) and a loop over runs of
 * payload bytes. The RFC 6455 sections cited are where each check comes
 * from.
 */
#include "wsframe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGE_START_BYTES 256

void wsframe_init(struct wsframe_parser *p, bool is_from_client, bool allows_rsv1, size_t limit,
                  uint64_t max_message, wsframe_message_fn fn, void *arg)
{
    memset(p, 0, sizeof(*p));
    p->is_from_client = is_from_client;
    p->allows_rsv1 = allows_rsv1;
    p->limit = limit;
    p->max_message = max_message;
    p->fn = fn;
    p->arg = arg;
    p->head_need = 2;
}

void wsframe_free(struct wsframe_parser *p)
{
    free(p->message);
    p->message = NULL;
    p->message_cap = 0;
    p->message_len = 0;
}

const char *wsframe_opcode_name(int opcode)
{
    switch (opcode) {
    case WSFRAME_CONTINUATION:
        return "continuation";
    case WSFRAME_TEXT:
        return "text";
    case WSFRAME_BINARY:
        return "binary";
    case WSFRAME_CLOSE:
        return "close";
    case WSFRAME_PING:
        return "ping";
    case WSFRAME_PONG:
        return "pong";
    default:
        return "reserved";
    }
}

static int fail(struct wsframe_parser *p, int code, const char *why)
{
    p->close_code = code;
    snprintf(p->error, sizeof(p->error), "%s", why);
    return -1;
}

/* One byte through the UTF-8 check (RFC 3629 section 4): *need continuation
 * bytes still expected, the next one within [*lo, *hi]. */
static bool utf8_step(uint8_t *need, uint8_t *lo, uint8_t *hi, unsigned char c)
{
    if (*need > 0) {
        if (c < *lo || c > *hi)
            return false;
        (*need)--;
        *lo = 0x80;
        *hi = 0xbf;
        return true;
    }
    if (c < 0x80)
        return true;
    *lo = 0x80;
    *hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        *need = 1;
    } else if (c == 0xe0) {
        *need = 2;
        *lo = 0xa0; /* no overlong three-byte forms */
    } else if (c == 0xed) {
        *need = 2;
        *hi = 0x9f; /* no surrogates */
    } else if (c >= 0xe1 && c <= 0xef) {
        *need = 2;
    } else if (c == 0xf0) {
        *need = 3;
        *lo = 0x90; /* no overlong four-byte forms */
    } else if (c >= 0xf1 && c <= 0xf3) {
        *need = 3;
    } else if (c == 0xf4) {
        *need = 3;
        *hi = 0x8f; /* nothing past U+10FFFF */
    } else {
        return false;
    }
    return true;
}

bool wsframe_is_utf8(const void *data, size_t len)
{
    const unsigned char *b = data;
    uint8_t need = 0, lo = 0x80, hi = 0xbf;

    for (size_t i = 0; i < len; i++)
        if (!utf8_step(&need, &lo, &hi, b[i]))
            return false;
    return need == 0;
}

static bool is_control(uint8_t opcode)
{
    return (opcode & 0x8) != 0;
}

/* RFC 6455 7.4: the codes an endpoint may send in a Close frame. 1004-1006
 * and 1015 are reserved for reporting, never sent; 1012-1014 were
 * registered with IANA later. */
static bool close_code_is_valid(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* The first two bytes: what can be refused before the length arrives. */
static int check_first_bytes(struct wsframe_parser *p)
{
    uint8_t b0 = p->head[0], b1 = p->head[1];
    uint8_t opcode = b0 & 0x0f;
    bool is_masked = (b1 & 0x80) != 0;
    uint8_t len7 = b1 & 0x7f;

    if (p->has_closed)
        return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "a frame after the Close frame");
    /* 5.2: RSV2 and RSV3 have no meaning without an extension that defines
     * them; RSV1 is permessage-deflate's (RFC 7692 6), on the first frame
     * of a data message only. */
    if (b0 & 0x30)
        return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "reserved bit RSV2 or RSV3 set");
    if (b0 & 0x40) {
        if (!p->allows_rsv1)
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "RSV1 set without permessage-deflate");
        if (opcode == WSFRAME_CONTINUATION || is_control(opcode))
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR,
                        "RSV1 set on a frame that does not start a data message");
    }
    if (opcode != WSFRAME_CONTINUATION && opcode != WSFRAME_TEXT && opcode != WSFRAME_BINARY &&
        opcode != WSFRAME_CLOSE && opcode != WSFRAME_PING && opcode != WSFRAME_PONG)
        return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "reserved opcode");
    /* 5.1 and 5.3: a client masks every frame, a server none. */
    if (p->is_from_client && !is_masked)
        return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "unmasked frame from the client");
    if (!p->is_from_client && is_masked)
        return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "masked frame from the server");
    /* 5.5: control frames are short and never fragmented. */
    if (is_control(opcode)) {
        if (len7 > WSFRAME_MAX_CONTROL_BYTES)
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes");
        if (!(b0 & 0x80))
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "fragmented control frame");
    } else if (opcode == WSFRAME_CONTINUATION) {
        if (!p->is_in_message)
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "continuation frame without a message");
    } else if (p->is_in_message) {
        return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "new data message inside a fragmented one");
    }
    p->opcode = opcode;
    p->is_fin = (b0 & 0x80) != 0;
    p->is_masked = is_masked;
    p->head_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (is_masked ? 4 : 0);
    return 0;
}

/* The whole head is in: the length, then the start of a message. */
static int check_head(struct wsframe_parser *p)
{
    uint8_t len7 = p->head[1] & 0x7f;
    uint64_t len = len7;
    size_t i;

    if (len7 == 126) {
        len = (uint64_t)p->head[2] << 8 | p->head[3];
        if (len < 126)
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "length not in its shortest form");
    } else if (len7 == 127) {
        /* 5.2: the most significant bit of a 64-bit length must be 0. */
        if (p->head[2] & 0x80)
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "64-bit length with its high bit set");
        len = 0;
        for (i = 2; i < 10; i++)
            len = len << 8 | p->head[i];
        if (len <= 0xffff)
            return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "length not in its shortest form");
    }
    if (!is_control(p->opcode)) {
        uint64_t before = p->opcode == WSFRAME_CONTINUATION ? p->message_total : 0;
        if (p->max_message > 0 && (len > p->max_message || before > p->max_message - len))
            return fail(p, WSFRAME_CLOSE_TOO_BIG, "message larger than the relay accepts");
        if (p->opcode != WSFRAME_CONTINUATION) {
            p->is_in_message = true;
            p->message_opcode = p->opcode;
            p->is_message_compressed = (p->head[0] & 0x40) != 0;
            p->message_total = 0;
            p->message_frames = 0;
            p->message_len = 0;
            p->utf8_need = 0;
        }
        p->message_frames++;
        p->message_total += len;
    } else {
        p->control_len = 0;
    }
    p->payload_left = len;
    p->payload_at = 0;
    return 0;
}

/* Keeps n more payload bytes of a data message, up to the limit. */
static void keep_message_bytes(struct wsframe_parser *p, const unsigned char *b, size_t n)
{
    if (p->message_len >= p->limit)
        return;
    if (n > p->limit - p->message_len)
        n = p->limit - p->message_len;
    if (p->message_len + n > p->message_cap) {
        size_t cap = p->message_cap ? p->message_cap : MESSAGE_START_BYTES;
        while (cap < p->message_len + n)
            cap *= 2;
        if (cap > p->limit)
            cap = p->limit;
        unsigned char *grown = realloc(p->message, cap);
        if (grown == NULL)
            return; /* held truncated: total_len still says the size */
        p->message = grown;
        p->message_cap = cap;
    }
    memcpy(p->message + p->message_len, b, n);
    p->message_len += n;
}

/* A run of payload bytes: unmasked in place in a small copy, checked,
 * kept. */
static int take_payload(struct wsframe_parser *p, const unsigned char *in, size_t n)
{
    unsigned char chunk[512];
    const unsigned char *key = p->is_masked ? p->head + p->head_need - 4 : NULL;
    bool is_text =
        !is_control(p->opcode) && p->message_opcode == WSFRAME_TEXT && !p->is_message_compressed;

    while (n > 0) {
        size_t m = n < sizeof(chunk) ? n : sizeof(chunk);
        for (size_t i = 0; i < m; i++)
            chunk[i] = p->is_masked ? in[i] ^ key[(p->payload_at + i) & 3] : in[i];
        if (is_text)
            for (size_t i = 0; i < m; i++)
                if (!utf8_step(&p->utf8_need, &p->utf8_lo, &p->utf8_hi, chunk[i]))
                    return fail(p, WSFRAME_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
        if (is_control(p->opcode)) {
            memcpy(p->control + p->control_len, chunk, m); /* len7 <= 125 was checked */
            p->control_len += m;
        } else {
            keep_message_bytes(p, chunk, m);
        }
        p->payload_at += m;
        p->payload_left -= m;
        in += m;
        n -= m;
    }
    return 0;
}

static void report(struct wsframe_parser *p, const struct wsframe_message *msg)
{
    p->messages++;
    if (p->fn != NULL)
        p->fn(p->arg, msg);
}

/* The frame's payload is all in. */
static int end_frame(struct wsframe_parser *p)
{
    struct wsframe_message msg;

    memset(&msg, 0, sizeof(msg));
    msg.frames = 1;
    if (is_control(p->opcode)) {
        msg.opcode = p->opcode;
        msg.data = p->control;
        msg.len = p->control_len;
        msg.total_len = p->control_len;
        if (p->opcode == WSFRAME_CLOSE) {
            /* 5.5.1: empty, or a code and a UTF-8 reason. */
            msg.close_code = 1005;
            if (p->control_len == 1)
                return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "Close frame with a 1-byte body");
            if (p->control_len >= 2) {
                msg.close_code = p->control[0] << 8 | p->control[1];
                if (!close_code_is_valid(msg.close_code))
                    return fail(p, WSFRAME_CLOSE_PROTOCOL_ERROR, "invalid close code");
                if (!wsframe_is_utf8(p->control + 2, p->control_len - 2))
                    return fail(p, WSFRAME_CLOSE_INVALID_DATA, "invalid UTF-8 in a close reason");
            }
            p->has_closed = true;
        }
        report(p, &msg);
        return 0;
    }
    if (!p->is_fin)
        return 0;
    if (p->message_opcode == WSFRAME_TEXT && !p->is_message_compressed && p->utf8_need != 0)
        return fail(p, WSFRAME_CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence");
    msg.opcode = p->message_opcode;
    msg.is_compressed = p->is_message_compressed;
    /* Never NULL, even for an empty message: callers may memcpy it. */
    msg.data = p->message != NULL ? p->message : (const unsigned char *)"";
    msg.len = p->message_len;
    msg.total_len = p->message_total;
    msg.frames = p->message_frames;
    p->is_in_message = false;
    report(p, &msg);
    p->message_len = 0;
    return 0;
}

int wsframe_feed(struct wsframe_parser *p, const void *data, size_t len, size_t *safe_len)
{
    const unsigned char *b = data;
    size_t i = 0;
    size_t frame_start = 0; /* where the current frame began in this call */
    bool has_frame_start = !p->is_in_payload && p->head_len == 0;

    if (safe_len != NULL)
        *safe_len = 0;
    if (p->close_code != 0)
        return -1;
    while (i < len) {
        if (!p->is_in_payload) {
            if (p->head_len == 0) {
                frame_start = i;
                has_frame_start = true;
            }
            p->head[p->head_len++] = b[i++];
            if (p->head_len == 2 && check_first_bytes(p) < 0)
                goto bad;
            if (p->head_len < 2 || p->head_len < p->head_need)
                continue;
            if (check_head(p) < 0)
                goto bad;
            p->is_in_payload = true;
        } else {
            uint64_t left = p->payload_left;
            size_t n = left < (uint64_t)(len - i) ? (size_t)left : len - i;
            if (take_payload(p, b + i, n) < 0)
                goto bad;
            i += n;
        }
        if (p->is_in_payload && p->payload_left == 0) {
            if (end_frame(p) < 0)
                goto bad;
            p->is_in_payload = false;
            p->head_len = 0;
            p->head_need = 2;
        }
    }
    if (safe_len != NULL)
        *safe_len = len;
    return 0;
bad:
    if (safe_len != NULL)
        *safe_len = has_frame_start ? frame_start : 0;
    return -1;
}

bool wsframe_at_boundary(const struct wsframe_parser *p)
{
    return !p->is_in_payload && p->head_len == 0;
}

size_t wsframe_close_frame(unsigned char out[WSFRAME_CLOSE_FRAME_BYTES], int code,
                           const char *reason, bool is_masked, const unsigned char mask_key[4])
{
    size_t reason_len = reason != NULL ? strlen(reason) : 0;
    size_t n = 0, body_at;

    if (reason_len > WSFRAME_MAX_CONTROL_BYTES - 2)
        reason_len = WSFRAME_MAX_CONTROL_BYTES - 2;
    /* Back off to a character boundary: the reason must stay UTF-8. */
    while (reason_len > 0 && !wsframe_is_utf8(reason, reason_len))
        reason_len--;
    out[n++] = 0x80 | WSFRAME_CLOSE;
    out[n++] = (unsigned char)((is_masked ? 0x80 : 0) | (2 + reason_len));
    if (is_masked) {
        memcpy(out + n, mask_key, 4);
        n += 4;
    }
    body_at = n;
    out[n++] = (unsigned char)(code >> 8);
    out[n++] = (unsigned char)(code & 0xff);
    if (reason_len > 0)
        memcpy(out + n, reason, reason_len);
    n += reason_len;
    if (is_masked)
        for (size_t i = body_at; i < n; i++)
            out[i] ^= mask_key[(i - body_at) & 3];
    return n;
}
