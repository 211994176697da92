/*
 * main: option parsing, startup, signals and shutdown; nothing else.
 * Exit status: 0 after a clean stop, 1 when startup fails, 2 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca.h"
#include "certstore.h"
#include "config.h"
#include "dashboard.h"
#include "dashtoken.h"
#include "db.h"
#include "flowstore.h"
#include "instancelock.h"
#include "listener.h"
#include "log.h"
#include "rulebook.h"
#include "tlsserver.h"
#include "upstream.h"

static int stop_pipe[2] = {-1, -1};
static int hup_pipe[2] = {-1, -1};

/* Async-signal-safe: only write(2) to the self-pipe the accept loop polls. */
static void on_stop_signal(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t w = write(stop_pipe[1], "x", 1);
    (void)w;
    errno = saved;
}

static void on_hup_signal(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t w = write(hup_pipe[1], "h", 1);
    (void)w;
    errno = saved;
}

static int install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0)
        return -1;
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -1;
    sa.sa_handler = on_hup_signal;
    if (sigaction(SIGHUP, &sa, NULL) < 0)
        return -1;
    return 0;
}

/* SIGHUP reloads the --rules file; the work happens here, not in the
 * handler. A reload that fails keeps the rules that were live. */
static void *reload_thread(void *arg)
{
    struct rulebook *book = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = hup_pipe[0], .events = POLLIN},
                              {.fd = stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents & POLLIN)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        char drain[16];
        ssize_t n = read(hup_pipe[0], drain, sizeof(drain));
        (void)n;
        char err[RULES_ERROR_BYTES];
        if (rulebook_reload_file(book, err, sizeof(err)) < 0)
            log_error("SIGHUP: rules not reloaded, the previous rules stay: %s", err);
        else
            log_info("SIGHUP: rules reloaded");
    }
    return NULL;
}

/* SIGTERM with connections that would not end: flows already queued still
 * get this long to reach the disk. */
#define MAIN_FLOW_DRAIN_MS 5000

/* One tapwire per data directory, and per database file when --db puts it
 * elsewhere: two writers of one database lose each other's flows. */
static int lock_instance(const struct config *cfg, struct instancelock **dir_lock,
                         struct instancelock **db_lock, char *err, size_t err_len)
{
    char dir_path[PATH_MAX], db_path[PATH_MAX];
    int dir_len = snprintf(dir_path, sizeof(dir_path), "%s/%s", cfg->data_dir, INSTANCELOCK_FILE);
    int db_len = snprintf(db_path, sizeof(db_path), "%s.lock", cfg->db_path);

    if (dir_len < 0 || (size_t)dir_len >= sizeof(dir_path) || db_len < 0 ||
        (size_t)db_len >= sizeof(db_path)) {
        snprintf(err, err_len, "data directory or database path too long");
        return -1;
    }
    if (instancelock_acquire(dir_path, dir_lock, err, err_len) < 0)
        return -1;
    /* The default database's lock is the directory's own lock file. */
    if (strcmp(cfg->db_path, ":memory:") == 0 || strcmp(db_path, dir_path) == 0)
        return 0;
    return instancelock_acquire(db_path, db_lock, err, err_len);
}

/* Before any module opens the database: a corrupt page would otherwise let
 * tapwire start and then lose every flow. */
static int check_database(const char *db_path, char *err, size_t err_len)
{
    enum db_check_result result;

    if (db_check(db_path, DB_CHECK_BUDGET_MS, &result, err, err_len) < 0)
        return -1;
    if (result == DB_CHECK_UNFINISHED)
        log_info("database %s: start-up check stopped after %d ms with nothing found; "
                 "the rest of the file was not checked",
                 db_path, DB_CHECK_BUDGET_MS);
    return 0;
}

/* What a person needs first: where to point clients, the CA to trust and
 * where to get it from a device, the dashboard. A wildcard listener is
 * shown as the addresses it can be reached at. */
static void print_startup(const struct config *cfg, const struct ca *ca,
                          const struct dashboard *dash, uint16_t port)
{
    char reachable[1024];
    char first[256];
    char url[512];

    listener_reachable_addresses(cfg->listen_host, port, reachable, sizeof(reachable));
    snprintf(first, sizeof(first), "%.*s", (int)strcspn(reachable, ","), reachable);
    printf("tapwire %s\n", TAPWIRE_VERSION);
    if (listener_is_wildcard_host(cfg->listen_host))
        printf("proxy listening on port %u of every address: %s\n", port, reachable);
    else
        printf("proxy listening on %s\n", reachable);
    printf("CA certificate: %s\n"
           "  Trust it once, e.g.: curl --cacert %s -x http://%s https://example.org/\n"
           "  From a phone or another browser: open http://tapwire.invalid/ through the proxy\n"
           "  Browsers, Debian's store and phones: see tapwire(1), section TRUSTING THE CA.\n",
           ca_cert_path(ca), ca_cert_path(ca), first);
    if (dash == NULL)
        printf("dashboard: off (--no-dashboard)\n");
    else if (dashboard_url(dash, url, sizeof(url)) > 0)
        /* The CA page is at the dashboard's origin and needs no token. */
        printf("dashboard: %s\nCA page: %.*s/ca\n", url,
               (int)(strlen("http://") + strcspn(url + strlen("http://"), "/")), url);
    fflush(stdout);
}

