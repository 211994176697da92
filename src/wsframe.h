/*
 * wsframe: an incremental RFC 6455 frame parser for one direction of a
 * WebSocket connection. Bytes are fed as they arrive, in pieces of any size;
 * each complete message (a data message after its last fragment, or a
 * control frame) is reported through a callback with its payload unmasked,
 * held up to a limit. It checks what RFC 6455 section 5 requires of the
 * sender (masking by side, reserved bits, opcodes, control frame rules,
 * fragmentation order, minimal 64-bit lengths with the high bit clear, close
 * codes) and UTF-8 in text messages and close reasons, and on the first
 * violation stops with the close code the RFC gives (1002, 1007, 1009).
 *
 * It never allocates per frame: one message buffer, grown up to the limit
 * and reused, and a fixed control frame buffer. It does no I/O and never
 * writes to the peer; wsframe_close_frame() builds a Close frame for whoever
 * does. Nothing here is shared between threads.
 */
#ifndef TAPWIRE_WSFRAME_H
#define TAPWIRE_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSFRAME_MAX_CONTROL_BYTES 125 /* RFC 6455 5.5 */
#define WSFRAME_MAX_HEAD_BYTES 14     /* 2 + 8 (64-bit length) + 4 (mask key) */
/* A Close frame as wsframe_close_frame() makes it: head, mask, code, reason. */
#define WSFRAME_CLOSE_FRAME_BYTES (WSFRAME_MAX_HEAD_BYTES + WSFRAME_MAX_CONTROL_BYTES)

enum wsframe_opcode {
    WSFRAME_CONTINUATION = 0x0,
    WSFRAME_TEXT = 0x1,
    WSFRAME_BINARY = 0x2,
    WSFRAME_CLOSE = 0x8,
    WSFRAME_PING = 0x9,
    WSFRAME_PONG = 0xa,
};

/* Close codes (RFC 6455 7.4.1) tapwire sends or reports. */
enum wsframe_close_code {
    WSFRAME_CLOSE_NORMAL = 1000,
    WSFRAME_CLOSE_GOING_AWAY = 1001,
    WSFRAME_CLOSE_PROTOCOL_ERROR = 1002,
    WSFRAME_CLOSE_INVALID_DATA = 1007, /* bad UTF-8 in a text message */
    WSFRAME_CLOSE_TOO_BIG = 1009,
};

/* One complete message, valid only during the callback. */
struct wsframe_message {
    enum wsframe_opcode opcode; /* TEXT, BINARY, CLOSE, PING or PONG */
    bool is_compressed;         /* RSV1 on its first frame (permessage-deflate) */
    const unsigned char *data;  /* the payload, unmasked, up to the limit */
    size_t len;                 /* bytes in data */
    uint64_t total_len;         /* the whole payload on the wire */
    unsigned frames;            /* frames it came in */
    int close_code;             /* CLOSE: its code, 1005 when it had none */
};

typedef void (*wsframe_message_fn)(void *arg, const struct wsframe_message *msg);

struct wsframe_parser {
    /* Settings, from wsframe_init(). */
    bool is_from_client;   /* client frames must be masked, server frames not */
    bool allows_rsv1;      /* permessage-deflate was negotiated */
    size_t limit;          /* payload bytes held per message */
    uint64_t max_message;  /* a longer message fails with 1009 */
    wsframe_message_fn fn; /* may be NULL */
    void *arg;

    /* The frame being read. */
    unsigned char head[WSFRAME_MAX_HEAD_BYTES];
    size_t head_len, head_need;
    bool is_in_payload;
    uint8_t opcode;
    bool is_fin, is_masked;
    uint64_t payload_left;
    uint64_t payload_at; /* payload bytes of this frame seen: the mask phase */

    /* The data message being assembled. */
    bool is_in_message;
    uint8_t message_opcode;
    bool is_message_compressed;
    uint64_t message_total;
    unsigned message_frames;
    unsigned char *message; /* owned; grows up to limit and is reused */
    size_t message_len, message_cap;
    uint8_t utf8_need, utf8_lo, utf8_hi; /* the UTF-8 check across fragments */

    unsigned char control[WSFRAME_MAX_CONTROL_BYTES];
    size_t control_len;

    bool has_closed; /* a Close frame went by: nothing may follow */
    uint64_t messages;
    /* Set by the first violation; feeding stops there. */
    int close_code;
    char error[128];
};

/* Prepares p for the frames one side sends. limit bounds the bytes held
 * per message; max_message (0: no bound but the 63-bit length) the size of a
 * whole message. Cannot fail: the buffer is allocated on use. */
void wsframe_init(struct wsframe_parser *p, bool is_from_client, bool allows_rsv1, size_t limit,
                  uint64_t max_message, wsframe_message_fn fn, void *arg);
/* Frees the message buffer. p may be fed again only after wsframe_init(). */
void wsframe_free(struct wsframe_parser *p);

/*
 * Parses len more bytes, reporting each complete message. Returns 0, or -1
 * at a violation (p->close_code and p->error say which; every later call
 * returns -1 at once) or when out of memory (close code 1011 is not used:
 * the message is then held truncated instead). *safe_len, when not NULL,
 * gets how many of these bytes come before the offending frame (all of them
 * on success; 0 when that frame began in an earlier call), so a relay can
 * pass on exactly the frames that were good.
 */
int wsframe_feed(struct wsframe_parser *p, const void *data, size_t len, size_t *safe_len);

/* True when every byte fed so far ends a frame: a frame of our own (a
 * Close) may be sent on the same stream without cutting into one. */
bool wsframe_at_boundary(const struct wsframe_parser *p);

/*
 * Writes a Close frame with code and reason (cut to fit, not cut inside a
 * UTF-8 sequence) into out, masked with mask_key when is_masked (a frame
 * tapwire sends to the server as the client), else unmasked. Returns its
 * length (at most WSFRAME_CLOSE_FRAME_BYTES).
 */
size_t wsframe_close_frame(unsigned char out[WSFRAME_CLOSE_FRAME_BYTES], int code,
                           const char *reason, bool is_masked, const unsigned char mask_key[4]);

/* True when data is valid UTF-8 (RFC 3629: no overlongs, no surrogates). */
bool wsframe_is_utf8(const void *data, size_t len);

/* "text", "binary", "close", "ping", "pong", "continuation" or "reserved". */
const char *wsframe_opcode_name(int opcode);

#endif
