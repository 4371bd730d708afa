/* Import of an export file (transfer.h), one message at a time so that a
 * large file never sits in memory: a line is read and parsed, its message
 * appended with a new id, and the next line is read once that append is
 * durable. Each imported message keeps its source id in its metadata; ids
 * met before are skipped, so an import run twice adds nothing the second
 * time. */
#include "queue/transfer.h"

#include "queue/queue.h"
#include "spool/spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

struct import {
    struct spool *s;
    struct queue *q;
    FILE *f;
    char *line;
    size_t cap;
    size_t lineno, messages;
    bool header, trailer, stopping;
    long long trailer_count;
    uint64_t *seen; /* source ids imported before, sorted */
    size_t n_seen, cap_seen;
    struct transfer_msg cur;
    char *meta, **rcpts;
    int pending; /* appends and marks not yet durable */
    struct transfer_result res;
    transfer_done_fn done;
    void *arg;
};

static void next(struct import *im);

static void collect_seen(void *arg, const struct spool_msg *m)
{
    struct import *im = arg;
    char v[32];
    uint64_t id;
    if (!m->meta || spool_meta_get(m->meta, TRANSFER_META_KEY, v, sizeof v) < 0 ||
        spool_id_parse(v, &id) < 0)
        return;
    if (im->n_seen == im->cap_seen) {
        size_t cap = im->cap_seen ? im->cap_seen * 2 : 64;
        uint64_t *p = realloc(im->seen, cap * sizeof *p);
        if (!p)
            return;
        im->seen = p;
        im->cap_seen = cap;
    }
    im->seen[im->n_seen++] = id;
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool seen(const struct import *im, uint64_t id)
{
    return im->n_seen && bsearch(&id, im->seen, im->n_seen, sizeof id, cmp_id);
}

static void finish(struct import *im)
{
    if (im->pending > 0)
        return; /* the last completion comes back here */
    transfer_msg_free(&im->cur);
    free(im->meta);
    fclose(im->f);
    free(im->line);
    free(im->seen);
    transfer_done_fn done = im->done;
    void *arg = im->arg;
    struct transfer_result res = im->res;
    free(im);
    done(arg, &res);
}

/* Ends the import with "line N: what[: detail]" (the first error wins). */
static void stop(struct import *im, const char *what, const char *detail)
{
    if (!im->res.error[0])
        snprintf(im->res.error, sizeof im->res.error, "line %zu: %s%s%s", im->lineno, what,
                 detail ? ": " : "", detail ? detail : "");
    im->stopping = true;
    finish(im);
}

static void on_mark(void *arg, int err, uint64_t id)
{
    struct import *im = arg;
    (void)id;
    im->pending--;
    if (err && !im->res.error[0])
        snprintf(im->res.error, sizeof im->res.error, "line %zu: recording a state: %s", im->lineno,
                 strerror(-err));
    if (im->stopping)
        finish(im);
}

static void mark(struct import *im, uint64_t id, enum spool_op op, int rcpt, const char *reply)
{
    int rc = spool_mark(im->s, id, op, rcpt, 0, reply, on_mark, im);
    if (rc == 0)
        im->pending++;
    else if (!im->res.error[0])
        snprintf(im->res.error, sizeof im->res.error, "line %zu: recording a state: %s", im->lineno,
                 strerror(-rc));
}

static void on_put(void *arg, int err, uint64_t id)
{
    struct import *im = arg;
    im->pending--;
    free(im->meta);
    im->meta = NULL;
    if (err) {
        transfer_msg_free(&im->cur);
        stop(im, "the spool refused the message", strerror(-err));
        return;
    }
    const struct transfer_msg *m = &im->cur;
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        if (m->rcpt_state[i] != SPOOL_RCPT_PENDING)
            mark(im, id,
                 m->rcpt_state[i] == SPOOL_RCPT_DELIVERED ? SPOOL_OP_RCPT_DELIVERED
                                                          : SPOOL_OP_RCPT_FAILED,
                 (int)i, m->last_reply);
    if (m->state == SPOOL_MSG_HELD)
        mark(im, id, SPOOL_OP_HOLD, -1, m->last_reply ? m->last_reply : "held before export");
    else if (m->state == SPOOL_MSG_DEAD)
        mark(im, id, SPOOL_OP_DEAD, -1, m->last_reply ? m->last_reply : "dead before export");
    else if (im->q)
        queue_add(im->q, id);
    im->res.imported++;
    transfer_msg_free(&im->cur);
    next(im);
}

/* The message's metadata with its source id in place of an older one. */
static char *meta_with_source(const char *meta, uint64_t source)
{
    size_t n = meta ? strlen(meta) : 0;
    char *out = malloc(n + sizeof TRANSFER_META_KEY + 20), *w = out;
    if (!out)
        return NULL;
    const char *p = meta;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        bool ours = len > strlen(TRANSFER_META_KEY) &&
                    strncmp(p, TRANSFER_META_KEY "=", strlen(TRANSFER_META_KEY) + 1) == 0;
        if (!ours && len) {
            memcpy(w, p, len);
            w += len;
            *w++ = '\n';
        }
        p = e ? e + 1 : p + len;
    }
    char ids[17];
    w += sprintf(w, "%s=%s", TRANSFER_META_KEY, spool_id_str(source, ids));
    *w = '\0';
    return out;
}

