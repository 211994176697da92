/*
 * flowwrite: what the flow writer costs per flow, without a proxy around it.
 *
 * Submits N flows shaped like scenario 1's (an HTTPS GET of a 1 KiB file:
 * realistic request and response headers, a 1 KiB response body, the TLS
 * facts of both sides) to a fresh flow store, waits until the writer has
 * stored them all, and prints the process's CPU time per flow, the writer
 * thread's alone (tw-flowwriter, from /proc/self/task/TID/stat), and the
 * bytes and write calls the process made per flow (/proc/self/io: the WAL
 * and the checkpoints). The proxy's threads do none of the writer's work,
 * so it is the part of "capture cost" that batching, the schema and the row
 * layout decide; on a machine shared with load it is steadier than a
 * throughput difference.
 *
 *   flowwrite [--flows N] [--max-flows N] [--db FILE] [--json]
 *
 * --max-flows below --flows measures a full database, where every flow
 * written also prunes the oldest one.
 */
#include "flowstore.h"
#include "log.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of the thread named tw-flowwriter, in seconds; -1 when
 * there is none (or no /proc). */
static double writer_cpu_seconds(void)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *d;
    double seconds = -1;

    if (dir == NULL)
        return -1;
    while ((d = readdir(dir)) != NULL && seconds < 0) {
        char path[300], line[1024];
        unsigned long utime, stime;
        const char *p;
        FILE *f;

        if (d->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", d->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(line, sizeof(line), f) != NULL && strstr(line, "(tw-flowwriter)") != NULL &&
            (p = strrchr(line, ')')) != NULL &&
            /* After the name: state and 10 more fields, then utime, stime. */
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) ==
                2)
            seconds = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
        fclose(f);
    }
    closedir(dir);
    return seconds;
}

/* wchar and syscw of /proc/self/io: bytes passed to write calls, and the
 * calls. */
static void write_counts(unsigned long long *bytes, unsigned long long *calls)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];

    *bytes = *calls = 0;
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        sscanf(line, "wchar: %llu", bytes);
        sscanf(line, "syscw: %llu", calls);
    }
    fclose(f);
}

static double wall_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct flow *make_flow(long i, const unsigned char *body, size_t body_len)
{
    struct flow *f = flow_new(FLOWSTORE_DEFAULT_CAPTURE_LIMIT_BYTES);
    char target[64];
    int64_t now = (int64_t)time(NULL) * 1000000 + i;

    if (f == NULL)
        return NULL;
    snprintf(f->client_addr, sizeof(f->client_addr), "127.0.0.1:%ld", 40000 + i % 16);
    snprintf(f->scheme, sizeof(f->scheme), "https");
    snprintf(f->method, sizeof(f->method), "GET");
    snprintf(f->host, sizeof(f->host), "bench.test");
    f->port = 443;
    snprintf(target, sizeof(target), "/1k?n=%ld", i);
    f->target = strdup(target);
    f->request_version = 11;
    f->response_version = 11;
    f->request_headers = strdup("Host: bench.test:443\r\nUser-Agent: tapwire-loadgen\r\n"
                                "Accept: */*\r\nVia: 1.1 tapwire\r\n");
    f->response_headers = strdup("Server: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 14:00:00 GMT\r\n"
                                 "Content-Type: application/octet-stream\r\n"
                                 "Content-Length: 1024\r\n"
                                 "Last-Modified: Mon, 23 Nov 2026 13:59:00 GMT\r\n"
                                 "ETag: \"6573a1e4-400\"\r\nAccept-Ranges: bytes\r\n"
                                 "Via: 1.1 tapwire\r\n");
    flow_body_append(&f->response_body, body, body_len);
    f->status = 200;
    snprintf(f->reason, sizeof(f->reason), "OK");
    f->timings.start = now;
    f->timings.request_sent = now + 20;
    f->timings.first_byte = now + 300;
    f->timings.done = now + 320;
    f->is_tls = true;
    snprintf(f->tls.client_sni, sizeof(f->tls.client_sni), "bench.test");
    snprintf(f->tls.client_version, sizeof(f->tls.client_version), "TLSv1.3");
    snprintf(f->tls.client_cipher, sizeof(f->tls.client_cipher), "TLS_AES_256_GCM_SHA384");
    snprintf(f->tls.upstream_version, sizeof(f->tls.upstream_version), "TLSv1.3");
    snprintf(f->tls.upstream_cipher, sizeof(f->tls.upstream_cipher), "TLS_AES_256_GCM_SHA384");
    f->tls.cert_subject = strdup("CN=bench.test");
    f->tls.cert_issuer = strdup("CN=tapwire bench origin CA");
    f->tls.cert_sans = strdup("DNS:bench.test, DNS:*.bench.test");
    f->tls.cert_not_after = 1900000000;
    f->tls.verification = strdup("ok");
    if (f->target == NULL || f->request_headers == NULL || f->response_headers == NULL ||
        f->tls.cert_subject == NULL || f->tls.cert_issuer == NULL || f->tls.cert_sans == NULL ||
        f->tls.verification == NULL) {
        flow_free(f);
        return NULL;
    }
    return f;
}

