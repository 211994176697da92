/*
 * loadgen: HTTPS load generator for tapwire's benchmarks.
 *
 * Each worker thread opens a connection (TCP to the proxy, "CONNECT
 * target", or TCP straight to the origin in direct mode), completes a TLS
 * handshake that verifies the chain against --ca and checks the host name,
 * then sends up to K keep-alive GETs and reads every response whole
 * (Content-Length or chunked), and starts over with a new connection.
 * The run stops at --duration seconds or --requests requests, whichever
 * comes first; every socket wait is bounded by --timeout.
 *
 * --names FILE gives each new connection the next name of the list as SNI
 * and Host, so a proxy has to mint a certificate per connection ("cold
 * hosts"). --hold SECONDS opens --connections connections, one request on
 * each, prints "holding N" and keeps them open until SIGUSR1, SIGTERM or the
 * time runs out: the harness reads the proxy's memory meanwhile.
 *
 * The result is one line of text, or of JSON with --json. Latencies are per
 * request (request written to last byte read); time to first byte is per
 * connection (TCP connect started to first response byte). MB are 10^6 bytes
 * of response body.
 *
 * Build: cc -O2 -o loadgen loadgen.c $(pkg-config --cflags --libs openssl) -pthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define LOADGEN_MAX_HEAD_BYTES 65536
#define LOADGEN_BUF_BYTES (64 * 1024)
#define LOADGEN_MAX_ERRORS_SHOWN 5
#define LOADGEN_MAX_NAME_BYTES 256

struct options {
    const char *proxy;   /* host:port, NULL in direct mode */
    const char *connect; /* host:port: origin (direct) or CONNECT target */
    const char *name;    /* SNI and Host */
    const char *names_file;
    const char *ca_file;
    const char *path;
    int connections;
    long per_conn;     /* requests per connection; 0 = no limit */
    double duration_s; /* 0 = no limit */
    long max_requests; /* 0 = no limit */
    double hold_s;     /* > 0: hold mode */
    double timeout_s;
    bool json;
    bool plain; /* no TLS: plain HTTP (for checking the harness) */
};

/* A growable array of samples in microseconds. */
struct samples {
    double *v;
    size_t n, cap;
};

struct worker {
    pthread_t tid;
    int index;
    struct samples latency;
    struct samples ttfb;
    struct samples handshake;
    uint64_t requests, errors, connections, body_bytes;
};

/* One open connection. */
struct link {
    int fd;
    SSL *ssl;
    unsigned char buf[LOADGEN_BUF_BYTES];
    size_t off, len; /* unread bytes are buf[off .. off+len) */
};

static struct options opt = {
    .name = "bench.test",
    .path = "/1k",
    .connections = 1,
    .per_conn = 0,
    .duration_s = 10,
    .timeout_s = 10,
};
static SSL_CTX *ctx;
static char **names;
static size_t names_count;
static struct addrinfo *dest_ai;
static char connect_line[600];
static char host_port_suffix[16]; /* ":PORT" for Host when the origin port is not 443 */
static double deadline;
static atomic_long requests_started;
static atomic_long connections_started;
static atomic_int errors_shown;
static atomic_bool stopping;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void samples_add(struct samples *s, double us)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *v = realloc(s->v, cap * sizeof(*v));
        if (v == NULL)
            return;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = us;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples, in milliseconds; -1 when none. */
static double percentile_ms(const struct samples *s, double p)
{
    if (s->n == 0)
        return -1;
    size_t rank = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1] / 1000.0;
}

static void fail(struct worker *w, const char *what)
{
    w->errors++;
    if (atomic_load(&stopping))
        return;
    if (atomic_fetch_add(&errors_shown, 1) < LOADGEN_MAX_ERRORS_SHOWN) {
        unsigned long e = ERR_peek_last_error();
        char ossl[256] = "";
        if (e != 0)
            ERR_error_string_n(e, ossl, sizeof(ossl));
        fprintf(stderr, "loadgen: %s%s%s%s%s\n", what, errno ? ": " : "",
                errno ? strerror(errno) : "", ossl[0] ? ": " : "", ossl);
    }
    ERR_clear_error();
}

static int split_host_port(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostlen ||
        strlen(colon + 1) >= portlen || colon[1] == '\0')
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static bool should_stop(void)
{
    if (atomic_load(&stopping))
        return true;
    if (opt.duration_s > 0 && now_s() >= deadline)
        return true;
    return false;
}

