/* Audit log writer and verifier. The hash of a record covers the exact bytes
 * of its line before `,"hash":`, so verification needs no JSON
 * canonicalisation: any reader can recompute it from the raw line. Each
 * record's "prev" is the previous record's "hash"; the first record of a
 * chain has 64 zeros. */
#include "core/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/privacy.h"

#define ALG_PLAIN "sha256"
#define ALG_KEYED "hmac-sha256"
#define HASH_KEY ",\"hash\":\""
/* `,"hash":"` + 64 hex + `"}` */
#define HASH_SUFFIX_LEN (sizeof HASH_KEY - 1 + AUDIT_HASH_HEX + 2)

static const char zero_hash[AUDIT_HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static const char *const reserved_keys[] = {"seq",  "ts",   "event",     "alg",
                                            "prev", "hash", "prev_file", NULL};

struct audit {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t syncer;
    bool syncer_running, stop, dirty;
    int fd;
    char *path;
    off_t size; /* bytes we know are in the file */
    unsigned char key[AUDIT_MAX_KEY];
    size_t keylen;
    uint64_t seq;
    char last_hash[AUDIT_HASH_HEX + 1];
    char prev_file[256]; /* for the next record, when set */
    bool have_prev_file;
    int sync_error;
};

/* ---- hashing ---- */

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int record_hash(const unsigned char *key, size_t keylen, const char *data, size_t len,
                       char out[AUDIT_HASH_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (key) {
        if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, len, md, &mdlen))
            return -1;
    } else if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        return -1;
    }
    to_hex(md, mdlen, out);
    return 0;
}

static bool is_hex64(const char *s, size_t n)
{
    if (n != AUDIT_HASH_HEX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Splits a line (without its '\n') into the hashed prefix and the stored
 * hash. Returns the prefix length, or 0 when the line does not end with the
 * hash field. */
static size_t split_hash(const char *line, size_t len, const char **hash)
{
    if (len < HASH_SUFFIX_LEN + 1)
        return 0;
    size_t at = len - HASH_SUFFIX_LEN;
    if (memcmp(line + at, HASH_KEY, sizeof HASH_KEY - 1) != 0 || line[len - 2] != '"' ||
        line[len - 1] != '}')
        return 0;
    *hash = line + at + sizeof HASH_KEY - 1;
    if (!is_hex64(*hash, AUDIT_HASH_HEX))
        return 0;
    return at;
}

/* ---- writer ---- */

static void now_rfc3339(char *buf, size_t n)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec / 1000);
}

static void *syncer_main(void *arg)
{
    struct audit *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->dirty && !a->stop)
            pthread_cond_wait(&a->cond, &a->mu);
        if (!a->dirty && a->stop)
            break;
        /* Sync a duplicate outside the lock so appends never wait for the
         * disk; records appended meanwhile are caught by the next round. */
        int fd = dup(a->fd);
        a->dirty = false;
        pthread_mutex_unlock(&a->mu);
        int rc = fd >= 0 && fdatasync(fd) == 0 ? 0 : errno;
        if (fd >= 0)
            close(fd);
        pthread_mutex_lock(&a->mu);
        if (rc)
            a->sync_error = rc;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Reads the last whole record of fd (size bytes long) into seq/hash/alg.
 * Cuts a torn tail when `repair`. Returns 1 when a record was found, 0 for
 * an empty file, -1 with err. *dropped gets the bytes cut. */