int main(int argc, char **argv)
{
    long flows = 50000;
    long max_flows = FLOWSTORE_DEFAULT_MAX_FLOWS;
    const char *db_path = NULL;
    char tmpdir[] = "/tmp/flowwrite-XXXXXX";
    char path[256];
    bool json = false;
    struct flowstore *store = NULL;
    struct flowstore_stats stats;
    unsigned char body[1024];
    char err[512];
    int ret = 1;
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--flows") == 0 && i + 1 < argc)
            flows = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--max-flows") == 0 && i + 1 < argc)
            max_flows = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc)
            db_path = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else {
            fprintf(stderr, "usage: flowwrite [--flows N] [--max-flows N] [--db FILE] [--json]\n");
            return 2;
        }
    }
    if (flows <= 0)
        flows = 1;
    if (db_path == NULL) {
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(path, sizeof(path), "%s/flows.db", tmpdir);
        db_path = path;
    }
    log_init(2, LOG_ERROR); /* the queue overflowing is expected here */
    for (i = 0; i < (int)sizeof(body); i++)
        body[i] = (unsigned char)(i * 7 + 3);
    if (flowstore_open(db_path, max_flows, &store, err, sizeof(err)) != 0) {
        fprintf(stderr, "flowwrite: %s\n", err);
        goto out;
    }
    unsigned long long wbytes0, wcalls0, wbytes, wcalls;
    double wcpu0 = writer_cpu_seconds();
    /* The writer names itself once it runs. */
    for (i = 0; i < 1000 && wcpu0 < 0; i++) {
        usleep(1000);
        wcpu0 = writer_cpu_seconds();
    }
    write_counts(&wbytes0, &wcalls0);
    double cpu0 = cpu_seconds(), wall0 = wall_seconds();
    for (long n = 0; n < flows; n++) {
        struct flow *f = make_flow(n, body, sizeof(body));
        if (f == NULL) {
            fprintf(stderr, "flowwrite: out of memory\n");
            goto out;
        }
        /* Submit no faster than the writer drains, as a proxy under load
         * would: a full queue drops flows, and dropped flows cost nothing. */
        while (flowstore_submit(store, f) != 0) {
            usleep(1000);
            f = make_flow(n, body, sizeof(body));
            if (f == NULL)
                goto out;
        }
    }
    if (flowstore_sync(store, 600000) != 0) {
        fprintf(stderr, "flowwrite: the writer did not finish\n");
        goto out;
    }
    double cpu = cpu_seconds() - cpu0, wall = wall_seconds() - wall0;
    double wcpu = writer_cpu_seconds() - wcpu0;
    write_counts(&wbytes, &wcalls);
    wbytes -= wbytes0;
    wcalls -= wcalls0;
    flowstore_stats(store, &stats);
    if (json)
        printf("{\"flows\":%ld,\"written\":%llu,\"write_errors\":%llu,\"cpu_s\":%.3f,"
               "\"wall_s\":%.3f,\"cpu_us_per_flow\":%.2f,\"writer_cpu_us_per_flow\":%.2f,"
               "\"write_bytes_per_flow\":%.0f,\"write_calls_per_flow\":%.3f}\n",
               flows, (unsigned long long)stats.written, (unsigned long long)stats.write_errors,
               cpu, wall, cpu * 1e6 / (double)flows, wcpu * 1e6 / (double)flows,
               (double)wbytes / (double)flows, (double)wcalls / (double)flows);
    else
        printf("%ld flows (%llu written, %llu errors): %.2f us CPU per flow (submitting and "
               "writing), writer thread %.2f us, %.0f bytes in %.3f write calls per flow, "
               "%.0f flows/s\n",
               flows, (unsigned long long)stats.written, (unsigned long long)stats.write_errors,
               cpu * 1e6 / (double)flows, wcpu * 1e6 / (double)flows,
               (double)wbytes / (double)flows, (double)wcalls / (double)flows,
               (double)flows / wall);
    ret = stats.written == (unsigned long long)flows ? 0 : 1;
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
