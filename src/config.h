/*
 * config: the proxy's settings, their defaults and validation, option parsing
 * and the data directory. main.c fills a struct config once at startup; after
 * that it is read-only and shared by every thread.
 */
#ifndef TAPWIRE_CONFIG_H
#define TAPWIRE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reverse.h"

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:8080"
#define CONFIG_DEFAULT_MAX_CONNECTIONS 1024
#define CONFIG_DEFAULT_IDLE_TIMEOUT_MS 60000     /* keep-alive client with nothing to say */
#define CONFIG_DEFAULT_HEADER_TIMEOUT_MS 10000   /* whole request head must arrive in this */
#define CONFIG_DEFAULT_IO_TIMEOUT_MS 60000       /* no progress on a body or response */
#define CONFIG_DEFAULT_SHUTDOWN_GRACE_MS 5000    /* in-flight exchanges on SIGTERM */
#define CONFIG_DEFAULT_UPSTREAM_TIMEOUT_MS 10000 /* connect + TLS handshake upstream */
#define CONFIG_MAX_LIST 64                       /* repeatable options */
#define CONFIG_MAX_SOCKS5 8                      /* --socks5 listeners */
#define CONFIG_MAX_TRANSPARENT 4                 /* --transparent listeners */
#define CONFIG_MAX_REVERSE 8                     /* --reverse listeners */
#define CONFIG_DEFAULT_DASHBOARD "127.0.0.1:8081"
#define CONFIG_DEFAULT_CAPTURE_LIMIT_BYTES (1024 * 1024)
#define CONFIG_DEFAULT_MAX_FLOWS 100000
#define CONFIG_DEFAULT_REWRITE_LIMIT_BYTES (16 * 1024 * 1024)
/* All bodies that rules buffer at once, process-wide: 100 concurrent 16 MiB
 * uploads must not take 1.5 GB. */
#define CONFIG_DEFAULT_REWRITE_MEMORY_BYTES (256 * 1024 * 1024)
#define CONFIG_DEFAULT_INTERCEPT_TIMEOUT_S 300

/* --block-private / --allow-private; unset, main.c decides from where the
 * proxy listens (on when not on loopback). */
enum private_setting { CONFIG_PRIVATE_DEFAULT = 0, CONFIG_PRIVATE_BLOCK, CONFIG_PRIVATE_ALLOW };

enum log_level_setting { CONFIG_LOG_QUIET = 0, CONFIG_LOG_NORMAL = 1, CONFIG_LOG_VERBOSE = 2 };

/* An address to listen on, as given ("::" for [::]:1080). */
struct config_address {
    char host[256];
    uint16_t port;
};

struct config {
    char listen_host[256];
    uint16_t listen_port;
    char *data_dir;                               /* owned */
    const char *upstream_ca[CONFIG_MAX_LIST + 1]; /* NULL-terminated; argv strings */
    size_t upstream_ca_count;
    const char *ignore_hosts[CONFIG_MAX_LIST + 1]; /* globs, NULL-terminated */
    size_t ignore_host_count;
    bool insecure;
    int private_destinations; /* enum private_setting */
    const char *log_file;     /* NULL: stderr */
    int log_level;            /* enum log_level_setting; -v may raise it further */
    int max_connections;
    int idle_timeout_ms;
    int header_timeout_ms;
    int io_timeout_ms;
    int shutdown_grace_ms;
    int upstream_timeout_ms;
    const char *keylog_file; /* from SSLKEYLOGFILE, may be NULL */

