/*
 * config: defaults, option parsing and validation, the data directory.
 * Nothing here touches the network; main.c acts on the result.
 */
#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

enum {
    OPT_LISTEN = 256,
    OPT_DATA_DIR,
    OPT_UPSTREAM_CA,
    OPT_INSECURE,
    OPT_IGNORE_HOST,
    OPT_LOG_FILE,
    OPT_MAX_CONNECTIONS,
    OPT_IDLE_TIMEOUT,
    OPT_HEADER_TIMEOUT,
    OPT_UPSTREAM_TIMEOUT,
    OPT_IO_TIMEOUT,
    OPT_VERSION,
    OPT_DB,
    OPT_CAPTURE_LIMIT,
    OPT_MAX_FLOWS,
    OPT_MAX_DB_SIZE,
    OPT_RETAIN,
    OPT_DASHBOARD,
    OPT_NO_DASHBOARD,
    OPT_WEB_ROOT,
    OPT_DASHBOARD_TOKEN,
    OPT_NEW_DASHBOARD_TOKEN,
    OPT_NO_CAPTURE,
    OPT_NO_HTTP2,
    OPT_RULES,
    OPT_RULE,
    OPT_REWRITE_LIMIT,
    OPT_BLOCK_PRIVATE,
    OPT_ALLOW_PRIVATE,
    OPT_REWRITE_MEMORY,
    OPT_ANTICACHE,
    OPT_INTERCEPT,
    OPT_INTERCEPT_TIMEOUT,
    OPT_PROXY_AUTH,
    OPT_PROXY_AUTH_FILE,
    OPT_SOCKS5,
    OPT_UPSTREAM_PROXY,
    OPT_UPSTREAM_PROXY_IGNORE,
    OPT_CLIENT_CERT,
    OPT_TRANSPARENT,
    OPT_REVERSE,
    OPT_REVERSE_FORWARDED,
};

