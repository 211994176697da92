/*
 * transparent: see transparent.h. No byte is read from the client here:
 * what it sends first (a ClientHello, a request) must still be in the
 * socket for the tunnel to peek at.
 */
#include "transparent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "destguard.h"
#include "log.h"
#include "selfconn.h"

/* From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>,
 * whose other declarations clash with the C library's network headers. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int transparent_original_dst(int fd, struct sockaddr_storage *dst)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);

    memset(dst, 0, sizeof(*dst));
    if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
        return -1;
    if (local.ss_family == AF_INET6) {
        const struct sockaddr_in6 *l6 = (const struct sockaddr_in6 *)&local;
        len = sizeof(struct sockaddr_in6);
        if (memcmp(l6->sin6_addr.s6_addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) != 0)
            return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, dst, &len);
        /* An IPv4 client of a dual-stack listener: the NAT entry is IPv4. */
    } else if (local.ss_family != AF_INET) {
        errno = EAFNOSUPPORT;
        return -1;
    }
    len = sizeof(struct sockaddr_in);
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, dst, &len);
}

int transparent_host(const struct sockaddr_storage *addr, char *host, size_t host_len,
                     uint16_t *port)
{
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        *port = ntohs(in->sin_port);
        return inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)host_len) != NULL ? 0 : -1;
    }
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        *port = ntohs(in6->sin6_port);
        if (memcmp(in6->sin6_addr.s6_addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0)
            return inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, host, (socklen_t)host_len) !=
                           NULL
                       ? 0
                       : -1;
        return inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)host_len) != NULL ? 0 : -1;
    }
    return -1;
}

/* "host:port", "[v6]:port" for a log line. */
static void name_address(const struct sockaddr_storage *addr, char *out, size_t out_len)
{
    char host[INET6_ADDRSTRLEN];
    uint16_t port;

    if (transparent_host(addr, host, sizeof(host), &port) < 0)
        snprintf(out, out_len, "unknown");
    else if (strchr(host, ':') != NULL)
        snprintf(out, out_len, "[%s]:%u", host, port);
    else
        snprintf(out, out_len, "%s:%u", host, port);
}

void transparent_serve(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer)
{
    struct sockaddr_storage dst;
    char client[INET6_ADDRSTRLEN + 8], where[INET6_ADDRSTRLEN + 8];
    char host[INET6_ADDRSTRLEN];
    uint16_t port = 0;

    name_address(peer, client, sizeof(client));
    if (transparent_original_dst(fd, &dst) < 0 ||
        transparent_host(&dst, host, sizeof(host), &port) < 0) {
        log_info("%s: transparent listener: no original destination (%s): the connection was "
                 "not redirected by the firewall; closing",
                 client, strerror(errno));
        close(fd);
        return;
    }
    name_address(&dst, where, sizeof(where));
    if (destguard_check(env->guard, (const struct sockaddr *)&dst) == DESTGUARD_SELF) {
        log_warn("%s: redirect loop refused: the original destination %s is one of tapwire's "
                 "own listeners (a client connecting to the transparent port directly, or a "
                 "firewall rule redirecting connections meant for tapwire itself); closing",
                 client, where);
        close(fd);
        return;
    }
    if (selfconn_is_own(peer, &dst)) {
        log_warn("%s: redirect loop refused: this is tapwire's own connection to %s, sent back "
                 "by a firewall rule that does not exclude tapwire's own traffic (add an owner "
                 "match, see tapwire(1), TRANSPARENT PROXYING); closing",
                 client, where);
        close(fd);
        return;
    }
    session_serve_tunnel(env, fd, peer, SESSION_LISTENER_TRANSPARENT, host, port);
}
