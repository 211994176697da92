/*
 * origin: the test origin server the integration tests put behind tapwire.
 *
 * A real HTTP/1.1 server over plain TCP or OpenSSL, one thread per connection,
 * with endpoints whose answers a test can check byte for byte (deterministic
 * patterns, SHA-256 of what arrived, the request head as received, a
 * connection/request counter). It is a test peer: lenient where leniency
 * cannot hide a proxy bug, strict where the proxy must have been (it refuses
 * ambiguous framing instead of guessing), and bounded in everything it keeps.
 * It depends on nothing in src/ so that it can test the proxy, not share its
 * bugs. Every request is logged as one line on stderr ("origin: conn=N req=M
 * METHOD TARGET") so a test can prove what did or did not reach it.
 *
 * Usage: origin --listen 127.0.0.1:0 [--port-file FILE] [--tls CERT KEY]
 *               [--sni NAME CERT KEY]... [--alpn] [--hang-tls] [--refuse]
 *        origin --pattern N      (writes the /bytes/N body to stdout)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <brotli/encode.h>
#include <zlib.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define ORIGIN_MAX_HEAD_BYTES 65536       /* request head incl. CRLFCRLF -> 431 */
#define ORIGIN_MAX_HEADERS 256            /* header fields per request -> 431 */
#define ORIGIN_MAX_LINE_BYTES 4096        /* chunk-size and trailer lines */
#define ORIGIN_IO_BYTES 65536             /* one read or one chunk of a write */
#define ORIGIN_MAX_BYTES_N (1ULL << 32)   /* largest /bytes/N */
#define ORIGIN_MAX_ECHO_BYTES (64u << 20) /* /echo buffers the body -> 413 */
#define ORIGIN_IO_TIMEOUT_S 60            /* SO_RCVTIMEO/SO_SNDTIMEO backstop */
#define ORIGIN_HANG_MS 30000              /* /hang and --hang-tls hold this long */
#define ORIGIN_LINGER_MS 1000             /* drain after our FIN before close */
#define ORIGIN_MAX_CONNS 1024
#define ORIGIN_MAX_SNI 16
#define ORIGIN_SHUTDOWN_WAIT_MS 5000
#define ORIGIN_ABORT_LENGTH 1000000 /* /abort announces this many bytes */
#define ORIGIN_ABORT_SENT 1000      /* ... and sends this many */

struct options {
    const char *listen;
    const char *port_file;
    const char *tls_cert;
    const char *tls_key;
    struct {
        const char *name, *cert, *key;
    } sni[ORIGIN_MAX_SNI];
    size_t sni_count;
    bool alpn;
    bool hang_tls;
    bool refuse;
};

struct sni_ctx {
    const char *name;
    SSL_CTX *ctx;
};

struct conn;

/* The one shared object: guarded by lock except the TLS contexts, which are
 * read-only once the accept loop runs. */
struct server {
    struct options opt;
    SSL_CTX *ctx; /* default context, NULL for plain HTTP */
    struct sni_ctx sni[ORIGIN_MAX_SNI];
    size_t sni_count;
    pthread_mutex_t lock;
    pthread_cond_t drained;
    struct conn *conns; /* open sockets, so shutdown can wake their threads */
    size_t active;      /* threads that have not yet freed their connection */
};

struct conn {
    struct conn *next, *prev;
    struct server *srv;
    int fd;
    SSL *ssl;
    unsigned long id;
    unsigned long requests;
    char *buf; /* read buffer: buf[off..len) not yet consumed */
    size_t off, len;
    char *io; /* scratch for bodies, ORIGIN_IO_BYTES + room for chunk framing */
};

struct header {
    const char *name;
    const char *value;
};

enum framing { BODY_NONE, BODY_LENGTH, BODY_CHUNKED };

struct request {
    char *raw; /* the head exactly as received, NUL-terminated */
    size_t raw_len;
    char *work; /* copy of raw, cut into the strings below */
    const char *method;
    const char *target;
    int version_minor;
    struct header headers[ORIGIN_MAX_HEADERS];
    size_t num_headers;
    enum framing framing;
    uint64_t content_length;
    bool keep_alive;
    bool expect_continue;
    bool is_head;
    bool sent_continue;
};

struct body {
    enum framing framing;
    uint64_t remaining; /* LENGTH: bytes left; CHUNKED: bytes left in this chunk */
    enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE } state;
};

/* Handler results. */
#define KEEP 0   /* response complete, connection reusable */
#define CLOSE 1  /* response complete, close gracefully */
#define ABORT -1 /* drop the connection now, no close_notify */

static unsigned char pattern[ORIGIN_IO_BYTES + 256];
static int wake_pipe[2] = {-1, -1};
static volatile sig_atomic_t stopping;

static void pattern_init(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (unsigned char)((i * 31 + 7) & 0xff);
}

static void on_signal(int sig)
{
    int saved = errno;
    char b = (char)sig;

    stopping = 1;
    if (write(wake_pipe[1], &b, 1) < 0) {
        /* the pipe is non-blocking; a full pipe already wakes the loop */
    }
    errno = saved;
}

static void print_ssl_errors(const char *what)
{
    unsigned long e;
    char msg[256];

    fprintf(stderr, "origin: %s\n", what);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, msg, sizeof(msg));
        fprintf(stderr, "origin:   %s\n", msg);
    }
}

/* ---- I/O ---- */

/* Reads at most n bytes from the peer. Returns > 0, 0 at end of stream (a TLS
 * peer vanishing without close_notify counts as end too), -1 on error. */
static ssize_t conn_recv(struct conn *c, void *p, size_t n)
{
    if (c->ssl != NULL) {
        size_t got = 0;
        int r, e;

        ERR_clear_error();
        r = SSL_read_ex(c->ssl, p, n, &got);
        if (r == 1)
            return (ssize_t)got;
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        return -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

static int conn_send(struct conn *c, const void *data, size_t n)
{
    const char *p = data;

    while (n > 0) {
        if (c->ssl != NULL) {
            size_t put = 0;
            ERR_clear_error();
            if (SSL_write_ex(c->ssl, p, n, &put) != 1)
                return -1;
            p += put;
            n -= put;
        } else {
            ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return -1;
            p += r;
            n -= (size_t)r;
        }
    }
    return 0;
}

static int conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_printf(struct conn *c, const char *fmt, ...)
{
    char out[4096];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, sizeof(out), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(out))
        return -1;
    return conn_send(c, out, (size_t)n);
}

/* Reads more bytes into the buffer after compacting it. Returns the count
 * added, 0 at end of stream, -1 on error or when the buffer is full. */
static ssize_t conn_fill(struct conn *c)
{
    ssize_t r;

    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == ORIGIN_MAX_HEAD_BYTES)
        return -1;
    r = conn_recv(c, c->buf + c->len, ORIGIN_MAX_HEAD_BYTES - c->len);
    if (r > 0)
        c->len += (size_t)r;
    return r;
}

