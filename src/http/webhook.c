/* Webhook sender. The outbox is shared by all URLs; each URL has its own
 * sender thread (libcurl easy interface, blocking only that thread) and its
 * own cursor, so a slow or failing receiver never delays another, and events
 * reach each URL in the order they were emitted. When every cursor has
 * reached the end, the outbox is emptied. */
#include "http/webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/privacy.h"

#define OUTBOX_NAME "outbox.jsonl"
/* Empty the outbox once everything in it was delivered and it is this big. */
#define OUTBOX_COMPACT_BYTES (1u << 20)
#define MAX_EVENT (256u * 1024u)
#define MAX_SECRET 1024

struct sink {
    struct webhook *w;
    char *url;
    char host[256]; /* for log lines: URLs may carry tokens */
    char cursor_path[4096];
    off_t cursor;     /* offset of the next event to send; under w->mu */
    uint64_t pending; /* events from cursor to end; under w->mu */
    pthread_t thread;
    bool running;
    unsigned seed;
};

struct webhook {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* new event or stop */
    bool stop;
    int fd;
    off_t size;   /* bytes of whole events in the outbox */
    off_t synced; /* bytes known to be on disk */
    char id_prefix[17];
    uint64_t next_id;
    unsigned char secret[MAX_SECRET];
    size_t secretlen;
    struct webhook_options opt;
    struct sink *sinks;
    size_t n_sinks;
};

int webhook_signature(const unsigned char *secret, size_t secretlen, const char *timestamp,
                      const char *body, size_t bodylen, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    if (outlen < 7 + 64 + 1)
        return -1;
    size_t tlen = strlen(timestamp);
    unsigned char *msg = malloc(tlen + 1 + bodylen);
    if (!msg)
        return -1;
    memcpy(msg, timestamp, tlen);
    msg[tlen] = '.';
    memcpy(msg + tlen + 1, body, bodylen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    unsigned char *ok =
        HMAC(EVP_sha256(), secret, (int)secretlen, msg, tlen + 1 + bodylen, mac, &maclen);
    free(msg);
    if (!ok)
        return -1;
    memcpy(out, "sha256=", 7);
    for (unsigned i = 0; i < maclen; i++) {
        out[7 + 2 * i] = hex[mac[i] >> 4];
        out[7 + 2 * i + 1] = hex[mac[i] & 15];
    }
    out[7 + 2 * maclen] = '\0';
    return 0;
}

/* ---- cursor files ---- */

static off_t load_cursor(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    long long v = 0;
    if (fscanf(f, "%lld", &v) != 1 || v < 0)
        v = 0;
    fclose(f);
    return (off_t)v;
}

/* Replaced by rename, so a crash leaves the old or the new value. Not synced:
 * a lost update only re-sends events, which receivers dedupe. */
static int save_cursor(const char *path, off_t v)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -1;
    fprintf(f, "%lld\n", (long long)v);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

/* ---- sending ---- */

static size_t discard_body(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static int abort_on_stop(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    struct webhook *w = arg;
    pthread_mutex_lock(&w->mu);
    bool stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return stop ? 1 : 0;
}

/* POSTs one event; returns the HTTP status, or 0 when no answer came. */
static long post_event(struct sink *s, CURL *c, const char *body, size_t len, char *why,
                       size_t whylen)
{
    struct webhook *w = s->w;
    char ts[32], hdr_ts[64], hdr_sig[128], hdr_id[160], sig[80];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    snprintf(hdr_ts, sizeof hdr_ts, "X-Sluice-Timestamp: %s", ts);
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, hdr_ts);
    json_error_t jerr;
    json_t *ev = json_loadb(body, len, 0, &jerr);
    const char *id = ev ? json_string_value(json_object_get(ev, "id")) : NULL;
    if (id) {
        snprintf(hdr_id, sizeof hdr_id, "X-Sluice-Event-Id: %s", id);
        h = curl_slist_append(h, hdr_id);
    }
    json_decref(ev);
    if (w->secretlen &&
        webhook_signature(w->secret, w->secretlen, ts, body, len, sig, sizeof sig) == 0) {
        snprintf(hdr_sig, sizeof hdr_sig, "X-Sluice-Signature: %s", sig);
        h = curl_slist_append(h, hdr_sig);
    }
    /* The receiver answers the event, not a 100-continue handshake. */
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(why, whylen, "%s", curl_easy_strerror(rc));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    return status;
}

static CURL *make_handle(struct sink *s)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    curl_easy_setopt(c, CURLOPT_URL, s->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM timeouts */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)s->w->opt.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)s->w->opt.timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice-webhook/1");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, abort_on_stop);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s->w);
    return c;
}

