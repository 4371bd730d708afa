/* The sendmail outbox: one file per message that the relay could not take
 * yet, written crash-safe (tmp file, fsync, rename, fsync of the folder) so
 * that exit status 0 means the message is on disk. A flush holds an flock on
 * the folder, sends the oldest first and removes each file only after the
 * relay's 250: a kill -9 can repeat at most the one message in flight and
 * never loses one (docs/SENDMAIL.md). File format:
 *   "SLUICE-OUTBOX 1\n" "from ADDR\n" ("rcpt ADDR\n")+ "\n" then the message. */
#include "cli/cli.h"
#include "cli/sendmail.h"

#include "core/config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OUTBOX_MAGIC "SLUICE-OUTBOX 1\n"
#define OUTBOX_MAX (64L * 1024 * 1024)
/* A .tmp file older than this is left from a put that never returned. */
#define OUTBOX_STALE_TMP (24 * 3600)

static int mkdirs(const char *path)
{
    char tmp[4096];
    if (strlen(path) >= sizeof tmp)
        return errno = ENAMETOOLONG, -1;
    strcpy(tmp, path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

int sm_outbox_path(const struct config *cfg, char *out, size_t cap, char *err, size_t errlen)
{
    int n;
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    if (*cfg->sendmail_outbox_dir) {
        n = snprintf(out, cap, "%s", cfg->sendmail_outbox_dir);
    } else if (xdg && xdg[0] == '/') {
        n = snprintf(out, cap, "%s/sluice/outbox", xdg);
    } else {
        if (!home || home[0] != '/') {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home) {
            snprintf(err, errlen, "no home folder for the outbox: set [sendmail] outbox_dir");
            return -1;
        }
        n = snprintf(out, cap, "%s/.local/share/sluice/outbox", home);
    }
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errlen, "outbox path too long");
        return -1;
    }
    if (mkdirs(out) < 0) {
        snprintf(err, errlen, "outbox %s: %s", out, strerror(errno));
        return -1;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

char *sm_outbox_format(const struct sm_message *m, size_t *len)
{
    size_t n = strlen(OUTBOX_MAGIC) + strlen(m->from) + 7 + m->len + 1;
    if (strpbrk(m->from, "\r\n"))
        return NULL;
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (strpbrk(m->rcpts[i], "\r\n") || !m->rcpts[i][0])
            return NULL;
        n += strlen(m->rcpts[i]) + 6;
    }
    char *out = malloc(n + 1), *p = out;
    if (!out)
        return NULL;
    p += sprintf(p, "%sfrom %s\n", OUTBOX_MAGIC, m->from);
    for (size_t i = 0; i < m->nrcpts; i++)
        p += sprintf(p, "rcpt %s\n", m->rcpts[i]);
    *p++ = '\n';
    memcpy(p, m->data, m->len);
    p += m->len;
    *p = '\0';
    *len = (size_t)(p - out);
    return out;
}

static int add_line(struct sm_message *m, const char *s, size_t n, bool from)
{
    char *v = strndup(s, n);
    if (!v)
        return -1;
    if (from) {
        m->from = v;
        return 0;
    }
    char **r = realloc(m->rcpts, (m->nrcpts + 1) * sizeof *r);
    if (!r) {
        free(v);
        return -1;
    }
    m->rcpts = r;
    r[m->nrcpts++] = v;
    return 0;
}

int sm_outbox_parse(const char *buf, size_t len, struct sm_message *m)
{
    memset(m, 0, sizeof *m);
    size_t ml = strlen(OUTBOX_MAGIC), i = ml;
    if (len < ml || memcmp(buf, OUTBOX_MAGIC, ml) != 0)
        return -1;
    int rc = 0;
    for (;;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl) {
            rc = -1; /* the envelope never ended */
            break;
        }
        size_t n = (size_t)(nl - (buf + i));
        const char *line = buf + i;
        i += n + 1;
        if (n == 0)
            break;
        /* one "from" line first, then "rcpt" lines: the formatter's order */
        bool from = !m->from && n >= 5 && memcmp(line, "from ", 5) == 0;
        bool rcpt = m->from && n > 5 && memcmp(line, "rcpt ", 5) == 0;
        if ((!from && !rcpt) || memchr(line, '\0', n) || memchr(line, '\r', n) ||
            add_line(m, line + 5, n - 5, from) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && (!m->from || m->nrcpts == 0 || len - i > OUTBOX_MAX))
        rc = -1;
    if (rc == 0 && !(m->data = malloc(len - i + 1)))
        rc = -1;
    if (rc == 0) {
        memcpy(m->data, buf + i, len - i);
        m->data[len - i] = '\0';
        m->len = len - i;
    } else {
        sm_message_free(m);
    }
    return rc;
}

/* Writes m to dir/name crash-safe; name NULL: a new name (time order). */
static int put_as(const char *dir, const char *name, const struct sm_message *m, char *err,
                  size_t errlen)
{
    char final[4200], tmp[4200], fresh[96];
    if (!name) {
        struct timespec ts;
        unsigned char r[4] = {0};
        clock_gettime(CLOCK_REALTIME, &ts);
        RAND_bytes(r, sizeof r);
        snprintf(fresh, sizeof fresh, "%lld.%09ld.%d.%02x%02x%02x%02x.msg", (long long)ts.tv_sec,
                 ts.tv_nsec, (int)getpid(), r[0], r[1], r[2], r[3]);
        name = fresh;
    }
    snprintf(final, sizeof final, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "outbox %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = 0;
    char *text = sm_outbox_format(m, &len);
    int rc = text ? write_all(fd, text, len) : (errno = EINVAL, -1);
    free(text);
    rc = rc ? rc : fsync(fd);
    int e = errno;
    if (close(fd) < 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && rename(tmp, final) < 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && fsync_dir(dir) < 0) {
        rc = -1;
        e = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        snprintf(err, errlen, "outbox %s: %s", final, strerror(e));
    }
    return rc;
}

int sm_outbox_put(const char *dir, const struct sm_message *m, char *err, size_t errlen)
{
    return put_as(dir, NULL, m, err, errlen);
}

/* Reads one outbox file into m. Returns 0, or -1 when it is not one. */
static int load(const char *path, struct sm_message *m)
{
    size_t len = 0;
    char *buf = cli_read_all(path, OUTBOX_MAX + 64 * 1024, &len);
    memset(m, 0, sizeof *m);
    if (!buf)
        return -1;
    int rc = sm_outbox_parse(buf, len, m);
    free(buf);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The waiting messages' file names, sorted (oldest first); stale tmp files
 * are removed on the way. */
static char **list(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    char **v = NULL;
    *n = 0;
    if (!d)
        return NULL;
    struct dirent *de;
    time_t now = time(NULL);
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' && l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0) {
            struct stat st;
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (stat(p, &st) == 0 && now - st.st_mtime > OUTBOX_STALE_TMP)
                unlink(p);
            continue;
        }
        if (de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".msg") != 0)
            continue;
        char **nv = realloc(v, (*n + 1) * sizeof *nv);
        if (!nv)
            break;
        v = nv;
        if ((v[*n] = strdup(de->d_name)))
            (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(v, *n, sizeof *v, by_name);
    return v;
}

/* A message the relay refused for good moves to refused/, out of the way. */
static void set_aside(const char *dir, const char *name)
{
    char sub[4200], from[4200], to[4300];
    snprintf(sub, sizeof sub, "%s/refused", dir);
    mkdir(sub, 0700);
    snprintf(from, sizeof from, "%s/%s", dir, name);
    snprintf(to, sizeof to, "%s/%s", sub, name);
    if (rename(from, to) < 0)
        unlink(from);
    fsync_dir(sub);
}

int sm_outbox_flush(const char *dir, const struct sm_submit_conf *c, int *sent, int *refused,
                    int *left, bool quiet)
{
    int s = 0, r = 0, l = 0;
    char lockp[4200];
    snprintf(lockp, sizeof lockp, "%s/.lock", dir);
    int lk = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lk < 0 || flock(lk, LOCK_EX | LOCK_NB) < 0) {
        size_t n = 0;
        char **v = list(dir, &n);
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
        if (left)
            *left = (int)n;
        if (sent)
            *sent = 0;
        if (refused)
            *refused = 0;
        if (lk >= 0)
            close(lk);
        return -1;
    }
    size_t n = 0;
    char **v = list(dir, &n);
    bool stop = false;
    for (size_t i = 0; i < n; i++) {
        if (stop) {
            l++;
            continue;
        }
        char path[4200], reply[512], err[600];
        snprintf(path, sizeof path, "%s/%s", dir, v[i]);
        struct sm_message m;
        if (load(path, &m) < 0) {
            fprintf(stderr, "sluice sendmail: outbox %s: not a readable outbox file, set aside\n",
                    path);
            set_aside(dir, v[i]);
            r++;
            continue;
        }
        char **deferred, **rejected;
        size_t nd, nr;
        enum sm_result res = sm_submit(c, &m, reply, &deferred, &nd, &rejected, &nr);
        for (size_t k = 0; k < nr; k++) {
            fprintf(stderr, "sluice sendmail: outbox %s: recipient refused: %s\n", v[i],
                    rejected[k]);
            free(rejected[k]);
        }
        free(rejected);
        if (res == SM_SENT && nd > 0) {
            /* the relay took some: the file shrinks to the others, atomically */
            struct sm_message rest = m;
            rest.rcpts = deferred;
            rest.nrcpts = nd;
            if (put_as(dir, v[i], &rest, err, sizeof err) < 0)
                fprintf(stderr, "sluice sendmail: %s\n", err);
            l++;
            stop = true;
        } else if (res == SM_SENT) {
            unlink(path);
            fsync_dir(dir);
            s++;
        } else if (res == SM_TEMPORARY) {
            if (!quiet)
                fprintf(stderr, "sluice sendmail: relay unavailable, outbox kept: %s\n", reply);
            l++;
            stop = true;
        } else {
            fprintf(stderr, "sluice sendmail: outbox %s refused, set aside in refused/: %s\n", v[i],
                    reply);
            set_aside(dir, v[i]);
            r++;
        }
        free(deferred);
        sm_message_free(&m);
        free(v[i]);
        v[i] = NULL;
    }
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    close(lk);
    if (sent)
        *sent = s;
    if (refused)
        *refused = r;
    if (left)
        *left = l;
    return 0;
}

int sm_outbox_list(const char *dir, FILE *out)
{
    size_t n = 0;
    char **v = list(dir, &n);
    fprintf(out, "outbox %s: %zu waiting\n", dir, n);
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        struct sm_message m;
        snprintf(path, sizeof path, "%s/%s", dir, v[i]);
        if (load(path, &m) == 0) {
            fprintf(out, "%s  from <%s>  %zu recipient%s (first <%s>)  %zu octets\n", v[i], m.from,
                    m.nrcpts, m.nrcpts == 1 ? "" : "s", m.rcpts[0], m.len);
            sm_message_free(&m);
        } else {
            fprintf(out, "%s  unreadable\n", v[i]);
        }
        free(v[i]);
    }
    free(v);
    return (int)n;
}