    /* flow capture and the dashboard */
    char *db_path;          /* owned: --db, default <data_dir>/tapwire.db */
    size_t capture_limit;   /* --capture-limit bytes per body */
    int64_t max_flows;      /* --max-flows */
    int64_t max_db_bytes;   /* --max-db-size, 0 for no limit */
    int64_t retain_us;      /* --retain, 0 for no limit */
    bool capture_enabled;   /* false with --no-capture */
    bool no_http2;          /* --no-http2: ALPN offers and selects http/1.1 only */
    bool dashboard_enabled; /* false with --no-dashboard */
    char dashboard_host[256];
    uint16_t dashboard_port;
    const char *web_root;        /* --web-root DIR or NULL: serve the built-in page */
    const char *dashboard_token; /* --dashboard-token or NULL: the kept one (dashtoken) */
    bool is_new_dashboard_token; /* --new-dashboard-token: rotate the kept one */

    /* rewrite rules */
    const char *rules_file;                      /* --rules FILE or NULL */
    const char *rule_specs[CONFIG_MAX_LIST + 1]; /* --rule, NULL-terminated */
    size_t rule_spec_count;
    size_t rewrite_limit;  /* --rewrite-limit bytes */
    size_t rewrite_memory; /* --rewrite-memory bytes, all exchanges */
    bool is_anticache;     /* --anticache: built-in rules first */

    /* intercept */
    const char *intercept;   /* --intercept EXPR or NULL: the filter at startup */
    int intercept_timeout_s; /* --intercept-timeout: then a held flow goes on unchanged */

    /* who may use the proxy */
    const char *proxy_auth;      /* --proxy-auth USER:PASS or NULL */
    const char *proxy_auth_file; /* --proxy-auth-file FILE or NULL */

    /* more ways in */
    struct config_address socks5[CONFIG_MAX_SOCKS5]; /* --socks5; port 0: ephemeral */
    size_t socks5_count;
    struct config_address transparent[CONFIG_MAX_TRANSPARENT]; /* --transparent */
    size_t transparent_count;
    struct reverse_target reverse[CONFIG_MAX_REVERSE]; /* --reverse */
    size_t reverse_count;
    bool is_reverse_forwarded; /* --reverse-forwarded: X-Forwarded-* to the origin */

    /* going out */
    const char *upstream_proxy;                             /* --upstream-proxy URL or NULL */
    const char *upstream_proxy_ignore[CONFIG_MAX_LIST + 1]; /* globs, NULL-terminated */
    size_t upstream_proxy_ignore_count;
    const char *client_certs[CONFIG_MAX_LIST + 1]; /* --client-cert [GLOB=]FILE, NULL-terminated */
    size_t client_cert_count;
};

enum config_parse_result {
    CONFIG_OK = 0,
    CONFIG_EXIT_SUCCESS = 1, /* --help or --version printed */
    CONFIG_ERROR = -1,       /* message printed to stderr */
};

/* Fills cfg with defaults, then applies argv (getopt_long). The strings in
 * cfg point into argv except data_dir, which is owned (config_free()). */
enum config_parse_result config_parse(struct config *cfg, int argc, char **argv);
void config_free(struct config *cfg);

/* Splits "HOST:PORT" or "[V6]:PORT". Returns 0 or -1. */
int config_parse_hostport(const char *spec, char *host, size_t host_len, uint16_t *port);

#define CONFIG_MIN_DB_BYTES (1024 * 1024) /* --max-db-size below this is refused */

/* A size as "512M": a whole number with an optional K, M, G or T (powers
 * of 1024, optionally followed by "B" or "iB"). Returns 0 with *bytes, or
 * -1 when malformed or above 2^62. */
int config_parse_size(const char *text, int64_t *bytes);

/* A duration as "30d": a whole number with an optional s, m, h, d or w
 * (seconds without). Returns 0 with *us (microseconds), or -1 when
 * malformed, zero, or above a hundred years. */
int config_parse_duration(const char *text, int64_t *us);

/* True when host matches one of the --ignore-host globs (case-insensitive). */
bool config_is_ignored_host(const struct config *cfg, const char *host);

/* Creates data_dir (and parents) with mode 0700 when missing and checks it is
 * a directory. Returns 0 or -1 with err. */
int config_prepare_data_dir(const char *data_dir, char *err, size_t err_len);

#endif
