/*
 * upstreamproxy: see upstreamproxy.h. The proxy is reached without the
 * destination guard: the operator named it, and it is often on the LAN or
 * on this host. What the guard can still judge, a numeric destination, is
 * judged by origin.c before asking the proxy; names are resolved by the
 * proxy, which is then the one that decides where they lead.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, FNM_CASEFOLD */
#endif

#include "upstreamproxy.h"

#include <ctype.h>
#include <fnmatch.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "clock.h"
#include "config.h"
#include "errmsg.h"
#include "textcode.h"

#define CREDENTIAL_MAX_BYTES 512

struct upstreamproxy {
    char host[256];
    uint16_t port;
    char name[300];      /* "host:port", "[v6]:port" */
    char *authorization; /* "Proxy-Authorization: Basic ...\r\n" or NULL; owned */
    const char *const *ignore;
    size_t ignore_count;
};

/* Percent-decodes in[len] into out (out_size > len). Returns the length or
 * -1 on a bad escape or a control byte. */
static long percent_decode(const char *in, size_t len, char *out, size_t out_size)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)in[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= len)
                return -1;
            hi = textcode_hex_value((unsigned char)in[i + 1]);
            lo = textcode_hex_value((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= out_size)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

/* The Basic Proxy-Authorization line for userinfo ("user:pass", encoded). */
static char *authorization_line(const char *userinfo, size_t len)
{
    char pair[CREDENTIAL_MAX_BYTES];
    unsigned char b64[CREDENTIAL_MAX_BYTES * 4 / 3 + 8];
    const char *colon = memchr(userinfo, ':', len);
    long ulen, plen;
    char *line = NULL;
    size_t line_len;

    if (colon == NULL || len >= sizeof(pair))
        goto out;
    ulen = percent_decode(userinfo, (size_t)(colon - userinfo), pair, sizeof(pair));
    if (ulen <= 0 || memchr(pair, ':', (size_t)ulen) != NULL)
        goto out;
    pair[ulen] = ':';
    plen = percent_decode(colon + 1, len - (size_t)(colon - userinfo) - 1, pair + ulen + 1,
                          sizeof(pair) - (size_t)ulen - 1);
    if (plen < 0)
        goto out;
    EVP_EncodeBlock(b64, (const unsigned char *)pair, (int)(ulen + 1 + plen));
    line_len = strlen((const char *)b64) + sizeof("Proxy-Authorization: Basic \r\n");
    line = malloc(line_len);
    if (line != NULL)
        snprintf(line, line_len, "Proxy-Authorization: Basic %s\r\n", (const char *)b64);
out:
    OPENSSL_cleanse(pair, sizeof(pair));
    OPENSSL_cleanse(b64, sizeof(b64));
    return line;
}

int upstreamproxy_new(const char *url, const char *const *ignore, size_t ignore_count,
                      struct upstreamproxy **out, char *err, size_t err_len)
{
    struct upstreamproxy *p = calloc(1, sizeof(*p));
    char hostport[300];
    const char *authority, *end, *at;
    size_t alen;
    int rc = -1;

    *out = NULL;
    if (p == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (strncasecmp(url, "http://", 7) != 0) {
        errmsg_set(err, err_len, "--upstream-proxy wants http://[USER:PASS@]HOST:PORT");
        goto out;
    }
    authority = url + 7;
    end = authority + strcspn(authority, "/?#");
    if (*end != '\0' && strcmp(end, "/") != 0) {
        errmsg_set(err, err_len, "--upstream-proxy wants no path, query or fragment");
        goto out;
    }
    alen = (size_t)(end - authority);
    at = NULL;
    for (const char *c = authority; c < end; c++)
        if (*c == '@')
            at = c;
    if (at != NULL) {
        p->authorization = authorization_line(authority, (size_t)(at - authority));
        if (p->authorization == NULL) {
            errmsg_set(err, err_len,
                       "--upstream-proxy: the credentials want USER:PASS (percent-encoded)");
            goto out;
        }
        alen -= (size_t)(at + 1 - authority);
        authority = at + 1;
    }
    if (alen >= sizeof(hostport)) {
        errmsg_set(err, err_len, "--upstream-proxy: host too long");
        goto out;
    }
    memcpy(hostport, authority, alen);
    hostport[alen] = '\0';
    if (config_parse_hostport(hostport, p->host, sizeof(p->host), &p->port) < 0 || p->port == 0) {
        errmsg_set(err, err_len, "--upstream-proxy wants http://[USER:PASS@]HOST:PORT, not %s",
                   hostport);
        goto out;
    }
    snprintf(p->name, sizeof(p->name), "%s", hostport);
    p->ignore = ignore;
    p->ignore_count = ignore_count;
    *out = p;
    p = NULL;
    rc = 0;
out:
    upstreamproxy_free(p);
    return rc;
}

void upstreamproxy_free(struct upstreamproxy *p)
{
    if (p == NULL)
        return;
    if (p->authorization != NULL) {
        OPENSSL_cleanse(p->authorization, strlen(p->authorization));
        free(p->authorization);
    }
    free(p);
}

const char *upstreamproxy_name(const struct upstreamproxy *p)
{
    return p->name;
}

bool upstreamproxy_applies(const struct upstreamproxy *p, const char *host)
{
    if (p == NULL)
        return false;
    for (size_t i = 0; i < p->ignore_count; i++)
        if (fnmatch(p->ignore[i], host, FNM_CASEFOLD) == 0)
            return false;
    return true;
}

/* Waits until fd is readable or the deadline passes. Returns 0, or -1 with
 * *err. */
static int wait_readable(const struct upstreamproxy *p, int fd, int cancel_fd, int64_t deadline,
                         struct upstream_error *err)
{
    for (;;) {
        int64_t left = deadline - clock_mono_ms();
        struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = cancel_fd, .events = POLLIN}};
        int r;

        if (left <= 0) {
            err->status = UPSTREAM_TIMEOUT;
            snprintf(err->reason, sizeof(err->reason),
                     "upstream proxy %s did not answer the CONNECT in time", p->name);
            return -1;
        }
        r = poll(pf, cancel_fd >= 0 ? 2 : 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (cancel_fd >= 0 && pf[1].revents != 0)) {
            err->status = UPSTREAM_PROXY_FAILED;
            snprintf(err->reason, sizeof(err->reason), "upstream proxy %s: cancelled", p->name);
            return -1;
        }
        if (r > 0)
            return 0;
    }
}