static int read_tail(int fd, const char *path, off_t size, bool repair, const unsigned char *key,
                     size_t keylen, uint64_t *seq, char hash[AUDIT_HASH_HEX + 1], off_t *newsize,
                     size_t *dropped, char *err, size_t errlen)
{
    *dropped = 0;
    *newsize = size;
    if (size == 0)
        return 0;
    size_t want = size > 2 * AUDIT_MAX_RECORD ? 2 * AUDIT_MAX_RECORD : (size_t)size;
    char *buf = malloc(want);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    off_t start = size - (off_t)want;
    ssize_t got = pread(fd, buf, want, start);
    if (got != (ssize_t)want) {
        snprintf(err, errlen, "%s: cannot read the last record: %s", path,
                 got < 0 ? strerror(errno) : "short read");
        free(buf);
        return -1;
    }
    size_t end = want;
    if (buf[end - 1] != '\n') {
        char *nl = memrchr(buf, '\n', end);
        size_t keep = nl ? (size_t)(nl - buf) + 1 : 0;
        if (!nl && start > 0) {
            snprintf(err, errlen, "%s: last record is longer than %d bytes", path,
                     AUDIT_MAX_RECORD);
            free(buf);
            return -1;
        }
        *dropped = end - keep;
        end = keep;
        *newsize = start + (off_t)keep;
        if (repair && ftruncate(fd, *newsize) != 0) {
            snprintf(err, errlen, "%s: cannot cut a torn last record: %s", path, strerror(errno));
            free(buf);
            return -1;
        }
    }
    if (end == 0) {
        free(buf);
        return 0;
    }
    char *ls = memrchr(buf, '\n', end - 1);
    size_t lstart = ls ? (size_t)(ls - buf) + 1 : 0;
    if (!ls && start > 0) {
        snprintf(err, errlen, "%s: last record is longer than %d bytes", path, AUDIT_MAX_RECORD);
        free(buf);
        return -1;
    }
    const char *line = buf + lstart;
    size_t llen = end - 1 - lstart;
    const char *stored = NULL;
    size_t plen = split_hash(line, llen, &stored);
    json_error_t jerr;
    json_t *o = plen ? json_loadb(line, llen, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    json_t *jseq = o ? json_object_get(o, "seq") : NULL;
    const char *alg = o ? json_string_value(json_object_get(o, "alg")) : NULL;
    if (!jseq || !json_is_integer(jseq) || json_integer_value(jseq) < 1 || !alg) {
        snprintf(err, errlen,
                 "%s: the last record is not an audit record; check the file with "
                 "`sluice audit verify %s`",
                 path, path);
        json_decref(o);
        free(buf);
        return -1;
    }
    if (strcmp(alg, key ? ALG_KEYED : ALG_PLAIN) != 0) {
        snprintf(err, errlen,
                 "%s: chain uses %s but the configuration asks for %s; move the file aside to "
                 "start a new chain",
                 path, alg, key ? ALG_KEYED : ALG_PLAIN);
        json_decref(o);
        free(buf);
        return -1;
    }
    char calc[AUDIT_HASH_HEX + 1];
    if (record_hash(key, keylen, line, plen, calc) != 0 ||
        memcmp(calc, stored, AUDIT_HASH_HEX) != 0) {
        snprintf(err, errlen,
                 "%s: the last record does not verify%s; check the file with "
                 "`sluice audit verify %s`",
                 path, key ? " with the configured key" : "", path);
        json_decref(o);
        free(buf);
        return -1;
    }
    *seq = (uint64_t)json_integer_value(jseq);
    memcpy(hash, stored, AUDIT_HASH_HEX);
    hash[AUDIT_HASH_HEX] = '\0';
    json_decref(o);
    free(buf);
    return 1;
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* Continues the chain from whatever `path` holds; fd is open on it. An empty
 * file takes the chain from "<path>.1" when that exists. */
static int resume(struct audit *a, size_t *dropped, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(a->fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", a->path, strerror(errno));
        return -1;
    }
    int rfd = open(a->path, O_RDWR | O_CLOEXEC);
    if (rfd < 0) {
        snprintf(err, errlen, "%s: %s", a->path, strerror(errno));
        return -1;
    }
    off_t newsize = 0;
    const unsigned char *key = a->keylen ? a->key : NULL;
    int rc = read_tail(rfd, a->path, st.st_size, true, key, a->keylen, &a->seq, a->last_hash,
                       &newsize, dropped, err, errlen);
    close(rfd);
    if (rc < 0)
        return -1;
    a->size = newsize;
    if (rc == 1)
        return 0;

    /* Empty: continue the rotated predecessor when there is one. */
    a->seq = 0;
    memcpy(a->last_hash, zero_hash, sizeof zero_hash);
    char old[4096];
    snprintf(old, sizeof old, "%s.1", a->path);
    int ofd = open(old, O_RDONLY | O_CLOEXEC);
    if (ofd < 0)
        return 0;
    struct stat ost;
    uint64_t oseq = 0;
    char ohash[AUDIT_HASH_HEX + 1];
    size_t odropped = 0;
    char oerr[256];
    if (fstat(ofd, &ost) == 0 && read_tail(ofd, old, ost.st_size, false, key, a->keylen, &oseq,
                                           ohash, &newsize, &odropped, oerr, sizeof oerr) == 1) {
        a->seq = oseq;
        memcpy(a->last_hash, ohash, sizeof ohash);
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", old);
        snprintf(a->prev_file, sizeof a->prev_file, "%s", basename(tmp));
        a->have_prev_file = true;
    }
    close(ofd);
    return 0;
}

/* Notices logrotate: the path now names another file (renamed, then a new
 * one created) or none, or our file was truncated in place (copytruncate).
 * Called with the lock held. */
static int follow_rotation(struct audit *a)
{
    struct stat cur, ours;
    if (fstat(a->fd, &ours) != 0)
        return -errno;
    bool renamed =
        stat(a->path, &cur) != 0 || cur.st_ino != ours.st_ino || cur.st_dev != ours.st_dev;
    if (!renamed) {
        if (ours.st_size < a->size) {
            /* Copied elsewhere and truncated: the copy's name is unknown. */
            a->size = ours.st_size;
            a->prev_file[0] = '\0';
            a->have_prev_file = true;
        }
        return 0;
    }
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", a->fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    fdatasync(a->fd);
    int fd = open_file(a->path);
    if (fd < 0)
        return -errno;
    close(a->fd);
    a->fd = fd;
    a->size = 0;
    size_t dropped = 0;
    char err[256];
    struct stat nst;
    if (fstat(fd, &nst) == 0 && nst.st_size > 0) {
        /* Someone else already started the new file; continue its chain. */
        if (resume(a, &dropped, err, sizeof err) != 0)
            return -EIO;
        return 0;
    }
    snprintf(a->prev_file, sizeof a->prev_file, "%s", n > 0 ? basename(target) : "");
    a->have_prev_file = true;
    return 0;
}

static bool reserved(const char *key)
{
    for (int i = 0; reserved_keys[i]; i++)
        if (strcmp(key, reserved_keys[i]) == 0)
            return true;
    return false;
}

static int append_locked(struct audit *a, const char *event, json_t *fields)
{
    int rc = follow_rotation(a);
    if (rc < 0)
        return rc;
    char ts[64];
    now_rfc3339(ts, sizeof ts);
    json_t *o = json_object();
    if (!o)
        return -ENOMEM;
    json_object_set_new(o, "seq", json_integer((json_int_t)(a->seq + 1)));
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "event", json_string(event));
    json_object_set_new(o, "alg", json_string(a->keylen ? ALG_KEYED : ALG_PLAIN));
    json_object_set_new(o, "prev", json_string(a->last_hash));
    if (a->have_prev_file)
        json_object_set_new(o, "prev_file", json_string(a->prev_file));
    const char *k;
    json_t *val;
    json_object_foreach(fields, k, val)
    {
        json_object_set(o, k, val);
    }
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!body)
        return -EINVAL;
    size_t blen = strlen(body);
    if (blen < 2 || body[blen - 1] != '}' || blen - 1 + HASH_SUFFIX_LEN + 1 > AUDIT_MAX_RECORD) {
        free(body);
        return -E2BIG;
    }
    /* line = body without its '}' + ,"hash":"<hex>"} + '\n' */
    size_t plen = blen - 1;
    char *line = realloc(body, plen + HASH_SUFFIX_LEN + 2);
    if (!line) {
        free(body);
        return -ENOMEM;
    }
    char hash[AUDIT_HASH_HEX + 1];
    if (record_hash(a->keylen ? a->key : NULL, a->keylen, line, plen, hash) != 0) {
        free(line);
        return -EIO;
    }
    size_t len = plen;
    memcpy(line + len, HASH_KEY, sizeof HASH_KEY - 1);
    len += sizeof HASH_KEY - 1;
    memcpy(line + len, hash, AUDIT_HASH_HEX);
    len += AUDIT_HASH_HEX;
    memcpy(line + len, "\"}\n", 3);
    len += 3;

    ssize_t w;
    do
        w = write(a->fd, line, len);
    while (w < 0 && errno == EINTR);
    free(line);
    if (w != (ssize_t)len) {
        int e = w < 0 ? errno : ENOSPC;
        /* Never leave half a record for the next one to follow. */
        if (w > 0 && ftruncate(a->fd, a->size) != 0)
            e = errno;
        return -e;
    }
    a->size += (off_t)len;
    a->seq++;
    memcpy(a->last_hash, hash, sizeof hash);
    a->have_prev_file = false;
    a->dirty = true;
    pthread_cond_signal(&a->cond);
    return 0;
}

