/*
 * stream: bounded, cancellable I/O over plain TCP or TLS.
 *
 * Sockets are non-blocking and every wait goes through poll(2) with the
 * caller's timeout plus the cancel fd, so a silent peer can stall one
 * connection for at most its timeout and a shutdown interrupts every wait.
 * With TLS, SSL_read may need to write and SSL_write may need to read
 * (key updates, tickets): SSL_get_error() tells which way to wait.
 */
#include "stream.h"

#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>

#define STREAM_INITIAL_IN_BYTES 4096
#define STREAM_SHUTDOWN_TIMEOUT_MS 200

static void set_error(struct stream *s, const char *what)
{
    snprintf(s->error, sizeof(s->error), "%s", what);
}

static void set_tls_error(struct stream *s, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    snprintf(s->error, sizeof(s->error), "%s%s%s", what, reason ? ": " : "", reason ? reason : "");
}

/* Waits for events on s->fd (or the cancel fd). timeout_ms < 0: no limit. */
static int wait_fd(struct stream *s, short events, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = s->fd, .events = events}, {.fd = s->cancel_fd, .events = POLLIN}};
    nfds_t n = s->cancel_fd >= 0 ? 2 : 1;
    int64_t deadline = timeout_ms >= 0 ? clock_mono_ms() + timeout_ms : -1;

    for (;;) {
        int left = deadline < 0 ? -1 : (int)(deadline - clock_mono_ms());
        if (deadline >= 0 && left < 0)
            left = 0;
        int r = poll(p, n, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            set_error(s, strerror(errno));
            return STREAM_ERROR;
        }
        if (n == 2 && (p[1].revents & POLLIN))
            return STREAM_CANCELLED;
        if (r == 0) {
            set_error(s, "timed out");
            s->has_timed_out = true;
            return STREAM_TIMEOUT;
        }
        if (p[0].revents)
            return STREAM_OK; /* POLLERR/POLLHUP are reported by the next read/write */
    }
}

int stream_init(struct stream *s, int fd, size_t in_max, int cancel_fd)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->cancel_fd = cancel_fd;
    s->in_max = in_max;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -1;
    return 0;
}

void stream_attach_tls(struct stream *s, SSL *ssl)
{
    s->ssl = ssl;
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int flags = fcntl(s->fd, F_GETFL);
    if (flags >= 0)
        fcntl(s->fd, F_SETFL, flags | O_NONBLOCK);
}

void stream_clear(struct stream *s, int cancel_fd)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->cancel_fd = cancel_fd;
}

bool stream_is_open(const struct stream *s)
{
    return s->fd >= 0;
}

void stream_linger_on_close(struct stream *s)
{
    s->is_lingering = true;
}

/* Reads and discards raw bytes (TLS records too: they are not for us any
 * more) until the peer closes or goes quiet, within the linger bounds. */
