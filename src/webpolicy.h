/*
 * webpolicy: the security headers every page tapwire serves carries, the
 * dashboard's and the CA page the proxy serves itself: scripts and styles
 * only from the page's own origin, nothing framed, nothing sniffed, nothing
 * cached (the pages hold a token or captured data).
 */
#ifndef TAPWIRE_WEBPOLICY_H
#define TAPWIRE_WEBPOLICY_H

#define WEBPOLICY_CSP_PAGE                                                                         \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "        \
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

#define WEBPOLICY_HEADER_LINES                                                                     \
    "Content-Security-Policy: " WEBPOLICY_CSP_PAGE "\r\n"                                          \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "Cache-Control: no-store\r\n"

#endif
