/*
 * selfconn: tapwire's own outgoing TCP connections, noted as they are
 * opened, so that a transparent listener can tell when a connection it
 * accepted is one of them, sent back by a firewall rule that redirects
 * tapwire's own traffic too (no owner match). Without this each such
 * connection would open another one, until the connection cap.
 *
 * It is a hint table, one slot per local port: a slot is never cleared,
 * and an answer is only "yes" when the noted descriptor still is a socket
 * with exactly the accepted connection's two ends, which no other
 * connection can have.
 */
#ifndef TAPWIRE_SELFCONN_H
#define TAPWIRE_SELFCONN_H

#include <stdbool.h>
#include <sys/socket.h>

/* Notes fd, a TCP socket whose connect() has started. Thread-safe. */
void selfconn_note(int fd);

/*
 * Whether the connection from peer to dst (the address the peer connected
 * to, before any redirection) is one of tapwire's own noted connections.
 * Thread-safe.
 */
bool selfconn_is_own(const struct sockaddr_storage *peer, const struct sockaddr_storage *dst);

#endif