/* Reads the proxy's answer head exactly (peeked first, then consumed up to
 * its blank line) into head. Returns its length or -1 with *err. */
static long read_answer(const struct upstreamproxy *p, int fd, int cancel_fd, int64_t deadline,
                        char *head, size_t head_size, struct upstream_error *err)
{
    for (;;) {
        ssize_t n;
        char *blank;

        if (wait_readable(p, fd, cancel_fd, deadline, err) < 0)
            return -1;
        n = recv(fd, head, head_size - 1, MSG_PEEK);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            err->status = UPSTREAM_PROXY_FAILED;
            snprintf(err->reason, sizeof(err->reason),
                     "upstream proxy %s closed the connection before answering the CONNECT",
                     p->name);
            return -1;
        }
        head[n] = '\0';
        blank = memmem(head, (size_t)n, "\r\n\r\n", 4);
        if (blank != NULL) {
            size_t len = (size_t)(blank + 4 - head);
            return recv(fd, head, len, MSG_WAITALL) == (ssize_t)len ? (long)len : -1;
        }
        if ((size_t)n == head_size - 1) {
            err->status = UPSTREAM_PROXY_FAILED;
            snprintf(err->reason, sizeof(err->reason),
                     "upstream proxy %s answered the CONNECT with a head over %zu bytes", p->name,
                     head_size - 1);
            return -1;
        }
        /* Part of the head: wait for more than is there (poll would say
         * readable at once), politely. */
        struct timespec pause = {0, 2000000L};
        nanosleep(&pause, NULL);
    }
}

