#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"
#include "transparent.h"

static void test_host_of_ipv4_ipv6_and_mapped(void)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    char host[64];
    uint16_t port = 0;

    memset(&ss, 0, sizeof(ss));
    in->sin_family = AF_INET;
    in->sin_port = htons(443);
    inet_pton(AF_INET, "192.0.2.7", &in->sin_addr);
    CU_ASSERT_EQUAL_FATAL(transparent_host(&ss, host, sizeof(host), &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "192.0.2.7");
    CU_ASSERT_EQUAL(port, 443);

    memset(&ss, 0, sizeof(ss));
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(8443);
    inet_pton(AF_INET6, "2001:db8::1", &in6->sin6_addr);
    CU_ASSERT_EQUAL_FATAL(transparent_host(&ss, host, sizeof(host), &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "2001:db8::1"); /* no brackets: a host, not an authority */
    CU_ASSERT_EQUAL(port, 8443);

    /* A dual-stack listener's IPv4 client: the IPv4 address it carries. */
    inet_pton(AF_INET6, "::ffff:198.51.100.3", &in6->sin6_addr);
    CU_ASSERT_EQUAL_FATAL(transparent_host(&ss, host, sizeof(host), &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "198.51.100.3");

    CU_ASSERT_EQUAL(transparent_host(&ss, host, 4, &port), -1); /* too small */
    ss.ss_family = AF_UNIX;
    CU_ASSERT_EQUAL(transparent_host(&ss, host, sizeof(host), &port), -1);
}

/* A connection nobody redirected has no original destination: the kernel
 * says so (ENOENT with connection tracking, ENOPROTOOPT without). */
static void test_unredirected_connection_has_no_original_destination(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof(addr);
    struct sockaddr_storage dst;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = socket(AF_INET, SOCK_STREAM, 0), afd;

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(lfd >= 0 && cfd >= 0);
    CU_ASSERT_EQUAL_FATAL(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    CU_ASSERT_EQUAL_FATAL(listen(lfd, 1), 0);
    CU_ASSERT_EQUAL_FATAL(getsockname(lfd, (struct sockaddr *)&addr, &len), 0);
    CU_ASSERT_EQUAL_FATAL(connect(cfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    afd = accept(lfd, NULL, NULL);
    CU_ASSERT_FATAL(afd >= 0);
    errno = 0;
    int r = transparent_original_dst(afd, &dst);
    if (r == 0) {
        /* Connection tracking without NAT reports the address connected to:
         * the listener itself, which the guard refuses as a loop. */
        struct sockaddr_in *got = (struct sockaddr_in *)&dst;
        CU_ASSERT_EQUAL(got->sin_port, addr.sin_port);
        CU_ASSERT_EQUAL(got->sin_addr.s_addr, addr.sin_addr.s_addr);
    } else {
        CU_ASSERT_TRUE(errno == ENOENT || errno == ENOPROTOOPT);
    }
    CU_ASSERT_EQUAL(transparent_original_dst(-1, &dst), -1);
    close(afd);
    close(cfd);
    close(lfd);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("transparent", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "the host of IPv4, IPv6 and IPv4-mapped addresses",
                     test_host_of_ipv4_ipv6_and_mapped) ||
        !CU_add_test(s, "an unredirected connection has no original destination",
                     test_unredirected_connection_has_no_original_destination)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