static enum log_level level_from_config(int setting)
{
    if (setting <= CONFIG_LOG_QUIET)
        return LOG_WARN;
    if (setting == CONFIG_LOG_NORMAL)
        return LOG_INFO;
    return LOG_DEBUG;
}

/*
 * The destinations connections refuse: the proxy's and the dashboard's own
 * addresses always, private ones with --block-private, which is the default
 * when the proxy listens beyond loopback: then anyone who reaches it could
 * otherwise use it to reach this host's loopback services and the LAN.
 */
static int setup_guard(struct destguard *guard, const struct config *cfg, int listen_fd,
                       const struct dashboard *dash)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0 ||
        destguard_add_self(guard, (struct sockaddr *)&addr) < 0) {
        log_error("cannot tell the proxy's own address: %s", strerror(errno));
        return -1;
    }
    if (cfg->private_destinations == CONFIG_PRIVATE_DEFAULT)
        guard->block_private = !destguard_is_loopback((struct sockaddr *)&addr);
    else
        guard->block_private = cfg->private_destinations == CONFIG_PRIVATE_BLOCK;
    if (dash != NULL && (dashboard_address(dash, &addr) < 0 ||
                         destguard_add_self(guard, (struct sockaddr *)&addr) < 0)) {
        log_error("cannot tell the dashboard's own address");
        return -1;
    }
    if (guard->block_private)
        log_info("refusing loopback and private destinations (%s)",
                 cfg->private_destinations == CONFIG_PRIVATE_BLOCK
                     ? "--block-private"
                     : "the proxy listens beyond loopback; --allow-private to allow them");
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct ca *ca = NULL;
    struct certstore *certs = NULL;
    struct flowstore *flows = NULL;
    struct dashboard *dash = NULL;
    struct rulebook *book = NULL;
    struct instancelock *dir_lock = NULL, *db_lock = NULL;
    pthread_t reloader;
    bool has_reloader = false;
    SSL_CTX *server_ctx = NULL, *upstream_ctx = NULL;
    int cancel_pipe[2] = {-1, -1};
    int log_fd = -1;
    int listen_fd = -1;
    int status = 1;
    char err[512];
    struct destguard guard = {0};

    enum config_parse_result parsed = config_parse(&cfg, argc, argv);
    if (parsed == CONFIG_EXIT_SUCCESS) {
        config_free(&cfg);
        return 0;
    }
    if (parsed == CONFIG_ERROR) {
        config_free(&cfg);
        return 2;
    }
    if (cfg.log_file) {
        log_fd = open(cfg.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (log_fd < 0) {
            fprintf(stderr, "tapwire: cannot open log file %s: %s\n", cfg.log_file,
                    strerror(errno));
            goto out;
        }
    }
    log_init(log_fd >= 0 ? log_fd : STDERR_FILENO, level_from_config(cfg.log_level));

    if (pipe2(stop_pipe, O_CLOEXEC) < 0 || pipe2(cancel_pipe, O_CLOEXEC) < 0 ||
        pipe2(hup_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || install_signals() < 0) {
        log_error("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    if (config_prepare_data_dir(cfg.data_dir, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    if (lock_instance(&cfg, &dir_lock, &db_lock, err, sizeof(err)) < 0 ||
        check_database(cfg.db_path, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    if (ca_load_or_create(cfg.data_dir, &ca, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    if (certstore_open(cfg.db_path, ca, CERTSTORE_MEMORY_ENTRIES, &certs, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    if (flowstore_open(cfg.db_path, cfg.max_flows, &flows, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    if (rulebook_open(cfg.rules_file, cfg.rule_specs, cfg.rule_spec_count, cfg.db_path, &book, err,
                      sizeof(err)) < 0) {
        log_error("rules: %s", err);
        goto out;
    }
    if (cfg.is_anticache && rulebook_add_anticache(book, err, sizeof(err)) < 0) {
        log_error("--anticache: %s", err);
        goto out;
    }
    if (pthread_create(&reloader, NULL, reload_thread, book) != 0) {
        log_error("cannot start the rules reload thread");
        goto out;
    }
    has_reloader = true;
    if (cfg.keylog_file && tlsserver_keylog_open(cfg.keylog_file, err, sizeof(err)) < 0) {
        log_error("SSLKEYLOGFILE: %s", err);
        goto out;
    }
    server_ctx = tlsserver_ctx_new(cfg.keylog_file, err, sizeof(err));
    if (!server_ctx) {
        log_error("%s", err);
        goto out;
    }
    struct upstream_tls_options up_opts = {
        .extra_ca_files = cfg.upstream_ca,
        .insecure = cfg.insecure,
        .keylog_path = cfg.keylog_file,
    };
    upstream_ctx = upstream_ctx_new(&up_opts, err, sizeof(err));
    if (!upstream_ctx) {
        log_error("%s", err);
        goto out;
    }
    if (cfg.dashboard_enabled) {
        char kept_token[DASHTOKEN_MAX_CHARS + 1];
        bool rotated = false;

        if (cfg.dashboard_token == NULL &&
            dashtoken_load_or_create(cfg.data_dir, cfg.is_new_dashboard_token, kept_token,
                                     sizeof(kept_token), &rotated, err, sizeof(err)) < 0) {
            log_error("dashboard: %s", err);
            goto out;
        }
        if (rotated)
            log_info("dashboard: a new token replaces the kept one; open tabs need the new URL");
        struct dashboard_options dopts = {
            .host = cfg.dashboard_host,
            .port = cfg.dashboard_port,
            .token = cfg.dashboard_token != NULL ? cfg.dashboard_token : kept_token,
            .web_root = cfg.web_root,
            .rules = book,
            .certs = certs,
        };
        if (dashboard_start(&dopts, flows, ca, &dash, err, sizeof(err)) < 0) {
            log_error("dashboard: %s", err);
            goto out;
        }
        cfg.dashboard_port = dashboard_port(dash); /* the real one when 0 was asked */
    }
    cfg.max_connections = listener_fit_fd_limit(
        cfg.max_connections, cfg.dashboard_enabled ? DASHBOARD_MAX_CONNECTIONS : 0);
    uint16_t port = 0;
    listen_fd = listener_open(cfg.listen_host, cfg.listen_port, &port, err, sizeof(err));
    if (listen_fd < 0) {
        log_error("%s", err);
        goto out;
    }
    cfg.listen_port = port; /* the real one, when 0 asked for an ephemeral port */
    if (setup_guard(&guard, &cfg, listen_fd, dash) < 0)
        goto out;

    if (cfg.insecure)
        fprintf(stderr,
                "tapwire: WARNING: --insecure: upstream certificates are NOT verified. Anyone on\n"
                "tapwire: the path to a server can read and change this traffic, and tapwire\n"
                "tapwire: will show it to clients as trusted. Each such exchange is logged.\n");
    if (cfg.keylog_file)
        fprintf(stderr, "tapwire: SSLKEYLOGFILE: writing TLS session keys to %s\n",
                cfg.keylog_file);
    print_startup(&cfg, ca, dash, port);

    struct proxy_env env = {
        .cfg = &cfg,
        .ca = ca,
        .certs = certs,
        .flows = cfg.capture_enabled ? flows : NULL,
        .rules = rulebook_current(book),
        .guard = &guard,
        .server_ctx = server_ctx,
        .upstream_ctx = upstream_ctx,
        .stop_fd = stop_pipe[0],
        .cancel_fd = cancel_pipe[0],
    };
    int left = listener_run(listen_fd, &env, cfg.shutdown_grace_ms, cancel_pipe[1]);
    listen_fd = -1;
    if (left > 0) {
        /* Threads still hold env; leave the process without freeing it,
         * but not without the flows already queued for the disk. */
        log_warn("exiting with %d connection(s) still open", left);
        if (flows != NULL && flowstore_sync(flows, MAIN_FLOW_DRAIN_MS) != 0)
            log_warn("flows still queued after %d ms are lost", MAIN_FLOW_DRAIN_MS);
        if (flows != NULL)
            flowstore_log_totals(flows);
        fflush(stdout);
        _exit(0);
    }
    dashboard_stop(dash);
    dash = NULL;
    log_info("stopped");
    status = 0;
out:
    if (listen_fd >= 0)
        close(listen_fd);
    if (has_reloader) {
        ssize_t w = write(stop_pipe[1], "x", 1); /* ends the reload thread if still waiting */
        (void)w;
        pthread_join(reloader, NULL);
    }
    SSL_CTX_free(upstream_ctx);
    SSL_CTX_free(server_ctx);
    dashboard_stop(dash);
    flowstore_close(flows); /* writes every queued flow first, then logs the totals */
    rulebook_close(book);
    certstore_close(certs);
    instancelock_release(db_lock);
    instancelock_release(dir_lock);
    ca_free(ca);
    config_free(&cfg);
    for (int i = 0; i < 2; i++) {
        if (stop_pipe[i] >= 0)
            close(stop_pipe[i]);
        if (cancel_pipe[i] >= 0)
            close(cancel_pipe[i]);
        if (hup_pipe[i] >= 0)
            close(hup_pipe[i]);
    }
    if (log_fd >= 0)
        close(log_fd);
    return status;
}