/* The proxy's status line, printable ASCII only, for the 502 page. */
static void status_line_text(const char *head, char *out, size_t out_len)
{
    size_t i = 0;

    for (; head[i] != '\0' && head[i] != '\r' && i + 1 < out_len; i++)
        out[i] = head[i] >= 0x20 && head[i] < 0x7f ? head[i] : '?';
    out[i] = '\0';
}

static int send_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int upstreamproxy_connect(const struct upstreamproxy *p, const char *host, uint16_t port,
                          bool is_tunnel, int timeout_ms, int cancel_fd, struct upstream_error *err)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    char request[1024];
    char head[UPSTREAMPROXY_MAX_HEAD_BYTES];
    char line[128];
    bool v6 = strchr(host, ':') != NULL;
    int status = 0;
    long len;
    int fd;

    fd = upstream_connect_tcp(p->host, p->port, timeout_ms, NULL, err);
    if (fd < 0) {
        char prefix[sizeof(p->name) + 32];

        snprintf(prefix, sizeof(prefix), "upstream proxy %s: ", p->name);
        errmsg_prefix(err->reason, sizeof(err->reason), prefix);
        return -1;
    }
    if (!is_tunnel)
        return fd;
    snprintf(request, sizeof(request), "CONNECT %s%s%s:%u HTTP/1.1\r\nHost: %s%s%s:%u\r\n%s\r\n",
             v6 ? "[" : "", host, v6 ? "]" : "", port, v6 ? "[" : "", host, v6 ? "]" : "", port,
             p->authorization != NULL ? p->authorization : "");
    if (send_all(fd, request, strlen(request)) < 0) {
        err->status = UPSTREAM_PROXY_FAILED;
        snprintf(err->reason, sizeof(err->reason), "upstream proxy %s: cannot send the CONNECT",
                 p->name);
        goto fail;
    }
    OPENSSL_cleanse(request, sizeof(request));
    len = read_answer(p, fd, cancel_fd, deadline, head, sizeof(head), err);
    if (len < 0)
        goto fail;
    if (len < 12 || strncmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ' ||
        sscanf(head + 9, "%3d", &status) != 1) {
        err->status = UPSTREAM_PROXY_FAILED;
        snprintf(err->reason, sizeof(err->reason),
                 "upstream proxy %s answered the CONNECT with something that is not HTTP", p->name);
        goto fail;
    }
    if (status < 200 || status > 299) {
        status_line_text(head, line, sizeof(line));
        err->status = UPSTREAM_PROXY_FAILED;
        snprintf(err->reason, sizeof(err->reason),
                 "upstream proxy %s refused CONNECT %s%s%s:%u: %s", p->name, v6 ? "[" : "", host,
                 v6 ? "]" : "", port, line);
        goto fail;
    }
    return fd;
fail:
    OPENSSL_cleanse(request, sizeof(request));
    close(fd);
    return -1;
}

int upstreamproxy_prepare(const struct upstreamproxy *p, const struct message *req,
                          const char *host, uint16_t port, struct message *out,
                          struct upstreamproxy_request *state)
{
    static const char name[] = "Proxy-Authorization";
    bool v6 = strchr(host, ':') != NULL;
    size_t len = req->target_len + strlen(host) + 20;

    memset(state, 0, sizeof(*state));
    *out = *req;
    state->target = malloc(len);
    if (state->target == NULL)
        return -1;
    snprintf(state->target, len, "http://%s%s%s:%u%.*s", v6 ? "[" : "", host, v6 ? "]" : "", port,
             (int)req->target_len, req->target);
    out->target = state->target;
    out->target_len = strlen(state->target);
    out->is_to_proxy = true;
    if (p->authorization != NULL) {
        /* p->authorization is the whole line: "Proxy-Authorization: " value CRLF. */
        size_t line = strlen(p->authorization);
        state->credentials =
            (struct message_field){name, sizeof(name) - 1, p->authorization + sizeof(name) + 1,
                                   line - (sizeof(name) + 1) - 2};
        out->next_hop = (struct message_fields){&state->credentials, 1};
    }
    return 0;
}

void upstreamproxy_request_free(struct upstreamproxy_request *state)
{
    free(state->target);
    state->target = NULL;
}
