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

struct flow {
    int64_t id; /* assigned when written; 0 before */
    enum flow_kind kind;
    char client_addr[64];
    char scheme[8]; /* "http", "https" */
    char method[32];
    char host[256];
    uint16_t port;
    char *target; /* owned: path and query as sent (origin-form) */
    int request_version_minor;
    int response_version_minor;
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
    char *rules_notes; /* owned, may be NULL: why a matching rule did not apply
                          (body over --rewrite-limit, decode failure, regex limit) */
    bool is_imported;  /* from a HAR file (har_import()), not captured */
};

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

#endif