static void next(struct import *im)
{
    for (;;) {
        if (im->stopping)
            return;
        errno = 0;
        ssize_t n = getline(&im->line, &im->cap, im->f);
        if (n < 0) {
            if (errno)
                stop(im, "cannot read", strerror(errno));
            else if (!im->trailer)
                stop(im,
                     "the file ends without its trailer line: an "
                     "incomplete export",
                     NULL);
            else {
                im->stopping = true;
                finish(im);
            }
            return;
        }
        im->lineno++;
        if (n > 0 && im->line[n - 1] == '\n')
            n--;
        if (im->trailer) {
            stop(im, "text after the trailer line", NULL);
            return;
        }
        char err[256];
        long long count;
        int rc = transfer_parse_line(im->line, (size_t)n, &im->cur, &count, err, sizeof err);
        if (!im->header && !(rc == 1 && count < 0)) {
            if (rc == 0)
                transfer_msg_free(&im->cur);
            stop(im, "not an export file (no sluice_queue_export header)", NULL);
            return;
        }
        if (rc < 0) {
            stop(im, err, NULL);
            return;
        }
        if (rc == 1 && count < 0) {
            if (im->lineno != 1) {
                stop(im, "a header line in the middle of the file", NULL);
                return;
            }
            im->header = true;
            continue;
        }
        if (rc == 1) {
            im->trailer = true;
            if (count != (long long)im->messages) {
                snprintf(err, sizeof err, "the trailer counts %lld messages, the file has %zu",
                         count, im->messages);
                stop(im, err, NULL);
                return;
            }
            continue;
        }
        im->messages++;
        if (seen(im, im->cur.id)) {
            im->res.skipped++;
            transfer_msg_free(&im->cur);
            continue;
        }
        im->meta = meta_with_source(im->cur.meta, im->cur.id);
        struct spool_envelope env = {
            .sender = im->cur.sender,
            .rcpts = (const char *const *)im->cur.rcpts,
            .n_rcpts = im->cur.n_rcpts,
            .flags = im->cur.flags,
            .received = im->cur.received,
            .meta = im->meta,
        };
        struct iovec iov = {im->cur.data, im->cur.data_len};
        rc = im->meta ? spool_put(im->s, spool_new_id(im->s), &env, &iov, 1, on_put, im) : -ENOMEM;
        if (rc < 0) {
            free(im->meta);
            im->meta = NULL;
            transfer_msg_free(&im->cur);
            stop(im, "the spool refused the message", strerror(-rc));
            return;
        }
        im->pending++;
        return; /* on_put goes on */
    }
}

int transfer_import(struct spool *s, struct queue *q, const char *path, transfer_done_fn done,
                    void *arg, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct import *im = calloc(1, sizeof *im);
    if (!im) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    im->s = s;
    im->q = q;
    im->f = f;
    im->done = done;
    im->arg = arg;
    spool_foreach(s, collect_seen, im);
    if (im->n_seen)
        qsort(im->seen, im->n_seen, sizeof *im->seen, cmp_id);
    next(im);
    return 0;
}