static const struct option long_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"upstream-ca", required_argument, NULL, OPT_UPSTREAM_CA},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"ignore-host", required_argument, NULL, OPT_IGNORE_HOST},
    {"block-private", no_argument, NULL, OPT_BLOCK_PRIVATE},
    {"allow-private", no_argument, NULL, OPT_ALLOW_PRIVATE},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
    {"upstream-timeout", required_argument, NULL, OPT_UPSTREAM_TIMEOUT},
    {"io-timeout", required_argument, NULL, OPT_IO_TIMEOUT},
    {"db", required_argument, NULL, OPT_DB},
    {"capture-limit", required_argument, NULL, OPT_CAPTURE_LIMIT},
    {"max-flows", required_argument, NULL, OPT_MAX_FLOWS},
    {"max-db-size", required_argument, NULL, OPT_MAX_DB_SIZE},
    {"retain", required_argument, NULL, OPT_RETAIN},
    {"dashboard", required_argument, NULL, OPT_DASHBOARD},
    {"no-dashboard", no_argument, NULL, OPT_NO_DASHBOARD},
    {"web-root", required_argument, NULL, OPT_WEB_ROOT},
    {"dashboard-token", required_argument, NULL, OPT_DASHBOARD_TOKEN},
    {"new-dashboard-token", no_argument, NULL, OPT_NEW_DASHBOARD_TOKEN},
    {"no-capture", no_argument, NULL, OPT_NO_CAPTURE},
    {"no-http2", no_argument, NULL, OPT_NO_HTTP2},
    {"rules", required_argument, NULL, OPT_RULES},
    {"rule", required_argument, NULL, OPT_RULE},
    {"rewrite-limit", required_argument, NULL, OPT_REWRITE_LIMIT},
    {"rewrite-memory", required_argument, NULL, OPT_REWRITE_MEMORY},
    {"anticache", no_argument, NULL, OPT_ANTICACHE},
    {"intercept", required_argument, NULL, OPT_INTERCEPT},
    {"intercept-timeout", required_argument, NULL, OPT_INTERCEPT_TIMEOUT},
    {"proxy-auth", required_argument, NULL, OPT_PROXY_AUTH},
    {"proxy-auth-file", required_argument, NULL, OPT_PROXY_AUTH_FILE},
    {"socks5", required_argument, NULL, OPT_SOCKS5},
    {"upstream-proxy", required_argument, NULL, OPT_UPSTREAM_PROXY},
    {"upstream-proxy-ignore", required_argument, NULL, OPT_UPSTREAM_PROXY_IGNORE},
    {"client-cert", required_argument, NULL, OPT_CLIENT_CERT},
    {"transparent", required_argument, NULL, OPT_TRANSPARENT},
    {"reverse", required_argument, NULL, OPT_REVERSE},
    {"reverse-forwarded", no_argument, NULL, OPT_REVERSE_FORWARDED},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: tapwire [OPTION]...\n"
            "Intercepting HTTP/HTTPS proxy: point a client at it, trust its CA, see and\n"
            "rewrite every exchange.\n\n"
            "  --listen ADDR:PORT       proxy address (default %s)\n"
            "  --data-dir DIR           CA, keys and database (default\n"
            "                           $XDG_DATA_HOME/tapwire or ~/.local/share/tapwire)\n"
            "  --upstream-ca FILE       extra trust anchor for upstream servers (repeatable)\n"
            "  --upstream-proxy URL     reach origins through the HTTP proxy at\n"
            "                           http://[USER:PASS@]HOST:PORT\n"
            "  --upstream-proxy-ignore GLOB  reach matching hosts directly (repeatable)\n"
            "  --client-cert [GLOB=]FILE  present this PEM certificate and key to\n"
            "                           origins matching GLOB that ask (repeatable)\n"
            "  --insecure               do not verify upstream certificates (dangerous)\n"
            "  --ignore-host GLOB       relay CONNECT tunnels to matching hosts untouched\n"
            "                           (repeatable)\n"
            "  --socks5 ADDR:PORT       also a SOCKS5 proxy there (repeatable)\n"
            "  --transparent ADDR:PORT  also take connections the firewall redirects\n"
            "                           there (REDIRECT; repeatable)\n"
            "  --reverse [https://]ADDR:PORT=URL  also a reverse proxy there for the\n"
            "                           origin at URL (http:// or https://; repeatable)\n"
            "  --reverse-forwarded      reverse proxies add X-Forwarded-For/-Proto/-Host\n"
            "  --proxy-auth USER:PASS   clients must send these credentials (Basic\n"
            "                           Proxy-Authorization; SOCKS5 username/password)\n"
            "  --proxy-auth-file FILE   the same, one USER:PASS per line (mode 600)\n"
            "  --block-private          refuse loopback and private destinations (default\n"
            "                           when --listen is not a loopback address)\n"
            "  --allow-private          allow them even then\n"
            "  --log-file FILE          append log lines to FILE instead of stderr\n"
            "  --max-connections N      concurrent client connections (default %d)\n"
            "  --idle-timeout MS        idle keep-alive client timeout (default %d)\n"
            "  --header-timeout MS      time allowed to send a request head (default %d)\n"
            "  --upstream-timeout MS    connect + TLS handshake upstream (default %d)\n"
            "  --io-timeout MS          no progress on a body or response (default %d)\n"
            "  --db FILE                flow database (default DATA-DIR/tapwire.db)\n"
            "  --capture-limit BYTES    body bytes kept per flow (default %d)\n"
            "  --max-flows N            flows kept, oldest pruned (default %d)\n"
            "  --max-db-size SIZE       prune the oldest flows beyond SIZE (e.g. 2G)\n"
            "  --retain DURATION        prune flows older than DURATION (e.g. 7d, 12h)\n"
            "  --no-capture             record no flows (the dashboard shows stored ones)\n"
            "  --no-http2               speak only HTTP/1.1 to clients and origins\n"
            "  --dashboard ADDR:PORT    dashboard address (default %s)\n"
            "  --no-dashboard           no dashboard\n"
            "  --web-root DIR           serve the dashboard page from DIR (development)\n"
            "  --dashboard-token TOKEN  dashboard access token (default: random, kept in\n"
            "                           DATA-DIR/dashboard-token across restarts)\n"
            "  --new-dashboard-token    replace the kept token with a new random one\n"
            "  --rules FILE             rewrite rules, one per line (reloaded on SIGHUP;\n"
            "                           see tapwire-rules(5))\n"
            "  --rule SPEC              one rewrite rule (repeatable)\n"
            "  --rewrite-limit BYTES    largest body a body rule buffers (default %d)\n"
            "  --rewrite-memory BYTES   all bodies body rules buffer at once (default %d)\n"
            "  --anticache              keep browsers from using their cache: strip\n"
            "                           conditional request fields and caching response\n"
            "                           fields, so a rule's change shows on the next load\n"
            "  --intercept EXPR         hold requests and responses that match the filter\n"
            "                           (tapwire-filters(7)) until the dashboard resumes them\n"
            "  --intercept-timeout S    then a held flow goes on unchanged (default %d)\n"
            "  -v, --verbose            more log output (repeat for debug)\n"
            "  -q, --quiet              warnings and errors only\n"
            "  -h, --help               this text\n"
            "      --version            version\n\n"
            "Environment: SSLKEYLOGFILE appends TLS session keys of both sides to a file.\n"
            "See tapwire(1).\n",
            CONFIG_DEFAULT_LISTEN, CONFIG_DEFAULT_MAX_CONNECTIONS, CONFIG_DEFAULT_IDLE_TIMEOUT_MS,
            CONFIG_DEFAULT_HEADER_TIMEOUT_MS, CONFIG_DEFAULT_UPSTREAM_TIMEOUT_MS,
            CONFIG_DEFAULT_IO_TIMEOUT_MS, CONFIG_DEFAULT_CAPTURE_LIMIT_BYTES,
            CONFIG_DEFAULT_MAX_FLOWS, CONFIG_DEFAULT_DASHBOARD, CONFIG_DEFAULT_REWRITE_LIMIT_BYTES,
            CONFIG_DEFAULT_REWRITE_MEMORY_BYTES, CONFIG_DEFAULT_INTERCEPT_TIMEOUT_S);
}

