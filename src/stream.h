/*
 * stream: one byte stream to a peer, plain TCP or TLS, with a bounded input
 * buffer for head parsing and a small output buffer that coalesces writes.
 * Every wait is bounded by a timeout and can be cut short by a cancel fd
 * (the shutdown pipe), so no thread can hang on a silent peer.
 * A stream is owned by one thread; nothing here is shared.
 */
#ifndef TAPWIRE_STREAM_H
#define TAPWIRE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <openssl/ssl.h>

#define STREAM_READ_CHUNK_BYTES 16384 /* one recv/SSL_read at most */
#define STREAM_OUT_BUFFER_BYTES 16384 /* coalescing buffer for small writes */
/* A lingering close (RFC 9112 9.6) reads the peer's remaining bytes away
 * for at most this long in all, and gives up on a peer quiet for
 * STREAM_LINGER_QUIET_MS: long enough for a client to finish sending a
 * refused request and read the answer, short enough not to hold a thread. */
#define STREAM_LINGER_MS 3000
#define STREAM_LINGER_QUIET_MS 500

enum stream_status {
    STREAM_OK = 0,
    STREAM_EOF = -1,         /* peer closed cleanly (no more bytes) */
    STREAM_ERROR = -2,       /* reset, TLS error, ... */
    STREAM_TIMEOUT = -3,     /* no progress within the timeout */
    STREAM_CANCELLED = -4,   /* the cancel fd became readable (shutdown) */
    STREAM_FULL = -5,        /* input buffer already holds its maximum */
    STREAM_TAP_STOPPED = -6, /* a relay's tap refused the bytes that followed */
};

struct stream {
    int fd;
    SSL *ssl;      /* NULL for plain TCP; owned */
    int cancel_fd; /* -1 or a fd that becomes readable on shutdown; not owned */
    char *in;      /* buffered input: in[in_start .. in_end) */
    size_t in_start, in_end, in_cap, in_max;
    char *out; /* pending output; allocated on first use */
    size_t out_len;
    uint64_t bytes_read, bytes_written;
    /* The peer may still be sending what was refused: stream_close() then
     * half-closes and reads the rest away first (stream_linger_on_close()). */
    bool is_lingering;
    char error[160];    /* last error, for a person */
    bool has_timed_out; /* a wait gave up: the peer went quiet, it did not go away */
};

/* Takes ownership of fd (made non-blocking). in_max bounds the input buffer
 * (it grows from a small start up to that). Returns 0 or -1. */
int stream_init(struct stream *s, int fd, size_t in_max, int cancel_fd);
/* Takes ownership of ssl, already connected/accepted on s->fd. */
void stream_attach_tls(struct stream *s, SSL *ssl);
/* Marks s as closed (fd -1) without touching anything: for a stream that
 * may never be opened but will be passed to stream_close(). */
void stream_clear(struct stream *s, int cancel_fd);
/* Sends close_notify when TLS (one try, no wait), closes fd, frees buffers.
 * Safe on a cleared or already closed stream. */
void stream_close(struct stream *s);
/*
 * Makes the next stream_close() a lingering close: after close_notify it
 * shuts down the sending side and discards what the peer still sends, until
 * it closes, is quiet, or STREAM_LINGER_MS pass (or the cancel fd fires).
 * For a connection closed with an answer while the peer may still be
 * sending a request: closing a socket with unread bytes makes the kernel
 * send a reset, which can destroy the answer before the peer reads it.
 */
void stream_linger_on_close(struct stream *s);
bool stream_is_open(const struct stream *s);

static inline size_t stream_buffered(const struct stream *s)
{
    return s->in_end - s->in_start;
}
static inline const char *stream_data(const struct stream *s)
{
    return s->in + s->in_start;
}
void stream_consume(struct stream *s, size_t n);

/*
 * Puts len bytes back in front of what is buffered, as if they had just
 * arrived: a request body that was read off the stream to be held (an
 * intercept) or made up (a replay) is then read by the exchange like any
 * other. The buffer may grow past in_max for them: the caller bounds len.
 * Returns 0, or -1 when out of memory (nothing changed).
 */
int stream_unshift(struct stream *s, const void *data, size_t len);

/* Frees the input and output buffers when they hold nothing, so an idle
 * keep-alive connection costs no buffer memory (they come back on use). */
void stream_release_idle(struct stream *s);

/* Reads at least one more byte into the input buffer. Returns the number of
 * bytes added (> 0) or a negative enum stream_status. */
ssize_t stream_fill(struct stream *s, int timeout_ms);

/* Waits until the peer has something to read (or TLS has bytes pending).
 * Returns STREAM_OK or STREAM_TIMEOUT / STREAM_CANCELLED / STREAM_ERROR. */
int stream_wait_readable(struct stream *s, int timeout_ms);

/* Reads up to len bytes, first from the buffer, then from the peer. Returns
 * bytes (> 0) or a negative enum stream_status. */
ssize_t stream_read(struct stream *s, void *buf, size_t len, int timeout_ms);

/* Queues bytes for the peer; large writes go out directly. Returns 0 or a
 * negative enum stream_status. */
int stream_put(struct stream *s, const void *data, size_t len, int timeout_ms);
int stream_putstr(struct stream *s, const char *str, int timeout_ms);
/* One write attempt that never waits, for a caller with its own poll loop:
 * returns the bytes written, 0 with *want the poll events to wait for, or
 * a negative enum stream_status. The output buffer is not used. */
ssize_t stream_write_some(struct stream *s, const void *data, size_t len, short *want);
int stream_flush(struct stream *s, int timeout_ms);

/*
 * Relays bytes both ways between a and b until either side closes or an error
 * occurs, or nothing moves for idle_timeout_ms. Bytes already buffered in
 * either stream's input go first. Counts bytes in *a_to_b / *b_to_a.
 * Returns 0 when a side closed normally, else a negative enum stream_status.
 */
int stream_relay(struct stream *a, struct stream *b, int idle_timeout_ms, uint64_t *a_to_b,
                 uint64_t *b_to_a);

/*
 * Sees every chunk a relay reads, before it goes on (a protocol parser over
 * a copy: wsrelay). fn returns 0 to let all len bytes pass, or -1 with
 * *pass the bytes that may still go before the relay stops. is_a_to_b says
 * the direction. The bytes are valid only during the call.
 */
struct stream_tap {
    int (*fn)(void *arg, bool is_a_to_b, const char *data, size_t len, size_t *pass);
    void *arg;
    /* May be NULL: called after each tick_ms in which nothing moved. */
    void (*tick)(void *arg);
    int tick_ms;
};

/* stream_relay() with tap (may be NULL) shown each chunk. When the tap
 * stops it, the bytes it let pass are written out, and it returns
 * STREAM_TAP_STOPPED with both streams still open. */
int stream_relay_tapped(struct stream *a, struct stream *b, int idle_timeout_ms, uint64_t *a_to_b,
                        uint64_t *b_to_a, const struct stream_tap *tap);

enum stream_handshake_result {
    STREAM_HANDSHAKE_DONE,
    STREAM_HANDSHAKE_TIMEOUT,
    STREAM_HANDSHAKE_FAILED, /* *ssl_error and *sys_errno say why; error queue intact */
};

/*
 * Runs SSL_do_handshake() on fd (connect or accept state already set) with
 * the fd non-blocking, so a silent peer cannot hold the thread past
 * timeout_ms, then restores the fd's flags. Shared by both TLS sides.
 */
enum stream_handshake_result stream_tls_handshake(SSL *ssl, int fd, int timeout_ms, int *ssl_error,
                                                  int *sys_errno);

const char *stream_status_text(int status);

#endif
