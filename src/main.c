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
#include "clientcert.h"
#include "config.h"
#include "dashboard.h"
#include "dashtoken.h"
#include "db.h"
#include "errmsg.h"
#include "codec.h"
#include "flowstore.h"
#include "instancelock.h"
#include "listener.h"
#include "log.h"
#include "proxyauth.h"
#include "intercept.h"
#include "replay.h"
#include "rulebook.h"
#include "socks5listen.h"
#include "tlsserver.h"
#include "transparent.h"
#include "upstream.h"
#include "upstreamproxy.h"

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
                          const struct dashboard *dash, uint16_t port, const char *proxy_name)
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
    for (size_t i = 0; i < cfg->socks5_count; i++) {
        char socks[1024];
        listener_reachable_addresses(cfg->socks5[i].host, cfg->socks5[i].port, socks,
                                     sizeof(socks));
        printf("SOCKS5 listening on %s\n", socks);
    }
    for (size_t i = 0; i < cfg->transparent_count; i++) {
        char where[1024];
        listener_reachable_addresses(cfg->transparent[i].host, cfg->transparent[i].port, where,
                                     sizeof(where));
        printf("transparent proxy listening on %s\n", where);
    }
    for (size_t i = 0; i < cfg->reverse_count; i++) {
        const struct reverse_target *rt = &cfg->reverse[i];
        char where[1024];
        listener_reachable_addresses(rt->listen_host, rt->listen_port, where, sizeof(where));
        printf("reverse proxy listening on %s%s for %s://%s%s\n",
               rt->is_tls_listener ? "https://" : "http://", where, rt->is_tls ? "https" : "http",
               rt->authority, rt->prefix);
    }
    printf("CA certificate: %s\n"
           "  Trust it once, e.g.: curl --cacert %s -x http://%s https://example.org/\n"
           "  From a phone or another browser: open http://tapwire.invalid/ through the proxy\n"
           "  Browsers, Debian's store and phones: see tapwire(1), section TRUSTING THE CA.\n",
           ca_cert_path(ca), ca_cert_path(ca), first);
    if (cfg->upstream_proxy != NULL)
        printf("origins reached through the upstream proxy %s%s\n", proxy_name,
               cfg->upstream_proxy_ignore_count > 0 ? " (but --upstream-proxy-ignore hosts)" : "");
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
                       const int *other_fd, size_t other_count, const struct dashboard *dash,
                       char *err, size_t err_len)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (getsockname(listen_fd, (struct sockaddr *)&addr, &len) != 0 ||
        destguard_add_self(guard, (struct sockaddr *)&addr) < 0) {
        errmsg_set(err, err_len, "cannot tell the proxy's own address: %s", strerror(errno));
        return -1;
    }
    if (cfg->private_destinations == CONFIG_PRIVATE_DEFAULT)
        guard->block_private = !destguard_is_loopback((struct sockaddr *)&addr);
    else
        guard->block_private = cfg->private_destinations == CONFIG_PRIVATE_BLOCK;
    if (dash != NULL && (dashboard_address(dash, &addr) < 0 ||
                         destguard_add_self(guard, (struct sockaddr *)&addr) < 0)) {
        errmsg_set(err, err_len, "cannot tell the dashboard's own address");
        return -1;
    }
    for (size_t i = 0; i < other_count; i++) {
        len = sizeof(addr);
        if (getsockname(other_fd[i], (struct sockaddr *)&addr, &len) != 0 ||
            destguard_add_self(guard, (struct sockaddr *)&addr) < 0) {
            errmsg_set(err, err_len, "cannot tell a listener's own address");
            return -1;
        }
    }
    if (guard->block_private)
        log_info("refusing loopback and private destinations (%s)",
                 cfg->private_destinations == CONFIG_PRIVATE_BLOCK
                     ? "--block-private"
                     : "the proxy listens beyond loopback; --allow-private to allow them");
    return 0;
}

#define APP_MAX_OTHER (CONFIG_MAX_SOCKS5 + CONFIG_MAX_TRANSPARENT + CONFIG_MAX_REVERSE)

/* Everything main starts, in the order it starts them; app_close() stops
 * them in reverse. */
