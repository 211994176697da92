/*
 * listener: the accept loop. One detached thread per client connection with
 * a small explicit stack, a cap on concurrent connections (503 past it), and
 * an orderly stop: stop accepting, let in-flight exchanges finish within a
 * bound, then return.
 */
#ifndef TAPWIRE_LISTENER_H
#define TAPWIRE_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

#define LISTENER_THREAD_STACK_BYTES (256 * 1024)
#define LISTENER_BACKLOG 511
/* Descriptors a proxied connection holds: the client and its upstream. */
#define LISTENER_FDS_PER_CONNECTION 2
/* Descriptors the rest of the process holds, whatever the connection count:
 * stdio, the log, the database and its journal, pipes, the reserve below,
 * files opened now and then (CA, rules, key log). */
#define LISTENER_RESERVED_FDS 32
/* At most one "out of file descriptors" log line per this many ms. */
#define LISTENER_FD_LOG_INTERVAL_MS 1000

/* Binds and listens on host:port (port 0: ephemeral). Returns the socket
 * or -1 with err. *bound_port gets the actual port. */
int listener_open(const char *host, uint16_t port, uint16_t *bound_port, char *err, size_t err_len);

/*
 * Writes where clients can reach a listener on host:port, for a person:
 * "127.0.0.1:8080" for a specific address, and for a wildcard ("0.0.0.0",
 * "::", "") every address of this machine's interfaces that are up, IPv4
 * first, separated by ", " ("127.0.0.1:8080, 192.168.1.5:8080"): a wildcard
 * itself is not an address anyone can connect to. Returns the length
 * written (truncated to fit out, always NUL-terminated).
 */
size_t listener_reachable_addresses(const char *host, uint16_t port, char *out, size_t out_len);

/* Whether host, as given to --listen, means every address of the machine. */
bool listener_is_wildcard_host(const char *host);

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit and returns how many
 * connections fit in it: max_connections, or fewer (with a warning naming
 * both numbers) when LISTENER_FDS_PER_CONNECTION each, plus
 * LISTENER_RESERVED_FDS and other_fds (descriptors other parts of the process
 * may hold, e.g. dashboard connections), would not fit. At least 1.
 */
int listener_fit_fd_limit(int max_connections, int other_fds);

/* At most this many listening sockets (--listen, every --socks5,
 * --transparent and --reverse). */
#define LISTENER_MAX_SOCKETS 24

/* A session entry point: serves the client on fd, then closes fd. arg is
 * the listening socket's own setting (e.g. a reverse proxy's origin). */
typedef void (*listener_serve_fn)(const struct proxy_env *env, int fd,
                                  const struct sockaddr_storage *peer, const void *arg);

/* One listening socket and the entry point its clients start at. */
struct listener_socket {
    int fd;
    listener_serve_fn serve; /* explicit proxy, SOCKS5, transparent, reverse */
    const void *arg;         /* handed to serve; outlives listener_run() */
    bool is_http;            /* a client turned away gets an HTTP 503 (else just a close) */
};

/*
 * Accepts on every socket of socks[count] until env->stop_fd becomes
 * readable, then closes them and waits up to grace_ms for connection
 * threads to finish; past that it writes a byte to cancel_write_fd (the
 * write end of env->cancel_fd) and waits a little more. Returns the number
 * of connections still running (0 on a clean stop). The connection cap
 * counts the clients of every socket. When accept() runs out of
 * descriptors anyway, the client waiting in the backlog is still answered
 * 503 (or closed) at once.
 */
int listener_run(const struct listener_socket *socks, size_t count, const struct proxy_env *env,
                 int grace_ms, int cancel_write_fd);

#endif