/* Claims one request against --requests; false when the budget is spent. */
static bool claim_request(void)
{
    if (should_stop())
        return false;
    if (opt.max_requests > 0 && atomic_fetch_add(&requests_started, 1) >= opt.max_requests)
        return false;
    return true;
}

/* Bounds every blocking read and write on fd by --timeout. */
static int set_timeouts(int fd)
{
    struct timeval tv;
    tv.tv_sec = (time_t)opt.timeout_s;
    tv.tv_usec = (suseconds_t)((opt.timeout_s - (double)tv.tv_sec) * 1e6);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -1;
    return 0;
}

static ssize_t link_read(struct link *l, void *buf, size_t len)
{
    if (l->ssl == NULL) {
        ssize_t n;
        do {
            n = read(l->fd, buf, len);
        } while (n < 0 && errno == EINTR);
        return n;
    }
    ERR_clear_error();
    int n = SSL_read(l->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(l->ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)
        return 0;
    return -1;
}

static int link_write_all(struct link *l, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n;
        if (l->ssl == NULL) {
            n = write(l->fd, p, len);
            if (n < 0 && errno == EINTR)
                continue;
        } else {
            ERR_clear_error();
            n = SSL_write(l->ssl, p, (int)len);
        }
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Makes sure at least one unread byte is buffered. Returns 1, 0 at EOF, -1. */
static int link_fill(struct link *l)
{
    if (l->len > 0)
        return 1;
    l->off = 0;
    ssize_t n = link_read(l, l->buf, sizeof(l->buf));
    if (n <= 0)
        return (int)n;
    l->len = (size_t)n;
    return 1;
}

/* Reads one CRLF-terminated line (without the CRLF) into line. */
static int link_read_line(struct link *l, char *line, size_t cap)
{
    size_t used = 0;
    for (;;) {
        if (link_fill(l) <= 0)
            return -1;
        unsigned char *start = l->buf + l->off;
        unsigned char *nl = memchr(start, '\n', l->len);
        size_t take = nl ? (size_t)(nl - start) + 1 : l->len;
        if (used + take >= cap)
            return -1;
        memcpy(line + used, start, take);
        used += take;
        l->off += take;
        l->len -= take;
        if (nl) {
            line[used] = '\0';
            while (used > 0 && (line[used - 1] == '\n' || line[used - 1] == '\r'))
                line[--used] = '\0';
            return (int)used;
        }
    }
}

/* Discards n body bytes. */
static int link_skip(struct link *l, uint64_t n)
{
    while (n > 0) {
        if (l->len == 0) {
            /* Read large bodies straight into the buffer, whole. */
            if (link_fill(l) <= 0)
                return -1;
        }
        size_t take = l->len < n ? l->len : (size_t)n;
        l->off += take;
        l->len -= take;
        n -= take;
    }
    return 0;
}

/* Reads one response to a GET. Sets *first_byte_at when the first byte
 * arrives, *body to the body's size, *can_reuse from Connection. */
static int read_response(struct link *l, double *first_byte_at, uint64_t *body, bool *can_reuse)
{
    char line[8192];
    int status = 0, minor = 1;
    bool chunked = false, has_len = false, close_after = false;
    uint64_t clen = 0;

    if (link_fill(l) <= 0)
        return -1;
    *first_byte_at = now_s();
    if (link_read_line(l, line, sizeof(line)) < 0)
        return -1;
    if (sscanf(line, "HTTP/1.%d %d", &minor, &status) != 2)
        return -1;
    if (minor == 0)
        close_after = true;
    for (;;) {
        int n = link_read_line(l, line, sizeof(line));
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(line, "content-length") == 0) {
            clen = strtoull(v, NULL, 10);
            has_len = true;
        } else if (strcasecmp(line, "transfer-encoding") == 0) {
            chunked = strcasestr(v, "chunked") != NULL;
        } else if (strcasecmp(line, "connection") == 0) {
            if (strcasestr(v, "close"))
                close_after = true;
            else if (strcasestr(v, "keep-alive"))
                close_after = false;
        }
    }
    *body = 0;
    if (status == 204 || status == 304 || (status >= 100 && status < 200)) {
        /* no body */
    } else if (chunked) {
        for (;;) {
            if (link_read_line(l, line, sizeof(line)) < 0)
                return -1;
            uint64_t size = strtoull(line, NULL, 16);
            if (size == 0) {
                /* trailers up to the empty line */
                for (;;) {
                    int n = link_read_line(l, line, sizeof(line));
                    if (n < 0)
                        return -1;
                    if (n == 0)
                        break;
                }
                break;
            }
            if (link_skip(l, size) < 0)
                return -1;
            *body += size;
            if (link_read_line(l, line, sizeof(line)) != 0)
                return -1;
        }
    } else if (has_len) {
        if (link_skip(l, clen) < 0)
            return -1;
        *body = clen;
    } else {
        /* delimited by close */
        for (;;) {
            int r = link_fill(l);
            if (r < 0)
                return -1;
            if (r == 0)
                break;
            *body += l->len;
            l->len = 0;
        }
        close_after = true;
    }
    *can_reuse = !close_after;
    if (status != 200) {
        *body = (uint64_t)status;
        return -2;
    }
    return 0;
}

static void link_close(struct link *l)
{
    if (l->ssl) {
        SSL_shutdown(l->ssl); /* send close_notify; do not wait for the peer's */
        SSL_free(l->ssl);
        l->ssl = NULL;
    }
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->off = l->len = 0;
}

static const char *next_name(void)
{
    if (names_count == 0)
        return opt.name;
    long i = atomic_fetch_add(&connections_started, 1);
    return names[(size_t)i % names_count];
}

/* Opens TCP (+ CONNECT) (+ TLS) for name. Returns 0 or -1 (counted). */
static int link_open(struct worker *w, struct link *l, const char *name)
{
    int one = 1;
    l->fd = -1;
    l->ssl = NULL;
    l->off = l->len = 0;

    l->fd = socket(dest_ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        fail(w, "socket");
        goto fail;
    }
    setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (set_timeouts(l->fd) < 0) {
        fail(w, "setsockopt");
        goto fail;
    }
    if (connect(l->fd, dest_ai->ai_addr, dest_ai->ai_addrlen) < 0) {
        fail(w, "connect");
        goto fail;
    }
    if (opt.proxy) {
        char line[1024];
        int status = 0;
        if (link_write_all(l, connect_line, strlen(connect_line)) < 0) {
            fail(w, "CONNECT write");
            goto fail;
        }
        if (link_read_line(l, line, sizeof(line)) < 0 ||
            sscanf(line, "HTTP/1.%*d %d", &status) != 1) {
            fail(w, "CONNECT: no response");
            goto fail;
        }
        for (;;) {
            int n = link_read_line(l, line, sizeof(line));
            if (n < 0) {
                fail(w, "CONNECT: truncated response");
                goto fail;
            }
            if (n == 0)
                break;
        }
        if (status != 200) {
            errno = 0;
            snprintf(line, sizeof(line), "CONNECT: status %d", status);
            fail(w, line);
            goto fail;
        }
        if (l->len != 0) {
            errno = 0;
            fail(w, "CONNECT: bytes after the response");
            goto fail;
        }
    }
    if (opt.plain)
        return 0;
    l->ssl = SSL_new(ctx);
    if (l->ssl == NULL || SSL_set_fd(l->ssl, l->fd) != 1 ||
        SSL_set_tlsext_host_name(l->ssl, name) != 1 || SSL_set1_host(l->ssl, name) != 1) {
        fail(w, "SSL_new");
        goto fail;
    }
    ERR_clear_error();
    errno = 0;
    if (SSL_connect(l->ssl) != 1) {
        long v = SSL_get_verify_result(l->ssl);
        char msg[512];
        snprintf(msg, sizeof(msg), "TLS handshake with %s failed (verify: %s)", name,
                 X509_verify_cert_error_string(v));
        fail(w, msg);
        goto fail;
    }
    return 0;
fail:
    link_close(l);
    return -1;
}

static int send_get(struct link *l, const char *name)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s%s\r\nUser-Agent: tapwire-loadgen\r\n"
                     "Accept: */*\r\n\r\n",
                     opt.path, name, host_port_suffix);
    if (n < 0 || (size_t)n >= sizeof(req))
        return -1;
    return link_write_all(l, req, (size_t)n);
}

