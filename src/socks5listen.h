/*
 * socks5listen: the entry point of a --socks5 listener's client. Runs the
 * SOCKS5 handshake (socks5.c parses it) on the accepted socket within the
 * header timeout: method selection, RFC 1929 credentials when --proxy-auth
 * is set, one CONNECT request. Then the connection is served exactly like
 * a CONNECT tunnel, by session_serve_tunnel(): the name or address the
 * client asked for is the tunnel's destination (tapwire resolves names), so
 * interception, capture and rules are the explicit proxy's. A refused
 * handshake (not SOCKS5, no acceptable method, wrong credentials, an
 * unsupported command or address, a refused destination) is answered with
 * the RFC's code, logged and recorded as a flow (session_record_refusal());
 * a client that stalls or goes away is only logged.
 */
#ifndef TAPWIRE_SOCKS5LISTEN_H
#define TAPWIRE_SOCKS5LISTEN_H

#include <sys/socket.h>

#include "session.h"

/* Serves the SOCKS5 client on fd until it is done, then closes fd. */
void socks5listen_serve(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer);

#endif
