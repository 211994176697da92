/* Unit tests for option parsing and validation (src/config.c). */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static enum config_parse_result parse(struct config *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"tapwire";
    for (; *args && argc < 31; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return config_parse(cfg, argc, argv);
}

static void test_defaults_listen_on_loopback_8080(void)
{
    struct config cfg;
    const char *args[] = {NULL};
    setenv("XDG_DATA_HOME", "/tmp/xdg-test", 1);
    CU_ASSERT_EQUAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_STRING_EQUAL(cfg.listen_host, "127.0.0.1");
    CU_ASSERT_EQUAL(cfg.listen_port, 8080);
    CU_ASSERT_STRING_EQUAL(cfg.data_dir, "/tmp/xdg-test/tapwire");
    CU_ASSERT_FALSE(cfg.insecure);
    CU_ASSERT_EQUAL(cfg.max_connections, CONFIG_DEFAULT_MAX_CONNECTIONS);
    CU_ASSERT_EQUAL(cfg.upstream_timeout_ms, CONFIG_DEFAULT_UPSTREAM_TIMEOUT_MS);
    config_free(&cfg);
}

static void test_data_dir_falls_back_to_home(void)
{
    struct config cfg;
    const char *args[] = {NULL};
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/someone", 1);
    CU_ASSERT_EQUAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_STRING_EQUAL(cfg.data_dir, "/home/someone/.local/share/tapwire");
    config_free(&cfg);
}

static void test_parses_every_option(void)
{
    struct config cfg;
    const char *args[] = {"--listen",
                          "[::1]:9090",
                          "--data-dir",
                          "/d",
                          "--upstream-ca",
                          "a.pem",
                          "--upstream-ca",
                          "b.pem",
                          "--insecure",
                          "--ignore-host",
                          "*.bank.test",
                          "--log-file",
                          "/tmp/l",
                          "--max-connections",
                          "7",
                          "--idle-timeout",
                          "1000",
                          "--header-timeout",
                          "2000",
                          "--upstream-timeout",
                          "3000",
                          "--io-timeout",
                          "4000",
                          "-v",
                          NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_STRING_EQUAL(cfg.listen_host, "::1");
    CU_ASSERT_EQUAL(cfg.listen_port, 9090);
    CU_ASSERT_STRING_EQUAL(cfg.data_dir, "/d");
    CU_ASSERT_EQUAL(cfg.upstream_ca_count, 2);
    CU_ASSERT_STRING_EQUAL(cfg.upstream_ca[1], "b.pem");
    CU_ASSERT_PTR_NULL(cfg.upstream_ca[2]);
    CU_ASSERT_TRUE(cfg.insecure);
    CU_ASSERT_TRUE(config_is_ignored_host(&cfg, "www.BANK.test"));
    CU_ASSERT_FALSE(config_is_ignored_host(&cfg, "bank.test.evil"));
    CU_ASSERT_STRING_EQUAL(cfg.log_file, "/tmp/l");
    CU_ASSERT_EQUAL(cfg.max_connections, 7);
    CU_ASSERT_EQUAL(cfg.idle_timeout_ms, 1000);
    CU_ASSERT_EQUAL(cfg.header_timeout_ms, 2000);
    CU_ASSERT_EQUAL(cfg.upstream_timeout_ms, 3000);
    CU_ASSERT_EQUAL(cfg.io_timeout_ms, 4000);
    CU_ASSERT_EQUAL(cfg.log_level, CONFIG_LOG_VERBOSE);
    config_free(&cfg);
}

static void test_retention_options_and_their_units(void)
{
    struct config cfg;
    int64_t v = 0;
    const char *defaults[] = {"--data-dir", "/d", NULL};
    const char *args[] = {"--data-dir", "/d", "--max-db-size", "2G", "--retain", "7d", NULL};
    const char *too_small[] = {"--data-dir", "/d", "--max-db-size", "1000K", NULL};
    const char *bad_unit[] = {"--data-dir", "/d", "--retain", "3y", NULL};

    CU_ASSERT_EQUAL_FATAL(parse(&cfg, defaults), CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.max_db_bytes, 0);
    CU_ASSERT_EQUAL(cfg.retain_us, 0);
    config_free(&cfg);
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.max_db_bytes, INT64_C(2) << 30);
    CU_ASSERT_EQUAL(cfg.retain_us, INT64_C(7) * 86400 * 1000000);
    config_free(&cfg);
    CU_ASSERT_EQUAL(parse(&cfg, too_small), CONFIG_ERROR);
    CU_ASSERT_EQUAL(parse(&cfg, bad_unit), CONFIG_ERROR);

    CU_ASSERT_EQUAL(config_parse_size("512", &v), 0);
    CU_ASSERT_EQUAL(v, 512);
    CU_ASSERT_EQUAL(config_parse_size("3m", &v), 0);
    CU_ASSERT_EQUAL(v, 3 << 20);
    CU_ASSERT_EQUAL(config_parse_size("1GiB", &v), 0);
    CU_ASSERT_EQUAL(v, 1 << 30);
    CU_ASSERT_EQUAL(config_parse_size("10MB", &v), 0);
    CU_ASSERT_EQUAL(v, 10 << 20);
    CU_ASSERT_EQUAL(config_parse_size("", &v), -1);
    CU_ASSERT_EQUAL(config_parse_size("-1M", &v), -1);
    CU_ASSERT_EQUAL(config_parse_size("1X", &v), -1);
    CU_ASSERT_EQUAL(config_parse_size("1MBs", &v), -1);
    CU_ASSERT_EQUAL(config_parse_size("99999999999T", &v), -1);
    CU_ASSERT_EQUAL(config_parse_size("99999999999999999999", &v), -1);
    CU_ASSERT_EQUAL(config_parse_duration("90", &v), 0);
    CU_ASSERT_EQUAL(v, INT64_C(90) * 1000000);
    CU_ASSERT_EQUAL(config_parse_duration("30m", &v), 0);
    CU_ASSERT_EQUAL(v, INT64_C(1800) * 1000000);
    CU_ASSERT_EQUAL(config_parse_duration("12h", &v), 0);
    CU_ASSERT_EQUAL(v, INT64_C(43200) * 1000000);
    CU_ASSERT_EQUAL(config_parse_duration("2w", &v), 0);
    CU_ASSERT_EQUAL(v, INT64_C(14) * 86400 * 1000000);
    CU_ASSERT_EQUAL(config_parse_duration("0s", &v), -1);
    CU_ASSERT_EQUAL(config_parse_duration("1d2h", &v), -1);
    CU_ASSERT_EQUAL(config_parse_duration("h", &v), -1);
    CU_ASSERT_EQUAL(config_parse_duration("40000d", &v), -1);
}

static void test_capture_and_dashboard_options(void)
{
    struct config cfg;
    const char *defaults[] = {"--data-dir", "/d", NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, defaults), CONFIG_OK);
    CU_ASSERT_TRUE(cfg.capture_enabled);
    CU_ASSERT_TRUE(cfg.dashboard_enabled);
    CU_ASSERT_STRING_EQUAL(cfg.dashboard_host, "127.0.0.1");
    CU_ASSERT_EQUAL(cfg.dashboard_port, 8081);
    CU_ASSERT_STRING_EQUAL(cfg.db_path, "/d/tapwire.db");
    CU_ASSERT_EQUAL(cfg.capture_limit, CONFIG_DEFAULT_CAPTURE_LIMIT_BYTES);
    CU_ASSERT_EQUAL(cfg.max_flows, CONFIG_DEFAULT_MAX_FLOWS);
    config_free(&cfg);

    const char *args[] = {"--no-capture",
                          "--no-dashboard",
                          "--db",
                          "/x.db",
                          "--capture-limit",
                          "0",
                          "--max-flows",
                          "10",
                          "--web-root",
                          "/w",
                          "--dashboard-token",
                          "0123456789abcdef",
                          NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_FALSE(cfg.capture_enabled);
    CU_ASSERT_FALSE(cfg.dashboard_enabled);
    CU_ASSERT_STRING_EQUAL(cfg.db_path, "/x.db");
    CU_ASSERT_EQUAL(cfg.capture_limit, 0);
    CU_ASSERT_EQUAL(cfg.max_flows, 10);
    CU_ASSERT_STRING_EQUAL(cfg.web_root, "/w");
    CU_ASSERT_STRING_EQUAL(cfg.dashboard_token, "0123456789abcdef");
    config_free(&cfg);

    const char *short_token[] = {"--dashboard-token", "short", NULL};
    CU_ASSERT_EQUAL(parse(&cfg, short_token), CONFIG_ERROR);
    config_free(&cfg);
}

static void test_rewrite_memory_option(void)
{
    struct config cfg;
    const char *defaults[] = {NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, defaults), CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.rewrite_memory, CONFIG_DEFAULT_REWRITE_MEMORY_BYTES);
    config_free(&cfg);

    const char *args[] = {"--rewrite-memory", "1048576", NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.rewrite_memory, 1048576);
    config_free(&cfg);

    const char *zero[] = {"--rewrite-memory", "0", NULL};
    CU_ASSERT_EQUAL(parse(&cfg, zero), CONFIG_ERROR);
    config_free(&cfg);
}