/* Reads the event at off (below w->size, so stable) into a new buffer. */
static char *read_event(struct webhook *w, off_t off, off_t limit, size_t *len)
{
    size_t cap = 4096;
    char *buf = malloc(cap);
    size_t n = 0;
    while (buf) {
        size_t want = cap - n;
        if ((off_t)want > limit - off - (off_t)n)
            want = (size_t)(limit - off - (off_t)n);
        if (want == 0)
            break;
        ssize_t r = pread(w->fd, buf + n, want, off + (off_t)n);
        if (r <= 0)
            break;
        char *nl = memchr(buf + n, '\n', (size_t)r);
        n += (size_t)r;
        if (nl) {
            *len = (size_t)(nl - buf);
            return buf;
        }
        if (n == cap) {
            char *bigger = cap < 2 * MAX_EVENT ? realloc(buf, cap * 2) : NULL;
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
    }
    free(buf);
    return NULL;
}

/* Offset just past the line starting at off. */
static off_t skip_line(struct webhook *w, off_t off, off_t limit)
{
    char buf[4096];
    while (off < limit) {
        size_t want = limit - off < (off_t)sizeof buf ? (size_t)(limit - off) : sizeof buf;
        ssize_t r = pread(w->fd, buf, want, off);
        if (r <= 0)
            return limit;
        char *nl = memchr(buf, '\n', (size_t)r);
        if (nl)
            return off + (nl - buf) + 1;
        off += r;
    }
    return limit;
}

/* Called with w->mu held when this sink has caught up. */
static void compact_if_done(struct webhook *w)
{
    if (w->size < (off_t)OUTBOX_COMPACT_BYTES)
        return;
    for (size_t i = 0; i < w->n_sinks; i++)
        if (w->sinks[i].cursor != w->size)
            return;
    /* Cursors first: a crash in between re-sends (harmless), never skips. */
    for (size_t i = 0; i < w->n_sinks; i++)
        if (save_cursor(w->sinks[i].cursor_path, 0) != 0)
            return;
    if (ftruncate(w->fd, 0) != 0)
        return;
    for (size_t i = 0; i < w->n_sinks; i++)
        w->sinks[i].cursor = 0;
    w->size = 0;
    w->synced = 0;
}

static void wait_ms(struct webhook *w, unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    while (!w->stop && pthread_cond_timedwait(&w->cond, &w->mu, &t) != ETIMEDOUT) {
    }
}

static void *sink_main(void *arg)
{
    struct sink *s = arg;
    struct webhook *w = s->w;
    CURL *c = make_handle(s);
    unsigned backoff = w->opt.backoff_min_ms;
    unsigned attempt = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (s->cursor >= w->size) {
            compact_if_done(w);
            if (s->cursor >= w->size)
                pthread_cond_wait(&w->cond, &w->mu);
            continue;
        }
        off_t off = s->cursor, limit = w->size;
        bool need_sync = w->synced < limit;
        pthread_mutex_unlock(&w->mu);

        /* What a receiver has seen must not vanish in a power loss. */
        if (need_sync && fdatasync(w->fd) == 0) {
            pthread_mutex_lock(&w->mu);
            if (w->synced < limit)
                w->synced = limit;
            pthread_mutex_unlock(&w->mu);
        }
        size_t len = 0;
        char *ev = read_event(w, off, limit, &len);
        long status = 0;
        char why[CURL_ERROR_SIZE] = "";
        if (!ev) {
            /* Unreadable or oversized line: skip it rather than stall. */
            log_event(LOG_ERROR, "webhook.bad_event", "host", "%s", s->host, "offset", "#%lld",
                      (long long)off, NULL);
            len = 0;
            status = -1;
        } else if (c) {
            status = post_event(s, c, ev, len, why, sizeof why);
        } else {
            snprintf(why, sizeof why, "no HTTP client");
        }
        free(ev);

        pthread_mutex_lock(&w->mu);
        if (status == -1 || (status >= 200 && status < 300)) {
            off_t next = status == -1 ? skip_line(w, off, limit) : off + (off_t)len + 1;
            s->cursor = next;
            if (s->pending)
                s->pending--;
            save_cursor(s->cursor_path, next);
            backoff = w->opt.backoff_min_ms;
            attempt = 0;
            continue;
        }
        if (w->stop)
            break;
        attempt++;
        if (attempt == 1 || attempt % 10 == 0)
            log_event(LOG_WARN, "webhook.retry", "host", "%s", s->host, "status", "#%ld", status,
                      "error", "%s", why, "attempt", "#%u", attempt, NULL);
        /* Full jitter on the upper half keeps many relays from retrying in
         * lockstep against a receiver that comes back. */
        unsigned delay =
            backoff / 2 + (backoff > 1 ? (unsigned)rand_r(&s->seed) % (backoff / 2 + 1) : 0);
        wait_ms(w, delay);
        backoff = backoff > w->opt.backoff_max_ms / 2 ? w->opt.backoff_max_ms : backoff * 2;
    }
    pthread_mutex_unlock(&w->mu);
    if (c)
        curl_easy_cleanup(c);
    return NULL;
}

