/*
 * dashboard: the web dashboard's HTTP server (libmicrohttpd): token auth,
 * the JSON API over the flow store (docs: the API spec shared with web/),
 * the dashboard's rewrite rules (through the rulebook), live updates as
 * Server-Sent Events, HAR export, the read-only SQL console (sqlconsole), the page itself (compiled
 * in, or read from
 * --web-root) and the CA download page.
 *
 * It must never serve captured bytes as anything a browser would render or
 * run: bodies go out as attachments under a sandboxing CSP. Every API call
 * needs the token; the Host header must name the dashboard itself (DNS
 * rebinding) and state-changing requests must come from its own origin with
 * the token in a header (CSRF).
 * Thread safety: start and stop from one thread; the rest of the module
 * runs on libmicrohttpd's threads.
 */
#ifndef TAPWIRE_DASHBOARD_H
#define TAPWIRE_DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ca.h"
#include "flowstore.h"

#define DASHBOARD_TOKEN_RANDOM_BYTES 16 /* printed as 32 hex characters */
#define DASHBOARD_MAX_TOKEN_CHARS 128
#define DASHBOARD_MAX_CONNECTIONS 64
/* Half the slots at most for one address: one remote client cannot take all. */
#define DASHBOARD_MAX_CONNECTIONS_PER_CLIENT 32
#define DASHBOARD_CONNECTION_TIMEOUT_S 30 /* idle connection; SSE sends every 5 s */
/* A request (head and any body) must arrive whole within this time of the
 * connection or of the previous response: the idle timeout above restarts
 * with every byte, so a client trickling one byte at a time held a slot
 * for ever, and DASHBOARD_MAX_CONNECTIONS of them locked the page out. */
#define DASHBOARD_REQUEST_TIMEOUT_MS 10000
#define DASHBOARD_WATCHDOG_PERIOD_MS 250 /* how often overdue requests are cut */
#define DASHBOARD_LIST_DEFAULT_FLOWS 100
#define DASHBOARD_LIST_MAX_FLOWS 500
#define DASHBOARD_SSE_HEARTBEAT_MS 5000       /* "event: stats" */
#define DASHBOARD_SSE_MAX_MS (10 * 60 * 1000) /* then EventSource reconnects */
#define DASHBOARD_SSE_FLOWS_PER_READ 100
#define DASHBOARD_MAX_DECODED_BYTES (64 * 1024 * 1024) /* ?decode=1 output, zip bombs */
/* GET /api/flows/ID/grpc: messages listed per body, and bytes shown of each. */
#define DASHBOARD_MAX_GRPC_MESSAGES 1000
#define DASHBOARD_MAX_GRPC_BYTES 4096
#define DASHBOARD_MAX_STATIC_BYTES (8 * 1024 * 1024) /* a --web-root file */
#define DASHBOARD_MAX_JSON_BODY_BYTES (64 * 1024)    /* a request body (rules API) */
/* A HAR file to import (POST /api/har); jansson holds a few times this
 * while it is read, and one import runs at a time. */
#define DASHBOARD_MAX_HAR_BYTES (32 * 1024 * 1024)

struct rulebook;
struct certstore;
struct intercept;
struct replay;

struct dashboard_options {
    const char *host;            /* address to bind: "127.0.0.1", "::1", "localhost"... */
    uint16_t port;               /* 0: an ephemeral port, see dashboard_port() */
    const char *token;           /* NULL: DASHBOARD_TOKEN_RANDOM_BYTES from RAND_bytes() as hex;
                                    else 1..DASHBOARD_MAX_TOKEN_CHARS of [A-Za-z0-9._~-] */
    const char *web_root;        /* NULL: the page compiled into the binary; else a directory with
                                    index.html, app.js and style.css, read on every request */
    struct rulebook *rules;      /* not owned, must outlive the dashboard; NULL: rewrite rules are
                                    off (/api/rules lists nothing and refuses changes with 404) */
    struct certstore *certs;     /* not owned, must outlive the dashboard; NULL: /api/stats
                                    leaves out "certificates" */
    const char *db_path;         /* the database file, for the read-only SQL console (/api/sql);
                                    NULL or ":memory:": /api/sql answers 404 */
    struct intercept *intercept; /* not owned, outlives the dashboard; NULL: the intercept
                                    endpoints (dashinteract.h) answer 404 */
    struct replay *replay;       /* likewise, for replay and compose */
    size_t capture_limit;        /* body bytes an imported flow keeps (POST /api/har), as
                                    --capture-limit */
};

struct dashboard;

/*
 * Starts serving flows (not owned; must outlive the dashboard) and the CA's
 * certificate (not owned, likewise). Sets the flow store's written-callback
 * for live updates: nothing else may use that callback while a dashboard
 * runs. Returns 0 and *out (stop with dashboard_stop()) or -1 with err.
 */
int dashboard_start(const struct dashboard_options *opts, struct flowstore *flows,
                    const struct ca *ca, struct dashboard **out, char *err, size_t err_len);
/* Clears the written-callback, ends live streams and exports in progress,
 * waits for libmicrohttpd's threads and frees. NULL is fine. */
void dashboard_stop(struct dashboard *dashboard);

/* The port bound (the real one when 0 was asked for). */
uint16_t dashboard_port(const struct dashboard *dashboard);
/* The address the dashboard listens on, as bound (port included), into
 * *out. Returns 0 or -1. */
int dashboard_address(const struct dashboard *dashboard, struct sockaddr_storage *out);
/* The access token; valid while the dashboard runs. */
const char *dashboard_token(const struct dashboard *dashboard);
/* "http://HOST:PORT/?token=TOKEN" (IPv6 in brackets), what the startup line
 * prints after "dashboard: ". Returns its length, or -1 if out_len is too
 * small. */
int dashboard_url(const struct dashboard *dashboard, char *out, size_t out_len);

#endif