int config_parse_hostport(const char *spec, char *host, size_t host_len, uint16_t *port)
{
    const char *colon;
    const char *h = spec;
    size_t hlen;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':')
            return -1;
        h = spec + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - spec);
        if (memchr(spec, ':', hlen))
            return -1; /* a bare IPv6 address needs brackets */
    }
    if (hlen == 0 || hlen >= host_len)
        return -1;
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5)
        return -1;
    unsigned long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)v;
    return 0;
}

/* A whole number followed by a unit, *value and *unit (the rest). */
static int parse_number_unit(const char *text, int64_t *value, const char **unit)
{
    int64_t v = 0;
    const char *p = text;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    *value = v;
    *unit = p;
    return 0;
}

int config_parse_size(const char *text, int64_t *bytes)
{
    static const char units[] = "KMGT";
    const char *unit, *at;
    int64_t value, scale = 1;

    if (parse_number_unit(text, &value, &unit) != 0)
        return -1;
    if (*unit != '\0') {
        at = strchr(units, unit[0] >= 'a' ? unit[0] - ('a' - 'A') : unit[0]);
        if (at == NULL || *at == '\0')
            return -1;
        scale = (int64_t)1 << (10 * (at - units + 1));
        unit++;
        if (strcmp(unit, "") != 0 && strcmp(unit, "B") != 0 && strcmp(unit, "iB") != 0)
            return -1;
    }
    if (value > ((int64_t)1 << 62) / scale)
        return -1;
    *bytes = value * scale;
    return 0;
}