static size_t conn_buffered(const struct conn *c)
{
    return c->len - c->off;
}

/* Finds a complete CRLF-terminated line at the read position, reading more as
 * needed. Returns its length without CRLF and sets *line (valid until the next
 * read); consumes it. -1 on end of stream, error or an over-long line. */
static long conn_read_line(struct conn *c, const char **line)
{
    for (;;) {
        char *start = c->buf + c->off;
        char *crlf = memmem(start, conn_buffered(c), "\r\n", 2);

        if (crlf != NULL) {
            size_t n = (size_t)(crlf - start);
            *line = start;
            c->off += n + 2;
            return (long)n;
        }
        if (conn_buffered(c) > ORIGIN_MAX_LINE_BYTES || conn_fill(c) <= 0)
            return -1;
    }
}

/* Waits until the head of the next request is buffered. Returns its length,
 * 0 when the peer closed before sending anything, -1 on error or truncation,
 * -2 when the head exceeds ORIGIN_MAX_HEAD_BYTES. */
static long conn_read_head(struct conn *c)
{
    for (;;) {
        char *start = c->buf + c->off;
        size_t avail = conn_buffered(c);
        char *end;
        ssize_t r;

        /* RFC 9112 2.2: ignore empty lines before a request line. */
        while (avail >= 2 && start[0] == '\r' && start[1] == '\n') {
            c->off += 2;
            start += 2;
            avail -= 2;
        }
        end = memmem(start, avail, "\r\n\r\n", 4);
        if (end != NULL)
            return (long)(end - start) + 4;
        if (avail >= ORIGIN_MAX_HEAD_BYTES)
            return -2;
        r = conn_fill(c);
        if (r == 0)
            return conn_buffered(c) == 0 ? 0 : -1;
        if (r < 0)
            return -1;
    }
}

/* Waits for the peer to go away, discarding what it sends, for at most ms. */
static void conn_hold(struct conn *c, int ms)
{
    struct timespec t0, now;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    c->off = c->len = 0;
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        long elapsed;
        int r;

        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (elapsed >= ms || stopping)
            return;
        r = poll(&pfd, 1, (int)(ms - elapsed));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        /* Plain reads even on TLS connections: the bytes are discarded. */
        if (recv(c->fd, c->buf, ORIGIN_MAX_HEAD_BYTES, 0) <= 0)
            return;
    }
}

/* ---- request parsing ---- */

static bool list_has_token(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = list;

    while (*p != '\0') {
        const char *end;
        size_t n;

        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        end = p;
        while (*end != '\0' && *end != ',')
            end++;
        n = (size_t)(end - p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == tlen && strncasecmp(p, token, n) == 0)
            return true;
        p = end;
    }
    return false;
}

/* The last element of a comma-separated list, trimmed, into out. */
static void list_last(const char *list, char *out, size_t out_len)
{
    const char *start = strrchr(list, ',');
    size_t n;

    start = start != NULL ? start + 1 : list;
    while (*start == ' ' || *start == '\t')
        start++;
    n = strlen(start);
    while (n > 0 && (start[n - 1] == ' ' || start[n - 1] == '\t'))
        n--;
    if (n >= out_len)
        n = out_len - 1;
    memcpy(out, start, n);
    out[n] = '\0';
}

