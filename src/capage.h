/*
 * capage: what a client needs to trust tapwire's CA. The CA certificate as
 * PEM and DER files and an HTML page on installing it, with its SHA-256
 * fingerprint, served by the dashboard (/ca, /ca.pem, /ca.crt) and by the
 * proxy itself at http://CAPAGE_LOCAL_HOST/ for devices that only have the
 * proxy set. Nothing here serves; the callers write what capage_serve()
 * and the others return.
 */
#ifndef TAPWIRE_CAPAGE_H
#define TAPWIRE_CAPAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "ca.h"

/* The reserved name (RFC 6761 .invalid) under which the proxy itself serves
 * the CA page to clients that only have the proxy configured: it can never
 * be a real site. */
#define CAPAGE_LOCAL_HOST "tapwire.invalid"

/* Where the page finds its stylesheet (the dashboard's): whoever serves the
 * page serves this path too. */
#define CAPAGE_STYLESHEET_PATH "/style.css"

/* The CA certificate as PEM (*pem, *pem_len, not NUL-terminated) and DER.
 * Returns 0 with both (caller frees each with free()), or -1 with err and
 * both NULL. */
int capage_pem_der(const struct ca *ca, char **pem, size_t *pem_len, unsigned char **der,
                   size_t *der_len, char *err, size_t err_len);

/* The page on trusting the CA, with its fingerprint as AA:BB:... Returns the
 * page (caller frees) and *len, or NULL when out of memory. */
char *capage_html(const struct ca *ca, size_t *len);

/* A complete response for the proxy to write. */
struct capage_response {
    int status;          /* 200, 404 or 405 */
    const char *reason;  /* static: "OK", "Not Found", "Method Not Allowed" */
    char *headers;       /* owned: "Name: value\r\n" lines: Content-Type, Content-Disposition
                            for downloads, Allow on 405, and the security headers; without
                            Content-Length, Connection and Date, which are the caller's */
    unsigned char *body; /* owned: body_len bytes (the caller sends none for HEAD) */
    size_t body_len;
};

/* True when host (a Host header value or a URL's host, with or without a
 * port) names the proxy's own pages. */
bool capage_is_local_host(const char *host);

/*
 * The response to method and target (origin-form, "/ca.pem?x" is fine) for
 * the reserved host: "/" and "/ca" are the page on trusting the CA (never
 * the flows), "/ca.pem" and "/ca.crt" the certificate as PEM and DER,
 * CAPAGE_STYLESHEET_PATH the stylesheet that page links (the dashboard's);
 * other paths are 404 and methods other than GET and HEAD 405. Needs no
 * dashboard. Returns 0 with *out filled (free with capage_response_free())
 * or -1 with err (out of memory, or the certificate cannot be encoded).
 */
int capage_serve(const struct ca *ca, const char *method, const char *target,
                 struct capage_response *out, char *err, size_t err_len);
void capage_response_free(struct capage_response *response);

#endif
