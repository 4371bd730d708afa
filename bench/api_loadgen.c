/* sluice-api-loadgen: a load generator for the HTTPS submission API. -c
 * threads, each one TLS connection kept alive, posting the same JSON
 * message to /v1/messages one after another until -n messages were sent in
 * all or -d seconds passed. A message counts only on a 202 answer; its
 * latency runs from the first byte of the request to the end of the answer.
 * OpenSSL and pthreads only, no project code. Prints JSON with --json. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000

static struct {
    const char *host, *key, *path;
    int port, conc;
    long n, size;
    double secs;
    bool json;
} opt = {"127.0.0.1", NULL, "/v1/messages", 8443, 50, 10000, 10240, 0, false};

static SSL_CTX *ctx;
static char *request;
static size_t request_len;
static atomic_long started, accepted, failed;
static double *lat;
static atomic_long n_lat;
static double t_end;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static SSL *dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void hang_up(SSL *ssl)
{
    if (!ssl)
        return;
    int fd = SSL_get_fd(ssl);
    SSL_free(ssl);
    close(fd);
}

/* Reads one answer; returns its status, or -1 when the connection broke. */
static int read_answer(SSL *ssl, char *buf, size_t cap)
{
    size_t have = 0;
    char *end = NULL;
    while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
        if (have == cap)
            return -1;
        int k = SSL_read(ssl, buf + have, (int)(cap - have));
        if (k <= 0)
            return -1;
        have += (size_t)k;
    }
    int status = atoi(buf + 9);
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    size_t got = have - (size_t)(end + 4 - buf);
    while (got < body) {
        int k = SSL_read(ssl, buf, (int)cap);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return status;
}

static void *worker(void *arg)
{
    char buf[65536];
    SSL *ssl = NULL;
    for (;;) {
        if (opt.secs > 0 ? now() >= t_end : atomic_fetch_add(&started, 1) >= opt.n)
            break;
        if (!ssl && !(ssl = dial())) {
            atomic_fetch_add(&failed, 1);
            continue;
        }
        double t0 = now();
        int status = SSL_write(ssl, request, (int)request_len) == (int)request_len
                         ? read_answer(ssl, buf, sizeof buf)
                         : -1;
        if (status == 202) {
            atomic_fetch_add(&accepted, 1);
            long i = atomic_fetch_add(&n_lat, 1);
            if (i < MAX_SAMPLES)
                lat[i] = now() - t0;
        } else {
            atomic_fetch_add(&failed, 1);
            if (status < 0) {
                hang_up(ssl);
                ssl = NULL;
            }
        }
    }
    hang_up(ssl);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sluice-api-loadgen --key sk_... [--host H] [--port P] [--path P]\n"
            "         [-c CONCURRENCY] [-n MESSAGES | -d SECONDS] [--size BYTES] [--json]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"key", 1, 0, 'k'},  {"path", 1, 0, 'P'},
        {"size", 1, 0, 's'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "c:n:d:h", lo, NULL)) != -1) {
        switch (c) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'k':
            opt.key = optarg;
            break;
        case 'P':
            opt.path = optarg;
            break;
        case 's':
            opt.size = atol(optarg);
            break;
        case 'j':
            opt.json = true;
            break;
        case 'c':
            opt.conc = atoi(optarg);
            break;
        case 'n':
            opt.n = atol(optarg);
            break;
        case 'd':
            opt.secs = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (!opt.key || opt.conc < 1 || opt.conc > 4096 || opt.size < 1 || opt.size > 10000000)
        usage();
    /* a text body of --size octets in lines of 76, like the SMTP load; the
     * line breaks are JSON escapes */
    char *text = malloc((size_t)opt.size * 2 + 1), *w = text;
    for (long i = 0; i < opt.size; i++) {
        if (i % 77 == 76) {
            *w++ = '\\';
            *w++ = 'n';
        } else {
            *w++ = (char)('a' + i % 26);
        }
    }
    *w = '\0';
    size_t jl = (size_t)(w - text) + 512;
    char *json = malloc(jl);
    int bl = snprintf(json, jl,
                      "{\"from\":\"app@bench.test\",\"to\":[\"sink@bench.test\"],"
                      "\"subject\":\"bench\",\"text\":\"%s\"}",
                      text);
    request_len = (size_t)bl + 512;
    request = malloc(request_len);
    request_len = (size_t)snprintf(request, request_len,
                                   "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                                   "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                                   opt.path, opt.host, opt.key, bl, json);
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* loopback load, not a trust test */
    lat = calloc(MAX_SAMPLES, sizeof *lat);
    pthread_t *t = calloc((size_t)opt.conc, sizeof *t);
    double t0 = now();
    t_end = t0 + opt.secs;
    for (int i = 0; i < opt.conc; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < opt.conc; i++)
        pthread_join(t[i], NULL);
    double wall = now() - t0;
    long n = atomic_load(&n_lat) < MAX_SAMPLES ? atomic_load(&n_lat) : MAX_SAMPLES;
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    double p50 = n ? lat[n / 2] * 1000 : 0, p99 = n ? lat[n * 99 / 100] * 1000 : 0;
    long ok = atomic_load(&accepted), bad = atomic_load(&failed);
    if (opt.json)
        printf("{\"accepted\":%ld,\"failed\":%ld,\"wall_s\":%.4f,\"msg_per_s\":%.2f,"
               "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
               ok, bad, wall, ok / wall, p50, p99);
    else
        printf("accepted %ld, failed %ld in %.2f s: %.1f msg/s, p50 %.2f ms, p99 %.2f ms\n", ok,
               bad, wall, ok / wall, p50, p99);
    return bad && !ok ? 1 : 0;
}
