/*
 * destguard: the addresses the proxy refuses to connect to. Always its own
 * listeners (the proxy's and the dashboard's): connecting there loops, or
 * hands the dashboard to whoever can use the proxy. With --block-private
 * also loopback, private and link-local networks, so that a proxy reachable
 * from elsewhere cannot be used to reach this host's or this network's
 * internal services.
 *
 * The checks take resolved addresses, never names: every spelling a
 * resolver accepts ("2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]", a DNS
 * name rebound to 127.0.0.1) ends up as the address that is checked, and it
 * is the address then connected to. No DNS and no logging here.
 */
#ifndef TAPWIRE_DESTGUARD_H
#define TAPWIRE_DESTGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Every listening socket (listener.h's LISTENER_MAX_SOCKETS) and the
 * dashboard's. */
#define DESTGUARD_MAX_SELF 25

struct destguard {
    /* Where tapwire listens, as bound (getsockname()), port included. An
     * unspecified address (0.0.0.0, ::) listens on every local address. */
    struct sockaddr_storage self[DESTGUARD_MAX_SELF];
    size_t self_count;
    bool block_private; /* --block-private */
};

enum destguard_verdict {
    DESTGUARD_ALLOW = 0,
    DESTGUARD_SELF,    /* one of tapwire's own listeners */
    DESTGUARD_PRIVATE, /* --block-private: loopback, private, link-local... */
};

/* Adds a listening address (AF_INET or AF_INET6). Returns 0, or -1 when the
 * family is another one or DESTGUARD_MAX_SELF are already there. */
int destguard_add_self(struct destguard *guard, const struct sockaddr *addr);

/*
 * What to do with a connection to addr (its port included). A listener on a
 * specific address is matched by that address, and by any loopback or
 * unspecified destination on its port (both reach local listeners); a
 * wildcard listener also by every address of a local interface on its port.
 * IPv4-mapped IPv6 addresses count as the IPv4 address they carry. guard
 * may be NULL: everything is allowed.
 */
enum destguard_verdict destguard_check(const struct destguard *guard, const struct sockaddr *addr);

/* Loopback (127/8, ::1; mapped IPv4 as IPv4). Not unspecified: a listener on
 * 0.0.0.0 or :: is reachable from everywhere. */
bool destguard_is_loopback(const struct sockaddr *addr);

/* What --block-private refuses: loopback and unspecified, RFC 1918
 * (10/8, 172.16/12, 192.168/16), CGNAT 100.64/10 (RFC 6598), link-local
 * (169.254/16, fe80::/10), unique-local fc00::/7 (RFC 4193), 0/8 ("this
 * network", RFC 791) and the same behind ::ffff:0:0/96. */
bool destguard_is_private(const struct sockaddr *addr);

#endif
