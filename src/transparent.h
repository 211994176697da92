/*
 * transparent: the entry point of a --transparent listener's client, a
 * connection the firewall redirected to tapwire (iptables/nftables
 * REDIRECT or DNAT) without the client knowing. The destination it was
 * going to is asked of the kernel's NAT table (SO_ORIGINAL_DST, and
 * IP6T_SO_ORIGINAL_DST for IPv6); from there the connection is served
 * exactly like a CONNECT tunnel to that address, by session_serve_tunnel():
 * the SNI names the site for TLS, the Host field for plain HTTP.
 *
 * Two redirect loops are refused with a log line naming the cause: a
 * destination that is one of tapwire's own listeners (a client connecting
 * to the transparent port directly; connecting there would loop), and a
 * connection that is tapwire's own, sent back by a firewall rule without
 * an owner match (selfconn.c tells).
 */
#ifndef TAPWIRE_TRANSPARENT_H
#define TAPWIRE_TRANSPARENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "session.h"

/*
 * The destination the client of the accepted socket fd was connecting to
 * before the firewall redirected it. Returns 0 with *dst filled, or -1 with
 * errno set (ENOENT: the connection was not redirected, no NAT entry).
 */
int transparent_original_dst(int fd, struct sockaddr_storage *dst);

/*
 * addr's host as a numeric string (an IPv4-mapped IPv6 address as the IPv4
 * address it carries; IPv6 without brackets) and its port. Returns 0, or -1
 * when addr is neither IPv4 nor IPv6 or host_len is too small.
 */
int transparent_host(const struct sockaddr_storage *addr, char *host, size_t host_len,
                     uint16_t *port);

/* Serves the redirected client on fd until it is done, then closes fd. */
void transparent_serve(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer);

#endif