static const char *find_header(const struct request *r, const char *name)
{
    for (size_t i = 0; i < r->num_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static bool is_token_char(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", ch) == NULL;
}

static void request_free(struct request *r)
{
    free(r->raw);
    free(r->work);
    memset(r, 0, sizeof(*r));
}

/* Parses the head at the read position (head_len bytes) and consumes it.
 * Returns 0, or the status to refuse the request with (400, 431). */
static int request_parse(struct conn *c, size_t head_len, struct request *r)
{
    char *line, *next, *sp1, *sp2;
    bool have_cl = false;
    const char *te = NULL;

    memset(r, 0, sizeof(*r));
    r->raw = malloc(head_len + 1);
    r->work = malloc(head_len + 1);
    if (r->raw == NULL || r->work == NULL)
        return 500;
    memcpy(r->raw, c->buf + c->off, head_len);
    r->raw[head_len] = '\0';
    r->raw_len = head_len;
    memcpy(r->work, r->raw, head_len + 1);
    c->off += head_len;
    if (memchr(r->raw, '\0', head_len) != NULL)
        return 400; /* the string handling below relies on there being none */

    line = r->work;
    next = strstr(line, "\r\n");
    *next = '\0';
    next += 2;
    sp1 = strchr(line, ' ');
    sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strchr(sp2 + 1, ' ') != NULL || sp1 == line || sp2 == sp1 + 1)
        return 400;
    *sp1 = *sp2 = '\0';
    r->method = line;
    r->target = sp1 + 1;
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        r->version_minor = 1;
    else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
        r->version_minor = 0;
    else
        return 400;
    for (const char *m = r->method; *m != '\0'; m++)
        if (!is_token_char((unsigned char)*m))
            return 400;
    r->is_head = strcmp(r->method, "HEAD") == 0;

    for (line = next; *line != '\0'; line = next) {
        char *colon, *value, *end;

        next = strstr(line, "\r\n");
        *next = '\0';
        next += 2;
        if (*line == '\0')
            break;
        if (*line == ' ' || *line == '\t')
            return 400; /* obs-fold: RFC 9112 5.2 lets a server refuse it */
        colon = strchr(line, ':');
        if (colon == NULL || colon == line)
            return 400;
        *colon = '\0';
        for (const char *n = line; *n != '\0'; n++)
            if (!is_token_char((unsigned char)*n))
                return 400; /* includes whitespace before the colon */
        value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        end = value + strlen(value);
        while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (r->num_headers == ORIGIN_MAX_HEADERS)
            return 431;
        r->headers[r->num_headers].name = line;
        r->headers[r->num_headers].value = value;
        r->num_headers++;

        if (strcasecmp(line, "Content-Length") == 0) {
            char *stop;
            unsigned long long v;

            if (*value < '0' || *value > '9')
                return 400;
            errno = 0;
            v = strtoull(value, &stop, 10);
            if (errno != 0 || *stop != '\0' || (have_cl && v != r->content_length))
                return 400;
            have_cl = true;
            r->content_length = v;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            if (te != NULL)
                return 400; /* keep it simple: one field */
            te = value;
        }
    }

    r->keep_alive = true;
    if (te != NULL) {
        char last[32];

        list_last(te, last, sizeof(last));
        if (strcasecmp(last, "chunked") != 0)
            return 400; /* RFC 9112 6.3: a request body must end in chunked */
        r->framing = BODY_CHUNKED;
        /* RFC 9112 6.1: TE overrides CL, and the connection must close after. */
        r->keep_alive = !have_cl;
    } else if (have_cl && r->content_length > 0) {
        r->framing = BODY_LENGTH;
    }

    {
        const char *conn = find_header(r, "Connection");
        const char *expect = find_header(r, "Expect");

        if (r->version_minor == 0)
            r->keep_alive = r->keep_alive && conn != NULL && list_has_token(conn, "keep-alive");
        else if (conn != NULL && list_has_token(conn, "close"))
            r->keep_alive = false;
        r->expect_continue = expect != NULL && strcasecmp(expect, "100-continue") == 0;
    }
    return 0;
}

/* ---- bodies ---- */

static int body_begin(struct conn *c, struct request *r, struct body *b)
{
    memset(b, 0, sizeof(*b));
    b->framing = r->framing;
    b->remaining = r->framing == BODY_LENGTH ? r->content_length : 0;
    b->state = CH_SIZE;
    /* RFC 9110 10.1.1: the client may wait for this before sending the body. */
    if (r->expect_continue && r->framing != BODY_NONE && r->version_minor == 1 &&
        !r->sent_continue) {
        r->sent_continue = true;
        return conn_printf(c, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    return 0;
}

/* Copies up to n body bytes from the buffer or the socket. */
static ssize_t read_raw(struct conn *c, char *p, size_t n)
{
    size_t avail = conn_buffered(c);

    if (avail > 0) {
        if (n > avail)
            n = avail;
        memcpy(p, c->buf + c->off, n);
        c->off += n;
        return (ssize_t)n;
    }
    return conn_recv(c, p, n);
}

static int parse_chunk_size(const char *line, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;

    for (; i < len; i++) {
        char ch = line[i];
        int d;

        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            break;
        if (v > (UINT64_MAX >> 4))
            return -1;
        v = (v << 4) | (uint64_t)d;
    }
    if (i == 0 || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
        return -1;
    *out = v;
    return 0;
}

/* Reads up to n decoded body bytes. Returns > 0, 0 at the end of the body,
 * -1 on a malformed or truncated body. */
static ssize_t body_read(struct conn *c, struct body *b, char *p, size_t n)
{
    for (;;) {
        const char *line;
        long len;
        ssize_t r;

        switch (b->framing) {
        case BODY_NONE:
            return 0;
        case BODY_LENGTH:
            if (b->remaining == 0)
                return 0;
            if (n > b->remaining)
                n = (size_t)b->remaining;
            r = read_raw(c, p, n);
            if (r <= 0)
                return -1;
            b->remaining -= (uint64_t)r;
            return r;
        case BODY_CHUNKED:
            break;
        }
        switch (b->state) {
        case CH_SIZE:
            len = conn_read_line(c, &line);
            if (len < 0 || parse_chunk_size(line, (size_t)len, &b->remaining) < 0)
                return -1;
            b->state = b->remaining > 0 ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA:
            if (n > b->remaining)
                n = (size_t)b->remaining;
            r = read_raw(c, p, n);
            if (r <= 0)
                return -1;
            b->remaining -= (uint64_t)r;
            if (b->remaining == 0)
                b->state = CH_DATA_END;
            return r;
        case CH_DATA_END:
            len = conn_read_line(c, &line);
            if (len != 0)
                return -1;
            b->state = CH_SIZE;
            break;
        case CH_TRAILER:
            len = conn_read_line(c, &line);
            if (len < 0)
                return -1;
            if (len == 0)
                b->state = CH_DONE;
            break;
        case CH_DONE:
            return 0;
        }
    }
}

static int body_drain(struct conn *c, struct request *r)
{
    struct body b;
    ssize_t n;

    if (r->framing == BODY_NONE)
        return 0;
    if (body_begin(c, r, &b) < 0)
        return -1;
    while ((n = body_read(c, &b, c->io, ORIGIN_IO_BYTES)) > 0) {
    }
    return n < 0 ? -1 : 0;
}

/* ---- responses ---- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Content Too Large";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

static const char *connection_value(bool keep_alive)
{
    return keep_alive ? "keep-alive" : "close";
}

/* A complete response with a small body (omitted for HEAD). */
static int send_simple(struct conn *c, const struct request *r, int status, const char *type,
                       const char *body, size_t body_len, bool keep_alive)
{
    if (conn_printf(c,
                    "HTTP/1.1 %d %s\r\nServer: tapwire-test-origin\r\n"
                    "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
                    status, reason_phrase(status), type, body_len,
                    connection_value(keep_alive)) < 0)
        return ABORT;
    if ((r == NULL || !r->is_head) && conn_send(c, body, body_len) < 0)
        return ABORT;
    return keep_alive ? KEEP : CLOSE;
}

static int send_error(struct conn *c, const struct request *r, int status, const char *msg)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, reason_phrase(status), msg);

    return send_simple(c, r, status, "text/plain", body, (size_t)n, false);
}

/* Writes n bytes of the pattern starting at offset. */
static int send_pattern(struct conn *c, uint64_t offset, uint64_t n)
{
    while (n > 0) {
        size_t start = (size_t)(offset % 256);
        size_t len = n > ORIGIN_IO_BYTES ? ORIGIN_IO_BYTES : (size_t)n;

        if (conn_send(c, pattern + start, len) < 0)
            return -1;
        offset += len;
        n -= len;
    }
    return 0;
}

static bool query_has(const char *query, const char *param)
{
    size_t plen = strlen(param);
    const char *p = query;

    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, '&');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

        if (n == plen && strncmp(p, param, n) == 0)
            return true;
        p = end != NULL ? end + 1 : NULL;
    }
    return false;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *stop;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &stop, 10);
    if (errno != 0 || *stop != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int handle_bytes(struct conn *c, struct request *r, const char *arg, const char *query)
{
    /* Varied on purpose: 1-byte chunks, chunks straddling reads, big ones. */
    static const size_t chunk_sizes[] = {1, 2, 10, 255, 4096, 17, 65536, 1000, 8192, 3, 30000};
    uint64_t n, sent = 0;
    size_t k = 0;
    bool chunked = query_has(query, "chunked=1");
    bool until_close = query_has(query, "close=1");

    if (parse_u64(arg, ORIGIN_MAX_BYTES_N, &n) < 0)
        return send_error(c, r, 400, "bad byte count");
    if (r->is_head)
        return conn_printf(c,
                           "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                           "Content-Type: application/octet-stream\r\n"
                           "Content-Length: %" PRIu64 "\r\nConnection: %s\r\n\r\n",
                           n, connection_value(r->keep_alive)) < 0
                   ? ABORT
                   : (r->keep_alive ? KEEP : CLOSE);
    if (until_close || (chunked && r->version_minor == 0)) {
        if (conn_printf(c, "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                           "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n") <
                0 ||
            send_pattern(c, 0, n) < 0)
            return ABORT;
        return CLOSE;
    }
    if (!chunked) {
        if (conn_printf(c,
                        "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                        "Content-Type: application/octet-stream\r\n"
                        "Content-Length: %" PRIu64 "\r\nConnection: %s\r\n\r\n",
                        n, connection_value(r->keep_alive)) < 0 ||
            send_pattern(c, 0, n) < 0)
            return ABORT;
        return r->keep_alive ? KEEP : CLOSE;
    }
    if (conn_printf(c,
                    "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                    "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                    "Trailer: X-Trailer\r\nConnection: %s\r\n\r\n",
                    connection_value(r->keep_alive)) < 0)
        return ABORT;
    while (sent < n) {
        size_t len = chunk_sizes[k++ % (sizeof(chunk_sizes) / sizeof(chunk_sizes[0]))];
        int hl;

        if (len > n - sent)
            len = (size_t)(n - sent);
        /* One write per chunk: size line, data and CRLF together. */
        hl = snprintf(c->io, 32, "%zx\r\n", len);
        memcpy(c->io + hl, pattern + (sent % 256), len);
        memcpy(c->io + hl + len, "\r\n", 2);
        if (conn_send(c, c->io, (size_t)hl + len + 2) < 0)
            return ABORT;
        sent += len;
    }
    if (conn_printf(c, "0\r\nX-Trailer: done\r\n\r\n") < 0)
        return ABORT;
    return r->keep_alive ? KEEP : CLOSE;
}

/* GET /compressed/CODING?n=N[&chunked=1]: a text page (N lines, default 20)
 * sent with Content-Encoding gzip, deflate or br, compressed here with zlib
 * and libbrotli directly so the proxy's own codec is not what the test
 * checks itself against. */
static const char compressed_line[] =
    "Example Domain: this page is served compressed by the tapwire test origin.\n";

static int handle_compressed(struct conn *c, struct request *r, const char *coding,
                             const char *query)
{
    uint64_t lines = 20;
    const char *nq = strstr(query, "n=");
    unsigned char *plain = NULL, *packed = NULL;
    size_t plain_len, packed_len = 0;
    int rc = ABORT;

    if (nq != NULL && (nq == query || nq[-1] == '&')) {
        char num[24];
        size_t k = strcspn(nq + 2, "&");
        if (k == 0 || k >= sizeof(num))
            return send_error(c, r, 400, "bad n");
        memcpy(num, nq + 2, k);
        num[k] = '\0';
        if (parse_u64(num, 100000, &lines) < 0)
            return send_error(c, r, 400, "bad n");
    }
    plain_len = (size_t)lines * (sizeof(compressed_line) - 1);
    plain = malloc(plain_len + 1);
    if (plain == NULL)
        return ABORT;
    for (uint64_t i = 0; i < lines; i++)
        memcpy(plain + i * (sizeof(compressed_line) - 1), compressed_line,
               sizeof(compressed_line) - 1);
    if (strcmp(coding, "gzip") == 0 || strcmp(coding, "deflate") == 0) {
        z_stream z;
        memset(&z, 0, sizeof(z));
        if (deflateInit2(&z, 6, Z_DEFLATED, strcmp(coding, "gzip") == 0 ? 31 : 15, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            goto out;
        packed_len = deflateBound(&z, plain_len) + 32;
        packed = malloc(packed_len);
        if (packed == NULL) {
            deflateEnd(&z);
            goto out;
        }
        z.next_in = plain;
        z.avail_in = (uInt)plain_len;
        z.next_out = packed;
        z.avail_out = (uInt)packed_len;
        int zr = deflate(&z, Z_FINISH);
        packed_len = z.total_out;
        deflateEnd(&z);
        if (zr != Z_STREAM_END)
            goto out;
    } else if (strcmp(coding, "br") == 0) {
        packed_len = BrotliEncoderMaxCompressedSize(plain_len) + 64;
        packed = malloc(packed_len);
        if (packed == NULL || !BrotliEncoderCompress(5, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT,
                                                     plain_len, plain, &packed_len, packed))
            goto out;
    } else {
        free(plain);
        return send_error(c, r, 404, "unknown coding (gzip, deflate, br)");
    }
    bool chunked = query_has(query, "chunked=1");
    if (conn_printf(c,
                    "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                    "Content-Type: text/html; charset=utf-8\r\nContent-Encoding: %s\r\n"
                    "Vary: Accept-Encoding\r\nX-Plain-Length: %zu\r\n",
                    coding, plain_len) < 0)
        goto out;
    if (chunked) {
        /* Two chunks, so a proxy must really re-assemble the body. */
        size_t half = packed_len / 2;
        if (conn_printf(c, "Transfer-Encoding: chunked\r\nConnection: %s\r\n\r\n",
                        connection_value(r->keep_alive)) < 0 ||
            (!r->is_head &&
             (conn_printf(c, "%zx\r\n", half) < 0 || conn_send(c, packed, half) < 0 ||
              conn_printf(c, "\r\n%zx\r\n", packed_len - half) < 0 ||
              conn_send(c, packed + half, packed_len - half) < 0 ||
              conn_printf(c, "\r\n0\r\n\r\n") < 0)))
            goto out;
    } else {
        if (conn_printf(c, "Content-Length: %zu\r\nConnection: %s\r\n\r\n", packed_len,
                        connection_value(r->keep_alive)) < 0 ||
            (!r->is_head && conn_send(c, packed, packed_len) < 0))
            goto out;
    }
    rc = r->keep_alive ? KEEP : CLOSE;
out:
    free(plain);
    free(packed);
    return rc;
}

static int handle_sha256(struct conn *c, struct request *r)
{
    static const char hexdigits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    uint64_t total = 0;
    EVP_MD_CTX *ctx = NULL;
    struct body b;
    ssize_t n;
    int ret = ABORT;

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    if (body_begin(c, r, &b) < 0)
        goto out;
    while ((n = body_read(c, &b, c->io, ORIGIN_IO_BYTES)) > 0) {
        if (EVP_DigestUpdate(ctx, c->io, (size_t)n) != 1)
            goto out;
        total += (uint64_t)n;
    }
    if (n < 0) {
        fprintf(stderr, "origin: conn=%lu truncated request body after %" PRIu64 " bytes\n", c->id,
                total);
        goto out;
    }
    if (EVP_DigestFinal_ex(ctx, md, &md_len) != 1)
        goto out;
    for (unsigned int i = 0; i < md_len; i++) {
        hex[2 * i] = hexdigits[md[i] >> 4];
        hex[2 * i + 1] = hexdigits[md[i] & 0xf];
    }
    hex[2 * md_len] = '\0';
    if (conn_printf(c,
                    "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                    "Content-Type: text/plain\r\nX-Body-Length: %" PRIu64 "\r\n"
                    "Content-Length: %u\r\nConnection: %s\r\n\r\n%s",
                    total, 2 * md_len, connection_value(r->keep_alive), hex) < 0)
        goto out;
    ret = r->keep_alive ? KEEP : CLOSE;
out:
    EVP_MD_CTX_free(ctx);
    return ret;
}

static int handle_echo(struct conn *c, struct request *r)
{
    const char *type = find_header(r, "Content-Type");
    char *data = NULL;
    size_t len = 0, cap = 0;
    bool too_large = false;
    struct body b;
    ssize_t n;
    int ret = ABORT;

    if (body_begin(c, r, &b) < 0)
        goto out;
    while ((n = body_read(c, &b, c->io, ORIGIN_IO_BYTES)) > 0) {
        if (too_large || len + (size_t)n > ORIGIN_MAX_ECHO_BYTES) {
            too_large = true;
            continue;
        }
        if (len + (size_t)n > cap) {
            size_t ncap = cap == 0 ? ORIGIN_IO_BYTES : cap * 2;
            char *p;

            while (ncap < len + (size_t)n)
                ncap *= 2;
            p = realloc(data, ncap);
            if (p == NULL)
                goto out;
            data = p;
            cap = ncap;
        }
        memcpy(data + len, c->io, (size_t)n);
        len += (size_t)n;
    }
    if (n < 0)
        goto out;
    if (too_large) {
        ret = send_error(c, r, 413, "echo body too large");
        goto out;
    }
    if (type != NULL && strpbrk(type, "\r\n") == NULL && strlen(type) < 1024) {
        if (conn_printf(c,
                        "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\nContent-Type: %s\r\n"
                        "Content-Length: %zu\r\nConnection: %s\r\n\r\n",
                        type, len, connection_value(r->keep_alive)) < 0)
            goto out;
    } else if (conn_printf(c,
                           "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                           "Content-Length: %zu\r\nConnection: %s\r\n\r\n",
                           len, connection_value(r->keep_alive)) < 0) {
        goto out;
    }
    if (len > 0 && conn_send(c, data, len) < 0)
        goto out;
    ret = r->keep_alive ? KEEP : CLOSE;
out:
    free(data);
    return ret;
}

static int handle_status(struct conn *c, struct request *r, const char *arg)
{
    uint64_t status;
    char body[64];
    int n;

    if (parse_u64(arg, 599, &status) < 0 || status < 100)
        return send_error(c, r, 400, "bad status");
    if (status < 200)
        return send_error(c, r, 400, "1xx cannot be a final status");
    if (status == 204 || status == 304) {
        /* RFC 9110 15.3.5, 15.4.5: no content, and no Content-Length needed. */
        if (conn_printf(
                c, "HTTP/1.1 %d %s\r\nServer: tapwire-test-origin\r\nConnection: %s\r\n\r\n",
                (int)status, reason_phrase((int)status), connection_value(r->keep_alive)) < 0)
            return ABORT;
        return r->keep_alive ? KEEP : CLOSE;
    }
    n = snprintf(body, sizeof(body), "status %d\n", (int)status);
    return send_simple(c, r, (int)status, "text/plain", body, (size_t)n, r->keep_alive);
}

/* GET /cached: a page a browser would cache and revalidate (ETag,
 * Last-Modified, Expires, max-age), answered 304 when If-None-Match names
 * its ETag (RFC 9110 13.1.2). The body echoes the request head, so a test
 * sees which conditional fields arrived. */
static int handle_cached(struct conn *c, struct request *r)
{
    static const char etag[] = "\"tapwire-v1\"";
    const char *inm = find_header(r, "If-None-Match");
    bool is_fresh = inm != NULL && strstr(inm, etag) != NULL;

    if (conn_printf(c,
                    "HTTP/1.1 %d %s\r\nServer: tapwire-test-origin\r\nETag: %s\r\n"
                    "Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
                    "Expires: Thu, 01 Jan 2099 00:00:00 GMT\r\n"
                    "Cache-Control: public, max-age=31536000\r\n",
                    is_fresh ? 304 : 200, reason_phrase(is_fresh ? 304 : 200), etag) < 0)
        return ABORT;
    if (is_fresh) {
        if (conn_printf(c, "Connection: %s\r\n\r\n", connection_value(r->keep_alive)) < 0)
            return ABORT;
        return r->keep_alive ? KEEP : CLOSE;
    }
    if (conn_printf(c, "Content-Type: text/plain\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
                    r->raw_len, connection_value(r->keep_alive)) < 0)
        return ABORT;
    if (!r->is_head && conn_send(c, r->raw, r->raw_len) < 0)
        return ABORT;
    return r->keep_alive ? KEEP : CLOSE;
}

static int handle_abort(struct conn *c)
{
    if (conn_printf(c,
                    "HTTP/1.1 200 OK\r\nServer: tapwire-test-origin\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Content-Length: %d\r\n\r\n",
                    ORIGIN_ABORT_LENGTH) < 0 ||
        send_pattern(c, 0, ORIGIN_ABORT_SENT) < 0)
        return ABORT;
    return ABORT; /* vanish: no close_notify, no rest of the body */
}

/* Sec-WebSocket-Accept per RFC 6455 4.2.2, so a real WebSocket client is happy. */
static int websocket_accept(const char *key, char *out, size_t out_len)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char joined[256];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int n = snprintf(joined, sizeof(joined), "%s%s", key, guid);

    if (n < 0 || (size_t)n >= sizeof(joined) || out_len < 4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1)
        return -1;
    if (EVP_Digest(joined, (size_t)n, md, &md_len, EVP_sha1(), NULL) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, md, (int)md_len);
    return 0;
}

static int handle_upgrade(struct conn *c, struct request *r)
{
    const char *conn = find_header(r, "Connection");
    const char *upgrade = find_header(r, "Upgrade");
    const char *key = find_header(r, "Sec-WebSocket-Key");
    char accept[128] = "";
    ssize_t n;

    if (conn == NULL || upgrade == NULL || !list_has_token(conn, "upgrade") ||
        (!list_has_token(upgrade, "echo") && !list_has_token(upgrade, "websocket")) ||
        strlen(upgrade) > 256) {
        if (body_drain(c, r) < 0)
            return ABORT;
        if (conn_printf(c, "HTTP/1.1 426 Upgrade Required\r\nServer: tapwire-test-origin\r\n"
                           "Upgrade: echo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n") < 0)
            return ABORT;
        return CLOSE;
    }
    if (key != NULL && strlen(key) < 128 && websocket_accept(key, accept, sizeof(accept)) < 0)
        return ABORT;
    if (conn_printf(c,
                    "HTTP/1.1 101 Switching Protocols\r\nServer: tapwire-test-origin\r\n"
                    "Connection: Upgrade\r\nUpgrade: %s\r\n%s%s%s\r\n",
                    upgrade, accept[0] != '\0' ? "Sec-WebSocket-Accept: " : "", accept,
                    accept[0] != '\0' ? "\r\n" : "") < 0)
        return ABORT;
    /* Bytes the client sent right behind the head belong to the new protocol. */
    if (conn_buffered(c) > 0) {
        if (conn_send(c, c->buf + c->off, conn_buffered(c)) < 0)
            return ABORT;
        c->off = c->len = 0;
    }
    while ((n = conn_recv(c, c->io, ORIGIN_IO_BYTES)) > 0)
        if (conn_send(c, c->io, (size_t)n) < 0)
            return ABORT;
    return CLOSE;
}

/* Routes one parsed request. Returns KEEP, CLOSE or ABORT. */
static int handle(struct conn *c, struct request *r)
{
    const char *m = r->method;
    char path[2048];
    const char *target = r->target, *query;
    char *q;
    char body[128];
    int n;

    /* Route on the path even if a proxy (wrongly) forwarded absolute-form;
     * /headers still shows the target as received. */
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        target = strstr(target, "://") + 3;
        target += strcspn(target, "/");
    }
    if (strlen(target) >= sizeof(path))
        return send_error(c, r, 404, "path too long");
    strcpy(path, target);
    q = strchr(path, '?');
    query = "";
    if (q != NULL) {
        *q = '\0';
        query = q + 1;
    }

    if (strcmp(path, "/sha256") == 0) {
        if (strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0)
            return handle_sha256(c, r);
    } else if (strcmp(path, "/echo") == 0) {
        if (strcmp(m, "POST") == 0)
            return handle_echo(c, r);
    } else if (strcmp(path, "/echo-upgrade") == 0) {
        return handle_upgrade(c, r);
    } else if (strcmp(path, "/hang") == 0) {
        conn_hold(c, ORIGIN_HANG_MS);
        return ABORT;
    }

    if (body_drain(c, r) < 0)
        return ABORT;
    if (strncmp(path, "/bytes/", 7) == 0) {
        if (strcmp(m, "GET") == 0 || r->is_head)
            return handle_bytes(c, r, path + 7, query);
    } else if (strncmp(path, "/status/", 8) == 0) {
        return handle_status(c, r, path + 8);
    } else if (strncmp(path, "/compressed/", 12) == 0) {
        if (strcmp(m, "GET") == 0 || r->is_head)
            return handle_compressed(c, r, path + 12, query);
    } else if (strcmp(path, "/headers") == 0) {
        if (strcmp(m, "GET") == 0 || r->is_head)
            return send_simple(c, r, 200, "text/plain", r->raw, r->raw_len, r->keep_alive);
    } else if (strcmp(path, "/cached") == 0) {
        if (strcmp(m, "GET") == 0 || r->is_head)
            return handle_cached(c, r);
    } else if (strcmp(path, "/conn") == 0) {
        if (strcmp(m, "GET") == 0 || r->is_head) {
            n = snprintf(body, sizeof(body), "conn=%lu req=%lu", c->id, c->requests);
            return send_simple(c, r, 200, "text/plain", body, (size_t)n, r->keep_alive);
        }
    } else if (strcmp(path, "/abort") == 0) {
        if (strcmp(m, "GET") == 0)
            return handle_abort(c);
    } else if (strcmp(path, "/sha256") != 0 && strcmp(path, "/echo") != 0) {
        return send_simple(c, r, 404, "text/plain", "not found\n", 10, r->keep_alive);
    }
    return send_simple(c, r, 405, "text/plain", "method not allowed\n", 19, r->keep_alive);
}

/* ---- connections ---- */

/* Serves requests until the connection should end. Returns CLOSE for a
 * graceful end, ABORT to drop the connection without ceremony. */
static int serve_http(struct conn *c)
{
    for (;;) {
        struct request r;
        long head_len = conn_read_head(c);
        int status, result;

        if (head_len == 0)
            return CLOSE;
        if (head_len == -1)
            return ABORT;
        if (head_len == -2) {
            (void)send_error(c, NULL, 431, "request head too large");
            return CLOSE;
        }
        c->requests++;
        status = request_parse(c, (size_t)head_len, &r);
        fprintf(stderr, "origin: conn=%lu req=%lu %.32s %.200s%s\n", c->id, c->requests,
                r.method != NULL ? r.method : "-", r.target != NULL ? r.target : "-",
                status != 0 ? " (refused)" : "");
        if (status != 0) {
            (void)send_error(c, NULL, status, "malformed request");
            request_free(&r);
            return CLOSE;
        }
        result = handle(c, &r);
        request_free(&r);
        if (result != KEEP)
            return result;
        if (stopping)
            return CLOSE;
    }
}

static const char *describe_peer_error(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    return reason != NULL ? reason : "connection closed or protocol error";
}

static void conn_close(struct conn *c)
{
    if (c->ssl != NULL) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl);
    }
    /* Lingering close: send our FIN, then read until the peer's, so unread
     * bytes do not turn into an RST that destroys the end of our response. */
    if (shutdown(c->fd, SHUT_WR) == 0)
        conn_hold(c, ORIGIN_LINGER_MS);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    bool graceful = false;

    if (srv->opt.hang_tls) {
        conn_hold(c, ORIGIN_HANG_MS);
    } else if (srv->ctx != NULL) {
        c->ssl = SSL_new(srv->ctx);
        ERR_clear_error();
        if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
            print_ssl_errors("SSL_new failed");
        } else if (SSL_accept(c->ssl) != 1) {
            fprintf(stderr, "origin: conn=%lu TLS handshake failed: %s\n", c->id,
                    describe_peer_error());
            ERR_clear_error();
        } else {
            const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
            fprintf(stderr, "origin: conn=%lu TLS %s sni=%s\n", c->id, SSL_get_version(c->ssl),
                    sni != NULL ? sni : "-");
            graceful = serve_http(c) == CLOSE;
        }
    } else {
        graceful = serve_http(c) == CLOSE;
    }
    if (graceful)
        conn_close(c);

    /* Leave the list before closing the fd: the shutdown path must never
     * touch a descriptor number that may already belong to someone else. */
    pthread_mutex_lock(&srv->lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->lock);

    SSL_free(c->ssl);
    close(c->fd);
    free(c->buf);
    free(c->io);
    free(c);

    pthread_mutex_lock(&srv->lock);
    srv->active--;
    if (srv->active == 0)
        pthread_cond_broadcast(&srv->drained);
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

