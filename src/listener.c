/*
 * listener: accept loop and connection threads.
 *
 * One detached thread per connection keeps each connection's code
 * straight-line and blocking-style; the explicit small stack keeps a
 * thousand idle connections cheap (only touched pages count). The count of
 * live connections is the one piece of shared state here, guarded by a
 * mutex so shutdown can wait on it.
 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define LISTENER_CANCEL_WAIT_MS 2000

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_changed = PTHREAD_COND_INITIALIZER;
static int live_connections; /* guarded by live_lock */

struct conn_start {
    const struct proxy_env *env;
    listener_serve_fn serve;
    const void *arg;
    int fd;
    struct sockaddr_storage peer;
};

int listener_open(const char *host, uint16_t port, uint16_t *bound_port, char *err, size_t err_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[8];
    int fd = -1;
    snprintf(portstr, sizeof(portstr), "%u", port);
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0) {
        snprintf(err, err_len, "cannot resolve listen address %s: %s", host, gai_strerror(g));
        goto out;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        goto out;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTENER_BACKLOG) < 0) {
        int e = errno;

        snprintf(err, err_len, "cannot listen on %s:%u: %s%s", host, port, strerror(e),
                 e == EADDRINUSE ? " (another program has this port: give tapwire another "
                                   "one with --listen HOST:PORT)"
                                 : "");
        close(fd);
        fd = -1;
        goto out;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
out:
    if (res)
        freeaddrinfo(res);
    return fd;
}

bool listener_is_wildcard_host(const char *host)
{
    return host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
           strcmp(host, "[::]") == 0 || strcmp(host, "*") == 0;
}

/* Appends "ADDR:PORT" (IPv6 in brackets) to out after a ", " when not first. */
static void append_address(char *out, size_t out_len, size_t *used, const struct sockaddr *sa,
                           uint16_t port)
{
    char text[INET6_ADDRSTRLEN];
    const void *addr = sa->sa_family == AF_INET6
                           ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                           : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    bool v6 = sa->sa_family == AF_INET6;
    int n;

    if (inet_ntop(sa->sa_family, addr, text, sizeof(text)) == NULL || *used >= out_len)
        return;
    n = snprintf(out + *used, out_len - *used, "%s%s%s%s:%u", *used > 0 ? ", " : "", v6 ? "[" : "",
                 text, v6 ? "]" : "", port);
    if (n > 0)
        *used = (size_t)n >= out_len - *used ? out_len - 1 : *used + (size_t)n;
}

size_t listener_reachable_addresses(const char *host, uint16_t port, char *out, size_t out_len)
{
    struct ifaddrs *ifs = NULL, *ifa;
    size_t used = 0;
    bool v4_only = strcmp(host, "0.0.0.0") == 0;
    int pass;

    if (out_len == 0)
        return 0;
    out[0] = '\0';
    if (!listener_is_wildcard_host(host)) {
        bool v6 = strchr(host, ':') != NULL && host[0] != '[';
        int n = snprintf(out, out_len, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
        return n < 0 ? 0 : ((size_t)n >= out_len ? out_len - 1 : (size_t)n);
    }
    if (getifaddrs(&ifs) != 0) {
        snprintf(out, out_len, "every address of this machine, port %u", port);
        return strlen(out);
    }
    /* IPv4 first: what people type. An IPv6 wildcard socket takes both. */
    for (pass = 0; pass < 2; pass++) {
        int family = pass == 0 ? AF_INET : AF_INET6;

        if (family == AF_INET6 && v4_only)
            break;
        for (ifa = ifs; ifa != NULL; ifa = ifa->ifa_next) {
            if (ifa->ifa_addr == NULL || ifa->ifa_addr->sa_family != family ||
                !(ifa->ifa_flags & IFF_UP))
                continue;
            if (family == AF_INET6 &&
                IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)ifa->ifa_addr)->sin6_addr))
                continue; /* needs a zone to be reached: not for copying */
            append_address(out, out_len, &used, ifa->ifa_addr, port);
        }
    }
    freeifaddrs(ifs);
    return used;
}

static void *conn_thread(void *arg)
{
    struct conn_start *start = arg;
    /* Named so that top -H, perf and /proc tell the proxy's threads apart. */
    pthread_setname_np(pthread_self(), "tw-conn");
    start->serve(start->env, start->fd, &start->peer, start->arg);
    free(start);
    pthread_mutex_lock(&live_lock);
    live_connections--;
    pthread_cond_broadcast(&live_changed);
    pthread_mutex_unlock(&live_lock);
    return NULL;
}

int listener_fit_fd_limit(int max_connections, int other_fds)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn("getrlimit(RLIMIT_NOFILE): %s; --max-connections %d left as is", strerror(errno),
                 max_connections);
        return max_connections;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            log_warn("cannot raise the open-file limit from %llu to %llu: %s",
                     (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                     strerror(errno));
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return max_connections;
    long long spare = (long long)rl.rlim_cur - LISTENER_RESERVED_FDS - other_fds;
    long long fit = spare / LISTENER_FDS_PER_CONNECTION;
    if (fit >= max_connections)
        return max_connections;
    if (fit < 1)
        fit = 1;
    log_warn("--max-connections %d needs more file descriptors than the limit of %llu allows "
             "(ulimit -n); serving at most %lld connections",
             max_connections, (unsigned long long)rl.rlim_cur, fit);
    return (int)fit;
}

/* The client gets a 503 right away instead of waiting in the backlog; one
 * non-blocking send, since the accept loop must never block. A client of a
 * listener that does not speak HTTP (SOCKS5) is only closed. */
