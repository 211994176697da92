/*
 * capage: the page on trusting tapwire's CA and the CA certificate as files.
 * Fixed text and the CA's own fingerprint, nothing captured or typed by a
 * client ever reaches it.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "capage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "buf.h"
#include "embedded.h"
#include "webpolicy.h"
#include "errmsg.h"

int capage_pem_der(const struct ca *ca, char **pem, size_t *pem_len, unsigned char **der,
                   size_t *der_len, char *err, size_t err_len)
{
    BIO *bio = NULL;
    char *data = NULL;
    unsigned char *p;
    long n;
    int der_n;
    int ret = -1;

    *pem = NULL;
    *der = NULL;
    ERR_clear_error();
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509(bio, ca_cert(ca)) != 1 ||
        (n = BIO_get_mem_data(bio, &data)) <= 0) {
        errmsg_set(err, err_len, "cannot encode the CA certificate as PEM");
        goto out;
    }
    der_n = i2d_X509(ca_cert(ca), NULL);
    if (der_n <= 0) {
        errmsg_set(err, err_len, "cannot encode the CA certificate as DER");
        goto out;
    }
    *pem = malloc((size_t)n);
    *der = malloc((size_t)der_n);
    if (*pem == NULL || *der == NULL) {
        errmsg_set(err, err_len, "dashboard: out of memory");
        goto out;
    }
    memcpy(*pem, data, (size_t)n);
    *pem_len = (size_t)n;
    p = *der;
    if (i2d_X509(ca_cert(ca), &p) != der_n) {
        errmsg_set(err, err_len, "cannot encode the CA certificate as DER");
        goto out;
    }
    *der_len = (size_t)der_n;
    ret = 0;
out:
    if (ret != 0) {
        free(*pem);
        free(*der);
        *pem = NULL;
        *der = NULL;
    }
    ERR_clear_error();
    BIO_free(bio);
    return ret;
}

static const char ca_page_head[] =
    "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>tapwire: trust the CA</title>\n"
    /* The dashboard's stylesheet, served beside this page both by the
     * dashboard and at http://tapwire.invalid/: the CSP allows no inline
     * style. */
    "<link rel=\"icon\" href=\"data:,\">\n"
    "<link rel=\"stylesheet\" href=\"" CAPAGE_STYLESHEET_PATH "\">\n"
    "</head>\n<body class=\"doc\">\n"
    "<header class=\"topbar\"><span class=\"brand\">tapwire</span></header>\n"
    "<main class=\"doc-page\">\n"
    "<h1>Trust the tapwire certificate authority</h1>\n"
    "<p>tapwire shows you HTTPS traffic by presenting certificates signed by its own "
    "certificate authority (CA). A client accepts them only once you trust that CA. Trust it "
    "only on devices whose traffic you mean to inspect, and remove it when you are done: "
    "whoever holds its key (in tapwire's data directory) can impersonate any site to them.</p>\n"
    "<p>Download: <a href=\"/ca.pem\" download>tapwire-ca.pem</a> (PEM) or "
    "<a href=\"/ca.crt\" download>tapwire-ca.crt</a> (DER).</p>\n"
    "<p>SHA-256 fingerprint: <code>";
static const char ca_page_tail[] =
    "</code><br>Check that your device shows the same before you trust it.</p>\n"
    "<h2>Firefox</h2>\n"
    "<p>Firefox keeps its own list. Settings, Privacy &amp; Security, Certificates, View "
    "Certificates, Authorities, Import: choose tapwire-ca.pem and tick \"Trust this CA to "
    "identify websites\".</p>\n"
    "<h2>Chromium and Chrome</h2>\n"
    "<p>On Linux: Settings, Privacy and security, Security, Manage certificates, Authorities "
    "(or \"Installed by you\"), Import: choose tapwire-ca.pem and tick \"Trust this certificate "
    "for identifying websites\". On Windows and macOS they use the system store: open "
    "tapwire-ca.crt and add it to the trusted root authorities (Keychain Access: set "
    "\"When using this certificate\" to Always Trust).</p>\n"
    "<h2>Debian and Ubuntu (curl, wget and most programs)</h2>\n"
    "<pre>sudo cp tapwire-ca.pem /usr/local/share/ca-certificates/tapwire-ca.crt\n"
    "sudo update-ca-certificates</pre>\n"
    "<p>The copy must end in .crt. To remove it, delete the file and run "
    "<code>sudo update-ca-certificates --fresh</code>.</p>\n"
    "<h2>Android</h2>\n"
    "<p>Download tapwire-ca.crt, then Settings, Security, Encryption &amp; credentials, Install "
    "a certificate, CA certificate. Chrome trusts such user CAs; apps made for Android 7 and "
    "later trust only the system store unless they opt in. The system store needs a rooted "
    "device or an emulator image: the certificate goes to /system/etc/security/cacerts/ named "
    "after its subject hash (<code>openssl x509 -subject_hash_old -noout -in tapwire-ca.pem"
    "</code>) with the suffix .0.</p>\n"
    "<h2>iOS and iPadOS</h2>\n"
    "<p>Open this page in Safari and tap tapwire-ca.crt; allow the profile download. Then "
    "Settings, General, VPN &amp; Device Management, tapwire, Install. iOS needs one more "
    "step before it trusts the CA for websites: Settings, General, About, Certificate Trust "
    "Settings, and turn on full trust for the tapwire CA.</p>\n"
    "<p>A device that only has the proxy set finds this page at "
    "<a href=\"http://" CAPAGE_LOCAL_HOST "/\">http://" CAPAGE_LOCAL_HOST "/</a>.</p>\n"
    "</main>\n</body>\n</html>\n";