int audit_append(struct audit *a, const char *event, json_t *fields)
{
    if (fields && !json_is_object(fields)) {
        json_decref(fields);
        return -EINVAL;
    }
    const char *k;
    json_t *val;
    json_object_foreach(fields, k, val)
    {
        if (reserved(k)) {
            json_decref(fields);
            return -EINVAL;
        }
    }
    pthread_mutex_lock(&a->mu);
    int rc = append_locked(a, event, fields);
    pthread_mutex_unlock(&a->mu);
    json_decref(fields);
    return rc;
}

int audit_sync(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    int rc = fdatasync(a->fd) == 0 ? 0 : -errno;
    if (rc == 0 && a->sync_error) {
        rc = -a->sync_error;
        a->sync_error = 0;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

uint64_t audit_seq(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t seq = a->seq;
    pthread_mutex_unlock(&a->mu);
    return seq;
}

struct audit *audit_open(const char *path, const char *key_file, char *err, size_t errlen)
{
    struct audit *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->fd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cond, NULL);
    a->path = strdup(path);
    if (!a->path) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (key_file && *key_file &&
        privacy_read_secret(key_file, a->key, sizeof a->key, &a->keylen, err, errlen) != 0)
        goto fail;
    a->fd = open_file(path);
    if (a->fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    size_t dropped = 0;
    if (resume(a, &dropped, err, errlen) != 0)
        goto fail;
    if (pthread_create(&a->syncer, NULL, syncer_main, a) != 0) {
        snprintf(err, errlen, "cannot start the audit sync thread");
        goto fail;
    }
    a->syncer_running = true;
    if (dropped) {
        json_t *f = json_pack("{s:I}", "dropped_bytes", (json_int_t)dropped);
        if (audit_append(a, "audit.torn_tail_cut", f) != 0) {
            snprintf(err, errlen, "%s: cannot append", path);
            goto fail;
        }
    }
    return a;
fail:
    audit_close(a);
    return NULL;
}

void audit_close(struct audit *a)
{
    if (!a)
        return;
    if (a->syncer_running) {
        pthread_mutex_lock(&a->mu);
        a->stop = true;
        pthread_cond_signal(&a->cond);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->syncer, NULL);
    }
    if (a->fd >= 0) {
        fdatasync(a->fd);
        close(a->fd);
    }
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
    OPENSSL_cleanse(a->key, sizeof a->key);
    free(a->path);
    free(a);
}

/* ---- verifier ---- */

const char *audit_problem_name(enum audit_problem p)
{
    switch (p) {
    case AUDIT_OK:
        return "ok";
    case AUDIT_BAD_JSON:
        return "bad_json";
    case AUDIT_EDITED:
        return "edited";
    case AUDIT_REMOVED:
        return "removed";
    case AUDIT_REORDERED:
        return "reordered";
    case AUDIT_TRUNCATED:
        return "truncated";
    case AUDIT_BROKEN_LINK:
        return "broken_link";
    case AUDIT_KEY_NEEDED:
        return "key_mismatch";
    case AUDIT_IO_ERROR:
        return "io_error";
    }
    return "unknown";
}

void audit_verify_init(struct audit_verify *v, const unsigned char *key, size_t keylen)
{
    memset(v, 0, sizeof *v);
    v->key = keylen ? key : NULL;
    v->keylen = keylen;
    v->seq = -1;
    memcpy(v->last_hash, zero_hash, sizeof zero_hash);
}

#if defined(__GNUC__)
__attribute__((format(printf, 6, 7)))
#endif
static int
fail(struct audit_verify *v, enum audit_problem p, const char *name, unsigned long line,
     long long seq, const char *fmt, ...)
{
    v->problem = p;
    snprintf(v->file, sizeof v->file, "%s", name);
    v->line = line;
    v->seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->detail, sizeof v->detail, fmt, ap);
    va_end(ap);
    return -1;
}

