/*
 * capage: what a client needs to trust tapwire's CA. The CA certificate as
 * PEM and DER files and an HTML page on installing it, with its SHA-256
 * fingerprint, served by the dashboard (/ca, /ca.pem, /ca.crt) and by the
 * proxy itself at http://DASHBOARD_LOCAL_HOST/ for devices that only have
 * the proxy set. Nothing here serves; the callers do.
 */
#ifndef TAPWIRE_CAPAGE_H
#define TAPWIRE_CAPAGE_H

#include <stddef.h>

#include "ca.h"

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

#endif