struct app {
    struct config cfg;
    int log_fd;
    struct instancelock *dir_lock, *db_lock;
    struct ca *ca;
    struct certstore *certs;
    struct flowstore *flows;
    struct rulebook *book;
    pthread_t reloader;
    bool has_reloader;
    SSL_CTX *server_ctx, *upstream_ctx;
    struct dashboard *dash;
    int listen_fd;
    uint16_t port;
    /* Every other listening socket: --socks5, then --transparent, then
     * --reverse, in the order of their options. */
    int other_fd[APP_MAX_OTHER];
    size_t other_count;
    struct destguard guard;
    struct proxyauth *auth;
    struct upstreamproxy *proxy;
    struct clientcert *client_certs;
    struct intercept *intercept;
    struct replay *replay;
    int cancel_pipe[2];
};

/* The data directory, the database and what lives in it: the CA, the leaf
 * cache, the flow store and the rules (with their reload thread). */
static int open_stores(struct app *app, char *err, size_t err_len)
{
    struct config *cfg = &app->cfg;

    if (config_prepare_data_dir(cfg->data_dir, err, err_len) < 0 ||
        lock_instance(cfg, &app->dir_lock, &app->db_lock, err, err_len) < 0 ||
        check_database(cfg->db_path, err, err_len) < 0 ||
        ca_load_or_create(cfg->data_dir, &app->ca, err, err_len) < 0 ||
        certstore_open(cfg->db_path, app->ca, CERTSTORE_MEMORY_ENTRIES, &app->certs, err, err_len) <
            0 ||
        flowstore_open(cfg->db_path, cfg->max_flows, &app->flows, err, err_len) < 0)
        return -1;
    flowstore_set_retention(app->flows, cfg->max_db_bytes, cfg->retain_us);
    /* The search index holds bodies decoded, dashboard or not. */
    flowstore_set_body_decoder(app->flows, codec_decode_content);
    if (rulebook_open(cfg->rules_file, cfg->rule_specs, cfg->rule_spec_count, cfg->db_path,
                      &app->book, err, err_len) < 0) {
        errmsg_prefix(err, err_len, "rules: ");
        return -1;
    }
    if (cfg->is_anticache && rulebook_add_anticache(app->book, err, err_len) < 0) {
        errmsg_prefix(err, err_len, "--anticache: ");
        return -1;
    }
    if (pthread_create(&app->reloader, NULL, reload_thread, app->book) != 0) {
        snprintf(err, err_len, "cannot start the rules reload thread");
        return -1;
    }
    app->has_reloader = true;
    return 0;
}

/* The two TLS contexts: towards clients and towards origins. */
static int open_tls(struct app *app, char *err, size_t err_len)
{
    struct config *cfg = &app->cfg;
    struct upstream_tls_options up_opts = {
        .extra_ca_files = cfg->upstream_ca,
        .insecure = cfg->insecure,
        .keylog_path = cfg->keylog_file,
    };

    if (cfg->keylog_file && tlsserver_keylog_open(cfg->keylog_file, err, err_len) < 0) {
        errmsg_prefix(err, err_len, "SSLKEYLOGFILE: ");
        return -1;
    }
    app->server_ctx = tlsserver_ctx_new(cfg->keylog_file, err, err_len);
    if (app->server_ctx == NULL)
        return -1;
    app->upstream_ctx = upstream_ctx_new(&up_opts, err, err_len);
    if (app->upstream_ctx == NULL)
        return -1;
    if (cfg->client_cert_count > 0) {
        if (clientcert_load(cfg->client_certs, cfg->client_cert_count, &app->client_certs, err,
                            err_len) < 0)
            return -1;
        clientcert_attach(app->upstream_ctx, app->client_certs);
    }
    return 0;
}

/* The intercept room with --intercept's filter, and replay, both for the
 * dashboard (the intercept for the sessions too). */
