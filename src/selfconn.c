/*
 * selfconn: see selfconn.h. One atomic slot per port, holding the noted
 * descriptor plus one (0: none); a newer connection from the same port
 * simply replaces an older one.
 */
#include "selfconn.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define SELFCONN_PORTS 65536

static atomic_int own_fd[SELFCONN_PORTS]; /* fd + 1 by local port */

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An address as family, 4 or 16 bytes and a port; IPv4-mapped as IPv4.
 * Returns false for another family. */
static bool key_of(const struct sockaddr_storage *ss, int *family, unsigned char bytes[16],
                   uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        *family = AF_INET;
        memcpy(bytes, &in->sin_addr, 4);
        *port = ntohs(in->sin_port);
        return true;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        const unsigned char *b = in6->sin6_addr.s6_addr;
        *port = ntohs(in6->sin6_port);
        if (memcmp(b, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
            *family = AF_INET;
            memcpy(bytes, b + 12, 4);
        } else {
            *family = AF_INET6;
            memcpy(bytes, b, 16);
        }
        return true;
    }
    return false;
}

static bool same_endpoint(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    unsigned char bx[16], by[16];
    int fx, fy;
    uint16_t px, py;

    return key_of(x, &fx, bx, &px) && key_of(y, &fy, by, &py) && fx == fy && px == py &&
           memcmp(bx, by, fx == AF_INET ? 4 : 16) == 0;
}

void selfconn_note(int fd)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    unsigned char bytes[16];
    int family;
    uint16_t port;

    if (fd < 0 || getsockname(fd, (struct sockaddr *)&local, &len) < 0 ||
        !key_of(&local, &family, bytes, &port))
        return;
    atomic_store_explicit(&own_fd[port], fd + 1, memory_order_release);
}

bool selfconn_is_own(const struct sockaddr_storage *peer, const struct sockaddr_storage *dst)
{
    struct sockaddr_storage local, remote;
    socklen_t len = sizeof(local);
    unsigned char bytes[16];
    int family, fd;
    uint16_t port;

    if (!key_of(peer, &family, bytes, &port))
        return false;
    fd = atomic_load_explicit(&own_fd[port], memory_order_acquire) - 1;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&local, &len) < 0 ||
        !same_endpoint(&local, peer))
        return false;
    len = sizeof(remote);
    return getpeername(fd, (struct sockaddr *)&remote, &len) == 0 && same_endpoint(&remote, dst);
}
