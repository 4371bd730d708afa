/* Structured event log. One line per event, written with a single write()
 * so concurrent threads never interleave within a line. */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 1;
static bool log_json = true;
static enum log_level log_min = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

bool log_wants(enum log_level level)
{
    return level >= log_min;
}

int log_open(const char *format, const char *path, const char *level)
{
    log_json = !(format && strcmp(format, "text") == 0);
    log_min = LOG_INFO;
    for (int i = 0; level && i < 4; i++)
        if (strcmp(level, level_names[i]) == 0)
            log_min = (enum log_level)i;
    if (path && *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
            return -1;
        if (log_fd > 2)
            close(log_fd);
        log_fd = fd;
    }
    return 0;
}

void log_close(void)
{
    if (log_fd > 2)
        close(log_fd);
    log_fd = 1;
}

struct line {
    char buf[4096];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_json_string(struct line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[6];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

void log_event(enum log_level level, const char *event, ...)
{
    if (level < log_min)
        return;
    struct line l = {.len = 0};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[96];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec / 1000);
    if (log_json) {
        put(&l, "{\"ts\":\"", 7);
        put(&l, ts, strlen(ts));
        put(&l, "\",\"level\":\"", 11);
        put(&l, level_names[level], strlen(level_names[level]));
        put(&l, "\",\"event\":", 10);
        put_json_string(&l, event);
    } else {
        put(&l, ts, strlen(ts));
        put(&l, " ", 1);
        put(&l, level_names[level], strlen(level_names[level]));
        put(&l, " ", 1);
        put(&l, event, strlen(event));
    }
    va_list ap;
    va_start(ap, event);
    const char *key;
    while ((key = va_arg(ap, const char *)) != NULL) {
        const char *fmt = va_arg(ap, const char *);
        bool raw = fmt[0] == '#';
        char val[1024];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        va_list cp;
        va_copy(cp, ap);
        vsnprintf(val, sizeof val, raw ? fmt + 1 : fmt, cp);
        va_end(cp);
#pragma GCC diagnostic pop
        /* vsnprintf consumed a copy; advance the real list by one argument
         * of the kind the format names. */
        const char *conv = strrchr(fmt, '%');
        if (conv && (strstr(conv, "lld") || strstr(conv, "llu") || strstr(conv, "llx")))
            (void)va_arg(ap, long long);
        else if (conv && (strstr(conv, "zu") || strstr(conv, "ld") || strstr(conv, "lu")))
            (void)va_arg(ap, long);
        else if (conv && (strchr(conv, 'f') || strchr(conv, 'g')))
            (void)va_arg(ap, double);
        else if (conv && strchr(conv, 's'))
            (void)va_arg(ap, const char *);
        else if (conv && strchr(conv, 'p'))
            (void)va_arg(ap, void *);
        else
            (void)va_arg(ap, int);
        if (log_json) {
            put(&l, ",", 1);
            put_json_string(&l, key);
            put(&l, ":", 1);
            if (raw)
                put(&l, val, strlen(val));
            else
                put_json_string(&l, val);
        } else {
            put(&l, " ", 1);
            put(&l, key, strlen(key));
            put(&l, "=", 1);
            put(&l, val, strlen(val));
        }
    }
    va_end(ap);
    if (log_json)
        put(&l, "}", 1);
    l.buf[l.len++] = '\n';
    ssize_t r;
    do
        r = write(log_fd, l.buf, l.len);
    while (r < 0 && errno == EINTR);
}