/* The seq of the line starting at p (up to end), or -1. Used only to tell a
 * swap from a removal once something is already wrong. */
static long long peek_seq(const char *p, const char *end)
{
    if (p >= end)
        return -1;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    json_error_t jerr;
    json_t *o = json_loadb(p, len, 0, &jerr);
    json_t *s = o ? json_object_get(o, "seq") : NULL;
    long long seq = s && json_is_integer(s) ? (long long)json_integer_value(s) : -1;
    json_decref(o);
    return seq;
}

int audit_verify_buf(struct audit_verify *v, const char *name, const char *buf, size_t len)
{
    if (v->problem != AUDIT_OK)
        return -1;
    const char *p = buf, *end = buf + len;
    unsigned long lineno = 0;
    while (p < end) {
        lineno++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return fail(v, AUDIT_TRUNCATED, name, lineno, -1,
                        "last line has no end of line: the file was cut short (%zu bytes)",
                        (size_t)(end - p));
        size_t llen = (size_t)(nl - p);
        const char *line = p;
        p = nl + 1;

        json_error_t jerr;
        json_t *o = json_loadb(line, llen, JSON_REJECT_DUPLICATES, &jerr);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            return fail(v, AUDIT_BAD_JSON, name, lineno, -1, "not a JSON object: %s",
                        llen ? jerr.text : "empty line");
        }
        json_t *jseq = json_object_get(o, "seq");
        const char *prev = json_string_value(json_object_get(o, "prev"));
        const char *alg = json_string_value(json_object_get(o, "alg"));
        json_t *pf = json_object_get(o, "prev_file");
        long long seq = jseq && json_is_integer(jseq) ? (long long)json_integer_value(jseq) : -1;
        const char *stored = NULL;
        size_t plen = split_hash(line, llen, &stored);
        const char *missing = seq < 1                                        ? "seq"
                              : !json_is_string(json_object_get(o, "ts"))    ? "ts"
                              : !json_is_string(json_object_get(o, "event")) ? "event"
                              : !alg                                         ? "alg"
                              : !prev || !is_hex64(prev, strlen(prev))       ? "prev"
                              : !plen                                        ? "hash (last)"
                                                                             : NULL;
        char prev_file[256] = "";
        if (json_is_string(pf))
            snprintf(prev_file, sizeof prev_file, "%s", json_string_value(pf));
        bool has_prev_file = pf != NULL;
        char prev_copy[AUDIT_HASH_HEX + 1] = "";
        if (prev && strlen(prev) == AUDIT_HASH_HEX)
            memcpy(prev_copy, prev, sizeof prev_copy);
        char alg_copy[32] = "";
        if (alg)
            snprintf(alg_copy, sizeof alg_copy, "%s", alg);
        json_decref(o);
        if (missing)
            return fail(v, AUDIT_BAD_JSON, name, lineno, seq, "missing or malformed field '%s'",
                        missing);

        bool keyed = strcmp(alg_copy, ALG_KEYED) == 0;
        if (!keyed && strcmp(alg_copy, ALG_PLAIN) != 0)
            return fail(v, AUDIT_BAD_JSON, name, lineno, seq, "unknown alg '%s'", alg_copy);
        if (keyed && !v->key)
            return fail(v, AUDIT_KEY_NEEDED, name, lineno, seq,
                        "record is keyed (hmac-sha256): give the key with --key-file");
        if (!keyed && v->key)
            return fail(v, AUDIT_KEY_NEEDED, name, lineno, seq,
                        "record is not keyed (sha256) though a key was given: a keyed chain "
                        "never contains plain records");

        char calc[AUDIT_HASH_HEX + 1];
        if (record_hash(v->key, v->keylen, line, plen, calc) != 0)
            return fail(v, AUDIT_IO_ERROR, name, lineno, seq, "hash computation failed");
        if (memcmp(calc, stored, AUDIT_HASH_HEX) != 0)
            return fail(v, AUDIT_EDITED, name, lineno, seq,
                        "hash does not match the record: content changed%s",
                        v->key ? " (or forged without the key, or the wrong key)" : "");

        long long expected = v->started ? (long long)v->last_seq + 1 : 1;
        bool free_start = !v->started && has_prev_file;
        if (!free_start && seq != expected) {
            long long next = peek_seq(p, end);
            if (seq > expected && next == expected)
                return fail(v, AUDIT_REORDERED, name, lineno, seq,
                            "seq %lld where %lld was expected; %lld follows: records swapped", seq,
                            expected, next);
            if (seq > expected && !v->started)
                return fail(v, AUDIT_REMOVED, name, lineno, seq,
                            "the chain starts at seq %lld without naming an earlier file: "
                            "records before it were removed (or give the earlier files first)",
                            seq);
            if (seq > expected)
                return fail(v, AUDIT_REMOVED, name, lineno, seq,
                            "seq %lld where %lld was expected: %lld record(s) removed before "
                            "this one",
                            seq, expected, seq - expected);
            return fail(v, AUDIT_REORDERED, name, lineno, seq,
                        "seq %lld after %lld: records out of order or repeated", seq, expected - 1);
        }
        if (!free_start && strcmp(prev_copy, v->last_hash) != 0) {
            if (!v->started)
                return fail(v, AUDIT_BROKEN_LINK, name, lineno, seq,
                            "first record of the chain must have prev of zeros");
            return fail(v, AUDIT_BROKEN_LINK, name, lineno, seq,
                        "prev does not match the hash of the previous record (seq %llu): that "
                        "record was rewritten, or this one was",
                        (unsigned long long)v->last_seq);
        }
        if (free_start) {
            snprintf(v->continues_from, sizeof v->continues_from, "%s",
                     prev_file[0] ? prev_file : "(unnamed earlier file)");
            v->first_seq = (uint64_t)seq;
        } else if (!v->started) {
            v->first_seq = 1;
        }
        v->started = true;
        v->last_seq = (uint64_t)seq;
        memcpy(v->last_hash, calc, sizeof calc);
        v->records++;
    }
    return 0;
}

int audit_verify_files(struct audit_verify *v, char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            if (fd >= 0)
                close(fd);
            return fail(v, AUDIT_IO_ERROR, paths[i], 0, -1, "%s", strerror(errno));
        }
        int rc = 0;
        if (st.st_size > 0) {
            void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m == MAP_FAILED) {
                rc = fail(v, AUDIT_IO_ERROR, paths[i], 0, -1, "%s", strerror(errno));
            } else {
                rc = audit_verify_buf(v, paths[i], m, (size_t)st.st_size);
                munmap(m, (size_t)st.st_size);
            }
        }
        close(fd);
        if (rc != 0)
            return rc;
    }
    return 0;
}
