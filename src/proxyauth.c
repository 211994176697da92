/*
 * proxyauth: see proxyauth.h. Every check digests what the client sent once
 * and compares the digest with each accepted pair's, always all of them, with
 * CRYPTO_memcmp(): neither the position of a differing byte nor the length of
 * a password shows in the time a refusal takes.
 */
#include "proxyauth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "errmsg.h"
#include "keyfile.h"
#include "textcode.h"

#define DIGEST_BYTES 32
/* RFC 1929: a username and a password of up to 255 bytes each. */
#define PAIR_MAX_BYTES (255 + 1 + 255)

struct proxyauth {
    size_t count;
    unsigned char digests[PROXYAUTH_MAX_USERS][DIGEST_BYTES];
};

static int digest(const void *data, size_t len, unsigned char out[DIGEST_BYTES])
{
    unsigned int out_len = 0;

    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1 || out_len != DIGEST_BYTES)
        return -1;
    return 0;
}

/* Whether pair[len] ("USER:PASS") is one of the accepted ones. */
static bool is_accepted(const struct proxyauth *auth, const unsigned char *pair, size_t len)
{
    unsigned char d[DIGEST_BYTES];
    int matches = 0;

    if (auth == NULL || digest(pair, len, d) < 0)
        return false;
    for (size_t i = 0; i < auth->count; i++)
        matches |= CRYPTO_memcmp(d, auth->digests[i], DIGEST_BYTES) == 0;
    OPENSSL_cleanse(d, sizeof(d));
    return matches != 0;
}

/* Adds "USER:PASS" (len bytes, not NUL-terminated) to auth. */
static int add_pair(struct proxyauth *auth, const char *pair, size_t len, char *err, size_t err_len)
{
    const char *colon = memchr(pair, ':', len);

    if (colon == NULL || colon == pair || colon + 1 == pair + len) {
        errmsg_set(err, err_len, "wants USER:PASS, both non-empty");
        return -1;
    }
    if ((size_t)(colon - pair) > 255 || (size_t)(pair + len - colon - 1) > 255) {
        errmsg_set(err, err_len, "a user name or password longer than 255 bytes");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)pair[i] < 0x20 || pair[i] == 0x7f) {
            errmsg_set(err, err_len, "control characters in USER:PASS");
            return -1;
        }
    }
    if (auth->count == PROXYAUTH_MAX_USERS) {
        errmsg_set(err, err_len, "more than %d users", PROXYAUTH_MAX_USERS);
        return -1;
    }
    if (digest(pair, len, auth->digests[auth->count]) < 0) {
        errmsg_set(err, err_len, "cannot compute SHA-256");
        return -1;
    }
    auth->count++;
    return 0;
}