static void test_proxy_modes_options(void)
{
    struct config cfg;
    const char *args[] = {"--socks5",         "127.0.0.1:1080",    "--socks5",
                          "[::1]:0",          "--proxy-auth",      "u:p",
                          "--upstream-proxy", "http://proxy:3128", "--upstream-proxy-ignore",
                          "*.corp",           "--client-cert",     "api.*=/k.pem",
                          "--client-cert",    "/all.pem",          NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.socks5_count, 2);
    CU_ASSERT_STRING_EQUAL(cfg.socks5[0].host, "127.0.0.1");
    CU_ASSERT_EQUAL(cfg.socks5[0].port, 1080);
    CU_ASSERT_STRING_EQUAL(cfg.socks5[1].host, "::1");
    CU_ASSERT_EQUAL(cfg.socks5[1].port, 0);
    CU_ASSERT_STRING_EQUAL(cfg.proxy_auth, "u:p");
    CU_ASSERT_STRING_EQUAL(cfg.upstream_proxy, "http://proxy:3128");
    CU_ASSERT_EQUAL(cfg.upstream_proxy_ignore_count, 1);
    CU_ASSERT_STRING_EQUAL(cfg.upstream_proxy_ignore[0], "*.corp");
    CU_ASSERT_EQUAL(cfg.client_cert_count, 2);
    CU_ASSERT_STRING_EQUAL(cfg.client_certs[1], "/all.pem");
    config_free(&cfg);

    const char *both[] = {"--proxy-auth", "u:p", "--proxy-auth-file", "/f", NULL};
    CU_ASSERT_EQUAL(parse(&cfg, both), CONFIG_ERROR);
    config_free(&cfg);
    const char *bad_socks[] = {"--socks5", "1080", NULL};
    CU_ASSERT_EQUAL(parse(&cfg, bad_socks), CONFIG_ERROR);
    config_free(&cfg);
}