char *capage_html(const struct ca *ca, size_t *len)
{
    const char *hex = ca_fingerprint(ca);
    struct buf b = BUF_INIT(BUF_UNBOUNDED_BYTES);
    size_t i;

    buf_str(&b, ca_page_head);
    for (i = 0; hex != NULL && hex[i] != '\0' && hex[i + 1] != '\0'; i += 2) {
        char pair[4];

        /* Only hex digits reach the page, whatever the string holds. */
        if (strspn(hex + i, "0123456789abcdefABCDEF") < 2)
            break;
        snprintf(pair, sizeof(pair), "%s%c%c", i > 0 ? ":" : "", hex[i], hex[i + 1]);
        for (char *c = pair; *c != '\0'; c++)
            if (*c >= 'a' && *c <= 'f')
                *c = (char)(*c - 'a' + 'A');
        buf_str(&b, pair);
    }
    buf_str(&b, ca_page_tail);
    if (b.has_failed) {
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

/* ---- the proxy's own pages at http://CAPAGE_LOCAL_HOST/ ---- */

bool capage_is_local_host(const char *host)
{
    size_t n = strlen(CAPAGE_LOCAL_HOST);

    if (host == NULL || strncasecmp(host, CAPAGE_LOCAL_HOST, n) != 0)
        return false;
    host += n;
    if (*host == '.') /* the absolute form of the name */
        host++;
    return *host == '\0' || (*host == ':' && strspn(host + 1, "0123456789") == strlen(host + 1));
}

void capage_response_free(struct capage_response *response)
{
    if (response == NULL)
        return;
    free(response->headers);
    free(response->body);
    memset(response, 0, sizeof(*response));
}

/* A copy of the dashboard's stylesheet, which the page on trusting the CA
 * links; NULL when out of memory. */
static unsigned char *local_stylesheet(size_t *len)
{
    unsigned char *copy = malloc(embedded_web_style_css_len + 1);

    if (copy != NULL) {
        memcpy(copy, embedded_web_style_css, embedded_web_style_css_len);
        *len = embedded_web_style_css_len;
    }
    return copy;
}

int capage_serve(const struct ca *ca, const char *method, const char *target,
                 struct capage_response *out, char *err, size_t err_len)
{
    size_t path_len = strcspn(target, "?#");
    char *pem = NULL;
    unsigned char *der = NULL;
    size_t pem_len = 0, der_len = 0;
    struct buf h = BUF_INIT(BUF_UNBOUNDED_BYTES);
    int ret = -1;

    memset(out, 0, sizeof(*out));
    out->status = 200;
    out->reason = "OK";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        out->status = 405;
        out->reason = "Method Not Allowed";
        buf_str(&h, "Allow: GET, HEAD\r\nContent-Type: text/plain; charset=utf-8\r\n");
        out->body = (unsigned char *)strdup("method not allowed\n");
    } else if ((path_len == 1 && target[0] == '/') ||
               (path_len == 3 && strncmp(target, "/ca", 3) == 0)) {
        buf_str(&h, "Content-Type: text/html; charset=utf-8\r\n");
        out->body = (unsigned char *)capage_html(ca, &out->body_len);
    } else if (path_len == strlen(CAPAGE_STYLESHEET_PATH) &&
               strncmp(target, CAPAGE_STYLESHEET_PATH, path_len) == 0) {
        buf_str(&h, "Content-Type: text/css; charset=utf-8\r\n");
        out->body = local_stylesheet(&out->body_len);
    } else if ((path_len == 7 && strncmp(target, "/ca.pem", 7) == 0) ||
               (path_len == 7 && strncmp(target, "/ca.crt", 7) == 0)) {
        bool is_pem = strncmp(target, "/ca.pem", 7) == 0;

        if (capage_pem_der(ca, &pem, &pem_len, &der, &der_len, err, err_len) != 0)
            goto out;
        buf_str(&h, is_pem ? "Content-Type: application/x-pem-file\r\n"
                             "Content-Disposition: attachment; filename=\"tapwire-ca.pem\"\r\n"
                           : "Content-Type: application/x-x509-ca-cert\r\n"
                             "Content-Disposition: attachment; filename=\"tapwire-ca.crt\"\r\n");
        out->body = is_pem ? (unsigned char *)pem : der;
        out->body_len = is_pem ? pem_len : der_len;
        if (is_pem)
            pem = NULL;
        else
            der = NULL;
    } else {
        out->status = 404;
        out->reason = "Not Found";
        buf_str(&h, "Content-Type: text/plain; charset=utf-8\r\n");
        out->body = (unsigned char *)strdup("not found\n");
    }
    if (out->body != NULL && out->body_len == 0)
        out->body_len = strlen((const char *)out->body);
    buf_str(&h, WEBPOLICY_HEADER_LINES);
    if (h.has_failed || out->body == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    out->headers = h.data;
    h.data = NULL;
    ret = 0;
out:
    if (ret != 0)
        capage_response_free(out);
    free(h.data);
    free(pem);
    free(der);
    return ret;
}
