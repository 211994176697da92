/*
 * flow: the record of one captured exchange ("flow") as the proxy threads
 * fill it and the flow store writes and reads it back.
 *
 * A flow belongs to one thread at a time: the connection thread that fills
 * it, then the flow writer once flowstore_submit() took it. Nothing here
 * locks, does I/O or knows SQL.
 */
#ifndef TAPWIRE_FLOW_H
#define TAPWIRE_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A captured body: the first bytes up to the capture limit, and the size of
 * the whole body. */
struct flow_body {
    unsigned char *data; /* owned; NULL when empty */
    size_t len;          /* bytes held in data */
    size_t limit;        /* capture limit: stop holding bytes past this */
    uint64_t size;       /* bytes the whole body had */
    bool truncated;      /* size > len */
    size_t capacity;     /* bytes allocated for data; grows by doubling up to limit */
};

/* Appends to body, holding at most body->limit bytes. Returns 0 or -1 (out of
 * memory: the body is then marked truncated). */
int flow_body_append(struct flow_body *body, const void *data, size_t len);

/* Timings in microseconds since the Unix epoch; 0 when a step did not happen. */
struct flow_timings {
    int64_t start;        /* request head complete */
    int64_t connected;    /* upstream TCP connected */
    int64_t tls_done;     /* upstream TLS handshake done */
    int64_t request_sent; /* request body fully sent upstream */
    int64_t first_byte;   /* first byte of the response head */
    int64_t done;         /* response fully sent to the client */
};

struct flow_tls {
    char client_sni[256];
    char client_alpn[32];
    char client_version[16]; /* "TLSv1.3" */
    char client_cipher[64];
    char upstream_version[16];
    char upstream_cipher[64];
    char *cert_subject;     /* owned, may be NULL: upstream certificate */
    char *cert_issuer;      /* owned, may be NULL */
    char *cert_sans;        /* owned, may be NULL: "DNS:a, DNS:b, IP:1.2.3.4" */
    int64_t cert_not_after; /* unix seconds, 0 if unknown */
    char *verification;     /* owned, may be NULL: "ok", "not verified (--insecure): ...",
                               or the failure reason */
    /* Owned, may be NULL: set by flow_tls_copy(); the four strings above
     * then point into it and are not allocations of their own. */
    char *strings;
};

/* Copies src into dst (which owns nothing yet) with its four strings in one
 * allocation: a flow is freed by the flow writer, not by the thread that
 * made it, and every allocation handed across costs both threads. The
 * strings are NULL when out of memory. */
void flow_tls_copy(struct flow_tls *dst, const struct flow_tls *src);
/* Frees the strings tls owns (packed by flow_tls_copy() or not). */
void flow_tls_clear(struct flow_tls *tls);

/*
 * Where a recorded header section's Content-Type and Content-Encoding values
 * are, noted by the proxy thread that builds the section from its parsed
 * head (exchange_headers_text), where finding them is a length compare per
 * field: the flow writer then binds them as they are instead of walking the
 * text again, which was about 6% of its work. text names the section the
 * offsets are into; whoever replaces a noted section (rules reframing a
 * body) notes the new one or sets text to NULL, and the writer uses the
 * facts only while text is the flow's section, else walks the text as it
 * does for a section nobody noted.
 */
struct flow_header_facts {
    const char *text;         /* the section described; NULL: nothing noted */
    uint32_t content_type_at; /* the first Content-Type's value: offset, length */
    uint32_t content_type_len;
    bool has_content_type;
    uint32_t content_encoding_at; /* the only Content-Encoding's value */
    uint32_t content_encoding_len;
    bool has_content_encoding;
    bool has_more_encodings; /* several Content-Encoding fields: the writer joins them */
};

enum flow_kind { FLOW_HTTP = 0, FLOW_TUNNEL = 1, FLOW_WEBSOCKET = 2 };

/* The WebSocket messages a flow keeps: past either bound they are counted,
 * not kept, so a long-lived chatty connection costs bounded memory. */
#define FLOW_WS_MAX_MESSAGES 10000
#define FLOW_WS_MAX_BYTES (16 * 1024 * 1024)

/* Stored as ws_messages.flags (sql/schema.sql, version 10). */
#define FLOW_WS_COMPRESSED 1 /* sent with permessage-deflate */
#define FLOW_WS_DECODED 2    /* data is the decompressed payload */
#define FLOW_WS_TRUNCATED 4  /* data is not the whole payload */

/* One WebSocket message (RFC 6455 opcode 1, 2, 8, 9, 10). */
struct flow_ws_message {
    int64_t time_us;     /* its last byte arrived */
    uint64_t size;       /* payload bytes on the wire */
    unsigned char *data; /* owned, NULL when len is 0 */
    size_t len;
    int opcode;
    int flags; /* FLOW_WS_* */
    bool is_from_client;
};