static void conn_start(struct server *srv, int fd, unsigned long id)
{
    struct timeval tv = {.tv_sec = ORIGIN_IO_TIMEOUT_S};
    int one = 1;
    struct conn *c = NULL;
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t block, old;
    bool started = false;

    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto out;
    c->srv = srv;
    c->fd = fd;
    c->id = id;
    c->buf = malloc(ORIGIN_MAX_HEAD_BYTES);
    c->io = malloc(ORIGIN_IO_BYTES + 64);
    if (c->buf == NULL || c->io == NULL)
        goto out;

    pthread_mutex_lock(&srv->lock);
    if (srv->active >= ORIGIN_MAX_CONNS) {
        pthread_mutex_unlock(&srv->lock);
        fprintf(stderr, "origin: too many connections, closing conn=%lu\n", id);
        goto out;
    }
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->active++;
    pthread_mutex_unlock(&srv->lock);

    /* Connection threads never take the signals: the accept loop does. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    started = pthread_create(&tid, &attr, conn_main, c) == 0;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!started) {
        fprintf(stderr, "origin: pthread_create failed\n");
        pthread_mutex_lock(&srv->lock);
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            srv->conns = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
        srv->active--;
        pthread_mutex_unlock(&srv->lock);
    }
out:
    if (!started) {
        close(fd);
        if (c != NULL) {
            free(c->buf);
            free(c->io);
            free(c);
        }
    }
}

/* ---- setup ---- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned int i = 0;

    (void)ssl;
    (void)arg;
    while (i < inlen) {
        unsigned int len = in[i];

        if (i + 1 + len > inlen)
            break;
        if (len == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)len;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct server *srv = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    (void)alert;
    if (name == NULL)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < srv->sni_count; i++) {
        if (strcasecmp(name, srv->sni[i].name) == 0) {
            if (SSL_set_SSL_CTX(ssl, srv->sni[i].ctx) == NULL)
                return SSL_TLSEXT_ERR_ALERT_FATAL;
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(const char *cert, const char *key, bool alpn)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        goto fail;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    if (alpn)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
fail:
    fprintf(stderr, "origin: cannot load %s / %s\n", cert, key);
    print_ssl_errors("TLS setup failed");
    SSL_CTX_free(ctx);
    return NULL;
}

static int open_socket(const char *spec, bool do_listen, unsigned *port_out)
{
    char host[256], port[16];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints = {0}, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    size_t hlen;
    int fd = -1, one = 1, rc;

    if (colon == NULL || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(port))
        goto bad;
    hlen = (size_t)(colon - spec);
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
        spec++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        goto bad;
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    strcpy(port, colon + 1);

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "origin: --listen %s: %s\n", spec, gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || (do_listen && listen(fd, 128) < 0) ||
        getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
        fprintf(stderr, "origin: cannot listen on %s:%s: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    } else if (ss.ss_family == AF_INET) {
        *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else {
        *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    freeaddrinfo(ai);
    return fd;
bad:
    fprintf(stderr, "origin: --listen wants HOST:PORT, got %s\n", spec);
    return -1;
}

/* Written to a temporary name and renamed, so a reader never sees half. */
static int write_port_file(const char *path, unsigned port)
{
    char tmp[4096];
    FILE *f;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());

    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (f == NULL)
        goto fail;
    if (fprintf(f, "%u\n", port) < 0) {
        fclose(f);
        goto fail;
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "origin: cannot write %s: %s\n", path, strerror(errno));
    unlink(tmp);
    return -1;
}