int sm_deliver_or_keep(const struct config *cfg, const struct sm_submit_conf *c,
                       const struct sm_message *m, const char *who)
{
    char dir[4096], err[1024], reply[512];
    bool have_dir = sm_outbox_path(cfg, dir, sizeof dir, err, sizeof err) == 0;
    int left = 0;
    if (have_dir && cfg->sendmail_forward_outbox &&
        sm_outbox_flush(dir, c, NULL, NULL, &left, true) < 0)
        left = 0; /* another flush runs: it is not this relay's verdict */
    char **deferred = NULL, **rejected = NULL;
    size_t nd = 0, nr = 0;
    enum sm_result res = SM_TEMPORARY;
    if (left == 0) /* else the relay just failed: do not wait for it twice */
        res = sm_submit(c, m, reply, &deferred, &nd, &rejected, &nr);
    else
        snprintf(reply, sizeof reply, "older messages are still waiting in the outbox");
    for (size_t i = 0; i < nr; i++) {
        fprintf(stderr, "%s: recipient refused: %s\n", who, rejected[i]);
        free(rejected[i]);
    }
    free(rejected);
    int status = SM_EX_OK;
    struct sm_message keep = *m;
    switch (res) {
    case SM_SENT:
        status = nr ? SM_EX_NOUSER : SM_EX_OK;
        keep.rcpts = deferred;
        keep.nrcpts = nd;
        break;
    case SM_TEMPORARY:
        break;
    case SM_REFUSED:
        fprintf(stderr, "%s: message refused: %s\n", who, reply);
        free(deferred);
        return SM_EX_DATAERR;
    case SM_NO_RCPT:
        fprintf(stderr, "%s: every recipient refused\n", who);
        free(deferred);
        return SM_EX_NOUSER;
    case SM_AUTH:
        fprintf(stderr, "%s: the relay refused the credential: %s\n", who, reply);
        free(deferred);
        return SM_EX_NOPERM;
    }
    if (keep.nrcpts > 0 && (res == SM_TEMPORARY || nd > 0)) {
        if (!have_dir || sm_outbox_put(dir, &keep, err, sizeof err) < 0) {
            fprintf(stderr, "%s: not sent (%s) and not kept: %s\n", who, reply, err);
            free(deferred);
            return SM_EX_TEMPFAIL;
        }
        fprintf(stderr, "%s: relay unavailable (%s); kept in the outbox %s for later delivery\n",
                who, reply, dir);
    }
    free(deferred);
    return status;
}