struct flow_ws {
    struct flow_ws_message *items; /* owned */
    size_t count, capacity;
    size_t bytes;     /* data held by all of them */
    uint64_t dropped; /* past the bounds: not kept */
};

/*
 * A WebSocket flow written while its connection lives (capture.c): its row
 * goes in at the first message (FLOW_LIVE_OPEN, a snapshot), its messages
 * follow in batches (FLOW_LIVE_MESSAGES: a flow that carries only them),
 * and the finished flow replaces the row (FLOW_LIVE_FINAL). Every part
 * holds a reference; the flow writer takes them in order, so it alone
 * reads and writes id and messages_written.
 */
struct flow_live {
    int64_t id;                /* the row, once written; 0 before (or lost) */
    uint64_t messages_written; /* seq of the next message */
    int refs;                  /* atomic */
};
enum flow_live_part { FLOW_LIVE_NONE = 0, FLOW_LIVE_OPEN, FLOW_LIVE_MESSAGES, FLOW_LIVE_FINAL };

/* A new live record with one reference; NULL when out of memory. */
struct flow_live *flow_live_new(void);
/* Another reference to live. */
struct flow_live *flow_live_ref(struct flow_live *live);
/* Drops a reference; the last frees it. NULL is fine. */
void flow_live_release(struct flow_live *live);

/* Appends a copy of m (and of its data) to ws, within FLOW_WS_MAX_*.
 * Returns 0, or -1 when it was dropped (bounds, out of memory). */
int flow_ws_append(struct flow_ws *ws, const struct flow_ws_message *m);
/* Frees what ws holds and empties it. */
void flow_ws_clear(struct flow_ws *ws);

struct flow {
    int64_t id; /* assigned when written; 0 before */
    enum flow_kind kind;
    char client_addr[64];
    char scheme[8]; /* "http", "https" */
    char method[32];
    char host[256];
    uint16_t port;
    char *target;        /* owned: path and query as sent (origin-form) */
    int request_version; /* 10, 11, 20 (HTTP/2); see flow_version_text() */
    int response_version;
    /* Header sections exactly as received, "Name: value\r\n" per field, in
     * original order and case, without the start line. Owned, may be NULL. */
    char *request_headers;
    char *response_headers;
    struct flow_header_facts request_facts; /* about request_headers, when noted */
    struct flow_header_facts response_facts;
    struct flow_body request_body;
    struct flow_body response_body;
    int status; /* 0 when no response */
    char reason[64];
    struct flow_timings timings;
    bool is_tls;
    struct flow_tls tls;
    char *error;                   /* owned, may be NULL */
    char *rules;                   /* owned, may be NULL: ids/names of rules that changed it */
    uint64_t bytes_up, bytes_down; /* tunnels and upgrades: raw bytes relayed */

    /* What rewrite rules changed. The fields above hold what was sent on
     * (the rewritten target, headers and bodies); these hold what arrived,
     * set only for the parts a rule changed (NULL / size 0 otherwise). */
    char *target_original;           /* owned, may be NULL */
    char *request_headers_original;  /* owned, may be NULL */
    char *response_headers_original; /* owned, may be NULL */
    bool has_request_body_original;  /* request_body_original is meaningful */
    bool has_response_body_original;
    struct flow_body request_body_original; /* as received, decoded: same limits */
    struct flow_body response_body_original;
    char *rules_notes;      /* owned, may be NULL: why a matching rule did not apply
                               (body over --rewrite-limit, decode failure, regex limit) */
    struct flow_ws ws;      /* kind FLOW_WEBSOCKET: its messages, in order */
    struct flow_live *live; /* a reference, or NULL: see struct flow_live */
    enum flow_live_part live_part;
    int64_t replay_of; /* a replay: the flow whose request it sent again; 0: none */
    bool is_imported;  /* from a HAR file (har_import()), not captured */
    /* The way the client came in (capture.h): "proxy", "socks5",
     * "transparent", "reverse", "replay"; "" when unknown (stored as NULL). */
    char listener[16];
    /* The record was kept but the bodies (and WebSocket message data) were
     * given up: the writer's queue held its byte bound, or the disk had room
     * for the records only (flowstore.h). The bodies' sizes stay; their
     * bytes are gone. */
    bool are_bodies_dropped;
    /* The flow, its strings and its bodies lie in one allocation
     * (flow_pack()) of packed_bytes: none of them is freed or grown on its
     * own. */
    bool is_packed;
    size_t packed_bytes;
    /* A packed flow in a block lent by the flow store's ring (flowring.h):
     * flow_free() sets this flag rather than free the block. NULL for a
     * block of its own. */
    int *given_back;
};

