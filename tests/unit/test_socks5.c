/* Unit tests for the SOCKS5 handshake parser (src/socks5.c). */
#include <CUnit/Basic.h>
#include <string.h>

#include "socks5.h"
#include "testutil.h"

/* Feeds msg to parse one byte more at a time, as the listener reads it:
 * every prefix must ask for more bytes than it has, and the whole message
 * must give result with *need its exact length. */
#define FEED(parse, msg, out, expect)                                                              \
    do {                                                                                           \
        size_t need_ = 0, len_ = sizeof(msg) - 1;                                                  \
        size_t have_ = 0;                                                                          \
        enum socks5_parse r_;                                                                      \
        while ((r_ = parse((const unsigned char *)(msg), have_, (out), &need_)) == SOCKS5_MORE) {  \
            CU_ASSERT_FATAL(need_ > have_ && need_ <= len_);                                       \
            have_ = need_;                                                                         \
        }                                                                                          \
        CU_ASSERT_EQUAL(r_, (expect));                                                             \
        if (r_ == SOCKS5_OK)                                                                       \
            CU_ASSERT_EQUAL(need_, len_);                                                          \
    } while (0)

static void test_greeting_lists_the_offered_methods(void)
{
    struct socks5_greeting g;

    FEED(socks5_parse_greeting, "\x05\x02\x00\x02", &g, SOCKS5_OK);
    CU_ASSERT_TRUE(g.offers_none);
    CU_ASSERT_TRUE(g.offers_userpass);
    CU_ASSERT_EQUAL(socks5_choose_method(&g, false), SOCKS5_METHOD_NONE);
    CU_ASSERT_EQUAL(socks5_choose_method(&g, true), SOCKS5_METHOD_USERPASS);
    FEED(socks5_parse_greeting, "\x05\x01\x00", &g, SOCKS5_OK);
    CU_ASSERT_EQUAL(socks5_choose_method(&g, true), SOCKS5_METHOD_UNACCEPTABLE);
    FEED(socks5_parse_greeting, "\x05\x01\x02", &g, SOCKS5_OK);
    CU_ASSERT_EQUAL(socks5_choose_method(&g, false), SOCKS5_METHOD_UNACCEPTABLE);
}

static void test_greeting_refuses_other_versions(void)
{
    struct socks5_greeting g;

    FEED(socks5_parse_greeting, "\x04\x01\x00", &g, SOCKS5_BAD);
    FEED(socks5_parse_greeting, "GET / HTTP/1.1\r\n", &g, SOCKS5_BAD);
    FEED(socks5_parse_greeting, "\x05\x00", &g, SOCKS5_BAD);
}

static void test_userpass_takes_name_and_password(void)
{
    struct socks5_userpass up;

    FEED(socks5_parse_userpass,
         "\x01\x05"
         "alice"
         "\x03"
         "pw!",
         &up, SOCKS5_OK);
    CU_ASSERT_EQUAL(up.user_len, 5);
    CU_ASSERT_EQUAL(memcmp(up.user, "alice", 5), 0);
    CU_ASSERT_EQUAL(up.pass_len, 3);
    CU_ASSERT_EQUAL(memcmp(up.pass, "pw!", 3), 0);
    FEED(socks5_parse_userpass,
         "\x05\x05"
         "alice"
         "\x03"
         "pw!",
         &up, SOCKS5_BAD);
    FEED(socks5_parse_userpass,
         "\x01\x05"
         "alice"
         "\x00",
         &up, SOCKS5_BAD);
    FEED(socks5_parse_userpass,
         "\x01\x00\x03"
         "pw!",
         &up, SOCKS5_BAD);
}

static void test_request_ipv4_ipv6_and_name(void)
{
    struct socks5_request r;

    FEED(socks5_parse_request, "\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb", &r, SOCKS5_OK);
    CU_ASSERT_STRING_EQUAL(r.host, "127.0.0.1");
    CU_ASSERT_EQUAL(r.port, 443);
    CU_ASSERT_EQUAL(r.atyp, SOCKS5_ATYP_IPV4);
    FEED(socks5_parse_request,
         "\x05\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
         "\x1f\x90",
         &r, SOCKS5_OK);
    CU_ASSERT_STRING_EQUAL(r.host, "::1");
    CU_ASSERT_EQUAL(r.port, 8080);
    FEED(socks5_parse_request,
         "\x05\x01\x00\x03\x0b"
         "example.org"
         "\x00\x50",
         &r, SOCKS5_OK);
    CU_ASSERT_STRING_EQUAL(r.host, "example.org");
    CU_ASSERT_EQUAL(r.port, 80);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_SUCCEEDED);
}

static void test_request_refusals_carry_the_rfc_code(void)
{
    struct socks5_request r;

    FEED(socks5_parse_request, "\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_COMMAND_NOT_SUPPORTED);
    FEED(socks5_parse_request, "\x05\x03\x00\x01\x7f\x00\x00\x01\x00\x50", &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_COMMAND_NOT_SUPPORTED);
    FEED(socks5_parse_request, "\x05\x01\x00\x05\x7f", &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_ADDRESS_NOT_SUPPORTED);
    FEED(socks5_parse_request,
         "\x05\x01\x00\x03\x04"
         "a\rb."
         "\x00\x50",
         &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_HOST_UNREACHABLE);
    FEED(socks5_parse_request,
         "\x05\x01\x00\x03\x03"
         "a.."
         "\x00\x50",
         &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_HOST_UNREACHABLE);
    FEED(socks5_parse_request, "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_HOST_UNREACHABLE);
    FEED(socks5_parse_request, "\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50", &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_FAILURE);
    FEED(socks5_parse_request, "\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", &r, SOCKS5_BAD);
    CU_ASSERT_EQUAL(r.refusal, SOCKS5_REP_FAILURE);
    FEED(socks5_parse_request, "\x05\x01\x00\x03\x00\x00\x50", &r, SOCKS5_BAD);
}

static void test_reply_is_ten_bytes_with_a_zero_address(void)
{
    unsigned char out[SOCKS5_REPLY_BYTES];

    socks5_build_reply(SOCKS5_REP_COMMAND_NOT_SUPPORTED, out);
    CU_ASSERT_EQUAL(memcmp(out, "\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00", 10), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("socks5", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "the greeting lists the offered methods",
                     test_greeting_lists_the_offered_methods) ||
        !CU_add_test(s, "the greeting refuses other versions",
                     test_greeting_refuses_other_versions) ||
        !CU_add_test(s, "RFC 1929 takes a name and a password",
                     test_userpass_takes_name_and_password) ||
        !CU_add_test(s, "requests for IPv4, IPv6 and a name", test_request_ipv4_ipv6_and_name) ||
        !CU_add_test(s, "refused requests carry the RFC's code",
                     test_request_refusals_carry_the_rfc_code) ||
        !CU_add_test(s, "the reply is ten bytes with a zero address",
                     test_reply_is_ten_bytes_with_a_zero_address)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