int sm_read_message(FILE *in, bool dot_ends, struct sm_message *m)
{
    char *line = NULL;
    size_t cap = 0, len = 0, size = 0;
    ssize_t n;
    char *data = NULL;
    while ((n = getline(&line, &cap, in)) > 0) {
        size_t l = (size_t)n;
        bool eol = line[l - 1] == '\n';
        if (eol)
            l--;
        if (eol && l && line[l - 1] == '\r')
            l--;
        if (dot_ends && eol && l == 1 && line[0] == '.')
            break;
        if (len + l + 3 > (size_t)OUTBOX_MAX) { /* what the outbox could not hold */
            free(line);
            free(data);
            return errno = EFBIG, -1;
        }
        if (len + l + 3 > size) {
            size_t ns = size ? size * 2 : 65536;
            while (ns < len + l + 3)
                ns *= 2;
            char *nd = realloc(data, ns);
            if (!nd) {
                free(line);
                free(data);
                return -1;
            }
            data = nd;
            size = ns;
        }
        memcpy(data + len, line, l);
        len += l;
        data[len++] = '\r';
        data[len++] = '\n';
    }
    bool failed = ferror(in);
    free(line);
    if (failed) {
        free(data);
        return errno = EIO, -1;
    }
    if (!data && !(data = malloc(1)))
        return -1;
    data[len] = '\0';
    m->data = data;
    m->len = len;
    return 0;
}