int proxyauth_new(const char *user_pass, struct proxyauth **out, char *err, size_t err_len)
{
    struct proxyauth *auth = calloc(1, sizeof(*auth));
    int rc = -1;

    *out = NULL;
    if (auth == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (add_pair(auth, user_pass, strlen(user_pass), err, err_len) < 0) {
        errmsg_prefix(err, err_len, "--proxy-auth: ");
        goto out;
    }
    *out = auth;
    auth = NULL;
    rc = 0;
out:
    free(auth);
    return rc;
}

int proxyauth_load_file(const char *path, struct proxyauth **out, char *err, size_t err_len)
{
    struct proxyauth *auth = calloc(1, sizeof(*auth));
    BIO *bio = NULL;
    char *text = NULL;
    long text_len;
    size_t line_no = 0;
    int rc = -1;

    *out = NULL;
    if (auth == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    bio = keyfile_read(path, "--proxy-auth-file", true, err, err_len);
    if (bio == NULL)
        goto out;
    text_len = BIO_get_mem_data(bio, &text);
    for (const char *p = text, *end = text + (text_len > 0 ? text_len : 0); p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        size_t len = (size_t)(line_end - p);

        line_no++;
        if (len > 0 && p[len - 1] == '\r')
            len--;
        if (len > 0 && p[0] != '#' && add_pair(auth, p, len, err, err_len) < 0) {
            char where[300];

            snprintf(where, sizeof(where), "--proxy-auth-file %s line %zu: ", path, line_no);
            errmsg_prefix(err, err_len, where);
            goto out;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    if (auth->count == 0) {
        errmsg_set(err, err_len, "--proxy-auth-file %s holds no USER:PASS line", path);
        goto out;
    }
    *out = auth;
    auth = NULL;
    rc = 0;
out:
    BIO_free(bio); /* secure memory: cleansed when freed */
    free(auth);
    return rc;
}

void proxyauth_free(struct proxyauth *auth)
{
    if (auth != NULL)
        OPENSSL_cleanse(auth, sizeof(*auth));
    free(auth);
}

long proxyauth_base64_decode(const char *in, size_t in_len, unsigned char *out, size_t out_size)
{
    size_t o = 0;

    if (in_len % 4 != 0)
        return -1;
    for (size_t i = 0; i < in_len; i += 4) {
        const unsigned char *q = (const unsigned char *)in + i;
        bool is_last = i + 4 == in_len;
        int pad = (q[3] == '=') + (q[2] == '=' && q[3] == '=');
        int v[4];
        uint32_t word = 0;

        if (pad > 0 && !is_last)
            return -1;
        for (int k = 0; k < 4 - pad; k++) {
            v[k] = textcode_base64_value(q[k]);
            if (v[k] < 0)
                return -1;
            word |= (uint32_t)v[k] << (18 - 6 * k);
        }
        if (o + (size_t)(3 - pad) > out_size)
            return -1;
        out[o++] = (unsigned char)(word >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(word >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)word;
    }
    return (long)o;
}

bool proxyauth_check_basic(const struct proxyauth *auth, const char *value, size_t len)
{
    unsigned char pair[PROXYAUTH_MAX_FIELD_BYTES];
    size_t i = 5;
    long n;
    bool ok;

    /* credentials = auth-scheme 1*SP token68 (RFC 9110 11.4); the scheme is
     * case-insensitive. */
    if (auth == NULL || len < 6 || len > PROXYAUTH_MAX_FIELD_BYTES ||
        strncasecmp(value, "Basic", 5) != 0 || value[5] != ' ')
        return false;
    while (i < len && value[i] == ' ')
        i++;
    n = proxyauth_base64_decode(value + i, len - i, pair, sizeof(pair));
    ok = n > 0 && memchr(pair, ':', (size_t)n) != NULL && is_accepted(auth, pair, (size_t)n);
    OPENSSL_cleanse(pair, sizeof(pair));
    return ok;
}

bool proxyauth_check_pair(const struct proxyauth *auth, const unsigned char *user, size_t user_len,
                          const unsigned char *pass, size_t pass_len)
{
    unsigned char pair[PAIR_MAX_BYTES];
    bool ok;

    /* A ':' in the name would let "a:b" + "c" pass for "a" + "b:c". */
    if (auth == NULL || user_len == 0 || pass_len == 0 || user_len > 255 || pass_len > 255 ||
        memchr(user, ':', user_len) != NULL)
        return false;
    memcpy(pair, user, user_len);
    pair[user_len] = ':';
    memcpy(pair + user_len + 1, pass, pass_len);
    ok = is_accepted(auth, pair, user_len + 1 + pass_len);
    OPENSSL_cleanse(pair, sizeof(pair));
    return ok;
}

static bool is_proxy_authorization(const struct message_field *h)
{
    static const char name[] = "Proxy-Authorization";

    return h->name_len == sizeof(name) - 1 && strncasecmp(h->name, name, h->name_len) == 0;
}

bool proxyauth_check_head(const struct proxyauth *auth, const struct http1_head *head)
{
    bool ok = false;

    for (size_t i = 0; i < head->num_headers; i++)
        if (is_proxy_authorization(&head->headers[i]) &&
            proxyauth_check_basic(auth, head->headers[i].value, head->headers[i].value_len))
            ok = true;
    return ok;
}

size_t proxyauth_strip(struct http1_head *head)
{
    size_t kept = 0;
    size_t taken;

    for (size_t i = 0; i < head->num_headers; i++)
        if (!is_proxy_authorization(&head->headers[i]))
            head->headers[kept++] = head->headers[i];
    taken = head->num_headers - kept;
    head->num_headers = kept;
    return taken;
}