static int write_pattern(const char *count)
{
    uint64_t n;

    if (parse_u64(count, UINT64_MAX, &n) < 0) {
        fprintf(stderr, "origin: --pattern wants a byte count\n");
        return 2;
    }
    pattern_init();
    for (uint64_t off = 0; off < n;) {
        size_t len = n - off > ORIGIN_IO_BYTES ? ORIGIN_IO_BYTES : (size_t)(n - off);

        if (fwrite(pattern + off % 256, 1, len, stdout) != len)
            return 1;
        off += len;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: origin --listen HOST:PORT [--port-file FILE] [--tls CERT KEY]\n"
                    "              [--sni NAME CERT KEY]... [--alpn] [--hang-tls] [--refuse]\n"
                    "       origin --pattern N\n");
}

static int parse_options(int argc, char **argv, struct options *opt)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int left = argc - i - 1;

        if (strcmp(a, "--listen") == 0 && left >= 1) {
            opt->listen = argv[++i];
        } else if (strcmp(a, "--port-file") == 0 && left >= 1) {
            opt->port_file = argv[++i];
        } else if (strcmp(a, "--tls") == 0 && left >= 2) {
            opt->tls_cert = argv[++i];
            opt->tls_key = argv[++i];
        } else if (strcmp(a, "--sni") == 0 && left >= 3) {
            if (opt->sni_count == ORIGIN_MAX_SNI)
                return -1;
            opt->sni[opt->sni_count].name = argv[++i];
            opt->sni[opt->sni_count].cert = argv[++i];
            opt->sni[opt->sni_count].key = argv[++i];
            opt->sni_count++;
        } else if (strcmp(a, "--alpn") == 0) {
            opt->alpn = true;
        } else if (strcmp(a, "--hang-tls") == 0) {
            opt->hang_tls = true;
        } else if (strcmp(a, "--refuse") == 0) {
            opt->refuse = true;
        } else {
            return -1;
        }
    }
    return opt->listen != NULL ? 0 : -1;
}