int config_parse_duration(const char *text, int64_t *us)
{
    const int64_t max_s = (int64_t)100 * 366 * 86400;
    const char *unit;
    int64_t value, scale;

    if (parse_number_unit(text, &value, &unit) != 0 || value == 0)
        return -1;
    if (strcmp(unit, "") == 0 || strcmp(unit, "s") == 0)
        scale = 1;
    else if (strcmp(unit, "m") == 0)
        scale = 60;
    else if (strcmp(unit, "h") == 0)
        scale = 3600;
    else if (strcmp(unit, "d") == 0)
        scale = 86400;
    else if (strcmp(unit, "w") == 0)
        scale = 7 * 86400;
    else
        return -1;
    if (value > max_s / scale)
        return -1;
    *us = value * scale * 1000000;
    return 0;
}

/* --reverse [http://|https://]ADDR:PORT=URL: the listener, TLS when it is
 * written https://, and the origin URL (reverse.c). */
static int parse_reverse(const char *arg, struct reverse_target *rt)
{
    const char *listen = arg;
    const char *eq = strchr(arg, '=');
    char spec[300];
    char err[256];

    memset(rt, 0, sizeof(*rt));
    if (strncasecmp(listen, "https://", 8) == 0) {
        rt->is_tls_listener = true;
        listen += 8;
    } else if (strncasecmp(listen, "http://", 7) == 0) {
        listen += 7;
    }
    if (eq == NULL || eq < listen || (size_t)(eq - listen) >= sizeof(spec)) {
        fprintf(stderr, "tapwire: --reverse wants [https://]ADDR:PORT=URL, not '%s'\n", arg);
        return -1;
    }
    memcpy(spec, listen, (size_t)(eq - listen));
    spec[eq - listen] = '\0';
    if (config_parse_hostport(spec, rt->listen_host, sizeof(rt->listen_host), &rt->listen_port) <
        0) {
        fprintf(stderr, "tapwire: --reverse: '%s' is not ADDR:PORT (or [V6]:PORT)\n", spec);
        return -1;
    }
    if (reverse_parse_url(eq + 1, rt, err, sizeof(err)) < 0) {
        fprintf(stderr, "tapwire: --reverse: %s\n", err);
        return -1;
    }
    return 0;
}

static int parse_positive(const char *opt, const char *arg, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || *end || end == arg || v < min || v > max) {
        fprintf(stderr, "tapwire: %s wants a whole number from %d to %d, not '%s'\n", opt, min, max,
                arg);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static char *default_data_dir(void)
{
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    char buf[PATH_MAX];
    if (xdg && xdg[0] == '/') {
        snprintf(buf, sizeof(buf), "%s/tapwire", xdg);
        return strdup(buf);
    }
    if (!home || !home[0]) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home)
        return NULL;
    snprintf(buf, sizeof(buf), "%s/.local/share/tapwire", home);
    return strdup(buf);
}