/*
 * flow moved into one allocation: the record, its strings, its TLS strings
 * and its bodies. Why: the flow writer frees
 * every flow a connection thread built, and glibc's malloc serves a thread
 * fast only from what that thread freed; a flow freed piece by piece on
 * another thread made each of its half a dozen allocations a slow one and
 * each free a lock on the maker's arena. Packed on the connection thread,
 * the pieces go back where they came from and the writer frees one block.
 * Returns the packed flow, flow itself freed; returns flow unchanged when
 * its bodies hold more than FLOW_PACK_BODY_MAX_BYTES (the copy would cost
 * more than it saves), when it carries WebSocket messages, or when memory
 * is short. A packed flow packs again, into a block of the size it needs
 * now (after its bodies were dropped, say).
 */
#define FLOW_PACK_BODY_MAX_BYTES (8 * 1024)
struct flow *flow_pack(struct flow *flow);
/* The bytes flow_pack() would make flow's block; 0 when it would not pack
 * it. */
size_t flow_pack_bytes(const struct flow *flow);
/* flow_pack() into block, of flow_pack_bytes(flow), which someone else
 * owns: freeing the packed flow stores 1 in *given_back (flowring.h)
 * rather than free the block; NULL: the block is the flow's own. flow
 * keeps its pieces (free it after) but not its live reference. */
struct flow *flow_pack_into(struct flow *flow, void *block, size_t bytes, int *given_back);

/* A packed flow's block was copied to flow from the address was (the
 * flow spool wrote it to disk and read it back): its pointers into the
 * block are moved along with it; the others (live) stay as they are. */
void flow_packed_moved(struct flow *flow, uintptr_t was);

/* This build's layout of struct flow, as a number: a packed block written
 * to a file by another process (flowspool.h, after a crash) is read back
 * only when its writer's layout was the same. */
uint32_t flow_packed_layout(void);

/* Whether a packed flow read back from a file and moved
 * (flow_packed_moved()) holds together: every pointer but live NULL or
 * into the block, every string and body ending inside it, header facts
 * within their section, no WebSocket messages; its fixed-size strings are
 * cut at their last byte and its bools made true or false (first: a bool
 * holding another byte is undefined). live is not looked at. A file may
 * end in a torn or stale block: this keeps such a block from being read
 * as a flow. */
bool flow_packed_is_whole(struct flow *flow);

/* The bytes of every string flow holds (its TLS strings too), each with its
 * NUL: what flow_pack() copies besides the record and the bodies. */
size_t flow_strings_bytes(const struct flow *flow);

/* Gives up flow's body bytes and its WebSocket messages' data, keeping
 * everything else (the bodies' sizes too), and says so in the flow
 * (are_bodies_dropped). Returns the flow: a packed one is packed again, so
 * that the bytes are given back at once. */
struct flow *flow_drop_bodies(struct flow *flow);

/* A copy of flow's request and response as they are (target, header
 * sections, status, timings so far), without bodies, TLS facts, what rules
 * changed or messages: the row of a flow still going on. Caller frees with
 * flow_free(); NULL when out of memory. */
struct flow *flow_snapshot(const struct flow *flow);

/* Allocates a zeroed flow with both body limits set. NULL when out of
 * memory. Whoever holds it frees it with flow_free(), or hands it to
 * flowstore_submit(), which then owns it. */
struct flow *flow_new(size_t capture_limit);
void flow_free(struct flow *flow);

/*
 * Walks a header section as stored ("Name: value\r\n" per field). Returns
 * true with the field at *pos (pointers into text, not NUL-terminated; the
 * value without surrounding blanks) and moves *pos past it; false at the end.
 * Start with *pos = 0.
 */
bool flow_headers_next(const char *text, size_t *pos, const char **name, size_t *name_len,
                       const char **value, size_t *value_len);

/* True when data is valid UTF-8 without NUL bytes, i.e. can be shown and
 * exported as text rather than base64. */
bool flow_is_text(const void *data, size_t len);
/* A NUL-terminated copy of len bytes of text in which every byte that is not
 * part of valid UTF-8 (obs-text in a header, say) became U+FFFD; *out_len
 * gets its length. Caller frees with free(); NULL when out of memory. */
char *flow_text_utf8(const char *text, size_t len, size_t *out_len);

/* "HTTP/1.1", "HTTP/1.0", "HTTP/2" for a version (10, 11, 20), as HAR and
 * the database write it; a constant, or buf when another. */
const char *flow_version_text(int version, char *buf, size_t len);
/* The version of such a text: 0 when it is none. */
int flow_version_parse(const char *text);

#endif