/* Accepts until a signal arrives. Returns 0, or -1 on a fatal accept error. */
static int accept_loop(struct server *srv, int lfd)
{
    unsigned long next_id = 1;

    while (!stopping) {
        struct pollfd pfd[2] = {{.fd = lfd, .events = POLLIN},
                                {.fd = wake_pipe[0], .events = POLLIN}};
        int fd, r;

        /* --refuse binds without listening: connecting there is refused, and
         * holding the port keeps anyone else from taking it meanwhile. */
        if (srv->opt.refuse)
            pfd[0].fd = -1;
        r = poll(pfd, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (pfd[1].revents != 0)
            break;
        if (pfd[0].revents == 0)
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
                errno == EAGAIN)
                continue;
            fprintf(stderr, "origin: accept: %s\n", strerror(errno));
            return -1;
        }
        conn_start(srv, fd, next_id++);
    }
    return 0;
}

/* Wakes every connection thread and waits, bounded, for all of them to end. */
static void drain_connections(struct server *srv)
{
    struct timespec deadline;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += ORIGIN_SHUTDOWN_WAIT_MS / 1000;
    pthread_mutex_lock(&srv->lock);
    for (struct conn *c = srv->conns; c != NULL; c = c->next)
        (void)shutdown(c->fd, SHUT_RDWR);
    while (srv->active > 0 && rc == 0)
        rc = pthread_cond_timedwait(&srv->drained, &srv->lock, &deadline);
    if (srv->active > 0)
        fprintf(stderr, "origin: %zu connections still open at exit\n", srv->active);
    pthread_mutex_unlock(&srv->lock);
}