static void refuse(int fd, bool is_http, const char *why)
{
    char msg[256];
    int body = (int)strlen(why) + (int)sizeof("tapwire: , try again\n") - 1;
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Connection: close\r\nRetry-After: 1\r\n\r\n"
                     "tapwire: %s, try again\n",
                     body, why);
    if (is_http && n > 0 && (size_t)n < sizeof(msg)) {
        ssize_t w = send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
}

static void refuse_busy(int fd, bool is_http)
{
    refuse(fd, is_http, "too many connections");
}

/* A descriptor held in reserve for when accept() fails with EMFILE: without
 * it the pending client stays in the backlog, poll() reports the listening
 * socket readable again at once, and the loop spins. Closing the reserve
 * frees one slot to accept the client, answer 503 and close it; then the
 * reserve is taken back (the libev and nginx way out). */
static int open_reserve_fd(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Out of descriptors: answer the oldest waiting client with a 503, if the
 * reserve allows, and log it at most once per LISTENER_FD_LOG_INTERVAL_MS. */
static void shed_on_fd_exhaustion(const struct listener_socket *ls, int *reserve_fd,
                                  int accept_errno)
{
    static int64_t last_log_ms;
    static unsigned long refused_since_log;
    bool answered = false;
    if (*reserve_fd >= 0) {
        close(*reserve_fd);
        int fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            refuse(fd, ls->is_http, "out of file descriptors");
            answered = true;
        }
    }
    *reserve_fd = open_reserve_fd();
    if (answered)
        refused_since_log++;
    int64_t now = clock_mono_ms();
    if (last_log_ms == 0 || now - last_log_ms >= LISTENER_FD_LOG_INTERVAL_MS) {
        log_error("accept: %s; %lu client(s) answered 503 since the last such line "
                  "(raise the file limit or lower --max-connections)",
                  strerror(accept_errno), refused_since_log);
        last_log_ms = now;
        refused_since_log = 0;
    }
    if (!answered) {
        /* No reserve to free: nothing to do but let other connections end. */
        struct timespec pause = {0, 50000000L};
        nanosleep(&pause, NULL);
    }
}

static int wait_for_connections(int timeout_ms)
{
    struct timespec deadline = clock_deadline_ms(CLOCK_REALTIME, timeout_ms);
    pthread_mutex_lock(&live_lock);
    while (live_connections > 0)
        if (pthread_cond_timedwait(&live_changed, &live_lock, &deadline) == ETIMEDOUT)
            break;
    int left = live_connections;
    pthread_mutex_unlock(&live_lock);
    return left;
}

/* Accepts one client on ls and starts its thread, unless the cap is
 * reached or descriptors ran out. */
static void accept_one(const struct listener_socket *ls, const struct proxy_env *env,
                       pthread_attr_t *attr, int *reserve_fd)
{
    struct conn_start *start = calloc(1, sizeof(*start));
    if (!start) {
        log_error("out of memory accepting a connection");
        struct timespec pause = {0, 10000000L};
        nanosleep(&pause, NULL);
        return;
    }
    socklen_t sl = sizeof(start->peer);
    int fd = accept4(ls->fd, (struct sockaddr *)&start->peer, &sl, SOCK_CLOEXEC);
    if (fd < 0) {
        free(start);
        if (errno == EMFILE || errno == ENFILE)
            shed_on_fd_exhaustion(ls, reserve_fd, errno);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_mutex_lock(&live_lock);
    bool full = live_connections >= env->cfg->max_connections;
    if (!full)
        live_connections++;
    pthread_mutex_unlock(&live_lock);
    if (full) {
        free(start);
        refuse_busy(fd, ls->is_http);
        log_warn("connection refused: %d connections already (--max-connections)",
                 env->cfg->max_connections);
        return;
    }
    start->env = env;
    start->serve = ls->serve;
    start->arg = ls->arg;
    start->fd = fd;
    pthread_t tid;
    int e = pthread_create(&tid, attr, conn_thread, start);
    if (e != 0) {
        log_error("cannot start a connection thread: %s", strerror(e));
        close(fd);
        free(start);
        pthread_mutex_lock(&live_lock);
        live_connections--;
        pthread_mutex_unlock(&live_lock);
    }
}

int listener_run(const struct listener_socket *socks, size_t count, const struct proxy_env *env,
                 int grace_ms, int cancel_write_fd)
{
    struct pollfd p[LISTENER_MAX_SOCKETS + 1];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, LISTENER_THREAD_STACK_BYTES);
    int reserve_fd = open_reserve_fd();
    if (reserve_fd < 0)
        log_warn("cannot open /dev/null as a reserve descriptor: %s", strerror(errno));
    if (count > LISTENER_MAX_SOCKETS)
        count = LISTENER_MAX_SOCKETS;

    for (;;) {
        for (size_t i = 0; i < count; i++)
            p[i] = (struct pollfd){.fd = socks[i].fd, .events = POLLIN};
        p[count] = (struct pollfd){.fd = env->stop_fd, .events = POLLIN};
        int r = poll(p, count + 1, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            log_error("poll on the listening sockets: %s", strerror(errno));
            break;
        }
        if (p[count].revents & POLLIN)
            break;
        for (size_t i = 0; i < count; i++)
            if (p[i].revents & POLLIN)
                accept_one(&socks[i], env, &attr, &reserve_fd);
    }
    pthread_attr_destroy(&attr);
    if (reserve_fd >= 0)
        close(reserve_fd);
    for (size_t i = 0; i < count; i++)
        close(socks[i].fd);

    int left = wait_for_connections(grace_ms);
    if (left > 0) {
        log_warn("%d connection(s) still busy after %d ms; cutting them off", left, grace_ms);
        ssize_t w = write(cancel_write_fd, "x", 1);
        (void)w;
        left = wait_for_connections(LISTENER_CANCEL_WAIT_MS);
    }
    return left;
}