/* One request on an open link; records its samples. Returns 0 and sets
 * *reuse, or -1 (counted; the link must be closed). */
static int do_request(struct worker *w, struct link *l, const char *name, double conn_start,
                      bool first, bool *reuse)
{
    double t0 = now_s(), fb = 0;
    uint64_t body = 0;
    if (send_get(l, name) < 0) {
        fail(w, "request write");
        return -1;
    }
    int r = read_response(l, &fb, &body, reuse);
    if (r < 0) {
        if (r == -2) {
            char msg[64];
            errno = 0;
            snprintf(msg, sizeof(msg), "response status %d", (int)body);
            fail(w, msg);
        } else {
            fail(w, "response read");
        }
        return -1;
    }
    double t1 = now_s();
    samples_add(&w->latency, (t1 - t0) * 1e6);
    if (first)
        samples_add(&w->ttfb, (fb - conn_start) * 1e6);
    w->requests++;
    w->body_bytes += body;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct link *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->fd = -1;
    while (claim_request()) {
        const char *name = next_name();
        double start = now_s();
        bool reuse = true;
        if (link_open(w, l, name) < 0) {
            /* Do not spin on a peer that refuses: errors are counted anyway. */
            struct timespec pause = {0, 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
            continue;
        }
        w->connections++;
        samples_add(&w->handshake, (now_s() - start) * 1e6);
        long done = 0;
        for (;;) {
            if (do_request(w, l, name, start, done == 0, &reuse) < 0)
                break;
            done++;
            if (!reuse || (opt.per_conn > 0 && done >= opt.per_conn) || !claim_request())
                break;
        }
        link_close(l);
    }
    free(l);
    return NULL;
}

/* Hold mode: slots are filled by the workers, then held by main. */
static struct link **held;
static atomic_long next_slot;

static void *holder_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        long i = atomic_fetch_add(&next_slot, 1);
        if (i >= opt.connections || should_stop())
            break;
        struct link *l = calloc(1, sizeof(*l));
        if (l == NULL) {
            fail(w, "out of memory");
            continue;
        }
        const char *name = next_name();
        double start = now_s();
        bool reuse = true;
        if (link_open(w, l, name) < 0) {
            free(l);
            continue;
        }
        w->connections++;
        samples_add(&w->handshake, (now_s() - start) * 1e6);
        if (do_request(w, l, name, start, true, &reuse) < 0 || !reuse) {
            link_close(l);
            free(l);
            continue;
        }
        held[i] = l;
    }
    return NULL;
}

