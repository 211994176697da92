/*
 * http1: a strict RFC 9112 message parser and a few writer helpers.
 *
 * Hand-written on purpose: Debian's http-parser is unmaintained upstream, and
 * a proxy needs strict, allocation-free framing decisions it can trust (every
 * ambiguity that could smuggle a request is refused here, never forwarded).
 * The module does no I/O and never allocates: heads are parsed in place from
 * the caller's buffer and every pointer in struct http1_head points into it.
 */
#ifndef TAPWIRE_HTTP1_H
#define TAPWIRE_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

#define HTTP1_MAX_REQUEST_LINE_BYTES 8192 /* longer -> 414 */
#define HTTP1_MAX_HEAD_BYTES 65536        /* whole head incl. start line -> 431 */
#define HTTP1_MAX_HEADERS 128             /* more header fields -> 431 */
#define HTTP1_MAX_CHUNK_LINE_BYTES 4096   /* chunk-size line incl. extensions */
#define HTTP1_MAX_TRAILER_BYTES 16384     /* trailer section of a chunked body */

/* Return values of the parse functions (a positive value is a byte count). */
#define HTTP1_INCOMPLETE 0 /* need more bytes; nothing consumed */
#define HTTP1_ERROR (-1)   /* see struct http1_error */

/* A parsed field is a message field (message.h), so a parsed head is read
 * as a message without copying a field; values have their leading and
 * trailing OWS trimmed. */

enum http1_framing {
    HTTP1_BODY_NONE,        /* no body (e.g. GET without CL, HEAD/204/304/1xx response) */
    HTTP1_BODY_LENGTH,      /* exactly content_length bytes */
    HTTP1_BODY_CHUNKED,     /* chunked transfer coding (last coding) */
    HTTP1_BODY_UNTIL_CLOSE, /* responses only: read until the peer closes */
};

struct http1_head {
    /* request line */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* status line */
    int status;
    const char *reason;
    size_t reason_len;

    int version_minor; /* HTTP/1.<version_minor>: 0 or 1 */
    struct message_field headers[HTTP1_MAX_HEADERS];
    size_t num_headers;
    size_t head_len; /* bytes of the head including the final CRLFCRLF */

    /* Derived from the fields, per RFC 9112 section 6 and 9.3. */
    enum http1_framing framing;
    uint64_t content_length; /* valid when framing == HTTP1_BODY_LENGTH */
    bool keep_alive;         /* persistent per version + Connection tokens */
    bool expect_continue;    /* request: Expect: 100-continue */
    bool is_upgrade;         /* Connection: upgrade plus an Upgrade field */
};

struct http1_error {
    int status;          /* HTTP status to answer with: 400, 414, 431, 501, 502 */
    const char *message; /* static text for a person, e.g. "both Content-Length and
                            Transfer-Encoding" */
};

/*
 * Parses a request head from buf[0..len). Returns the head length (> 0) when a
 * complete head is present, HTTP1_INCOMPLETE when more bytes are needed (also
 * checks that the partial head does not already exceed the limits, so a caller
 * can stop reading early), or HTTP1_ERROR with *err filled in.
 * Refuses: CL together with TE, differing or invalid CL, TE whose last coding is
 * not chunked, unknown transfer codings (501), obs-fold, bare CR, whitespace
 * before the colon, invalid field names or values, invalid methods or versions,
 * and the limits above.
 */
int http1_parse_request(const char *buf, size_t len, struct http1_head *head,
                        struct http1_error *err);

/*
 * Parses a response head. request_method is the method of the request it
 * answers (HEAD and CONNECT change the framing); request_method_len its length.
 * Same return convention as http1_parse_request. For responses TE without
 * chunked means HTTP1_BODY_UNTIL_CLOSE; CL with TE is refused (502).
 */
int http1_parse_response(const char *buf, size_t len, const char *request_method,
                         size_t request_method_len, struct http1_head *head,
                         struct http1_error *err);

/* Case-insensitive lookup of the first header named name; NULL if absent. */
const struct message_field *http1_find_header(const struct http1_head *head, const char *name);

/* True when value (a comma-separated list, e.g. Connection) contains token,
 * compared case-insensitively. */
bool http1_list_has_token(const char *value, size_t value_len, const char *token);

