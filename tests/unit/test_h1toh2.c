/*
 * Unit tests for h1toh2's head translation: an HTTP/1.1 request as the
 * pseudo-headers and fields of an HTTP/2 HEADERS frame (RFC 9113 8.3.1),
 * without the connection-specific fields (8.2.2), and what cannot be sent.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "h1toh2.h"
#include "log.h"
#include "testutil.h"

#define ADD(s, f) (CU_add_test((s), #f, (f)) != NULL)

static struct message request(const char *method, const char *target, const char *authority,
                              const struct message_field *fields, size_t count)
{
    struct message m = {0};

    m.method = method;
    m.method_len = strlen(method);
    m.scheme = "https";
    m.target = target;
    m.target_len = strlen(target);
    m.authority = authority;
    m.authority_len = authority != NULL ? strlen(authority) : 0;
    m.version = 11;
    m.fields = (struct message_fields){fields, count};
    return m;
}

#define F(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

/* The value of the pair named name in h, or NULL; *count how many carry it. */
static const char *nv_value(const struct h1toh2_head *h, const char *name, size_t *count)
{
    static char value[256];
    const char *found = NULL;

    *count = 0;
    for (size_t i = 0; i < h->count; i++) {
        const nghttp2_nv *nv = &h->nv[i];
        if (nv->namelen == strlen(name) && memcmp(nv->name, name, nv->namelen) == 0) {
            if (found == NULL) {
                snprintf(value, sizeof(value), "%.*s", (int)nv->valuelen, (const char *)nv->value);
                found = value;
            }
            (*count)++;
        }
    }
    return found;
}

static void assert_nv(const struct h1toh2_head *h, const char *name, const char *value)
{
    size_t n;
    const char *v = nv_value(h, name, &n);

    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(v, value);
}

static void assert_absent(const struct h1toh2_head *h, const char *name)
{
    size_t n;

    nv_value(h, name, &n);
    CU_ASSERT_EQUAL(n, 0);
}

static void test_pseudo_headers_first_authority_from_host(void)
{
    struct message_field f[] = {F("Host", "example.test:8443"), F("Accept", "*/*")};
    struct message m = request("GET", "/a?b=c", NULL, f, 2);
    struct h1toh2_head *h = malloc(sizeof(*h));
    const char *why = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), 0);
    CU_ASSERT_FATAL(h->count >= 4);
    /* RFC 9113 8.3: the pseudo-headers come before every field. */
    CU_ASSERT_EQUAL(memcmp(h->nv[0].name, ":method", 7), 0);
    CU_ASSERT_EQUAL(memcmp(h->nv[1].name, ":scheme", 7), 0);
    CU_ASSERT_EQUAL(memcmp(h->nv[2].name, ":authority", 10), 0);
    CU_ASSERT_EQUAL(memcmp(h->nv[3].name, ":path", 5), 0);
    assert_nv(h, ":method", "GET");
    assert_nv(h, ":scheme", "https");
    assert_nv(h, ":authority", "example.test:8443");
    assert_nv(h, ":path", "/a?b=c");
    /* Host became :authority; names are lower case (RFC 9113 8.2.1). */
    assert_absent(h, "host");
    assert_absent(h, "Accept");
    assert_nv(h, "accept", "*/*");
    CU_ASSERT_EQUAL(h->count, 5);
    free(h);
}

static void test_the_authority_wins_over_host(void)
{
    struct message_field f[] = {F("Host", "other.test")};
    struct message m = request("GET", "/", "example.test", f, 1);
    struct h1toh2_head *h = malloc(sizeof(*h));
    const char *why = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), 0);
    assert_nv(h, ":authority", "example.test");
    assert_absent(h, "host");
    free(h);
}