int main(int argc, char **argv)
{
    struct server srv;
    struct sigaction sa;
    unsigned port = 0;
    int lfd = -1, status = 1;

    memset(&srv, 0, sizeof(srv));
    pthread_mutex_init(&srv.lock, NULL);
    pthread_cond_init(&srv.drained, NULL);

    if (argc == 3 && strcmp(argv[1], "--pattern") == 0)
        return write_pattern(argv[2]);
    if (parse_options(argc, argv, &srv.opt) < 0) {
        usage();
        return 2;
    }
    pattern_init();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        perror("origin: pipe");
        goto out;
    }
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (!srv.opt.hang_tls && (srv.opt.tls_cert != NULL || srv.opt.sni_count > 0)) {
        const char *cert = srv.opt.tls_cert != NULL ? srv.opt.tls_cert : srv.opt.sni[0].cert;
        const char *key = srv.opt.tls_cert != NULL ? srv.opt.tls_key : srv.opt.sni[0].key;

        srv.ctx = make_ctx(cert, key, srv.opt.alpn);
        if (srv.ctx == NULL)
            goto out;
        for (size_t i = 0; i < srv.opt.sni_count; i++) {
            srv.sni[i].name = srv.opt.sni[i].name;
            srv.sni[i].ctx = make_ctx(srv.opt.sni[i].cert, srv.opt.sni[i].key, srv.opt.alpn);
            if (srv.sni[i].ctx == NULL)
                goto out;
            srv.sni_count++;
        }
        if (srv.sni_count > 0) {
            SSL_CTX_set_tlsext_servername_callback(srv.ctx, servername_cb);
            SSL_CTX_set_tlsext_servername_arg(srv.ctx, &srv);
        }
    }

    lfd = open_socket(srv.opt.listen, !srv.opt.refuse, &port);
    if (lfd < 0)
        goto out;
    if (srv.opt.port_file != NULL && write_port_file(srv.opt.port_file, port) < 0)
        goto out;
    fprintf(stderr, "origin: %s on port %u%s\n",
            srv.opt.refuse     ? "refusing"
            : srv.opt.hang_tls ? "hanging"
                               : "listening",
            port, srv.ctx != NULL ? " (TLS)" : "");

    status = accept_loop(&srv, lfd) == 0 ? 0 : 1;
    close(lfd);
    lfd = -1;
    drain_connections(&srv);
    fprintf(stderr, "origin: stopped\n");
out:
    if (lfd >= 0)
        close(lfd);
    for (size_t i = 0; i < srv.sni_count; i++)
        SSL_CTX_free(srv.sni[i].ctx);
    SSL_CTX_free(srv.ctx);
    if (wake_pipe[0] >= 0) {
        close(wake_pipe[0]);
        close(wake_pipe[1]);
    }
    pthread_cond_destroy(&srv.drained);
    pthread_mutex_destroy(&srv.lock);
    return status;
}