static int load_names(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[LOADGEN_MAX_NAME_BYTES];
    size_t cap = 0;
    int rc = -1;
    if (f == NULL) {
        perror(path);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (names_count == cap) {
            cap = cap ? cap * 2 : 256;
            char **n = realloc(names, cap * sizeof(*n));
            if (n == NULL)
                goto out;
            names = n;
        }
        names[names_count] = strdup(line);
        if (names[names_count] == NULL)
            goto out;
        names_count++;
    }
    rc = names_count > 0 ? 0 : -1;
    if (rc < 0)
        fprintf(stderr, "loadgen: %s: no names\n", path);
out:
    fclose(f);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen --connect HOST:PORT [options]\n"
            "  --proxy HOST:PORT     CONNECT through this proxy (default: direct)\n"
            "  --connect HOST:PORT   origin address, or the CONNECT target with --proxy\n"
            "  --name NAME           SNI, Host and the name checked in the certificate\n"
            "                        (default bench.test)\n"
            "  --names FILE          one name a line; each new connection takes the next\n"
            "  --ca FILE             trust anchors for the chain (PEM)\n"
            "  --path PATH           request target (default /1k)\n"
            "  -c, --connections N   concurrent connections (default 1)\n"
            "  -k, --per-conn K      requests per connection; 1 = new connection per\n"
            "                        request; 0 = no limit (default 0)\n"
            "  -d, --duration S      stop after S seconds (default 10; 0 = no limit)\n"
            "  -n, --requests N      stop after N requests (default: no limit)\n"
            "  --hold S              open -c connections, one request each, print\n"
            "                        \"holding N\", keep them open until SIGUSR1/SIGTERM or S s\n"
            "  --timeout S           bound on every socket wait (default 10)\n"
            "  --plain               no TLS (plain HTTP through the tunnel)\n"
            "  --json                print the result as one JSON object\n");
}