static int open_interact(struct app *app, char *err, size_t err_len)
{
    struct config *cfg = &app->cfg;
    struct replay_env env = {
        .cfg = cfg,
        .flows = cfg->capture_enabled ? app->flows : NULL,
        .rules = rulebook_current(app->book),
        .guard = &app->guard, /* filled by open_listener(), before any client */
        .proxy = app->proxy,
        .upstream_ctx = app->upstream_ctx,
        .cancel_fd = app->cancel_pipe[0],
    };

    app->intercept = intercept_new(cfg->intercept_timeout_s * 1000);
    app->replay = replay_new(&env);
    if (app->intercept == NULL || app->replay == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (cfg->intercept != NULL && intercept_set_filter(app->intercept, cfg->intercept,
                                                       strlen(cfg->intercept), err, err_len) < 0) {
        errmsg_prefix(err, err_len, "--intercept: ");
        return -1;
    }
    if (cfg->intercept != NULL && cfg->intercept[0] != '\0')
        log_info("intercepting flows that match: %s (for %d s at most)", cfg->intercept,
                 cfg->intercept_timeout_s);
    return 0;
}

/* The dashboard, with the kept token unless --dashboard-token gave one. */
static int start_dashboard(struct app *app, char *err, size_t err_len)
{
    struct config *cfg = &app->cfg;
    char kept_token[DASHTOKEN_MAX_CHARS + 1];
    bool rotated = false;

    if (!cfg->dashboard_enabled)
        return 0;
    if (cfg->dashboard_token == NULL &&
        dashtoken_load_or_create(cfg->data_dir, cfg->is_new_dashboard_token, kept_token,
                                 sizeof(kept_token), &rotated, err, err_len) < 0) {
        errmsg_prefix(err, err_len, "dashboard: ");
        return -1;
    }
    if (rotated)
        log_info("dashboard: a new token replaces the kept one; open tabs need the new URL");
    struct dashboard_options dopts = {
        .host = cfg->dashboard_host,
        .port = cfg->dashboard_port,
        .token = cfg->dashboard_token != NULL ? cfg->dashboard_token : kept_token,
        .web_root = cfg->web_root,
        .rules = app->book,
        .certs = app->certs,
        .db_path = cfg->db_path,
        .capture_limit = cfg->capture_limit,
        .intercept = app->intercept,
        .replay = app->replay,
    };
    if (dashboard_start(&dopts, app->flows, app->ca, &app->dash, err, err_len) < 0) {
        errmsg_prefix(err, err_len, "dashboard: ");
        return -1;
    }
    cfg->dashboard_port = dashboard_port(app->dash); /* the real one when 0 was asked */
    return 0;
}

/* --proxy-auth or --proxy-auth-file, and --upstream-proxy, when given. */
static int load_proxy_settings(struct app *app, char *err, size_t err_len)
{
    const struct config *cfg = &app->cfg;

    if (cfg->upstream_proxy != NULL &&
        upstreamproxy_new(cfg->upstream_proxy, cfg->upstream_proxy_ignore,
                          cfg->upstream_proxy_ignore_count, &app->proxy, err, err_len) < 0)
        return -1;

    if (cfg->proxy_auth != NULL)
        return proxyauth_new(cfg->proxy_auth, &app->auth, err, err_len);
    if (cfg->proxy_auth_file != NULL)
        return proxyauth_load_file(cfg->proxy_auth_file, &app->auth, err, err_len);
    return 0;
}

/* An intercepting proxy that anyone on the network can use is a relay for
 * anyone, into this host's network too: said loudly, once per listener. */
static void warn_if_open(const struct app *app, int fd, const char *option)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (app->auth != NULL || getsockname(fd, (struct sockaddr *)&addr, &len) != 0 ||
        destguard_is_loopback((struct sockaddr *)&addr))
        return;
    fprintf(stderr,
            "tapwire: WARNING: %s listens beyond loopback without --proxy-auth: anyone who\n"
            "tapwire: can reach this port can use tapwire as a relay, and read and change\n"
            "tapwire: what passes through it. Give --proxy-auth USER:PASS, or listen on\n"
            "tapwire: 127.0.0.1 only.\n",
            option);
}

/* One more listening socket; *port becomes the real one when 0 asked for
 * an ephemeral port. */
static int open_other(struct app *app, const char *host, uint16_t *port, const char *option,
                      char *err, size_t err_len)
{
    int fd = listener_open(host, *port, port, err, err_len);

    if (fd < 0) {
        errmsg_prefix(err, err_len, option);
        return -1;
    }
    app->other_fd[app->other_count++] = fd;
    return 0;
}

/* The proxy's listening socket, fitted to the file limit, and the guard
 * that keeps connections from coming back to it. */