/* ---- setup ---- */

static void url_host(const char *url, char *out, size_t n)
{
    snprintf(out, n, "?");
    CURLU *u = curl_url();
    char *host = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        snprintf(out, n, "%s", host);
    curl_free(host);
    curl_url_cleanup(u);
}

static int add_sink(struct webhook *w, const char *url, size_t len, const char *state_dir,
                    char *err, size_t errlen)
{
    struct sink *v = realloc(w->sinks, (w->n_sinks + 1) * sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->sinks = v;
    struct sink *s = &w->sinks[w->n_sinks];
    memset(s, 0, sizeof *s);
    s->url = strndup(url, len);
    if (!s->url) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->n_sinks++;
    if (strncmp(s->url, "http://", 7) != 0 && strncmp(s->url, "https://", 8) != 0) {
        snprintf(err, errlen, "webhook URL '%s' must start with http:// or https://", s->url);
        return -1;
    }
    url_host(s->url, s->host, sizeof s->host);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(s->url, strlen(s->url), md, &mdlen, EVP_sha256(), NULL);
    snprintf(s->cursor_path, sizeof s->cursor_path, "%s/cursor-%02x%02x%02x%02x%02x%02x%02x%02x",
             state_dir, md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7]);
    s->w = w;
    return 0;
}

static uint64_t count_lines(int fd, off_t from, off_t to)
{
    char buf[65536];
    uint64_t n = 0;
    while (from < to) {
        size_t want = to - from < (off_t)sizeof buf ? (size_t)(to - from) : sizeof buf;
        ssize_t r = pread(fd, buf, want, from);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == '\n';
        from += r;
    }
    return n;
}

/* Cuts an event torn by a crash mid-write; the next one must start on a
 * line of its own. */
static off_t cut_torn_tail(int fd, off_t size)
{
    off_t end = size;
    char b;
    while (end > 0 && !(pread(fd, &b, 1, end - 1) == 1 && b == '\n'))
        end--;
    if (end != size && ftruncate(fd, end) != 0)
        return -1;
    return end;
}

