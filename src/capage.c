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

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "buf.h"
#include "dashboard.h"
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
    "<a href=\"http://" DASHBOARD_LOCAL_HOST "/\">http://" DASHBOARD_LOCAL_HOST "/</a>.</p>\n"
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