static int open_listener(struct app *app, char *err, size_t err_len)
{
    struct config *cfg = &app->cfg;

    cfg->max_connections = listener_fit_fd_limit(
        cfg->max_connections, cfg->dashboard_enabled ? DASHBOARD_MAX_CONNECTIONS : 0);
    app->listen_fd = listener_open(cfg->listen_host, cfg->listen_port, &app->port, err, err_len);
    if (app->listen_fd < 0)
        return -1;
    cfg->listen_port = app->port; /* the real one, when 0 asked for an ephemeral port */
    for (size_t i = 0; i < cfg->socks5_count; i++)
        if (open_other(app, cfg->socks5[i].host, &cfg->socks5[i].port, "--socks5: ", err, err_len) <
            0)
            return -1;
    for (size_t i = 0; i < cfg->transparent_count; i++)
        if (open_other(app, cfg->transparent[i].host, &cfg->transparent[i].port,
                       "--transparent: ", err, err_len) < 0)
            return -1;
    for (size_t i = 0; i < cfg->reverse_count; i++)
        if (open_other(app, cfg->reverse[i].listen_host, &cfg->reverse[i].listen_port,
                       "--reverse: ", err, err_len) < 0)
            return -1;
    return setup_guard(&app->guard, cfg, app->listen_fd, app->other_fd, app->other_count, app->dash,
                       err, err_len);
}

/* The entry point of each kind of listener (listener.h). */
static void serve_explicit(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                           const void *arg)
{
    (void)arg;
    session_serve_explicit(env, fd, peer);
}

static void serve_socks5(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                         const void *arg)
{
    (void)arg;
    socks5listen_serve(env, fd, peer);
}

static void serve_transparent(const struct proxy_env *env, int fd,
                              const struct sockaddr_storage *peer, const void *arg)
{
    (void)arg;
    transparent_serve(env, fd, peer);
}

static void serve_reverse(const struct proxy_env *env, int fd, const struct sockaddr_storage *peer,
                          const void *arg)
{
    session_serve_reverse(env, fd, peer, arg);
}

/* Serves until SIGINT/SIGTERM. Returns 0 after a clean stop; does not
 * return when connections would not end (their threads still hold what
 * main owns): the queued flows are written and the process exits. */
static int serve(struct app *app)
{
    struct config *cfg = &app->cfg;
    struct proxy_env env = {
        .cfg = cfg,
        .ca = app->ca,
        .certs = app->certs,
        .flows = cfg->capture_enabled ? app->flows : NULL,
        .rules = rulebook_current(app->book),
        .intercept = app->intercept,
        .guard = &app->guard,
        .auth = app->auth,
        .proxy = app->proxy,
        .server_ctx = app->server_ctx,
        .upstream_ctx = app->upstream_ctx,
        .stop_fd = stop_pipe[0],
        .cancel_fd = app->cancel_pipe[0],
    };
    struct listener_socket socks[1 + APP_MAX_OTHER] = {
        {.fd = app->listen_fd, .serve = serve_explicit, .is_http = true},
    };
    size_t count = 1, other = 0;

    for (size_t i = 0; i < cfg->socks5_count; i++)
        socks[count++] =
            (struct listener_socket){.fd = app->other_fd[other++], .serve = serve_socks5};
    for (size_t i = 0; i < cfg->transparent_count; i++)
        socks[count++] =
            (struct listener_socket){.fd = app->other_fd[other++], .serve = serve_transparent};
    for (size_t i = 0; i < cfg->reverse_count; i++)
        socks[count++] = (struct listener_socket){.fd = app->other_fd[other++],
                                                  .serve = serve_reverse,
                                                  .arg = &cfg->reverse[i],
                                                  .is_http = !cfg->reverse[i].is_tls_listener};
    int left = listener_run(socks, count, &env, cfg->shutdown_grace_ms, app->cancel_pipe[1]);

    app->listen_fd = -1;
    app->other_count = 0; /* listener_run() closed them */
    if (left > 0) {
        log_warn("exiting with %d connection(s) still open", left);
        if (flowstore_sync(app->flows, MAIN_FLOW_DRAIN_MS) != 0)
            log_warn("flows still queued after %d ms are lost (those in the spool are "
                     "written at the next start)",
                     MAIN_FLOW_DRAIN_MS);
        flowstore_log_totals(app->flows);
        fflush(stdout);
        _exit(0);
    }
    dashboard_stop(app->dash);
    app->dash = NULL;
    log_info("stopped");
    return 0;
}