struct webhook *webhook_open(const char *urls, const char *secret_file, const char *state_dir,
                             const struct webhook_options *opt, char *err, size_t errlen)
{
    if (!urls || !*urls) {
        snprintf(err, errlen, "no webhook URLs configured");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl initialisation failed");
        return NULL;
    }
    struct webhook *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    w->opt.backoff_min_ms = opt && opt->backoff_min_ms ? opt->backoff_min_ms : 1000;
    w->opt.backoff_max_ms = opt && opt->backoff_max_ms ? opt->backoff_max_ms : 300000;
    w->opt.timeout_ms = opt && opt->timeout_ms ? opt->timeout_ms : 10000;
    if (w->opt.backoff_max_ms < w->opt.backoff_min_ms)
        w->opt.backoff_max_ms = w->opt.backoff_min_ms;

    if (secret_file && *secret_file &&
        privacy_read_secret(secret_file, w->secret, sizeof w->secret, &w->secretlen, err, errlen) !=
            0)
        goto fail;
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", state_dir, strerror(errno));
        goto fail;
    }
    for (const char *p = urls; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (t > p && add_sink(w, p, (size_t)(t - p), state_dir, err, errlen) != 0)
            goto fail;
        p = e;
    }
    if (w->n_sinks == 0) {
        snprintf(err, errlen, "no webhook URLs configured");
        goto fail;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/%s", state_dir, OUTBOX_NAME);
    w->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (w->fd < 0 || fstat(w->fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    w->size = cut_torn_tail(w->fd, st.st_size);
    if (w->size < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    w->synced = 0;
    for (size_t i = 0; i < w->n_sinks; i++) {
        struct sink *s = &w->sinks[i];
        s->cursor = load_cursor(s->cursor_path);
        if (s->cursor > w->size)
            s->cursor = 0; /* outbox emptied after the cursor was written */
        s->pending = count_lines(w->fd, s->cursor, w->size);
    }

    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        snprintf(err, errlen, "no randomness for event ids");
        goto fail;
    }
    for (int i = 0; i < 8; i++)
        snprintf(w->id_prefix + 2 * i, 3, "%02x", rnd[i]);

    for (size_t i = 0; i < w->n_sinks; i++) {
        struct sink *s = &w->sinks[i];
        s->seed = (unsigned)rnd[i % 8] << 8 | (unsigned)i;
        if (pthread_create(&s->thread, NULL, sink_main, s) != 0) {
            snprintf(err, errlen, "cannot start a webhook thread");
            goto fail;
        }
        s->running = true;
    }
    return w;
fail:
    webhook_free(w);
    return NULL;
}

int webhook_emit(struct webhook *w, json_t *event)
{
    if (!json_is_object(event)) {
        json_decref(event);
        return -EINVAL;
    }
    pthread_mutex_lock(&w->mu);
    if (!json_object_get(event, "id")) {
        char id[64];
        snprintf(id, sizeof id, "%s-%llu", w->id_prefix, (unsigned long long)++w->next_id);
        json_object_set_new(event, "id", json_string(id));
    }
    if (!json_object_get(event, "ts")) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        char ts[64];
        snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (long)tv.tv_usec / 1000);
        json_object_set_new(event, "ts", json_string(ts));
    }
    char *s = json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(event);
    if (!s) {
        pthread_mutex_unlock(&w->mu);
        return -ENOMEM;
    }
    size_t len = strlen(s);
    if (len > MAX_EVENT) {
        free(s);
        pthread_mutex_unlock(&w->mu);
        return -E2BIG;
    }
    s[len] = '\n'; /* replaces the NUL; the buffer is not used as a string again */
    ssize_t r;
    do
        r = write(w->fd, s, len + 1);
    while (r < 0 && errno == EINTR);
    free(s);
    int rc = 0;
    if (r != (ssize_t)(len + 1)) {
        rc = r < 0 ? -errno : -ENOSPC;
        if (r > 0 && ftruncate(w->fd, w->size) != 0)
            rc = -errno;
    } else {
        w->size += (off_t)(len + 1);
        for (size_t i = 0; i < w->n_sinks; i++)
            w->sinks[i].pending++;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

uint64_t webhook_pending(struct webhook *w)
{
    uint64_t max = 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_sinks; i++)
        if (w->sinks[i].pending > max)
            max = w->sinks[i].pending;
    pthread_mutex_unlock(&w->mu);
    return max;
}

void webhook_free(struct webhook *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->n_sinks; i++) {
        if (w->sinks[i].running)
            pthread_join(w->sinks[i].thread, NULL);
        free(w->sinks[i].url);
    }
    free(w->sinks);
    if (w->fd >= 0)
        close(w->fd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    OPENSSL_cleanse(w->secret, sizeof w->secret);
    free(w);
}
