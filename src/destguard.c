/*
 * destguard: addresses are compared as a family, 4 or 16 bytes and a port,
 * after an IPv4-mapped IPv6 address (::ffff:a.b.c.d, RFC 4291 2.5.5.2) has
 * been turned into the IPv4 address it carries: connecting to it reaches
 * the same IPv4 listener.
 *
 * Whether an address belongs to a local interface is asked of getifaddrs()
 * at the time of the check, and only when the port is one a wildcard
 * listener uses: interfaces come and go, and that port is rarely asked for.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* getifaddrs() */
#endif
#include "destguard.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

struct addr {
    int family; /* AF_INET or AF_INET6, 0: neither */
    unsigned char bytes[16];
    uint16_t port;
};

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static struct addr addr_from(const struct sockaddr *sa)
{
    struct addr a = {0};

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        a.family = AF_INET;
        memcpy(a.bytes, &in->sin_addr, 4);
        a.port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const unsigned char *b = in6->sin6_addr.s6_addr;
        a.port = ntohs(in6->sin6_port);
        if (memcmp(b, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
            a.family = AF_INET;
            memcpy(a.bytes, b + 12, 4);
        } else {
            a.family = AF_INET6;
            memcpy(a.bytes, b, 16);
        }
    }
    return a;
}

static bool same_address(const struct addr *x, const struct addr *y)
{
    return x->family == y->family && memcmp(x->bytes, y->bytes, x->family == AF_INET ? 4 : 16) == 0;
}

static bool is_unspecified(const struct addr *a)
{
    static const unsigned char zero[16] = {0};
    return a->family != 0 && memcmp(a->bytes, zero, a->family == AF_INET ? 4 : 16) == 0;
}

static bool is_loopback(const struct addr *a)
{
    static const unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (a->family == AF_INET)
        return a->bytes[0] == 127;
    return a->family == AF_INET6 && memcmp(a->bytes, v6_loopback, 16) == 0;
}

/* True when a is the address of one of this host's interfaces. */
static bool is_local_interface(const struct addr *a)
{
    struct ifaddrs *list = NULL;
    bool found = false;

    /* Unknown: say yes, refusing is the safe side. */
    if (getifaddrs(&list) != 0)
        return true;
    for (const struct ifaddrs *i = list; i != NULL && !found; i = i->ifa_next) {
        if (i->ifa_addr == NULL ||
            (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
            continue;
        struct addr own = addr_from(i->ifa_addr);
        found = same_address(&own, a);
    }
    freeifaddrs(list);
    return found;
}

int destguard_add_self(struct destguard *guard, const struct sockaddr *addr)
{
    if (guard->self_count >= DESTGUARD_MAX_SELF ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return -1;
    memset(&guard->self[guard->self_count], 0, sizeof(guard->self[0]));
    memcpy(&guard->self[guard->self_count], addr,
           addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    guard->self_count++;
    return 0;
}

static bool is_self(const struct destguard *guard, const struct addr *dest)
{
    for (size_t i = 0; i < guard->self_count; i++) {
        struct addr own = addr_from((const struct sockaddr *)&guard->self[i]);

        if (own.port != dest->port)
            continue;
        /* Linux takes a connect to 0.0.0.0 or :: as one to loopback, and
         * any listener on this port may be behind a loopback address. */
        if (same_address(&own, dest) || is_loopback(dest) || is_unspecified(dest))
            return true;
        if (is_unspecified(&own) && is_local_interface(dest))
            return true;
    }
    return false;
}

enum destguard_verdict destguard_check(const struct destguard *guard, const struct sockaddr *addr)
{
    if (guard == NULL)
        return DESTGUARD_ALLOW;
    struct addr dest = addr_from(addr);
    if (dest.family == 0)
        return DESTGUARD_ALLOW;
    if (is_self(guard, &dest))
        return DESTGUARD_SELF;
    if (guard->block_private && destguard_is_private(addr))
        return DESTGUARD_PRIVATE;
    return DESTGUARD_ALLOW;
}

bool destguard_is_loopback(const struct sockaddr *addr)
{
    struct addr a = addr_from(addr);
    return is_loopback(&a);
}

bool destguard_is_private(const struct sockaddr *addr)
{
    struct addr a = addr_from(addr);
    const unsigned char *b = a.bytes;

    if (is_loopback(&a) || is_unspecified(&a))
        return true;
    if (a.family == AF_INET)
        return b[0] == 0 || b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) ||
               (b[0] == 192 && b[1] == 168) || (b[0] == 100 && (b[1] & 0xc0) == 64) ||
               (b[0] == 169 && b[1] == 254);
    if (a.family == AF_INET6)
        return (b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80);
    return false;
}
