/* Unit tests for the upstream proxy's settings and request heads
 * (src/upstreamproxy.c). Talking to a real proxy is the integration test's. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "http1codec.h"
#include "testutil.h"
#include "upstreamproxy.h"

static struct upstreamproxy *proxy_of(const char *url, const char *const *ignore, size_t n)
{
    struct upstreamproxy *p = NULL;
    char err[256] = "";

    CU_ASSERT_EQUAL_FATAL(upstreamproxy_new(url, ignore, n, &p, err, sizeof(err)), 0);
    return p;
}

static void test_urls_are_parsed_and_named_without_credentials(void)
{
    struct upstreamproxy *p = proxy_of("http://proxy.lan:3128", NULL, 0);

    CU_ASSERT_STRING_EQUAL(upstreamproxy_name(p), "proxy.lan:3128");
    upstreamproxy_free(p);
    p = proxy_of("HTTP://us%40er:p%3Ass@[::1]:8080/", NULL, 0);
    CU_ASSERT_STRING_EQUAL(upstreamproxy_name(p), "[::1]:8080");
    upstreamproxy_free(p);
}

static void test_bad_urls_are_refused(void)
{
    const char *bad[] = {"socks5://h:1080",   "http://h",         "http://h:0",
                         "http://h:99999",    "http://h:80/path", "http://u@h:80",
                         "http://u:p%zz@h:1", "http://:p@h:1",    "h:3128"};
    struct upstreamproxy *p = NULL;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(upstreamproxy_new(bad[i], NULL, 0, &p, err, sizeof(err)), -1);
        CU_ASSERT_PTR_NULL(p);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "--upstream-proxy"));
    }
}

static void test_ignore_globs_pick_direct_hosts(void)
{
    const char *ignore[] = {"*.corp.example", "localhost", NULL};
    struct upstreamproxy *p = proxy_of("http://proxy:3128", ignore, 2);

    CU_ASSERT_FALSE(upstreamproxy_applies(p, "wiki.corp.example"));
    CU_ASSERT_FALSE(upstreamproxy_applies(p, "LOCALHOST"));
    CU_ASSERT_TRUE(upstreamproxy_applies(p, "example.org"));
    CU_ASSERT_FALSE(upstreamproxy_applies(NULL, "example.org"));
    upstreamproxy_free(p);
}

/* The head the proxy gets for a plain request: what the codec writes from
 * the prepared message. */
static char *head_for_proxy(const struct upstreamproxy *p, const char *host, uint16_t port)
{
    static const struct message_field fields[] = {{"Host", 4, "h.test", 6}};
    struct message req = {.method = "GET",
                          .method_len = 3,
                          .target = "/a?b=1",
                          .target_len = 6,
                          .version = 11,
                          .fields = {fields, 1}};
    struct message out;
    struct upstreamproxy_request state;
    size_t len = 0;
    char *head = NULL;

    if (upstreamproxy_prepare(p, &req, host, port, &out, &state) == 0)
        head = http1codec_request_head(&out, &len);
    upstreamproxy_request_free(&state);
    CU_ASSERT(head == NULL || strlen(head) == len);
    return head;
}

static void test_absolute_head_names_the_origin_and_adds_credentials(void)
{
    struct upstreamproxy *p = proxy_of("http://al%69ce:pw@proxy:3128", NULL, 0);
    char *out = head_for_proxy(p, "h.test", 8080);

    /* base64("alice:pw") = YWxpY2U6cHc= */
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(strncmp(out, "GET http://h.test:8080/a?b=1 HTTP/1.1\r\n", 38), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\nHost: h.test\r\n"));
    free(out);
    upstreamproxy_free(p);
    p = proxy_of("http://proxy:3128", NULL, 0);
    out = head_for_proxy(p, "::1", 80);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(strncmp(out, "GET http://[::1]:80/a?b=1 HTTP/1.1\r\n", 36), 0);
    CU_ASSERT_PTR_NULL(strstr(out, "Proxy-Authorization"));
    free(out);
    upstreamproxy_free(p);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("upstreamproxy", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "URLs are parsed and named without credentials",
                     test_urls_are_parsed_and_named_without_credentials) ||
        !CU_add_test(s, "bad URLs are refused", test_bad_urls_are_refused) ||
        !CU_add_test(s, "ignore globs pick the hosts reached directly",
                     test_ignore_globs_pick_direct_hosts) ||
        !CU_add_test(s, "the absolute-form head names the origin and adds the credentials",
                     test_absolute_head_names_the_origin_and_adds_credentials)) {
        CU_cleanup_registry();
        return 1;
    }
    return testutil_run();
}