static void test_drops_connection_specific_fields(void)
{
    struct message_field f[] = {F("Host", "example.test"),
                                F("Connection", "keep-alive, X-Hop"),
                                F("X-Hop", "1"),
                                F("Keep-Alive", "timeout=5"),
                                F("Proxy-Connection", "keep-alive"),
                                F("Transfer-Encoding", "chunked"),
                                F("TE", "gzip"),
                                F("Expect", "100-continue"),
                                F("X-Kept", "yes"),
                                F("Content-Type", "text/plain")};
    struct message m = request("POST", "/up", NULL, f, 10);
    struct h1toh2_head *h = malloc(sizeof(*h));
    const char *why = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    m.body = MESSAGE_BODY_STREAM;
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), 0);
    assert_absent(h, "connection");
    assert_absent(h, "x-hop");
    assert_absent(h, "keep-alive");
    assert_absent(h, "proxy-connection");
    assert_absent(h, "transfer-encoding");
    assert_absent(h, "te");
    assert_absent(h, "expect");
    assert_nv(h, "x-kept", "yes");
    assert_nv(h, "content-type", "text/plain");
    CU_ASSERT_EQUAL(h->count, 6);
    free(h);
}

static void test_keeps_te_trailers_and_content_length(void)
{
    struct message_field f[] = {F("Host", "example.test"), F("TE", " Trailers "),
                                F("Content-Length", "5")};
    struct message m = request("PUT", "/x", NULL, f, 3);
    struct h1toh2_head *h = malloc(sizeof(*h));
    const char *why = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    m.body = MESSAGE_BODY_LENGTH;
    m.content_length = 5;
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), 0);
    /* RFC 9113 8.2.2: TE may be sent, with "trailers" only. */
    assert_nv(h, "te", "trailers");
    assert_nv(h, "content-length", "5");
    free(h);
}

static void test_refuses_what_http2_cannot_carry(void)
{
    struct message_field up[] = {F("Host", "example.test"), F("Connection", "Upgrade"),
                                 F("Upgrade", "websocket")};
    struct message m = request("GET", "/ws", NULL, up, 3);
    struct h1toh2_head *h = malloc(sizeof(*h));
    const char *why = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    m.is_upgrade = true;
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), -1);
    CU_ASSERT_PTR_NOT_NULL(why);
    CU_ASSERT_PTR_NOT_NULL(why != NULL ? strstr(why, "only HTTP/2") : NULL);
    why = NULL;
    m = request("GET", "/", NULL, NULL, 0);
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), -1);
    CU_ASSERT_PTR_NOT_NULL(why);
    why = NULL;
    m = request("CONNECT", "example.test:443", "example.test:443", NULL, 0);
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), -1);
    CU_ASSERT_PTR_NOT_NULL(why);
    free(h);
}

static void test_refuses_too_many_fields(void)
{
    size_t n = H1TOH2_MAX_FIELDS + 1;
    struct message_field *f = calloc(n, sizeof(*f));
    struct h1toh2_head *h = malloc(sizeof(*h));
    const char *why = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    for (size_t i = 0; i < n; i++)
        f[i] = (struct message_field)F("X-A", "1");
    struct message m = request("GET", "/", "example.test", f, n);
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), -1);
    CU_ASSERT_PTR_NOT_NULL(why);
    m.fields.count = H1TOH2_MAX_FIELDS;
    CU_ASSERT_EQUAL(h1toh2_request_head(&m, h, &why), 0);
    CU_ASSERT_EQUAL(h->count, 4 + H1TOH2_MAX_FIELDS);
    free(f);
    free(h);
}

int main(void)
{
    CU_pSuite suite;

    log_init(-1, LOG_ERROR);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("h1toh2", NULL, NULL);
    if (suite == NULL || !ADD(suite, test_pseudo_headers_first_authority_from_host) ||
        !ADD(suite, test_the_authority_wins_over_host) ||
        !ADD(suite, test_drops_connection_specific_fields) ||
        !ADD(suite, test_keeps_te_trailers_and_content_length) ||
        !ADD(suite, test_refuses_what_http2_cannot_carry) ||
        !ADD(suite, test_refuses_too_many_fields))
        goto out;
    return testutil_run();
out:
    CU_cleanup_registry();
    return 1;
}