static void test_transparent_and_reverse_options(void)
{
    struct config cfg;
    const char *args[] = {"--transparent",       "127.0.0.1:8082",
                          "--transparent",       "[::1]:0",
                          "--reverse",           "127.0.0.1:8443=http://origin.test",
                          "--reverse",           "https://[::1]:0=https://Origin.test:8443/api/",
                          "--reverse-forwarded", NULL};
    CU_ASSERT_EQUAL_FATAL(parse(&cfg, args), CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.transparent_count, 2);
    CU_ASSERT_STRING_EQUAL(cfg.transparent[0].host, "127.0.0.1");
    CU_ASSERT_EQUAL(cfg.transparent[0].port, 8082);
    CU_ASSERT_STRING_EQUAL(cfg.transparent[1].host, "::1");
    CU_ASSERT_EQUAL(cfg.reverse_count, 2);
    CU_ASSERT_FALSE(cfg.reverse[0].is_tls_listener);
    CU_ASSERT_STRING_EQUAL(cfg.reverse[0].listen_host, "127.0.0.1");
    CU_ASSERT_EQUAL(cfg.reverse[0].listen_port, 8443);
    CU_ASSERT_FALSE(cfg.reverse[0].is_tls);
    CU_ASSERT_STRING_EQUAL(cfg.reverse[0].authority, "origin.test");
    CU_ASSERT_EQUAL(cfg.reverse[0].port, 80);
    CU_ASSERT_TRUE(cfg.reverse[1].is_tls_listener);
    CU_ASSERT_STRING_EQUAL(cfg.reverse[1].listen_host, "::1");
    CU_ASSERT_TRUE(cfg.reverse[1].is_tls);
    CU_ASSERT_EQUAL(cfg.reverse[1].port, 8443);
    CU_ASSERT_STRING_EQUAL(cfg.reverse[1].prefix, "/api");
    CU_ASSERT_TRUE(cfg.is_reverse_forwarded);
    config_free(&cfg);

    const char *bad[][3] = {
        {"--transparent", "8082", NULL},
        {"--reverse", "127.0.0.1:8443", NULL},
        {"--reverse", "8443=http://origin.test", NULL},
        {"--reverse", "127.0.0.1:8443=ftp://origin.test", NULL},
        {"--reverse", "127.0.0.1:8443=http://origin.test/a?b", NULL},
        {"--reverse", "127.0.0.1:8443=http://u:p@origin.test", NULL},
        {"--reverse", "127.0.0.1:8443=origin.test", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(parse(&cfg, bad[i]), CONFIG_ERROR);
        config_free(&cfg);
    }
}

static void test_rejects_bad_values(void)
{
    struct config cfg;
    const char *bad[][3] = {
        {"--listen", "8080", NULL},       {"--listen", "::1:80", NULL},
        {"--listen", "host:99999", NULL}, {"--listen", "host:", NULL},
        {"--max-connections", "0", NULL}, {"--max-connections", "12x", NULL},
        {"--idle-timeout", "-5", NULL},   {"--nonsense", NULL, NULL},
        {"extra-argument", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(parse(&cfg, bad[i]), CONFIG_ERROR);
        config_free(&cfg);
    }
}

static void test_help_and_version_exit_successfully(void)
{
    struct config cfg;
    const char *h[] = {"--help", NULL};
    const char *v[] = {"--version", NULL};
    CU_ASSERT_EQUAL(parse(&cfg, h), CONFIG_EXIT_SUCCESS);
    config_free(&cfg);
    CU_ASSERT_EQUAL(parse(&cfg, v), CONFIG_EXIT_SUCCESS);
    config_free(&cfg);
}

static void test_hostport_forms(void)
{
    char host[64];
    uint16_t port;
    CU_ASSERT_EQUAL(config_parse_hostport("example.org:443", host, sizeof(host), &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "example.org");
    CU_ASSERT_EQUAL(port, 443);
    CU_ASSERT_EQUAL(config_parse_hostport("[2001:db8::1]:8443", host, sizeof(host), &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "2001:db8::1");
    CU_ASSERT_EQUAL(port, 8443);
    CU_ASSERT_EQUAL(config_parse_hostport(":80", host, sizeof(host), &port), -1);
    CU_ASSERT_EQUAL(config_parse_hostport("a:+80", host, sizeof(host), &port), -1);
    CU_ASSERT_EQUAL(config_parse_hostport("[::1:80", host, sizeof(host), &port), -1);
}

/* Everyone may write a world-writable directory: the CA files in it could
 * be anyone's, so tapwire refuses to start rather than warn. */
static void test_world_writable_data_dir_is_refused(void)
{
    char base[] = "/tmp/tapwire-config-XXXXXX";
    char err[512] = "";

    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(base));
    CU_ASSERT_FATAL(chmod(base, 0777) == 0);
    CU_ASSERT_EQUAL(config_prepare_data_dir(base, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, base));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "writable by every user"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "chmod 700"));
    /* Readable by others only: still accepted (with a warning). */
    CU_ASSERT_FATAL(chmod(base, 0755) == 0);
    CU_ASSERT_EQUAL(config_prepare_data_dir(base, err, sizeof(err)), 0);
    rmdir(base);
}

static void test_data_dir_is_created_private(void)
{
    char base[] = "/tmp/tapwire-config-XXXXXX";
    char path[256], err[256];
    struct stat st;
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(base));
    snprintf(path, sizeof(path), "%s/a/b/tapwire", base);
    CU_ASSERT_EQUAL(config_prepare_data_dir(path, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_TRUE(S_ISDIR(st.st_mode));
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
    /* A file where the directory should be is an error. */
    char file[300];
    snprintf(file, sizeof(file), "%s/file", base);
    FILE *f = fopen(file, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fclose(f);
    CU_ASSERT_EQUAL(config_prepare_data_dir(file, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a directory"));
    unlink(file);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/a/b", base);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/a", base);
    rmdir(path);
    rmdir(base);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("config", NULL, NULL);
    if (!s ||
        !CU_add_test(s, "defaults listen on loopback 8080",
                     test_defaults_listen_on_loopback_8080) ||
        !CU_add_test(s, "data dir falls back to HOME", test_data_dir_falls_back_to_home) ||
        !CU_add_test(s, "parses every option", test_parses_every_option) ||
        !CU_add_test(s, "rejects bad values", test_rejects_bad_values) ||
        !CU_add_test(s, "--rewrite-memory", test_rewrite_memory_option) ||
        !CU_add_test(s, "capture and dashboard options", test_capture_and_dashboard_options) ||
        !CU_add_test(s, "retention options and their units",
                     test_retention_options_and_their_units) ||
        !CU_add_test(s, "help and version exit successfully",
                     test_help_and_version_exit_successfully) ||
        !CU_add_test(s, "host:port forms", test_hostport_forms) ||
        !CU_add_test(s, "options of the proxy modes", test_proxy_modes_options) ||
        !CU_add_test(s, "--transparent and --reverse", test_transparent_and_reverse_options) ||
        !CU_add_test(s, "data dir is created private", test_data_dir_is_created_private) ||
        !CU_add_test(s, "world-writable data dir is refused",
                     test_world_writable_data_dir_is_refused)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
