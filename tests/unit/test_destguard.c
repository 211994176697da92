/* Unit tests for the destinations the proxy refuses (src/destguard.c). */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

#include "destguard.h"

/* host (any spelling getaddrinfo() takes as a number) and port as a
 * sockaddr, the way upstream_connect_tcp() gets it. */
static struct sockaddr_storage sa(const char *host, unsigned port)
{
    struct sockaddr_storage out;
    struct addrinfo hints, *res = NULL;
    char service[8];

    memset(&out, 0, sizeof(out));
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%u", port);
    CU_ASSERT_FATAL(getaddrinfo(host, service, &hints, &res) == 0);
    memcpy(&out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return out;
}

static enum destguard_verdict check(const struct destguard *g, const char *host, unsigned port)
{
    struct sockaddr_storage a = sa(host, port);
    return destguard_check(g, (struct sockaddr *)&a);
}

static bool is_private(const char *host)
{
    struct sockaddr_storage a = sa(host, 80);
    return destguard_is_private((struct sockaddr *)&a);
}

static void add_self(struct destguard *g, const char *host, unsigned port)
{
    struct sockaddr_storage a = sa(host, port);
    CU_ASSERT_EQUAL(destguard_add_self(g, (struct sockaddr *)&a), 0);
}

static void test_every_spelling_of_a_loopback_listener_is_self(void)
{
    struct destguard g = {0};

    add_self(&g, "127.0.0.1", 8081);
    CU_ASSERT_EQUAL(check(&g, "127.0.0.1", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "2130706433", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "0177.0.0.1", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "0x7f.1", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "0.0.0.0", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "::ffff:127.0.0.1", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "::1", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "::", 8081), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "127.0.0.2", 8081), DESTGUARD_SELF);
}

static void test_other_ports_and_hosts_are_allowed(void)
{
    struct destguard g = {0};

    add_self(&g, "127.0.0.1", 8081);
    CU_ASSERT_EQUAL(check(&g, "127.0.0.1", 8082), DESTGUARD_ALLOW);
    CU_ASSERT_EQUAL(check(&g, "192.0.2.10", 8081), DESTGUARD_ALLOW);
    CU_ASSERT_EQUAL(check(&g, "2001:db8::1", 8081), DESTGUARD_ALLOW);
    CU_ASSERT_EQUAL(destguard_check(NULL, (struct sockaddr *)&(struct sockaddr_storage){0}),
                    DESTGUARD_ALLOW);
}

static void test_a_lan_listener_is_matched_by_its_address(void)
{
    struct destguard g = {0};

    add_self(&g, "192.0.2.7", 3128);
    CU_ASSERT_EQUAL(check(&g, "192.0.2.7", 3128), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "::ffff:192.0.2.7", 3128), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "3221225991", 3128), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "192.0.2.8", 3128), DESTGUARD_ALLOW);
}

static void test_a_wildcard_listener_is_every_local_address(void)
{
    struct destguard g = {0};

    add_self(&g, "0.0.0.0", 3128);
    CU_ASSERT_EQUAL(check(&g, "127.0.0.1", 3128), DESTGUARD_SELF);
    CU_ASSERT_EQUAL(check(&g, "::ffff:127.0.0.1", 3128), DESTGUARD_SELF);
    /* TEST-NET-1 is never a local interface. */
    CU_ASSERT_EQUAL(check(&g, "192.0.2.200", 3128), DESTGUARD_ALLOW);
}