/* True when an Accept-Encoding value asks for a content coding: any but
 * identity, unless its weight is 0 (RFC 9110 12.5.3, 12.4.2). */
bool http1_accepts_content_coding(const char *value, size_t value_len);

/*
 * True when the header must not be forwarded by a proxy (RFC 9110 7.6.1):
 * Connection, Keep-Alive, Proxy-Connection, Proxy-Authorization,
 * Proxy-Authenticate, TE, Trailer, Transfer-Encoding, Upgrade, and any field
 * named in head's Connection header.
 */
bool http1_is_hop_by_hop(const struct http1_head *head, const struct message_field *h);

/* Streaming decoder of the chunked transfer coding (RFC 9112 7.1). */
enum http1_chunk_result {
    HTTP1_CHUNK_DATA,      /* *data, *data_len: body bytes inside in */
    HTTP1_CHUNK_NEED_MORE, /* all of in consumed (or kept), feed more */
    HTTP1_CHUNK_DONE,      /* last chunk and trailer section read */
    HTTP1_CHUNK_ERROR,     /* malformed: bad size, overflow, missing CRLF, limits */
};

struct http1_chunked {
    int state;          /* private */
    uint64_t remaining; /* private: bytes left in the current chunk */
    size_t line_bytes;  /* private: bytes of the current size/trailer line so far */
    /* Trailer fields as raw bytes ("Name: value\r\n"...), validated, without
     * the final empty line; valid after HTTP1_CHUNK_DONE. */
    char trailers[HTTP1_MAX_TRAILER_BYTES];
    size_t trailers_len;
};

void http1_chunked_init(struct http1_chunked *st);

/*
 * Feeds in[0..in_len). Sets *consumed to the number of bytes of in used (the
 * caller drops them and calls again with the rest plus any new bytes). Returns
 * HTTP1_CHUNK_DATA with *data and *data_len set (a slice of in), NEED_MORE once in
 * is used up, DONE after the trailer section's final CRLF (bytes after it are
 * not consumed: they belong to the next message), or ERROR.
 */
enum http1_chunk_result http1_chunked_decode(struct http1_chunked *st, const char *in,
                                             size_t in_len, size_t *consumed, const char **data,
                                             size_t *data_len);

/* Formats a chunk header "<hex>\r\n" into out (at least 20 bytes); returns its length. */
size_t http1_chunk_header(char *out, uint64_t size);

/* The standard reason phrase for a status code ("Bad Gateway"), or "Unknown". */
const char *http1_reason_phrase(int status);

/* ---- request targets (RFC 9112 3.2) ---- */

#define HTTP1_MAX_HOST_BYTES 256 /* a host name or address, with its NUL */

/*
 * Whether host (an IPv6 literal already without brackets) is one a proxy
 * may connect to: DNS characters (letters, digits, '.', '-', '_') up to 253
 * of them, or a valid IPv6 address.
 */
bool http1_is_valid_host(const char *host);

/*
 * Parses an authority "host:port" or "[v6]:port" of len bytes (the
 * authority-form of CONNECT, RFC 9112 3.2.3; with default_port != 0 the
 * port may be left out, as in an absolute-form target). host gets the host
 * without brackets (HTTP1_MAX_HOST_BYTES). Refuses userinfo, a bare IPv6
 * address, an empty or out-of-range port, and invalid hosts. Returns 0 or -1.
 */
int http1_parse_authority(const char *authority, size_t len, uint16_t default_port, char *host,
                          uint16_t *port);

/* An absolute-form request-target split up; the pointers point into it. */
struct http1_absolute_target {
    bool is_https;
    char host[HTTP1_MAX_HOST_BYTES]; /* checked; IPv6 without brackets */
    uint16_t port;                   /* 80 or 443 when absent */
    const char *authority;           /* as written: host[:port] */
    size_t authority_len;
    const char *path; /* path and query, without a fragment; may be empty ("/" meant) */
    size_t path_len;
};

/*
 * Splits an absolute-form target ("http://host[:port]/path?query", RFC 9112
 * 3.2.2; "http" and "https" only, case-insensitive). Refuses userinfo, an
 * empty or invalid authority. Returns 0 or -1. Allocation-free.
 */
int http1_parse_absolute_target(const char *target, size_t len, struct http1_absolute_target *out);

#endif
