/*
 * http1codec: HTTP/1.1 as a codec behind the protocol-neutral message.
 * Reads heads off a stream (with the timing rules a proxy needs), reads a
 * parsed head as a message, writes a message out as an HTTP/1.1 head for
 * the next hop, and reads and writes bodies as body sources and sinks.
 *
 * The framing rules live here, not in the exchange: a head written by this
 * module always declares framing it computed itself (RFC 9112 6), never a
 * Content-Length or Transfer-Encoding copied from the other side, which is
 * what keeps a smuggled second request from surviving the proxy.
 */
#ifndef TAPWIRE_HTTP1CODEC_H
#define TAPWIRE_HTTP1CODEC_H

#include <stdbool.h>
#include <stdint.h>

#include "body.h"
#include "http1.h"
#include "message.h"
#include "stream.h"

#define HTTP1CODEC_VIA "1.1 tapwire"
/* A head we build: what the parser bounded, plus the fields we add. */
#define HTTP1CODEC_MAX_BUILT_HEAD_BYTES (2 * HTTP1_MAX_HEAD_BYTES)

/*
 * Reads the next request head from client into its buffer and parses it.
 * Waits up to idle_ms for a first byte, then header_ms for the whole head.
 * Returns the head length (> 0; head points into the client buffer, valid
 * until stream_consume()/stream_fill()), 0 when the client went away or
 * stayed idle (close silently), or -1 with *err set (answer err->status).
 */
int http1codec_read_request(struct stream *client, int idle_ms, int header_ms,
                            struct http1_head *head, struct http1_error *err);

/*
 * Reads the next response head to a request of method from upstream,
 * waiting up to io_ms. Returns the head length (> 0), or -1 with *err
 * (err->status 408 when the time ran out) and *got_nothing when the origin
 * sent no byte of it. *first_byte_us (may be NULL) gets the wall-clock time
 * the first byte arrived.
 */
int http1codec_read_response(struct stream *upstream, int io_ms, const char *method,
                             struct http1_head *head, struct http1_error *err, bool *got_nothing,
                             int64_t *first_byte_us);

/* A parsed head as a message; it points into head (and head's buffer). */
void http1codec_view(const struct http1_head *head, struct message *out);

/* False when a request's Transfer-Encoding has codings besides chunked
 * (gzip, chunked): the proxy re-chunks bodies and would lose them. */
bool http1codec_has_only_chunked(const struct http1_head *head);

/*
 * The head of req for the origin: origin-form target, Host from
 * req->authority when set (RFC 9112 3.2.2), hop-by-hop fields dropped,
 * Expect dropped when the proxy answers it, framing declared from
 * req->body, Via added. Returns the text (caller frees, *len its length) or
 * NULL when out of memory or past HTTP1CODEC_MAX_BUILT_HEAD_BYTES.
 */
char *http1codec_request_head(const struct message *req, size_t *len);

/*
 * The head of resp for a client that spoke HTTP/1.<client_version_minor>.
 * *keep_alive (in: the client's wish) comes back false when the framing
 * needs the close to end the body; *is_chunked says whether the body is to
 * be written chunked. Returns the text (caller frees) or NULL.
 */
char *http1codec_response_head(const struct message *resp, int client_version_minor,
                               bool *keep_alive, bool *is_chunked, size_t *len);

/*
 * Splits "Name: value\r\n" lines (a trailer section the chunked decoder
 * validated) into at most max fields pointing into raw, values trimmed.
 * Lines without a name and colon are skipped. Returns the count.
 */
size_t http1codec_split_fields(const char *raw, size_t len, struct message_field *out, size_t max);

/* A body read off a stream in its HTTP/1.1 framing. */
struct http1codec_reader {
    struct body_source source; /* first: the exchange holds a pointer to it */
    struct stream *stream;
    enum message_body framing;
    uint64_t remaining;                  /* MESSAGE_BODY_LENGTH */
    struct http1_chunked *chunked;       /* owned, MESSAGE_BODY_STREAM */
    struct message_field *trailer_items; /* owned, parsed at the end */
    size_t trailer_count;
    size_t pending; /* bytes of stream to consume before reading on */
    bool is_done;
};

/* Returns 0, or -1 when out of memory. Free with http1codec_reader_free(). */
int http1codec_reader_init(struct http1codec_reader *r, struct stream *stream,
                           enum message_body framing, uint64_t length);
void http1codec_reader_free(struct http1codec_reader *r);

/* A body written to a stream, raw (its head declared the length, or the
 * close ends it) or chunked. */
struct http1codec_writer {
    struct body_sink sink; /* first */
    struct stream *stream;
    bool is_chunked;
};

void http1codec_writer_init(struct http1codec_writer *w, struct stream *stream, bool is_chunked);

#endif