enum config_parse_result config_parse(struct config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    config_parse_hostport(CONFIG_DEFAULT_LISTEN, cfg->listen_host, sizeof(cfg->listen_host),
                          &cfg->listen_port);
    cfg->log_level = CONFIG_LOG_NORMAL;
    cfg->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
    cfg->idle_timeout_ms = CONFIG_DEFAULT_IDLE_TIMEOUT_MS;
    cfg->header_timeout_ms = CONFIG_DEFAULT_HEADER_TIMEOUT_MS;
    cfg->io_timeout_ms = CONFIG_DEFAULT_IO_TIMEOUT_MS;
    cfg->shutdown_grace_ms = CONFIG_DEFAULT_SHUTDOWN_GRACE_MS;
    cfg->upstream_timeout_ms = CONFIG_DEFAULT_UPSTREAM_TIMEOUT_MS;
    cfg->capture_limit = CONFIG_DEFAULT_CAPTURE_LIMIT_BYTES;
    cfg->max_flows = CONFIG_DEFAULT_MAX_FLOWS;
    cfg->dashboard_enabled = true;
    cfg->capture_enabled = true;
    cfg->rewrite_limit = CONFIG_DEFAULT_REWRITE_LIMIT_BYTES;
    cfg->rewrite_memory = CONFIG_DEFAULT_REWRITE_MEMORY_BYTES;
    cfg->intercept_timeout_s = CONFIG_DEFAULT_INTERCEPT_TIMEOUT_S;
    config_parse_hostport(CONFIG_DEFAULT_DASHBOARD, cfg->dashboard_host,
                          sizeof(cfg->dashboard_host), &cfg->dashboard_port);
    const char *keylog = getenv("SSLKEYLOGFILE");
    cfg->keylog_file = keylog && keylog[0] ? keylog : NULL;

    const char *data_dir = NULL;
    const char *db = NULL;
    int number;
    int c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "vqh", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            if (config_parse_hostport(optarg, cfg->listen_host, sizeof(cfg->listen_host),
                                      &cfg->listen_port) < 0) {
                fprintf(stderr, "tapwire: --listen wants ADDR:PORT (or [V6]:PORT), not '%s'\n",
                        optarg);
                return CONFIG_ERROR;
            }
            break;
        case OPT_DATA_DIR:
            if (!optarg[0]) {
                fprintf(stderr, "tapwire: --data-dir wants a directory\n");
                return CONFIG_ERROR;
            }
            data_dir = optarg;
            break;
        case OPT_UPSTREAM_CA:
            if (cfg->upstream_ca_count == CONFIG_MAX_LIST) {
                fprintf(stderr, "tapwire: at most %d --upstream-ca\n", CONFIG_MAX_LIST);
                return CONFIG_ERROR;
            }
            cfg->upstream_ca[cfg->upstream_ca_count++] = optarg;
            break;
        case OPT_INSECURE:
            cfg->insecure = true;
            break;
        case OPT_ANTICACHE:
            cfg->is_anticache = true;
            break;
        case OPT_BLOCK_PRIVATE:
        case OPT_ALLOW_PRIVATE: {
            int want = c == OPT_BLOCK_PRIVATE ? CONFIG_PRIVATE_BLOCK : CONFIG_PRIVATE_ALLOW;
            if (cfg->private_destinations != CONFIG_PRIVATE_DEFAULT &&
                cfg->private_destinations != want) {
                fprintf(stderr, "tapwire: --block-private or --allow-private, not both\n");
                return CONFIG_ERROR;
            }
            cfg->private_destinations = want;
            break;
        }
        case OPT_IGNORE_HOST:
            if (cfg->ignore_host_count == CONFIG_MAX_LIST) {
                fprintf(stderr, "tapwire: at most %d --ignore-host\n", CONFIG_MAX_LIST);
                return CONFIG_ERROR;
            }
            cfg->ignore_hosts[cfg->ignore_host_count++] = optarg;
            break;
        case OPT_LOG_FILE:
            cfg->log_file = optarg;
            break;
        case OPT_MAX_CONNECTIONS:
            if (parse_positive("--max-connections", optarg, 1, 1000000, &cfg->max_connections))
                return CONFIG_ERROR;
            break;
        case OPT_IDLE_TIMEOUT:
            if (parse_positive("--idle-timeout", optarg, 1, 86400000, &cfg->idle_timeout_ms))
                return CONFIG_ERROR;
            break;
        case OPT_HEADER_TIMEOUT:
            if (parse_positive("--header-timeout", optarg, 1, 3600000, &cfg->header_timeout_ms))
                return CONFIG_ERROR;
            break;
        case OPT_UPSTREAM_TIMEOUT:
            if (parse_positive("--upstream-timeout", optarg, 1, 3600000, &cfg->upstream_timeout_ms))
                return CONFIG_ERROR;
            break;
        case OPT_IO_TIMEOUT:
            if (parse_positive("--io-timeout", optarg, 1, 86400000, &cfg->io_timeout_ms))
                return CONFIG_ERROR;
            break;
        case OPT_DB:
            if (!optarg[0]) {
                fprintf(stderr, "tapwire: --db wants a file name\n");
                return CONFIG_ERROR;
            }
            db = optarg;
            break;
        case OPT_CAPTURE_LIMIT:
            if (parse_positive("--capture-limit", optarg, 0, 1 << 30, &number))
                return CONFIG_ERROR;
            cfg->capture_limit = (size_t)number;
            break;
        case OPT_MAX_FLOWS:
            if (parse_positive("--max-flows", optarg, 1, 100000000, &number))
                return CONFIG_ERROR;
            cfg->max_flows = number;
            break;
        case OPT_MAX_DB_SIZE:
            if (config_parse_size(optarg, &cfg->max_db_bytes) != 0 ||
                cfg->max_db_bytes < CONFIG_MIN_DB_BYTES) {
                fprintf(stderr,
                        "tapwire: --max-db-size wants a size of at least 1M, such as 2G, "
                        "not '%s'\n",
                        optarg);
                return CONFIG_ERROR;
            }
            break;
        case OPT_RETAIN:
            if (config_parse_duration(optarg, &cfg->retain_us) != 0) {
                fprintf(stderr,
                        "tapwire: --retain wants a duration such as 7d, 12h, 30m or 90s, "
                        "not '%s'\n",
                        optarg);
                return CONFIG_ERROR;
            }
            break;
        case OPT_DASHBOARD:
            if (config_parse_hostport(optarg, cfg->dashboard_host, sizeof(cfg->dashboard_host),
                                      &cfg->dashboard_port) < 0) {
                fprintf(stderr, "tapwire: --dashboard wants ADDR:PORT, not '%s'\n", optarg);
                return CONFIG_ERROR;
            }
            cfg->dashboard_enabled = true;
            break;
        case OPT_RULES:
            cfg->rules_file = optarg;
            break;
        case OPT_RULE:
            if (cfg->rule_spec_count == CONFIG_MAX_LIST) {
                fprintf(stderr, "tapwire: at most %d --rule; use --rules FILE\n", CONFIG_MAX_LIST);
                return CONFIG_ERROR;
            }
            cfg->rule_specs[cfg->rule_spec_count++] = optarg;
            break;
        case OPT_REWRITE_LIMIT:
            if (parse_positive("--rewrite-limit", optarg, 1, 1 << 30, &number))
                return CONFIG_ERROR;
            cfg->rewrite_limit = (size_t)number;
            break;
        case OPT_PROXY_AUTH:
            cfg->proxy_auth = optarg;
            break;
        case OPT_PROXY_AUTH_FILE:
            cfg->proxy_auth_file = optarg;
            break;
        case OPT_UPSTREAM_PROXY:
            cfg->upstream_proxy = optarg;
            break;
        case OPT_UPSTREAM_PROXY_IGNORE:
            if (cfg->upstream_proxy_ignore_count == CONFIG_MAX_LIST) {
                fprintf(stderr, "tapwire: at most %d --upstream-proxy-ignore\n", CONFIG_MAX_LIST);
                return CONFIG_ERROR;
            }
            cfg->upstream_proxy_ignore[cfg->upstream_proxy_ignore_count++] = optarg;
            break;
        case OPT_CLIENT_CERT:
            if (cfg->client_cert_count == CONFIG_MAX_LIST) {
                fprintf(stderr, "tapwire: at most %d --client-cert\n", CONFIG_MAX_LIST);
                return CONFIG_ERROR;
            }
            cfg->client_certs[cfg->client_cert_count++] = optarg;
            break;
        case OPT_SOCKS5: {
            struct config_address *a = &cfg->socks5[cfg->socks5_count];
            if (cfg->socks5_count == CONFIG_MAX_SOCKS5) {
                fprintf(stderr, "tapwire: at most %d --socks5\n", CONFIG_MAX_SOCKS5);
                return CONFIG_ERROR;
            }
            if (config_parse_hostport(optarg, a->host, sizeof(a->host), &a->port) < 0) {
                fprintf(stderr, "tapwire: --socks5 wants ADDR:PORT (or [V6]:PORT), not '%s'\n",
                        optarg);
                return CONFIG_ERROR;
            }
            cfg->socks5_count++;
            break;
        }
        case OPT_TRANSPARENT: {
            struct config_address *a = &cfg->transparent[cfg->transparent_count];
            if (cfg->transparent_count == CONFIG_MAX_TRANSPARENT) {
                fprintf(stderr, "tapwire: at most %d --transparent\n", CONFIG_MAX_TRANSPARENT);
                return CONFIG_ERROR;
            }
            if (config_parse_hostport(optarg, a->host, sizeof(a->host), &a->port) < 0) {
                fprintf(stderr, "tapwire: --transparent wants ADDR:PORT (or [V6]:PORT), not '%s'\n",
                        optarg);
                return CONFIG_ERROR;
            }
            cfg->transparent_count++;
            break;
        }
        case OPT_REVERSE:
            if (cfg->reverse_count == CONFIG_MAX_REVERSE) {
                fprintf(stderr, "tapwire: at most %d --reverse\n", CONFIG_MAX_REVERSE);
                return CONFIG_ERROR;
            }
            if (parse_reverse(optarg, &cfg->reverse[cfg->reverse_count]) < 0)
                return CONFIG_ERROR;
            cfg->reverse_count++;
            break;
        case OPT_REVERSE_FORWARDED:
            cfg->is_reverse_forwarded = true;
            break;
        case OPT_NEW_DASHBOARD_TOKEN:
            cfg->is_new_dashboard_token = true;
            break;
        case OPT_REWRITE_MEMORY:
            if (parse_positive("--rewrite-memory", optarg, 1, INT_MAX, &number))
                return CONFIG_ERROR;
            cfg->rewrite_memory = (size_t)number;
            break;
        case OPT_NO_CAPTURE:
            cfg->capture_enabled = false;
            break;
        case OPT_INTERCEPT:
            cfg->intercept = optarg;
            break;
        case OPT_INTERCEPT_TIMEOUT:
            if (parse_positive("--intercept-timeout", optarg, 1, 86400, &cfg->intercept_timeout_s))
                return CONFIG_ERROR;
            break;
        case OPT_NO_HTTP2:
            cfg->no_http2 = true;
            break;
        case OPT_NO_DASHBOARD:
            cfg->dashboard_enabled = false;
            break;
        case OPT_WEB_ROOT:
            cfg->web_root = optarg;
            break;
        case OPT_DASHBOARD_TOKEN:
            if (strlen(optarg) < 16) {
                fprintf(stderr, "tapwire: --dashboard-token wants at least 16 characters\n");
                return CONFIG_ERROR;
            }
            cfg->dashboard_token = optarg;
            break;
        case 'v':
            cfg->log_level++;
            break;
        case 'q':
            cfg->log_level = CONFIG_LOG_QUIET;
            break;
        case 'h':
            print_usage(stdout);
            return CONFIG_EXIT_SUCCESS;
        case OPT_VERSION:
            printf("tapwire %s\n", TAPWIRE_VERSION);
            return CONFIG_EXIT_SUCCESS;
        default:
            fprintf(stderr, "Try 'tapwire --help'.\n");
            return CONFIG_ERROR;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tapwire: unexpected argument '%s'; try 'tapwire --help'\n", argv[optind]);
        return CONFIG_ERROR;
    }
    if (cfg->proxy_auth != NULL && cfg->proxy_auth_file != NULL) {
        fprintf(stderr, "tapwire: --proxy-auth or --proxy-auth-file, not both\n");
        return CONFIG_ERROR;
    }
    cfg->data_dir = data_dir ? strdup(data_dir) : default_data_dir();
    if (!cfg->data_dir) {
        fprintf(stderr, "tapwire: no data directory: set --data-dir, XDG_DATA_HOME or HOME\n");
        return CONFIG_ERROR;
    }
    if (db) {
        cfg->db_path = strdup(db);
    } else {
        size_t n = strlen(cfg->data_dir) + sizeof("/tapwire.db");
        cfg->db_path = malloc(n);
        if (cfg->db_path)
            snprintf(cfg->db_path, n, "%s/tapwire.db", cfg->data_dir);
    }
    if (!cfg->db_path) {
        fprintf(stderr, "tapwire: out of memory\n");
        return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

void config_free(struct config *cfg)
{
    free(cfg->data_dir);
    free(cfg->db_path);
    cfg->data_dir = NULL;
    cfg->db_path = NULL;
}

bool config_is_ignored_host(const struct config *cfg, const char *host)
{
    for (size_t i = 0; i < cfg->ignore_host_count; i++)
        if (fnmatch(cfg->ignore_hosts[i], host, FNM_CASEFOLD) == 0)
            return true;
    return false;
}

/*
 * The data directory must take new files (the CA key, the database and its
 * journal are written beside it, each through a temporary name): without
 * this check the first failure would name such a temporary file rather
 * than the directory and the permission it lacks. access() asks with the
 * real ids, which are the ones tapwire runs with (it never changes them).
 */
static int check_data_dir_access(const char *path, const struct stat *st, char *err, size_t err_len)
{
    bool can_write = access(path, W_OK) == 0;
    bool can_search = access(path, X_OK) == 0;
    const char *missing;
    char fix[128];

    if (can_write && can_search)
        return 0;
    missing = !can_write && !can_search ? "write and search (wx)"
              : !can_write              ? "write (w)"
                                        : "search (x)";
    if (st->st_uid == getuid())
        snprintf(fix, sizeof(fix), "chmod u+wx it");
    else
        snprintf(fix, sizeof(fix), "it belongs to uid %u: chown it to this user",
                 (unsigned)st->st_uid);
    snprintf(err, err_len,
             "data directory %s is not writable by this user (uid %u): tapwire needs %s "
             "permission there to create its files; %s, or choose another --data-dir",
             path, (unsigned)getuid(), missing, fix);
    return -1;
}

int config_prepare_data_dir(const char *data_dir, char *err, size_t err_len)
{
    char path[PATH_MAX];
    struct stat st;
    int rc = -1;
    if (strlen(data_dir) >= sizeof(path)) {
        snprintf(err, err_len, "data directory path is too long");
        goto out;
    }
    snprintf(path, sizeof(path), "%s", data_dir);
    /* mkdir -p, each new level private: the CA key ends up below it. */
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
            snprintf(err, err_len, "cannot create %s: %s", path, strerror(errno));
            goto out;
        }
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        snprintf(err, err_len, "cannot create data directory %s: %s", path, strerror(errno));
        goto out;
    }
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_len, "data directory %s is not a directory", path);
        goto out;
    }
    /* Writable by everyone: anyone could swap the CA or the database under
     * us (or read what we write), so this is not a warning but a refusal. */
    if (st.st_mode & S_IWOTH) {
        snprintf(err, err_len,
                 "data directory %s is writable by every user (mode %03o); run chmod 700 %s", path,
                 (unsigned)(st.st_mode & 0777), path);
        goto out;
    }
    if (check_data_dir_access(path, &st, err, err_len) < 0)
        goto out;
    if (st.st_mode & 077)
        log_warn("data directory %s is accessible to other users (mode %03o); "
                 "chmod 700 it",
                 path, (unsigned)(st.st_mode & 0777));
    rc = 0;
out:
    return rc;
}