static void test_private_ranges(void)
{
    const char *yes[] = {"127.0.0.1",
                         "127.255.255.254",
                         "0.0.0.0",
                         "0.1.2.3",
                         "10.0.0.1",
                         "10.255.255.255",
                         "172.16.0.1",
                         "172.31.255.255",
                         "192.168.1.1",
                         "100.64.0.1",
                         "100.127.255.255",
                         "169.254.169.254",
                         "::1",
                         "::",
                         "fc00::1",
                         "fd12:3456::1",
                         "fe80::1",
                         "febf::1",
                         "::ffff:10.1.2.3",
                         "::ffff:127.0.0.1",
                         "2130706433",
                         "0177.0.0.1"};
    const char *no[] = {"8.8.8.8",        "172.15.255.255", "172.32.0.0",  "192.169.0.1",
                        "100.63.255.255", "100.128.0.0",    "169.255.0.1", "11.0.0.1",
                        "2001:db8::1",    "fec0::1",        "fbff::1",     "::ffff:8.8.8.8"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!is_private(yes[i]))
            fprintf(stderr, "not private: %s\n", yes[i]);
        CU_ASSERT(is_private(yes[i]));
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        if (is_private(no[i]))
            fprintf(stderr, "private: %s\n", no[i]);
        CU_ASSERT(!is_private(no[i]));
    }
}

static void test_block_private_refuses_only_when_on(void)
{
    struct destguard g = {0};

    add_self(&g, "127.0.0.1", 8080);
    CU_ASSERT_EQUAL(check(&g, "127.0.0.1", 9000), DESTGUARD_ALLOW);
    CU_ASSERT_EQUAL(check(&g, "10.1.2.3", 443), DESTGUARD_ALLOW);
    g.block_private = true;
    CU_ASSERT_EQUAL(check(&g, "127.0.0.1", 9000), DESTGUARD_PRIVATE);
    CU_ASSERT_EQUAL(check(&g, "10.1.2.3", 443), DESTGUARD_PRIVATE);
    CU_ASSERT_EQUAL(check(&g, "8.8.8.8", 443), DESTGUARD_ALLOW);
    /* Self is named as such even when private too. */
    CU_ASSERT_EQUAL(check(&g, "127.0.0.1", 8080), DESTGUARD_SELF);
}

static void test_loopback_listeners(void)
{
    struct sockaddr_storage a;

    a = sa("127.0.0.1", 1);
    CU_ASSERT(destguard_is_loopback((struct sockaddr *)&a));
    a = sa("::1", 1);
    CU_ASSERT(destguard_is_loopback((struct sockaddr *)&a));
    a = sa("::ffff:127.0.0.1", 1);
    CU_ASSERT(destguard_is_loopback((struct sockaddr *)&a));
    /* A wildcard listener is reachable from everywhere: not loopback, so
     * --block-private is on by default there. */
    a = sa("0.0.0.0", 1);
    CU_ASSERT(!destguard_is_loopback((struct sockaddr *)&a));
    a = sa("::", 1);
    CU_ASSERT(!destguard_is_loopback((struct sockaddr *)&a));
    a = sa("192.168.1.5", 1);
    CU_ASSERT(!destguard_is_loopback((struct sockaddr *)&a));
}

static void test_self_list_is_bounded(void)
{
    struct destguard g = {0};
    struct sockaddr_storage a = sa("127.0.0.1", 1);
    struct sockaddr unix_addr = {.sa_family = AF_UNIX};

    for (size_t i = 0; i < DESTGUARD_MAX_SELF; i++)
        CU_ASSERT_EQUAL(destguard_add_self(&g, (struct sockaddr *)&a), 0);
    CU_ASSERT_EQUAL(destguard_add_self(&g, (struct sockaddr *)&a), -1);
    g.self_count = 0;
    CU_ASSERT_EQUAL(destguard_add_self(&g, &unix_addr), -1);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("destguard", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "every spelling of a loopback listener is self",
                     test_every_spelling_of_a_loopback_listener_is_self) ||
        !CU_add_test(s, "other ports and hosts are allowed",
                     test_other_ports_and_hosts_are_allowed) ||
        !CU_add_test(s, "a LAN listener is matched by its address",
                     test_a_lan_listener_is_matched_by_its_address) ||
        !CU_add_test(s, "a wildcard listener is every local address",
                     test_a_wildcard_listener_is_every_local_address) ||
        !CU_add_test(s, "private ranges", test_private_ranges) ||
        !CU_add_test(s, "--block-private refuses only when on",
                     test_block_private_refuses_only_when_on) ||
        !CU_add_test(s, "loopback listeners", test_loopback_listeners) ||
        !CU_add_test(s, "the self list is bounded", test_self_list_is_bounded)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