static void app_close(struct app *app)
{
    if (app->listen_fd >= 0)
        close(app->listen_fd);
    for (size_t i = 0; i < app->other_count; i++)
        close(app->other_fd[i]);
    if (app->has_reloader) {
        ssize_t w = write(stop_pipe[1], "x", 1); /* ends the reload thread if still waiting */
        (void)w;
        pthread_join(app->reloader, NULL);
    }
    SSL_CTX_free(app->upstream_ctx);
    clientcert_free(app->client_certs); /* after the context that used them */
    SSL_CTX_free(app->server_ctx);
    dashboard_stop(app->dash);
    replay_free(app->replay); /* after the dashboard, which runs replays */
    intercept_free(app->intercept);
    flowstore_close(app->flows); /* writes every queued flow first, then logs the totals */
    rulebook_close(app->book);
    certstore_close(app->certs);
    instancelock_release(app->db_lock);
    instancelock_release(app->dir_lock);
    ca_free(app->ca);
    proxyauth_free(app->auth);
    upstreamproxy_free(app->proxy);
    config_free(&app->cfg);
    for (int i = 0; i < 2; i++) {
        if (stop_pipe[i] >= 0)
            close(stop_pipe[i]);
        if (app->cancel_pipe[i] >= 0)
            close(app->cancel_pipe[i]);
        if (hup_pipe[i] >= 0)
            close(hup_pipe[i]);
    }
    if (app->log_fd >= 0)
        close(app->log_fd);
}

int main(int argc, char **argv)
{
    struct app app = {.log_fd = -1, .listen_fd = -1, .cancel_pipe = {-1, -1}};
    struct config *cfg = &app.cfg;
    int status = 1;
    char err[512];

    enum config_parse_result parsed = config_parse(cfg, argc, argv);
    if (parsed != CONFIG_OK) {
        config_free(cfg);
        return parsed == CONFIG_EXIT_SUCCESS ? 0 : 2;
    }
    if (cfg->log_file) {
        app.log_fd = open(cfg->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (app.log_fd < 0) {
            fprintf(stderr, "tapwire: cannot open log file %s: %s\n", cfg->log_file,
                    strerror(errno));
            goto out;
        }
    }
    log_init(app.log_fd >= 0 ? app.log_fd : STDERR_FILENO, level_from_config(cfg->log_level));
    if (pipe2(stop_pipe, O_CLOEXEC) < 0 || pipe2(app.cancel_pipe, O_CLOEXEC) < 0 ||
        pipe2(hup_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || install_signals() < 0) {
        log_error("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    if (load_proxy_settings(&app, err, sizeof(err)) < 0 ||
        open_stores(&app, err, sizeof(err)) < 0 || open_tls(&app, err, sizeof(err)) < 0 ||
        open_interact(&app, err, sizeof(err)) < 0 || start_dashboard(&app, err, sizeof(err)) < 0 ||
        open_listener(&app, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    warn_if_open(&app, app.listen_fd, "--listen");
    /* Not --transparent nor --reverse: their clients cannot choose where
     * tapwire connects (the firewall's NAT entry does, or the one URL). */
    for (size_t i = 0; i < cfg->socks5_count; i++)
        warn_if_open(&app, app.other_fd[i], "--socks5");
    if (cfg->insecure)
        fprintf(stderr,
                "tapwire: WARNING: --insecure: upstream certificates are NOT verified. Anyone on\n"
                "tapwire: the path to a server can read and change this traffic, and tapwire\n"
                "tapwire: will show it to clients as trusted. Each such exchange is logged.\n");
    if (cfg->keylog_file)
        fprintf(stderr, "tapwire: SSLKEYLOGFILE: writing TLS session keys to %s\n",
                cfg->keylog_file);
    print_startup(cfg, app.ca, app.dash, app.port,
                  app.proxy != NULL ? upstreamproxy_name(app.proxy) : NULL);
    status = serve(&app);
out:
    app_close(&app);
    return status;
}
