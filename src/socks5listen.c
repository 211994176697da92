/*
 * socks5listen: see socks5listen.h. The handshake reads exactly the bytes
 * each message needs and never more, so the first bytes of what the client
 * sends through the tunnel stay in the socket for the session to peek at
 * (a TLS ClientHello must reach OpenSSL untouched).
 *
 * The success reply is sent before the origin is connected, as the explicit
 * proxy answers a CONNECT with 200 before it connects: only what the client
 * sends first says whether the origin is needed now (TLS: connect and
 * verify before minting a leaf) or at the first request. A destination the
 * guard refuses by its number is refused here, with RFC 1928's code.
 */
#include "socks5listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "clock.h"
#include "log.h"
#include "socks5.h"
#include "upstream.h"

struct handshake {
    const struct proxy_env *env;
    const struct sockaddr_storage *peer;
    int fd;
    int64_t deadline_ms; /* clock_mono_ms() */
    char client[INET6_ADDRSTRLEN + 10];
    unsigned char buf[SOCKS5_MAX_MESSAGE_BYTES];
    size_t have;
};

static void name_peer(const struct sockaddr_storage *peer, char *out, size_t out_len)
{
    char addr[INET6_ADDRSTRLEN] = "?";

    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
        snprintf(out, out_len, "%s:%u", addr, ntohs(in->sin_port));
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
        snprintf(out, out_len, "[%s]:%u", addr, ntohs(in6->sin6_port));
    } else {
        snprintf(out, out_len, "unknown");
    }
}

/* A refusal the client was answered: a flow, as every refusal is (the
 * log line is the caller's). */
static void record(const struct handshake *h, const char *host, uint16_t port, int status,
                   const char *reason)
{
    session_record_refusal(h->env, h->peer, SESSION_LISTENER_SOCKS5, host, port, status, reason);
}

/* Reads until h->buf holds need bytes. Returns 0, or -1 when the client
 * closed, the deadline passed or the proxy stops (logged). */
static int read_to(struct handshake *h, size_t need)
{
    while (h->have < need) {
        int64_t left = h->deadline_ms - clock_mono_ms();
        struct pollfd p[2] = {{.fd = h->fd, .events = POLLIN},
                              {.fd = h->env->stop_fd, .events = POLLIN}};
        ssize_t n;
        int r;

        if (left <= 0) {
            log_info("%s: SOCKS5 handshake not complete within %d ms; closing", h->client,
                     h->env->cfg->header_timeout_ms);
            return -1;
        }
        r = poll(p, 2, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || p[1].revents != 0)
            return -1;
        if (r == 0)
            continue;
        n = recv(h->fd, h->buf + h->have, need - h->have, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            log_info("%s: SOCKS5 client closed during the handshake", h->client);
            return -1;
        }
        h->have += (size_t)n;
    }
    return 0;
}

static int send_all(struct handshake *h, const unsigned char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(h->fd, b, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Method selection, then RFC 1929 when credentials are required. Returns 0
 * when the client may send its request. */
static int authenticate(struct handshake *h)
{
    const struct proxyauth *auth = h->env->auth;
    struct socks5_greeting g;
    struct socks5_userpass up;
    enum socks5_parse r;
    unsigned char answer[2];
    size_t need;
    bool ok;

    h->have = 0;
    while ((r = socks5_parse_greeting(h->buf, h->have, &g, &need)) == SOCKS5_MORE)
        if (read_to(h, need) < 0)
            return -1;
    if (r == SOCKS5_BAD) {
        log_info("%s: not a SOCKS5 greeting; closing", h->client);
        record(h, "", 0, 400, "not a SOCKS5 greeting");
        return -1;
    }
    answer[0] = SOCKS5_VERSION;
    answer[1] = socks5_choose_method(&g, auth != NULL);
    if (send_all(h, answer, 2) < 0)
        return -1;
    if (answer[1] == SOCKS5_METHOD_UNACCEPTABLE) {
        const char *why = auth != NULL ? "SOCKS5: no acceptable method (--proxy-auth wants "
                                         "username/password)"
                                       : "SOCKS5: no acceptable method (wants no authentication)";
        log_info("%s: %s; closing", h->client, why);
        record(h, "", 0, 407, why);
        return -1;
    }
    if (answer[1] == SOCKS5_METHOD_NONE)
        return 0;
    h->have = 0;
    while ((r = socks5_parse_userpass(h->buf, h->have, &up, &need)) == SOCKS5_MORE)
        if (read_to(h, need) < 0)
            return -1;
    ok = r == SOCKS5_OK && proxyauth_check_pair(auth, up.user, up.user_len, up.pass, up.pass_len);
    OPENSSL_cleanse(h->buf, sizeof(h->buf));
    answer[0] = SOCKS5_USERPASS_VERSION;
    answer[1] = ok ? 0x00 : 0x01;
    if (send_all(h, answer, 2) < 0)
        return -1;
    if (!ok) {
        log_info("%s: SOCKS5 authentication failed (--proxy-auth); closing", h->client);
        record(h, "", 0, 407, "SOCKS5 authentication failed (--proxy-auth)");
    }
    return ok ? 0 : -1;
}

/* Reads the request and answers it. Returns 0 with r filled when the
 * tunnel is open. */
static int accept_request(struct handshake *h, struct socks5_request *r)
{
    unsigned char reply[SOCKS5_REPLY_BYTES];
    struct upstream_error refused;
    enum socks5_parse parsed;
    size_t need;

    h->have = 0;
    while ((parsed = socks5_parse_request(h->buf, h->have, r, &need)) == SOCKS5_MORE)
        if (read_to(h, need) < 0)
            return -1;
    if (parsed == SOCKS5_BAD) {
        char why[96];
        snprintf(why, sizeof(why), "SOCKS5 request refused (reply %u: %s)", r->refusal,
                 r->refusal == SOCKS5_REP_COMMAND_NOT_SUPPORTED   ? "only CONNECT is supported"
                 : r->refusal == SOCKS5_REP_ADDRESS_NOT_SUPPORTED ? "unknown address type"
                 : r->refusal == SOCKS5_REP_HOST_UNREACHABLE      ? "not a host name or port"
                                                                  : "malformed request");
        log_info("%s: %s; closing", h->client, why);
        socks5_build_reply(r->refusal, reply);
        send_all(h, reply, sizeof(reply));
        record(h, "", 0, r->refusal == SOCKS5_REP_COMMAND_NOT_SUPPORTED ? 501 : 400, why);
        return -1;
    }
    if (upstream_check_numeric(r->host, r->port, h->env->guard, &refused) < 0) {
        log_info("%s SOCKS5 CONNECT %s:%u refused: %s", h->client, r->host, r->port,
                 refused.reason);
        socks5_build_reply(SOCKS5_REP_NOT_ALLOWED, reply);
        send_all(h, reply, sizeof(reply));
        record(h, r->host, r->port, upstream_error_http_status(&refused), refused.reason);
        return -1;
    }
    socks5_build_reply(SOCKS5_REP_SUCCEEDED, reply);
    return send_all(h, reply, sizeof(reply));
}

void socks5listen_serve(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer)
{
    struct handshake h = {
        .env = env,
        .peer = peer,
        .fd = fd,
        .deadline_ms = clock_mono_ms() + env->cfg->header_timeout_ms,
    };
    struct socks5_request r;

    name_peer(peer, h.client, sizeof(h.client));
    if (authenticate(&h) < 0 || accept_request(&h, &r) < 0) {
        close(fd);
        return;
    }
    session_serve_tunnel(env, fd, peer, SESSION_LISTENER_SOCKS5, r.host, r.port);
}