static void drain_before_close(struct stream *s)
{
    int64_t deadline = clock_mono_ms() + STREAM_LINGER_MS;
    char discard[STREAM_READ_CHUNK_BYTES];

    if (shutdown(s->fd, SHUT_WR) != 0)
        return;
    for (;;) {
        int left = (int)(deadline - clock_mono_ms());
        ssize_t n;

        if (left <= 0)
            return;
        if (wait_fd(s, POLLIN, left < STREAM_LINGER_QUIET_MS ? left : STREAM_LINGER_QUIET_MS) !=
            STREAM_OK)
            return;
        n = recv(s->fd, discard, sizeof(discard), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return;
    }
}

void stream_close(struct stream *s)
{
    if (s->ssl) {
        /* One close_notify, without waiting for the peer's: the connection
         * is going away either way, and waiting would let a peer stall us. */
        ERR_clear_error();
        if (SSL_shutdown(s->ssl) < 0)
            ERR_clear_error();
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        if (s->is_lingering)
            drain_before_close(s);
        close(s->fd);
    }
    free(s->in);
    free(s->out);
    stream_clear(s, s->cancel_fd);
}

void stream_consume(struct stream *s, size_t n)
{
    if (n > stream_buffered(s))
        n = stream_buffered(s);
    s->in_start += n;
    if (s->in_start == s->in_end)
        s->in_start = s->in_end = 0;
}

int stream_unshift(struct stream *s, const void *data, size_t len)
{
    size_t have = stream_buffered(s);
    char *in;

    if (len == 0)
        return 0;
    if (len <= s->in_start) {
        s->in_start -= len;
        memcpy(s->in + s->in_start, data, len);
        return 0;
    }
    in = malloc(len + have > 0 ? len + have : 1);
    if (in == NULL)
        return -1;
    memcpy(in, data, len);
    if (have > 0)
        memcpy(in + len, stream_data(s), have);
    free(s->in);
    s->in = in;
    s->in_start = 0;
    s->in_end = s->in_cap = len + have;
    return 0;
}

void stream_release_idle(struct stream *s)
{
    if (stream_buffered(s) == 0 && s->in) {
        free(s->in);
        s->in = NULL;
        s->in_start = s->in_end = s->in_cap = 0;
    }
    if (s->out_len == 0 && s->out) {
        free(s->out);
        s->out = NULL;
    }
}

/* SSL_get_error() reads the thread's error queue, so it must be empty
 * before each SSL_read()/SSL_write(); it nearly always is already, and
 * peeking is far cheaper than ERR_clear_error(), which resets all sixteen
 * slots every time (a few percent of an HTTP/2 relay's CPU). */
static void empty_tls_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* One non-blocking read attempt. Returns bytes, 0 when it would block (with
 * *want set to the poll events needed), or a negative enum stream_status. */
static ssize_t try_read(struct stream *s, char *buf, size_t len, short *want)
{
    *want = POLLIN;
    if (s->ssl) {
        empty_tls_errors();
        int n = SSL_read(s->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
        if (n > 0)
            return n;
        switch (SSL_get_error(s->ssl, n)) {
        case SSL_ERROR_WANT_READ:
            return 0;
        case SSL_ERROR_WANT_WRITE:
            *want = POLLOUT;
            return 0;
        case SSL_ERROR_ZERO_RETURN:
            return STREAM_EOF;
        case SSL_ERROR_SYSCALL:
            if (errno == 0 || errno == ECONNRESET || errno == EPIPE) {
                set_error(s, "connection closed without TLS close_notify");
                return errno == 0 ? STREAM_EOF : STREAM_ERROR;
            }
            set_error(s, strerror(errno));
            return STREAM_ERROR;
        default:
            if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                set_error(s, "connection closed without TLS close_notify");
                return STREAM_EOF;
            }
            set_tls_error(s, "TLS read failed");
            return STREAM_ERROR;
        }
    }
    for (;;) {
        ssize_t n = recv(s->fd, buf, len, 0);
        if (n > 0)
            return n;
        if (n == 0)
            return STREAM_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        set_error(s, strerror(errno));
        return STREAM_ERROR;
    }
}

/* One non-blocking write attempt; same convention as try_read. */
static ssize_t try_write(struct stream *s, const char *buf, size_t len, short *want)
{
    *want = POLLOUT;
    if (s->ssl) {
        empty_tls_errors();
        int n = SSL_write(s->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
        if (n > 0)
            return n;
        switch (SSL_get_error(s->ssl, n)) {
        case SSL_ERROR_WANT_WRITE:
            return 0;
        case SSL_ERROR_WANT_READ:
            *want = POLLIN;
            return 0;
        case SSL_ERROR_SYSCALL:
            set_error(s, errno ? strerror(errno) : "connection closed");
            return STREAM_ERROR;
        default:
            set_tls_error(s, "TLS write failed");
            return STREAM_ERROR;
        }
    }
    for (;;) {
        ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        set_error(s, strerror(errno));
        return STREAM_ERROR;
    }
}

static ssize_t read_blocking(struct stream *s, char *buf, size_t len, int timeout_ms)
{
    for (;;) {
        short want;
        ssize_t n = try_read(s, buf, len, &want);
        if (n != 0)
            return n;
        int w = wait_fd(s, want, timeout_ms);
        if (w != STREAM_OK)
            return w;
    }
}

static int write_blocking(struct stream *s, const char *buf, size_t len, int timeout_ms)
{
    while (len > 0) {
        short want;
        ssize_t n = try_write(s, buf, len, &want);
        if (n < 0)
            return (int)n;
        if (n == 0) {
            int w = wait_fd(s, want, timeout_ms);
            if (w != STREAM_OK)
                return w;
            continue;
        }
        buf += n;
        len -= (size_t)n;
        s->bytes_written += (uint64_t)n;
    }
    return STREAM_OK;
}

ssize_t stream_fill(struct stream *s, int timeout_ms)
{
    if (stream_buffered(s) >= s->in_max)
        return STREAM_FULL;
    if (s->in_start > 0 && s->in_end == s->in_cap) {
        memmove(s->in, s->in + s->in_start, stream_buffered(s));
        s->in_end -= s->in_start;
        s->in_start = 0;
    }
    if (s->in_end == s->in_cap) {
        size_t cap = s->in_cap ? s->in_cap * 2 : STREAM_INITIAL_IN_BYTES;
        if (cap > s->in_max)
            cap = s->in_max;
        char *in = realloc(s->in, cap);
        if (!in) {
            set_error(s, "out of memory");
            return STREAM_ERROR;
        }
        s->in = in;
        s->in_cap = cap;
    }
    size_t room = s->in_cap - s->in_end;
    if (room > STREAM_READ_CHUNK_BYTES)
        room = STREAM_READ_CHUNK_BYTES;
    ssize_t n = read_blocking(s, s->in + s->in_end, room, timeout_ms);
    if (n > 0) {
        s->in_end += (size_t)n;
        s->bytes_read += (uint64_t)n;
    }
    return n;
}

int stream_wait_readable(struct stream *s, int timeout_ms)
{
    if (stream_buffered(s) > 0 || (s->ssl && SSL_has_pending(s->ssl)))
        return STREAM_OK;
    return wait_fd(s, POLLIN, timeout_ms);
}

ssize_t stream_read(struct stream *s, void *buf, size_t len, int timeout_ms)
{
    size_t have = stream_buffered(s);
    if (have > 0) {
        size_t n = have < len ? have : len;
        memcpy(buf, stream_data(s), n);
        stream_consume(s, n);
        return (ssize_t)n;
    }
    ssize_t n = read_blocking(s, buf, len, timeout_ms);
    if (n > 0)
        s->bytes_read += (uint64_t)n;
    return n;
}

int stream_flush(struct stream *s, int timeout_ms)
{
    if (s->out_len == 0)
        return STREAM_OK;
    int r = write_blocking(s, s->out, s->out_len, timeout_ms);
    s->out_len = 0;
    return r;
}

int stream_put(struct stream *s, const void *data, size_t len, int timeout_ms)
{
    if (len >= STREAM_OUT_BUFFER_BYTES / 2) {
        int r = stream_flush(s, timeout_ms);
        if (r != STREAM_OK)
            return r;
        return write_blocking(s, data, len, timeout_ms);
    }
    if (!s->out) {
        s->out = malloc(STREAM_OUT_BUFFER_BYTES);
        if (!s->out) {
            set_error(s, "out of memory");
            return STREAM_ERROR;
        }
    }
    if (s->out_len + len > STREAM_OUT_BUFFER_BYTES) {
        int r = stream_flush(s, timeout_ms);
        if (r != STREAM_OK)
            return r;
    }
    memcpy(s->out + s->out_len, data, len);
    s->out_len += len;
    return STREAM_OK;
}

ssize_t stream_write_some(struct stream *s, const void *data, size_t len, short *want)
{
    ssize_t n = try_write(s, data, len, want);

    if (n > 0)
        s->bytes_written += (uint64_t)n;
    return n;
}

int stream_putstr(struct stream *s, const char *str, int timeout_ms)
{
    return stream_put(s, str, strlen(str), timeout_ms);
}

/* One direction of a relay: bytes read from src waiting to go to dst. */
struct pipe_dir {
    struct stream *src, *dst;
    char buf[STREAM_READ_CHUNK_BYTES];
    size_t off, len;
    bool src_eof;     /* src closed; nothing more to read */
    bool dst_shut;    /* we passed the close on to dst */
    short read_want;  /* poll events src needs before reading again (0: none) */
    short write_want; /* poll events dst needs before writing again (0: none) */
    uint64_t *count;
    const struct stream_tap *tap; /* may be NULL */
    bool is_a_to_b;
    bool is_tap_stopped; /* the tap refused what followed buf's bytes */
};

/* Shows the tap n new bytes at buf + off; keeps only what it lets pass. */
static void pipe_tap(struct pipe_dir *d, size_t n)
{
    size_t pass = n;

    if (d->tap == NULL || d->is_tap_stopped)
        return;
    if (d->tap->fn(d->tap->arg, d->is_a_to_b, d->buf + d->off, n, &pass) < 0) {
        d->is_tap_stopped = true;
        d->len = pass < n ? pass : n;
    }
}

static void pass_close_on(struct pipe_dir *d)
{
    if (d->dst->ssl) {
        ERR_clear_error();
        if (SSL_shutdown(d->dst->ssl) < 0)
            ERR_clear_error();
    } else {
        shutdown(d->dst->fd, SHUT_WR);
    }
    d->dst_shut = true;
}

/* Moves what it can without blocking. Returns 1 on progress, 0 if it would
 * block, or a negative enum stream_status. */
static int pipe_step(struct pipe_dir *d)
{
    int progress = 0;
    if (d->len == 0 && !d->src_eof) {
        ssize_t n = try_read(d->src, d->buf, sizeof(d->buf), &d->read_want);
        if (n == STREAM_EOF) {
            d->src_eof = true;
            d->read_want = 0;
            progress = 1;
        } else if (n < 0) {
            return (int)n;
        } else if (n > 0) {
            d->off = 0;
            d->len = (size_t)n;
            d->read_want = 0;
            d->src->bytes_read += (uint64_t)n;
            pipe_tap(d, (size_t)n);
            progress = 1;
        }
    }
    if (d->len > 0) {
        ssize_t n = try_write(d->dst, d->buf + d->off, d->len, &d->write_want);
        if (n < 0)
            return (int)n;
        if (n > 0) {
            d->off += (size_t)n;
            d->len -= (size_t)n;
            d->dst->bytes_written += (uint64_t)n;
            *d->count += (uint64_t)n;
            d->write_want = 0;
            progress = 1;
        }
    }
    if (d->src_eof && d->len == 0 && !d->dst_shut) {
        pass_close_on(d);
        progress = 1;
    }
    return progress;
}

/* Moves bytes already sitting in src's input buffer into the pipe first. */
static void pipe_take_buffered(struct pipe_dir *d)
{
    size_t n = stream_buffered(d->src);
    if (n > sizeof(d->buf))
        n = sizeof(d->buf);
    memcpy(d->buf, stream_data(d->src), n);
    d->off = 0;
    d->len = n;
    stream_consume(d->src, n);
    pipe_tap(d, n);
}

int stream_relay(struct stream *a, struct stream *b, int idle_timeout_ms, uint64_t *a_to_b,
                 uint64_t *b_to_a)
{
    return stream_relay_tapped(a, b, idle_timeout_ms, a_to_b, b_to_a, NULL);
}

/* After the tap stopped: what each direction still holds goes out, so the
 * bytes the tap saw and let pass are the bytes the peers got. */
static int pipe_drain(struct pipe_dir *d, int timeout_ms)
{
    int r = STREAM_OK;

    if (d->len > 0 && !d->dst_shut)
        r = stream_put(d->dst, d->buf + d->off, d->len, timeout_ms);
    if (r == STREAM_OK && d->len > 0) {
        d->dst->bytes_written += d->len;
        *d->count += d->len;
        d->len = 0;
    }
    return r;
}

int stream_relay_tapped(struct stream *a, struct stream *b, int idle_timeout_ms, uint64_t *a_to_b,
                        uint64_t *b_to_a, const struct stream_tap *tap)
{
    struct pipe_dir *ab = calloc(1, sizeof(*ab));
    struct pipe_dir *ba = calloc(1, sizeof(*ba));
    int result = STREAM_ERROR;
    int tick_ms = tap != NULL && tap->tick != NULL ? tap->tick_ms : 0;
    int idle_left_ms = idle_timeout_ms;
    if (!ab || !ba)
        goto out;
    *ab = (struct pipe_dir){.src = a, .dst = b, .count = a_to_b, .tap = tap, .is_a_to_b = true};
    *ba = (struct pipe_dir){.src = b, .dst = a, .count = b_to_a, .tap = tap};
    if (stream_flush(a, idle_timeout_ms) != STREAM_OK ||
        stream_flush(b, idle_timeout_ms) != STREAM_OK)
        goto out;

    for (;;) {
        /* Leftovers from head parsing are relayed before anything new. */
        if (ab->len == 0 && stream_buffered(a) > 0)
            pipe_take_buffered(ab);
        if (ba->len == 0 && stream_buffered(b) > 0)
            pipe_take_buffered(ba);

        if (ab->is_tap_stopped || ba->is_tap_stopped) {
            int r1 = pipe_drain(ab, idle_timeout_ms);
            int r2 = pipe_drain(ba, idle_timeout_ms);
            result = r1 != STREAM_OK ? r1 : r2 != STREAM_OK ? r2 : STREAM_TAP_STOPPED;
            goto out;
        }
        int p1 = pipe_step(ab);
        if (p1 < 0) {
            result = p1;
            goto out;
        }
        int p2 = pipe_step(ba);
        if (p2 < 0) {
            result = p2;
            goto out;
        }
        if (ab->dst_shut && ba->dst_shut) {
            result = 0;
            goto out;
        }
        if (p1 || p2) {
            idle_left_ms = idle_timeout_ms;
            continue;
        }
        /* TLS may hold decrypted bytes that poll cannot see. */
        if ((a->ssl && ab->len == 0 && !ab->src_eof && SSL_has_pending(a->ssl)) ||
            (b->ssl && ba->len == 0 && !ba->src_eof && SSL_has_pending(b->ssl)))
            continue;

        short ev_a = (short)(ab->read_want | ba->write_want);
        short ev_b = (short)(ba->read_want | ab->write_want);
        struct pollfd p[3] = {{.fd = a->fd, .events = ev_a},
                              {.fd = b->fd, .events = ev_b},
                              {.fd = a->cancel_fd, .events = POLLIN}};
        nfds_t n = a->cancel_fd >= 0 ? 3 : 2;
        /* A negative idle timeout waits for ever (poll's -1). */
        bool is_tick = tick_ms > 0 && (idle_left_ms < 0 || tick_ms < idle_left_ms);
        int wait_ms = is_tick ? tick_ms : idle_left_ms;
        int r = poll(p, n, wait_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            result = STREAM_ERROR;
            goto out;
        }
        if (r == 0 && is_tick) {
            /* Quiet for a tick, not yet for the idle timeout. */
            if (idle_left_ms > 0)
                idle_left_ms -= wait_ms;
            tap->tick(tap->arg);
            continue;
        }
        if (r == 0) {
            result = STREAM_TIMEOUT;
            goto out;
        }
        if (n == 3 && (p[2].revents & POLLIN)) {
            result = STREAM_CANCELLED;
            goto out;
        }
        /* An error or hang-up on a side we are not waiting on would wake
         * poll forever without progress: that side is gone, so are we.
         * Unless it still has bytes we are waiting to read: after we passed
         * a half-close on, a peer's last answer and its close arrive
         * together (POLLIN|POLLHUP), and the answer must still go through;
         * the next reads take it, then the end of the stream. */
        if (((p[0].revents & ~p[0].events & (POLLERR | POLLHUP | POLLNVAL)) &&
             !(p[0].revents & p[0].events & POLLIN)) ||
            ((p[1].revents & ~p[1].events & (POLLERR | POLLHUP | POLLNVAL)) &&
             !(p[1].revents & p[1].events & POLLIN))) {
            result = 0;
            goto out;
        }
    }
out:
    free(ab);
    free(ba);
    return result;
}

enum stream_handshake_result stream_tls_handshake(SSL *ssl, int fd, int timeout_ms, int *ssl_error,
                                                  int *sys_errno)
{
    enum stream_handshake_result result = STREAM_HANDSHAKE_FAILED;
    int64_t deadline = clock_mono_ms() + timeout_ms;

    *ssl_error = SSL_ERROR_SYSCALL;
    *sys_errno = 0;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        *sys_errno = errno;
        return STREAM_HANDSHAKE_FAILED;
    }
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = 0};
        ERR_clear_error();
        errno = 0;
        int r = SSL_do_handshake(ssl);
        if (r == 1) {
            result = STREAM_HANDSHAKE_DONE;
            break;
        }
        *sys_errno = errno;
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            pfd.events = POLLIN;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            pfd.events = POLLOUT;
        } else {
            *ssl_error = e;
            break;
        }
        int64_t remaining = deadline - clock_mono_ms();
        if (remaining <= 0) {
            result = STREAM_HANDSHAKE_TIMEOUT;
            break;
        }
        int n = poll(&pfd, 1, (int)remaining);
        if (n == 0) {
            result = STREAM_HANDSHAKE_TIMEOUT;
            break;
        }
        if (n < 0 && errno != EINTR) {
            *ssl_error = SSL_ERROR_SYSCALL;
            *sys_errno = errno;
            break;
        }
    }
    if (fcntl(fd, F_SETFL, flags) < 0 && result == STREAM_HANDSHAKE_DONE) {
        *ssl_error = SSL_ERROR_SYSCALL;
        *sys_errno = errno;
        result = STREAM_HANDSHAKE_FAILED;
    }
    return result;
}

const char *stream_status_text(int status)
{
    switch (status) {
    case STREAM_OK:
        return "ok";
    case STREAM_EOF:
        return "connection closed";
    case STREAM_ERROR:
        return "connection error";
    case STREAM_TIMEOUT:
        return "timed out";
    case STREAM_CANCELLED:
        return "shutting down";
    case STREAM_FULL:
        return "too much data";
    case STREAM_TAP_STOPPED:
        return "stopped by the protocol check";
    default:
        return "unknown";
    }
}
