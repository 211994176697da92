#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "selfconn.h"
#include "testutil.h"

/* A loopback listener; *addr gets its address. */
static int listen_loopback(struct sockaddr_storage *addr)
{
    struct sockaddr_in *in = (struct sockaddr_in *)addr;
    socklen_t len = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(addr, 0, sizeof(*addr));
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*in)) < 0 || listen(fd, 4) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0)
        return -1;
    return fd;
}

/* Connects to addr (noting the socket when is_noted), accepts; *peer gets
 * the accepted connection's peer. Returns the connecting socket. */
static int connect_pair(int lfd, const struct sockaddr_storage *addr, bool is_noted,
                        struct sockaddr_storage *peer, int *afd)
{
    socklen_t len = sizeof(*peer);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof(struct sockaddr_in)) < 0)
        return -1;
    if (is_noted)
        selfconn_note(fd);
    *afd = accept(lfd, (struct sockaddr *)peer, &len);
    return fd;
}

static void test_own_connection_is_told_from_others(void)
{
    struct sockaddr_storage addr, other_addr, mine, theirs;
    int lfd = listen_loopback(&addr), other = listen_loopback(&other_addr);
    int afd1 = -1, afd2 = -1;
    int own = connect_pair(lfd, &addr, true, &mine, &afd1);
    int foreign = connect_pair(lfd, &addr, false, &theirs, &afd2);

    CU_ASSERT_FATAL(lfd >= 0 && other >= 0 && own >= 0 && foreign >= 0 && afd1 >= 0 && afd2 >= 0);
    CU_ASSERT_TRUE(selfconn_is_own(&mine, &addr));
    CU_ASSERT_FALSE(selfconn_is_own(&theirs, &addr));
    /* The same local end towards another destination is another connection. */
    CU_ASSERT_FALSE(selfconn_is_own(&mine, &other_addr));
    /* Once closed, its slot no longer answers yes. */
    close(own);
    CU_ASSERT_FALSE(selfconn_is_own(&mine, &addr));
    close(afd1);
    close(afd2);
    close(foreign);
    close(other);
    close(lfd);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("selfconn", NULL, NULL);
    if (!s || !CU_add_test(s, "tapwire's own connection is told from others",
                           test_own_connection_is_told_from_others)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