static bool is_option(const char *arg, const char *long_name, const char *short_name)
{
    return strcmp(arg, long_name) == 0 || (short_name != NULL && strcmp(arg, short_name) == 0);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void merge(struct samples *dst, const struct samples *src)
{
    for (size_t i = 0; i < src->n; i++)
        samples_add(dst, src->v[i]);
}

int main(int argc, char **argv)
{
    char host[256], port[32];
    struct worker *workers = NULL;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(long_, short_) is_option(a, long_, short_)
#define NEED()                                                                                     \
    do {                                                                                           \
        if (v == NULL) {                                                                           \
            fprintf(stderr, "loadgen: %s needs a value\n", a);                                     \
            return 2;                                                                              \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
        if (ARG("--proxy", NULL)) {
            NEED();
            opt.proxy = v;
        } else if (ARG("--connect", NULL)) {
            NEED();
            opt.connect = v;
        } else if (ARG("--name", NULL)) {
            NEED();
            opt.name = v;
        } else if (ARG("--names", NULL)) {
            NEED();
            opt.names_file = v;
        } else if (ARG("--ca", NULL)) {
            NEED();
            opt.ca_file = v;
        } else if (ARG("--path", NULL)) {
            NEED();
            opt.path = v;
        } else if (ARG("--connections", "-c")) {
            NEED();
            opt.connections = atoi(v);
        } else if (ARG("--per-conn", "-k")) {
            NEED();
            opt.per_conn = atol(v);
        } else if (ARG("--duration", "-d")) {
            NEED();
            opt.duration_s = atof(v);
        } else if (ARG("--requests", "-n")) {
            NEED();
            opt.max_requests = atol(v);
        } else if (ARG("--hold", NULL)) {
            NEED();
            opt.hold_s = atof(v);
        } else if (ARG("--timeout", NULL)) {
            NEED();
            opt.timeout_s = atof(v);
        } else if (ARG("--plain", NULL)) {
            opt.plain = true;
        } else if (ARG("--json", NULL)) {
            opt.json = true;
        } else if (ARG("--help", "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "loadgen: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
#undef ARG
#undef NEED
    }
    if (opt.connect == NULL || opt.connections < 1 || opt.per_conn < 0 || opt.timeout_s <= 0 ||
        (!opt.plain && opt.ca_file == NULL)) {
        usage(stderr);
        return 2;
    }
    if (opt.names_file && load_names(opt.names_file) < 0)
        return 2;

    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);

    /* Where TCP goes: the proxy, or the origin itself. */
    if (split_host_port(opt.proxy ? opt.proxy : opt.connect, host, sizeof(host), port,
                        sizeof(port)) < 0) {
        fprintf(stderr, "loadgen: bad address %s\n", opt.proxy ? opt.proxy : opt.connect);
        return 2;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &dest_ai);
    if (gai != 0) {
        fprintf(stderr, "loadgen: %s: %s\n", host, gai_strerror(gai));
        return 2;
    }
    /* A client of https://NAME:PORT/ sends Host: NAME:PORT (RFC 9110 7.2);
     * squid routes bumped requests by it. */
    const char *origin_port = strrchr(opt.connect, ':');
    if (origin_port != NULL && strcmp(origin_port, ":443") != 0)
        snprintf(host_port_suffix, sizeof(host_port_suffix), "%s", origin_port);
    if (opt.proxy)
        snprintf(connect_line, sizeof(connect_line),
                 "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tapwire-loadgen\r\n\r\n",
                 opt.connect, opt.connect);

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        ERR_print_errors_fp(stderr);
        goto out;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Every connection is a full handshake, as a client seeing the proxy for
     * the first time makes it: no session resumption. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (!opt.plain && SSL_CTX_load_verify_locations(ctx, opt.ca_file, NULL) != 1) {
        fprintf(stderr, "loadgen: cannot load %s\n", opt.ca_file);
        ERR_print_errors_fp(stderr);
        goto out;
    }

    /* Block the signals that end a hold in every thread; main waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int nthreads = opt.connections;
    if (opt.hold_s > 0) {
        nthreads = opt.connections < 8 ? opt.connections : 8;
        held = calloc((size_t)opt.connections, sizeof(*held));
        if (held == NULL)
            goto out;
        opt.duration_s = 0;
    }
    workers = calloc((size_t)nthreads, sizeof(*workers));
    if (workers == NULL)
        goto out;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    double start = now_s();
    deadline = start + opt.duration_s;
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        workers[i].index = i;
        if (pthread_create(&workers[i].tid, &attr, opt.hold_s > 0 ? holder_main : worker_main,
                           &workers[i]) != 0) {
            fprintf(stderr, "loadgen: cannot start thread %d\n", i);
            atomic_store(&stopping, true);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(workers[i].tid, NULL);
    double elapsed = now_s() - start;

    long holding = 0;
    if (opt.hold_s > 0) {
        for (int i = 0; i < opt.connections; i++)
            holding += held[i] != NULL;
        printf("holding %ld\n", holding);
        fflush(stdout);
        struct timespec ts = {.tv_sec = (time_t)opt.hold_s,
                              .tv_nsec = (long)((opt.hold_s - (double)(time_t)opt.hold_s) * 1e9)};
        sigtimedwait(&set, NULL, &ts);
        /* How many the proxy kept open all along: a read that would block
         * means the connection is still there. */
        long alive = 0;
        for (int i = 0; i < opt.connections; i++) {
            if (held[i] == NULL)
                continue;
            char c;
            ssize_t n = recv(held[i]->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                alive++;
            link_close(held[i]);
            free(held[i]);
        }
        holding = alive;
    }

    struct samples lat = {0}, ttfb = {0}, hs = {0};
    uint64_t reqs = 0, errs = 0, conns = 0, bytes = 0;
    for (int i = 0; i < started; i++) {
        merge(&lat, &workers[i].latency);
        merge(&ttfb, &workers[i].ttfb);
        merge(&hs, &workers[i].handshake);
        reqs += workers[i].requests;
        errs += workers[i].errors;
        conns += workers[i].connections;
        bytes += workers[i].body_bytes;
    }
    qsort(lat.v, lat.n, sizeof(double), cmp_double);
    qsort(ttfb.v, ttfb.n, sizeof(double), cmp_double);
    qsort(hs.v, hs.n, sizeof(double), cmp_double);
    double rps = elapsed > 0 ? (double)reqs / elapsed : 0;
    double mbps = elapsed > 0 ? (double)bytes / elapsed / 1e6 : 0;

    if (opt.json) {
        printf("{\"requests\":%llu,\"errors\":%llu,\"connections\":%llu,\"seconds\":%.3f,"
               "\"rps\":%.1f,\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"ttfb_p50_ms\":%.3f,"
               "\"ttfb_p99_ms\":%.3f,\"handshake_p50_ms\":%.3f,\"mbps\":%.2f,"
               "\"body_bytes\":%llu",
               (unsigned long long)reqs, (unsigned long long)errs, (unsigned long long)conns,
               elapsed, rps, percentile_ms(&lat, 50), percentile_ms(&lat, 99),
               percentile_ms(&ttfb, 50), percentile_ms(&ttfb, 99), percentile_ms(&hs, 50), mbps,
               (unsigned long long)bytes);
        if (opt.hold_s > 0)
            printf(",\"held_alive\":%ld", holding);
        printf("}\n");
    } else {
        printf("requests %llu  errors %llu  connections %llu  %.2f s  %.1f req/s  "
               "latency p50 %.3f ms p99 %.3f ms  ttfb/conn p50 %.3f ms p99 %.3f ms  "
               "handshake p50 %.3f ms  %.2f MB/s",
               (unsigned long long)reqs, (unsigned long long)errs, (unsigned long long)conns,
               elapsed, rps, percentile_ms(&lat, 50), percentile_ms(&lat, 99),
               percentile_ms(&ttfb, 50), percentile_ms(&ttfb, 99), percentile_ms(&hs, 50), mbps);
        if (opt.hold_s > 0)
            printf("  held alive %ld", holding);
        printf("\n");
    }
    rc = errs > 0 ? 3 : 0;
    free(lat.v);
    free(ttfb.v);
    free(hs.v);
out:
    if (workers) {
        for (int i = 0; i < nthreads; i++) {
            free(workers[i].latency.v);
            free(workers[i].ttfb.v);
            free(workers[i].handshake.v);
        }
        free(workers);
    }
    free(held);
    for (size_t i = 0; i < names_count; i++)
        free(names[i]);
    free(names);
    if (dest_ai)
        freeaddrinfo(dest_ai);
    SSL_CTX_free(ctx);
    return rc;
}
