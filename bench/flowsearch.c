/*
 * flowsearch: how fast the dashboard's text searches answer at N stored
 * flows, without a proxy or HTTP around them.
 *
 * Fills a fresh flow store with N flows (default 100,000) of a browsing
 * mix: 50 hosts, varied paths, realistic header sections, and for one flow
 * in four a small text body (JSON or HTML), one in twenty a binary one.
 * Then times flowstore_list() for the first page (100 flows, as the
 * dashboard asks) of a URL search and of a body search, each for text that
 * many flows have, text one flow in a thousand has, and text no flow has,
 * plus the unfiltered first page and filter expressions (filter=, a few
 * shapes). Each figure is the median of --runs runs
 * (and the slowest), in milliseconds, and the median CPU time of the
 * searching thread (steadier than the wall clock on a loaded machine).
 *
 *   flowsearch [--flows N] [--runs N] [--db FILE] [--json]
 *
 * With --db FILE and a FILE that already holds N flows the fill is
 * skipped, so several runs can share one fill.
 */
#include "codec.h"
#include "filter.h"
#include "flowstore.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE_FLOWS 100
#define MAX_RUNS 101

static double wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of the calling thread (where flowstore_list() runs): on a
 * machine shared with other load it moves less than the wall clock. */
static double thread_cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static struct flow *make_flow(long i)
{
    static const char *const words[] = {"users", "search", "static", "api",   "assets", "v2",
                                        "feed",  "items",  "img",    "login", "cart",   "news"};
    struct flow *f = flow_new(FLOWSTORE_DEFAULT_CAPTURE_LIMIT_BYTES);
    char text[512];
    int64_t now = (int64_t)time(NULL) * 1000000 + i;

    if (f == NULL)
        return NULL;
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:%ld", 40000 + i % 16);
    snprintf(f->scheme, sizeof(f->scheme), "https");
    snprintf(f->method, sizeof(f->method), i % 7 == 0 ? "POST" : "GET");
    snprintf(f->host, sizeof(f->host), "host%ld.example%ld.com", i % 50, i % 3);
    f->port = 443;
    /* One flow in a thousand has "rare-marker" in its URL. */
    snprintf(text, sizeof(text), "/%s/%s/%ld?page=%ld%s", words[i % 12], words[(i / 12) % 12],
             i * 7919 % 100003, i % 40, i % 1000 == 500 ? "&q=rare-marker" : "");
    f->target = strdup(text);
    f->request_version = 11;
    f->response_version = 11;
    snprintf(text, sizeof(text),
             "Host: %s\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
             "Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\n"
             "Cookie: session=%08lx%08lx\r\n",
             f->host, i * 2654435761UL % 0xffffffffUL, i);
    f->request_headers = strdup(text);
    snprintf(text, sizeof(text),
             "Server: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 14:00:00 GMT\r\n"
             "Content-Type: %s\r\nCache-Control: max-age=%ld\r\nETag: \"%lx-%lx\"\r\n",
             i % 4 == 0    ? "application/json"
             : i % 20 == 1 ? "image/png"
                           : "text/html",
             i % 3600, i, i * 31);
    f->response_headers = strdup(text);
    if (i % 4 == 0) {
        /* One body in a thousand of these has "body-rare-marker". */
        int n = snprintf(text, sizeof(text),
                         "{\"id\":%ld,\"name\":\"item %ld\",\"tags\":[\"%s\",\"%s\"],"
                         "\"note\":\"%s\"}",
                         i, i * 13, words[i % 12], words[(i / 5) % 12],
                         i % 4000 == 0 ? "body-rare-marker" : "nothing special");
        flow_body_append(&f->response_body, text, (size_t)n);
    } else if (i % 20 == 1) {
        unsigned char bin[256];
        size_t k;

        for (k = 0; k < sizeof(bin); k++)
            bin[k] = (unsigned char)(k * 37 + (size_t)i);
        flow_body_append(&f->response_body, bin, sizeof(bin));
    }
    f->status = i % 50 == 0 ? 404 : 200;
    snprintf(f->reason, sizeof(f->reason), f->status == 200 ? "OK" : "Not Found");
    f->timings.start = now;
    f->timings.done = now + 320;
    f->is_tls = true;
    if (f->target == NULL || f->request_headers == NULL || f->response_headers == NULL) {
        flow_free(f);
        return NULL;
    }
    return f;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

struct query {
    const char *name;
    const char *url_text;
    const char *body;
    const char *expr; /* a filter expression (tapwire-filters(7)), as the list's filter= */
};

/* Times runs first pages of q; prints the median and the slowest. */
static int time_query(struct flowstore *store, const struct query *q, int runs, bool json,
                      bool is_first)
{
    double times[MAX_RUNS], cpu[MAX_RUNS];
    size_t found = 0;
    char err[512];
    struct filter *expr = NULL;
    struct filter_sql expr_sql = {0};
    bool has_sql = false;
    int ret = -1;
    int r;

    if (q->expr != NULL) {
        if (filter_parse(q->expr, strlen(q->expr), &expr, err, sizeof(err)) != 0 ||
            filter_to_sql(expr, &expr_sql, err, sizeof(err)) != 0) {
            fprintf(stderr, "flowsearch: %s: %s\n", q->expr, err);
            goto out;
        }
        has_sql = true;
    }
    for (r = 0; r < runs; r++) {
        struct flowstore_filter f = {0};
        struct flowstore_record **records = NULL;
        size_t count = 0;
        double t0, c0;

        f.limit = PAGE_FLOWS;
        f.url_text = q->url_text;
        if (expr != NULL) {
            /* Parsed once, as the dashboard does per request: the list's time. */
            f.expr = expr;
            f.expr_sql = &expr_sql;
            f.expr_text = q->expr;
        }
        if (q->body != NULL) {
            f.body_bytes = q->body;
            f.body_len = strlen(q->body);
            f.is_body_nocase = true;
        }
        t0 = wall_ms();
        c0 = thread_cpu_ms();
        if (flowstore_list(store, &f, &records, &count, err, sizeof(err)) != 0) {
            fprintf(stderr, "flowsearch: %s\n", err);
            goto out;
        }
        times[r] = wall_ms() - t0;
        cpu[r] = thread_cpu_ms() - c0;
        found = count;
        flowstore_records_free(records, count);
    }
    qsort(times, (size_t)runs, sizeof(times[0]), cmp_double);
    qsort(cpu, (size_t)runs, sizeof(cpu[0]), cmp_double);
    if (json)
        printf("%s\"%s\":{\"found\":%zu,\"median_ms\":%.2f,\"max_ms\":%.2f,"
               "\"cpu_median_ms\":%.2f}",
               is_first ? "" : ",", q->name, found, times[runs / 2], times[runs - 1],
               cpu[runs / 2]);
    else
        printf("  %-22s %3zu found   median %8.2f ms   slowest %8.2f ms   CPU median %8.2f ms\n",
               q->name, found, times[runs / 2], times[runs - 1], cpu[runs / 2]);
    ret = 0;
out:
    if (has_sql)
        filter_sql_free(&expr_sql);
    filter_free(expr);
    return ret;
}

int main(int argc, char **argv)
{
    static const struct query queries[] = {
        {"first_page", NULL, NULL, NULL},
        {"url_common", "example1", NULL, NULL},
        {"url_rare", "rare-marker", NULL, NULL},
        {"url_none", "no-such-text", NULL, NULL},
        {"body_common", NULL, "nothing special", NULL},
        {"body_rare", NULL, "body-rare-marker", NULL},
        {"body_none", NULL, "no-such-text", NULL},
        /* Filter expressions: columns SQLite decides, URL text the search
         * index finds, a regex it cannot help (checked by filter_match(),
         * within FLOWSTORE_FILTER_SCAN_ROWS a segment), a header regex, and
         * one that matches nothing. */
        {"expr_columns", NULL, NULL, "~m POST & ~c 200 & ~d example1"},
        {"expr_url_word", NULL, NULL, "~u rare-marker & ~c 404"},
        {"expr_url_class", NULL, NULL, "~u 'rare-mark[e]r'"},
        {"expr_header", NULL, NULL, "~hs 'max-age=35[0-9][0-9]' & ~t json"},
        {"expr_none", NULL, NULL, "~d no-such-host & ~m GET"},
    };
    long flows = 100000;
    int runs = 15;
    const char *db_path = NULL;
    char tmpdir[] = "/tmp/flowsearch-XXXXXX";
    char path[256];
    bool json = false;
    struct flowstore *store = NULL;
    struct flowstore_stats stats;
    char err[512];
    double fill_ms = 0;
    size_t i;
    int ret = 1;

    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--flows") == 0 && a + 1 < argc)
            flows = strtol(argv[++a], NULL, 10);
        else if (strcmp(argv[a], "--runs") == 0 && a + 1 < argc)
            runs = atoi(argv[++a]);
        else if (strcmp(argv[a], "--db") == 0 && a + 1 < argc)
            db_path = argv[++a];
        else if (strcmp(argv[a], "--json") == 0)
            json = true;
        else {
            fprintf(stderr, "usage: flowsearch [--flows N] [--runs N] [--db FILE] [--json]\n");
            return 2;
        }
    }
    if (flows <= 0)
        flows = 1;
    if (runs < 1 || runs > MAX_RUNS)
        runs = 15;
    if (db_path == NULL) {
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(path, sizeof(path), "%s/flows.db", tmpdir);
        db_path = path;
    }
    log_init(2, LOG_ERROR);
    if (flowstore_open(db_path, flows, &store, err, sizeof(err)) != 0) {
        fprintf(stderr, "flowsearch: %s\n", err);
        goto out;
    }
    flowstore_set_body_decoder(store, codec_decode_content);
    flowstore_stats(store, &stats);
    if ((long)stats.stored < flows) {
        double t0 = wall_ms();

        for (long n = (long)stats.stored; n < flows; n++) {
            struct flow *f = make_flow(n);

            if (f == NULL)
                goto out;
            while (flowstore_submit(store, f) != 0) {
                usleep(1000);
                if ((f = make_flow(n)) == NULL)
                    goto out;
            }
        }
        if (flowstore_sync(store, 900000) != 0) {
            fprintf(stderr, "flowsearch: the writer did not finish\n");
            goto out;
        }
        fill_ms = wall_ms() - t0;
    }
    flowstore_stats(store, &stats);
    if (json)
        printf("{\"flows\":%llu,\"fill_s\":%.1f,\"runs\":%d,\"queries\":{",
               (unsigned long long)stats.stored, fill_ms / 1e3, runs);
    else
        printf("%llu flows stored (filled in %.1f s); first page of %d, %d runs each:\n",
               (unsigned long long)stats.stored, fill_ms / 1e3, PAGE_FLOWS, runs);
    for (i = 0; i < sizeof(queries) / sizeof(queries[0]); i++)
        if (time_query(store, &queries[i], runs, json, i == 0) != 0)
            goto out;
    if (json)
        printf("}}\n");
    ret = 0;
out:
    flowstore_close(store);
    if (db_path == path) {
        char side[300];

        unlink(path);
        snprintf(side, sizeof(side), "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", path);
        unlink(side);
        rmdir(tmpdir);
    }
    return ret;
}
