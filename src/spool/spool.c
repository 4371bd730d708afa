/* The durable spool. Records are appended to segment files by the event-loop
 * thread; a dedicated commit thread calls fdatasync once for everything
 * appended since its last round (group commit) and then wakes the loop, which
 * runs the completions in append order. Recovery replays every segment. */
#include "spool/spool.h"

#include "core/crc32c.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC_MAGIC 0x31524c53u /* "SLR1" little-endian */
#define REC_HDR_LEN 24
#define REC_MAX_LEN (1u << 30)
#define REC_MSG 1
#define REC_STATE 2
#define STATE_FIXED_LEN 16
#define SEG_TARGET_SIZE (64u << 20)
#define SPOOL_OP_RESTORE 8 /* snapshot written when a message is copied forward */

struct segment {
    uint32_t seq;
    int fd;
    uint64_t size;           /* bytes appended */
    uint64_t synced;         /* bytes known durable */
    uint32_t live;           /* messages whose current copy lives here */
    uint64_t release_ticket; /* deletable once this ticket is durable */
    bool deleted;
};

/* One record on its way to disk. The loop thread builds it; the writer
 * thread writes it, and the loop finishes it once durable. */
struct pending {
    struct pending *next;
    struct iovec iov[12];
    int n;
    size_t total;
    void *own[2]; /* buffers freed once written */
    uint64_t ticket;
    uint64_t id;
    int kind;         /* PENDING_MSG, PENDING_STATE, PENDING_COPY */
    size_t data_skip; /* message data's offset inside the record */
    int err;          /* set by the writer */
    uint32_t seg;     /* set by the writer: where it landed */
    uint64_t off;
    spool_done_fn cb;
    void *arg;
};

enum { PENDING_MSG = 1, PENDING_STATE, PENDING_COPY };

struct spool {
    char *dir;
    int dir_fd;
    struct event_base *base;

    /* shared with the writer thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    bool stop;
    struct pending *q_head, *q_tail; /* waiting to be written */
    struct pending *d_head, *d_tail; /* written and synced (or failed) */
    bool dir_dirty;
    bool rotate_next;     /* a write hit a full disk */
    struct segment *segs; /* grows (under mu); index is stable */
    size_t n_segs, cap_segs;
    size_t cur; /* index of the segment being appended to (writer's) */
    uint64_t commits;

    int efd;
    struct event *wake_ev;

    /* loop thread only */
    uint64_t appended; /* ticket of the last record handed to the writer */
    uint64_t durable;  /* highest ticket finished */
    size_t inflight;   /* records handed over and not yet finished */

    struct spool_msg **buckets;
    size_t n_buckets, n_msgs;
    uint64_t next_id;
    uint64_t records;
};

/* ---- little-endian helpers ---- */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

char *spool_id_str(uint64_t id, char *buf)
{
    snprintf(buf, 17, "%016" PRIx64, id);
    return buf;
}

int spool_id_parse(const char *s, uint64_t *id)
{
    if (strlen(s) != 16)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        int c = s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return 0;
}

/* ---- the in-memory index ---- */

static size_t bucket_of(const struct spool *s, uint64_t id)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (s->n_buckets - 1);
}

static struct spool_msg *index_find(const struct spool *s, uint64_t id)
{
    for (struct spool_msg *m = s->buckets[bucket_of(s, id)]; m; m = m->hash_next)
        if (m->id == id)
            return m;
    return NULL;
}

static int index_add(struct spool *s, struct spool_msg *m)
{
    if (s->n_msgs + 1 > s->n_buckets) {
        size_t nb = s->n_buckets * 2;
        struct spool_msg **b = calloc(nb, sizeof *b);
        if (!b)
            return -ENOMEM;
        struct spool_msg **old = s->buckets;
        size_t on = s->n_buckets;
        s->buckets = b;
        s->n_buckets = nb;
        for (size_t i = 0; i < on; i++) {
            struct spool_msg *x = old[i];
            while (x) {
                struct spool_msg *next = x->hash_next;
                size_t k = bucket_of(s, x->id);
                x->hash_next = b[k];
                b[k] = x;
                x = next;
            }
        }
        free(old);
    }
    size_t k = bucket_of(s, m->id);
    m->hash_next = s->buckets[k];
    s->buckets[k] = m;
    s->n_msgs++;
    return 0;
}

static void msg_free(struct spool_msg *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        free(m->rcpts[i]);
    free(m->rcpts);
    free(m->rcpt_state);
    free(m->sender);
    free(m->meta);
    free(m->last_reply);
    free(m);
}

static void index_remove(struct spool *s, struct spool_msg *m)
{
    struct spool_msg **pp = &s->buckets[bucket_of(s, m->id)];
    while (*pp && *pp != m)
        pp = &(*pp)->hash_next;
    if (*pp) {
        *pp = m->hash_next;
        s->n_msgs--;
    }
    if (m->committed && s->segs[m->seg_index].live)
        s->segs[m->seg_index].live--;
    msg_free(m);
}

/* ---- envelope text (see docs/SPOOL.md) ---- */

static size_t envelope_size(const struct spool_envelope *env)
{
    size_t n = 4 + strlen(env->sender) + 2 + 24 + 24 + 2;
    for (size_t i = 0; i < env->n_rcpts; i++)
        n += strlen(env->rcpts[i]) + 3;
    if (env->meta)
        n += 2 * strlen(env->meta) + 4;
    return n;
}

static size_t envelope_write(const struct spool_envelope *env, char *out)
{
    char *p = out;
    p += sprintf(p, "S %s\n", env->sender);
    for (size_t i = 0; i < env->n_rcpts; i++)
        p += sprintf(p, "R %s\n", env->rcpts[i]);
    p += sprintf(p, "F %x\nT %" PRId64 "\n", env->flags, env->received);
    if (env->meta) {
        const char *line = env->meta;
        while (*line) {
            const char *nl = strchr(line, '\n');
            size_t n = nl ? (size_t)(nl - line) : strlen(line);
            if (n) {
                *p++ = 'M';
                *p++ = ' ';
                memcpy(p, line, n);
                p += n;
                *p++ = '\n';
            }
            line += n + (nl ? 1 : 0);
        }
    }
    return (size_t)(p - out);
}

/* Builds a message from a MSG record's envelope text. */
static struct spool_msg *envelope_parse(uint64_t id, const char *env, size_t len)
{
    struct spool_msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->id = id;
    size_t cap = 0, meta_len = 0;
    const char *p = env, *end = env + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl || nl - p < 2 || p[1] != ' ')
            goto bad;
        const char *v = p + 2;
        size_t vn = (size_t)(nl - v);
        switch (p[0]) {
        case 'S':
            free(m->sender);
            m->sender = strndup(v, vn);
            break;
        case 'R':
            if (m->n_rcpts == cap) {
                cap = cap ? cap * 2 : 4;
                char **r = realloc(m->rcpts, cap * sizeof *r);
                if (!r)
                    goto bad;
                m->rcpts = r;
            }
            m->rcpts[m->n_rcpts++] = strndup(v, vn);
            break;
        case 'F':
            m->flags = (uint32_t)strtoul(v, NULL, 16);
            break;
        case 'T':
            m->received = strtoll(v, NULL, 10);
            break;
        case 'M': {
            char *nm = realloc(m->meta, meta_len + vn + 2);
            if (!nm)
                goto bad;
            m->meta = nm;
            memcpy(m->meta + meta_len, v, vn);
            meta_len += vn;
            m->meta[meta_len++] = '\n';
            m->meta[meta_len] = 0;
            break;
        }
        default:
            break; /* unknown lines are skipped: newer writers may add some */
        }
        p = nl + 1;
    }
    if (!m->sender || m->n_rcpts == 0)
        goto bad;
    m->rcpt_state = calloc(m->n_rcpts, 1);
    if (!m->rcpt_state)
        goto bad;
    return m;
bad:
    msg_free(m);
    return NULL;
}

/* ---- record I/O ---- */

static void rec_header(unsigned char *h, uint8_t type, uint32_t len, uint64_t id)
{
    put32(h, REC_MAGIC);
    put32(h + 8, len);
    h[12] = type;
    h[13] = h[14] = h[15] = 0;
    put64(h + 16, id);
}

static uint32_t iov_crc(const struct iovec *iov, int n)
{
    /* the CRC covers the header from byte 8 on, and the whole payload */
    uint32_t c = crc32c(0, (const unsigned char *)iov[0].iov_base + 8, iov[0].iov_len - 8);
    for (int i = 1; i < n; i++)
        c = crc32c(c, iov[i].iov_base, iov[i].iov_len);
    return c;
}

static int seg_open(struct spool *s, uint32_t seq, bool create, int *fd_out)
{
    char name[64];
    snprintf(name, sizeof name, "seg-%08" PRIx32 ".log", seq);
    int fd = openat(s->dir_fd, name, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0)
        return -errno;
    *fd_out = fd;
    return 0;
}

/* Called with mu held (or before the writer starts). */
static int seg_add(struct spool *s, uint32_t seq, int fd, uint64_t size)
{
    if (s->n_segs == s->cap_segs) {
        size_t nc = s->cap_segs ? s->cap_segs * 2 : 16;
        struct segment *n = realloc(s->segs, nc * sizeof *n);
        if (!n)
            return -ENOMEM;
        s->segs = n;
        s->cap_segs = nc;
    }
    s->segs[s->n_segs++] = (struct segment){.seq = seq, .fd = fd, .size = size, .synced = size};
    return 0;
}

/* The fd of segment i, read under the lock because the writer may grow the
 * array; segments are closed only by the loop thread, which calls this. */
static int seg_fd(struct spool *s, uint32_t i)
{
    pthread_mutex_lock(&s->mu);
    int fd = s->segs[i].fd;
    pthread_mutex_unlock(&s->mu);
    return fd;
}

/* Hands a record to the writer. Takes ownership of p. */
static void enqueue(struct spool *s, struct pending *p)
{
    unsigned char *h = p->iov[0].iov_base;
    put32(h + 4, iov_crc(p->iov, p->n));
    p->total = 0;
    for (int i = 0; i < p->n; i++)
        p->total += p->iov[i].iov_len;
    p->ticket = ++s->appended;
    s->inflight++;
    s->records++;
    pthread_mutex_lock(&s->mu);
    if (s->q_tail)
        s->q_tail->next = p;
    else
        s->q_head = p;
    s->q_tail = p;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static void pending_free(struct pending *p)
{
    free(p->own[0]);
    free(p->own[1]);
    free(p);
}

/* ---- the writer thread ---- */

/* Writes one record at the tail of the current segment (starting a new
 * segment when it is full). Returns 0 or a negative errno; on error the
 * segment is cut back so it stays a valid prefix. mu is not held. */
static int write_record(struct spool *s, struct pending *p, bool *rotated)
{
    pthread_mutex_lock(&s->mu);
    /* after a full disk, start a new segment: the full one can then be
     * reclaimed as soon as its messages are delivered */
    if ((s->segs[s->cur].size + p->total > SEG_TARGET_SIZE || s->rotate_next) &&
        s->segs[s->cur].size > 0) {
        s->rotate_next = false;
        uint32_t seq = s->segs[s->cur].seq + 1;
        int fd = -1;
        int r = seg_open(s, seq, true, &fd);
        if (r == 0 && (r = seg_add(s, seq, fd, 0)) < 0)
            close(fd);
        if (r < 0) {
            pthread_mutex_unlock(&s->mu);
            return r;
        }
        s->cur = s->n_segs - 1;
        s->dir_dirty = true;
        *rotated = true;
    }
    uint32_t si = (uint32_t)s->cur;
    int fd = s->segs[si].fd;
    uint64_t start = s->segs[si].size;
    pthread_mutex_unlock(&s->mu);

    size_t done = 0;
    int err = 0;
    while (done < p->total) {
        struct iovec tmp[12];
        int tn = 0;
        size_t skip = done;
        for (int i = 0; i < p->n; i++) {
            if (skip >= p->iov[i].iov_len) {
                skip -= p->iov[i].iov_len;
                continue;
            }
            tmp[tn].iov_base = (char *)p->iov[i].iov_base + skip;
            tmp[tn].iov_len = p->iov[i].iov_len - skip;
            skip = 0;
            tn++;
        }
        ssize_t w = pwritev(fd, tmp, tn, (off_t)(start + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (w == 0) {
            err = -ENOSPC;
            break;
        }
        done += (size_t)w;
    }
    if (err) {
        if (ftruncate(fd, (off_t)start) < 0) {
            /* the torn record's CRC ends recovery's scan here anyway */
        }
        if (err == -ENOSPC || err == -EDQUOT) {
            pthread_mutex_lock(&s->mu);
            s->rotate_next = true;
            pthread_mutex_unlock(&s->mu);
        }
        return err;
    }
    p->seg = si;
    p->off = start;
    pthread_mutex_lock(&s->mu);
    s->segs[si].size = start + p->total;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *writer_main(void *arg)
{
    struct spool *s = arg;
    int *fds = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && !s->q_head && !s->dir_dirty)
            pthread_cond_wait(&s->cond, &s->mu);
        if (s->stop && !s->q_head && !s->dir_dirty)
            break;
        struct pending *batch = s->q_head;
        s->q_head = s->q_tail = NULL;
        size_t first_seg = s->cur;
        pthread_mutex_unlock(&s->mu);

        /* write everything that queued up, then one sync for all of it */
        bool rotated = false;
        for (struct pending *p = batch; p; p = p->next)
            p->err = write_record(s, p, &rotated);

        pthread_mutex_lock(&s->mu);
        size_t n = 0;
        if (cap < s->n_segs) {
            cap = s->n_segs * 2;
            fds = realloc(fds, cap * sizeof *fds);
        }
        for (size_t i = first_seg; i < s->n_segs; i++)
            if (!s->segs[i].deleted && s->segs[i].size > s->segs[i].synced)
                fds[n++] = s->segs[i].fd;
        bool dir = s->dir_dirty;
        s->dir_dirty = false;
        pthread_mutex_unlock(&s->mu);

        int err = 0;
        for (size_t i = 0; i < n; i++)
            if (fdatasync(fds[i]) < 0 && !err)
                err = -errno;
        if (dir && fsync(s->dir_fd) < 0 && !err)
            err = -errno;

        pthread_mutex_lock(&s->mu);
        s->commits++;
        if (err) {
            /* Linux may drop dirty pages after a failed fsync: nothing in
             * this round can be trusted */
            for (struct pending *p = batch; p; p = p->next)
                if (!p->err)
                    p->err = err;
        } else {
            for (size_t i = first_seg; i < s->n_segs; i++)
                s->segs[i].synced = s->segs[i].size;
        }
        if (batch) {
            struct pending *last = batch;
            while (last->next)
                last = last->next;
            if (s->d_tail)
                s->d_tail->next = batch;
            else
                s->d_head = batch;
            s->d_tail = last;
        }
        pthread_mutex_unlock(&s->mu);
        uint64_t one = 1;
        ssize_t w = write(s->efd, &one, sizeof one);
        (void)w;
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(fds);
    return NULL;
}

/* ---- completions (loop thread) ---- */

static void finish(struct spool *s, struct pending *p)
{
    struct spool_msg *m = index_find(s, p->id);
    if (p->kind == PENDING_MSG && m && !m->committed) {
        if (p->err) {
            index_remove(s, m);
        } else {
            m->seg_index = p->seg;
            m->rec_off = p->off;
            m->data_off = p->off + p->data_skip;
            m->committed = true;
            s->segs[p->seg].live++;
        }
    } else if (p->kind == PENDING_COPY && m && m->copying) {
        m->copying = false;
        if (!p->err) {
            struct segment *old = &s->segs[m->seg_index];
            if (old->release_ticket < m->copy_release)
                old->release_ticket = m->copy_release;
            if (old->live)
                old->live--;
            m->seg_index = p->seg;
            m->rec_off = p->off;
            m->data_off = p->off + p->data_skip;
            s->segs[p->seg].live++;
        }
    }
    s->durable = p->ticket;
    s->inflight--;
    if (p->cb)
        p->cb(p->arg, p->err, p->id);
    pending_free(p);
}

static void run_completions(struct spool *s)
{
    pthread_mutex_lock(&s->mu);
    struct pending *p = s->d_head;
    s->d_head = s->d_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (p) {
        struct pending *next = p->next;
        finish(s, p);
        p = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct spool *s = arg;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    (void)what;
    run_completions(s);
}

/* ---- applying state changes (live and during recovery) ---- */

static bool msg_all_delivered(const struct spool_msg *m)
{
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        if (m->rcpt_state[i] != SPOOL_RCPT_DELIVERED)
            return false;
    return true;
}

static void set_reply(struct spool_msg *m, const char *reply, size_t len)
{
    if (!len)
        return;
    free(m->last_reply);
    m->last_reply = strndup(reply, len);
}

/* Returns true when the message is finished and must be dropped. */
static bool apply_state(struct spool_msg *m, int op, int32_t rcpt, int64_t when, uint8_t extra,
                        const char *reply, size_t reply_len)
{
    switch (op) {
    case SPOOL_OP_RCPT_DELIVERED:
    case SPOOL_OP_RCPT_FAILED:
        if (rcpt >= 0 && (uint32_t)rcpt < m->n_rcpts)
            m->rcpt_state[rcpt] =
                op == SPOOL_OP_RCPT_DELIVERED ? SPOOL_RCPT_DELIVERED : SPOOL_RCPT_FAILED;
        set_reply(m, reply, reply_len);
        return msg_all_delivered(m);
    case SPOOL_OP_DEFER:
        m->attempts++;
        m->next_attempt = when;
        set_reply(m, reply, reply_len);
        return false;
    case SPOOL_OP_HOLD:
        m->state = SPOOL_MSG_HELD;
        set_reply(m, reply, reply_len);
        return false;
    case SPOOL_OP_RELEASE:
        if (m->state == SPOOL_MSG_DEAD) {
            for (uint32_t i = 0; i < m->n_rcpts; i++)
                if (m->rcpt_state[i] == SPOOL_RCPT_FAILED)
                    m->rcpt_state[i] = SPOOL_RCPT_PENDING;
            m->attempts = 0;
        }
        m->state = SPOOL_MSG_ACTIVE;
        m->next_attempt = when;
        return false;
    case SPOOL_OP_DEAD:
        m->state = SPOOL_MSG_DEAD;
        set_reply(m, reply, reply_len);
        return false;
    case SPOOL_OP_DELETE:
        return true;
    case SPOOL_OP_RESTORE:
        m->attempts = (uint32_t)rcpt;
        m->next_attempt = when;
        m->state = (enum spool_msg_state)extra;
        set_reply(m, reply, reply_len);
        return false;
    default:
        return false;
    }
}

/* Queues a state record; returns its ticket. */
static uint64_t append_state(struct spool *s, uint64_t id, int op, int32_t rcpt, int64_t when,
                             uint8_t extra, const char *reply, spool_done_fn cb, void *arg)
{
    size_t rl = reply ? strlen(reply) : 0;
    if (rl > 1000)
        rl = 1000;
    struct pending *p = calloc(1, sizeof *p);
    unsigned char *buf = malloc(REC_HDR_LEN + STATE_FIXED_LEN + rl);
    if (!p || !buf) {
        free(p);
        free(buf);
        return 0;
    }
    unsigned char *h = buf, *st = buf + REC_HDR_LEN;
    rec_header(h, REC_STATE, (uint32_t)(STATE_FIXED_LEN + rl), id);
    st[0] = (uint8_t)op;
    st[1] = extra;
    st[2] = (unsigned char)rl;
    st[3] = (unsigned char)(rl >> 8);
    put32(st + 4, (uint32_t)rcpt);
    put64(st + 8, (uint64_t)when);
    if (rl)
        memcpy(st + STATE_FIXED_LEN, reply, rl);
    p->iov[0] = (struct iovec){h, REC_HDR_LEN};
    p->iov[1] = (struct iovec){st, STATE_FIXED_LEN + rl};
    p->n = 2;
    p->own[0] = buf;
    p->id = id;
    p->kind = PENDING_STATE;
    p->cb = cb;
    p->arg = arg;
    enqueue(s, p);
    return p->ticket;
}

int spool_mark(struct spool *s, uint64_t id, enum spool_op op, int rcpt, int64_t when,
               const char *reply, spool_done_fn cb, void *arg)
{
    struct spool_msg *m = index_find(s, id);
    if (!m || !m->committed)
        return -ENOENT;
    uint64_t t = append_state(s, id, op, rcpt, when, 0, reply, cb, arg);
    if (!t)
        return -ENOMEM;
    struct segment *home = &s->segs[m->seg_index];
    if (home->release_ticket < t)
        home->release_ticket = t;
    if (apply_state(m, op, rcpt, when, 0, reply, reply ? strlen(reply) : 0))
        index_remove(s, m);
    return 0;
}

/* ---- put ---- */

int spool_put(struct spool *s, uint64_t id, const struct spool_envelope *env,
              const struct iovec *data, int n_data, spool_done_fn cb, void *arg)
{
    if (n_data > 8 || env->n_rcpts == 0)
        return -EINVAL;
    size_t esz = envelope_size(env);
    char *buf = malloc(REC_HDR_LEN + 4 + esz);
    struct pending *p = calloc(1, sizeof *p);
    if (!buf || !p) {
        free(buf);
        free(p);
        return -ENOMEM;
    }
    char *envbuf = buf + REC_HDR_LEN + 4;
    size_t elen = envelope_write(env, envbuf);
    size_t dlen = 0;
    for (int i = 0; i < n_data; i++)
        dlen += data[i].iov_len;
    if (4 + elen + dlen > REC_MAX_LEN) {
        free(buf);
        free(p);
        return -EFBIG;
    }
    struct spool_msg *m = envelope_parse(id, envbuf, elen);
    if (!m) {
        free(buf);
        free(p);
        return -ENOMEM;
    }
    rec_header((unsigned char *)buf, REC_MSG, (uint32_t)(4 + elen + dlen), id);
    put32((unsigned char *)buf + REC_HDR_LEN, (uint32_t)elen);
    p->iov[0] = (struct iovec){buf, REC_HDR_LEN};
    p->iov[1] = (struct iovec){buf + REC_HDR_LEN, 4 + elen};
    for (int i = 0; i < n_data; i++)
        p->iov[2 + i] = data[i];
    p->n = 2 + n_data;
    p->own[0] = buf;
    p->id = id;
    p->kind = PENDING_MSG;
    p->data_skip = REC_HDR_LEN + 4 + elen;
    p->cb = cb;
    p->arg = arg;
    m->rec_len = (uint32_t)(REC_HDR_LEN + 4 + elen + dlen);
    m->data_len = (uint32_t)dlen;
    m->next_attempt = m->received;
    index_add(s, m);
    enqueue(s, p);
    return 0;
}

/* ---- reading ---- */

const struct spool_msg *spool_get(struct spool *s, uint64_t id)
{
    struct spool_msg *m = index_find(s, id);
    return m && m->committed ? m : NULL;
}

void spool_foreach(struct spool *s, void (*fn)(void *arg, const struct spool_msg *m), void *arg)
{
    for (size_t i = 0; i < s->n_buckets; i++)
        for (struct spool_msg *m = s->buckets[i]; m;) {
            struct spool_msg *next = m->hash_next; /* fn may not free, but be safe */
            if (m->committed)
                fn(arg, m);
            m = next;
        }
}

int spool_read(struct spool *s, uint64_t id, char **data, size_t *len)
{
    struct spool_msg *m = index_find(s, id);
    if (!m)
        return -ENOENT;
    if (!m->committed)
        return -EAGAIN;
    char *buf = malloc(m->data_len + 1);
    if (!buf)
        return -ENOMEM;
    int fd = seg_fd(s, m->seg_index);
    size_t got = 0;
    while (got < m->data_len) {
        ssize_t r = pread(fd, buf + got, m->data_len - got, (off_t)(m->data_off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? -errno : -EIO;
            free(buf);
            return e;
        }
        got += (size_t)r;
    }
    buf[got] = 0;
    *data = buf;
    *len = got;
    return 0;
}

/* ---- recovery ---- */

size_t spool_scan_records(const unsigned char *buf, size_t len, size_t *n_records)
{
    size_t off = 0, n = 0;
    while (len - off >= REC_HDR_LEN) {
        const unsigned char *h = buf + off;
        uint32_t rl = get32(h + 8);
        if (get32(h) != REC_MAGIC || rl > REC_MAX_LEN || rl > len - off - REC_HDR_LEN)
            break;
        if (h[12] != REC_MSG && h[12] != REC_STATE)
            break;
        uint32_t c = crc32c(0, h + 8, REC_HDR_LEN - 8 + (size_t)rl);
        if (c != get32(h + 4))
            break;
        off += REC_HDR_LEN + rl;
        n++;
    }
    if (n_records)
        *n_records = n;
    return off;
}

static int read_all(int fd, unsigned char **out, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    *out = buf;
    *len = got;
    return 0;
}

static void recover_segment(struct spool *s, size_t si, const unsigned char *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= REC_HDR_LEN) {
        const unsigned char *h = buf + off;
        uint32_t rl = get32(h + 8);
        uint64_t id = get64(h + 16);
        const unsigned char *p = h + REC_HDR_LEN;
        if (h[12] == REC_MSG && rl >= 4) {
            uint32_t el = get32(p);
            if (el <= rl - 4) {
                struct spool_msg *m = envelope_parse(id, (const char *)p + 4, el);
                if (m) {
                    struct spool_msg *old = index_find(s, id);
                    if (old)
                        index_remove(s, old);
                    m->seg_index = (uint32_t)si;
                    m->rec_off = off;
                    m->rec_len = REC_HDR_LEN + rl;
                    m->data_off = off + REC_HDR_LEN + 4 + el;
                    m->data_len = rl - 4 - el;
                    m->next_attempt = m->received;
                    m->committed = true;
                    s->segs[si].live++;
                    index_add(s, m);
                }
            }
            if (id >= s->next_id)
                s->next_id = id + 1;
        } else if (h[12] == REC_STATE && rl >= STATE_FIXED_LEN) {
            struct spool_msg *m = index_find(s, id);
            if (m) {
                size_t reply_len = (size_t)p[2] | (size_t)p[3] << 8;
                if (reply_len > rl - STATE_FIXED_LEN)
                    reply_len = rl - STATE_FIXED_LEN;
                if (apply_state(m, p[0], (int32_t)get32(p + 4), (int64_t)get64(p + 8), p[1],
                                (const char *)p + STATE_FIXED_LEN, reply_len))
                    index_remove(s, m);
            }
        }
        off += REC_HDR_LEN + rl;
        s->records++;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int recover(struct spool *s, char *err, size_t errlen)
{
    DIR *d = fdopendir(dup(s->dir_fd));
    if (!d) {
        snprintf(err, errlen, "cannot list spool directory %s: %s", s->dir, strerror(errno));
        return -1;
    }
    uint32_t *seqs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned int seq;
        char tail[8];
        if (sscanf(de->d_name, "seg-%8x.%4s", &seq, tail) == 2 && strcmp(tail, "log") == 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                seqs = realloc(seqs, cap * sizeof *seqs);
            }
            seqs[n++] = seq;
        }
    }
    closedir(d);
    if (n)
        qsort(seqs, n, sizeof *seqs, cmp_u32);
    for (size_t i = 0; i < n; i++) {
        int fd = -1;
        int r = seg_open(s, seqs[i], false, &fd);
        if (r < 0) {
            snprintf(err, errlen, "cannot open spool segment %08x: %s", seqs[i], strerror(-r));
            free(seqs);
            return -1;
        }
        unsigned char *buf = NULL;
        size_t len = 0;
        if (read_all(fd, &buf, &len) < 0) {
            snprintf(err, errlen, "cannot read spool segment %08x", seqs[i]);
            close(fd);
            free(seqs);
            return -1;
        }
        size_t valid = spool_scan_records(buf, len, NULL);
        if (valid < len) {
            /* a torn tail from a crash: everything after the last complete
             * record was never acknowledged, so it is cut off */
            if (ftruncate(fd, (off_t)valid) == 0)
                fdatasync(fd);
        }
        seg_add(s, seqs[i], fd, valid);
        recover_segment(s, s->n_segs - 1, buf, valid);
        free(buf);
    }
    free(seqs);
    return 0;
}

/* ---- open / close ---- */

int spool_open(const char *dir, struct event_base *base, struct spool **out, char *err,
               size_t errlen)
{
    struct spool *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->dir = strdup(dir);
    s->base = base;
    s->efd = -1;
    s->dir_fd = -1;
    s->n_buckets = 1024;
    s->buckets = calloc(s->n_buckets, sizeof *s->buckets);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create spool directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dir_fd < 0) {
        snprintf(err, errlen, "cannot open spool directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (recover(s, err, errlen) < 0)
        goto fail;
    /* ids: milliseconds in the high bits keep them unique across restarts
     * even when the spool was emptied (4096 ids per millisecond before the
     * counter runs ahead of the clock); the recovered maximum keeps them
     * increasing */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t t = ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000) << 12;
    if (s->next_id < t)
        s->next_id = t;
    /* always append to a fresh segment: an old tail may sit after a cut */
    uint32_t seq = s->n_segs ? s->segs[s->n_segs - 1].seq + 1 : 1;
    int fd = -1;
    int r = seg_open(s, seq, true, &fd);
    if (r < 0) {
        snprintf(err, errlen, "cannot create spool segment in %s: %s", dir, strerror(-r));
        goto fail;
    }
    seg_add(s, seq, fd, 0);
    s->cur = s->n_segs - 1;
    s->dir_dirty = true;
    if (fsync(s->dir_fd) < 0) {
        snprintf(err, errlen, "cannot sync spool directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    s->dir_dirty = false;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (base) {
        s->wake_ev = event_new(base, s->efd, EV_READ | EV_PERSIST, on_wake, s);
        event_add(s->wake_ev, NULL);
    }
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start commit thread");
        goto fail;
    }
    spool_compact(s);
    *out = s;
    return 0;
fail:
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->efd >= 0)
        close(s->efd);
    for (size_t i = 0; i < s->n_segs; i++)
        close(s->segs[i].fd);
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    free(s->segs);
    free(s->buckets);
    free(s->dir);
    free(s);
    return -1;
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    /* finish what is in flight; completions may queue more (state records),
     * so drain until nothing is left, for at most ten seconds */
    for (int i = 0; i < 10000 && s->inflight > 0; i++) {
        run_completions(s);
        if (s->inflight > 0)
            usleep(1000);
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    run_completions(s);
    if (s->wake_ev)
        event_free(s->wake_ev);
    close(s->efd);
    for (size_t i = 0; i < s->n_buckets; i++)
        for (struct spool_msg *m = s->buckets[i]; m;) {
            struct spool_msg *next = m->hash_next;
            msg_free(m);
            m = next;
        }
    for (size_t i = 0; i < s->n_segs; i++)
        if (!s->segs[i].deleted)
            close(s->segs[i].fd);
    close(s->dir_fd);
    free(s->buckets);
    free(s->segs);
    free(s->dir);
    free(s);
}

uint64_t spool_new_id(struct spool *s)
{
    return s->next_id++;
}

/* ---- compaction ---- */

/* Copies a live message forward into the current segment, with a snapshot
 * of its state, so that its old segment can go once the copy is durable. */
static int copy_forward(struct spool *s, struct spool_msg *m)
{
    unsigned char *rec = malloc(m->rec_len);
    struct pending *p = calloc(1, sizeof *p);
    if (!rec || !p) {
        free(rec);
        free(p);
        return -ENOMEM;
    }
    ssize_t r = pread(seg_fd(s, m->seg_index), rec, m->rec_len, (off_t)m->rec_off);
    if (r != (ssize_t)m->rec_len) {
        free(rec);
        free(p);
        return -EIO;
    }
    /* the record is self-contained: rewrite it as is (header, CRC and all) */
    p->iov[0] = (struct iovec){rec, REC_HDR_LEN};
    p->iov[1] = (struct iovec){rec + REC_HDR_LEN, m->rec_len - REC_HDR_LEN};
    p->n = 2;
    p->own[0] = rec;
    p->id = m->id;
    p->kind = PENDING_COPY;
    p->data_skip = m->data_off - m->rec_off;
    enqueue(s, p);
    uint64_t t = p->ticket;
    for (uint32_t i = 0; i < m->n_rcpts && t; i++)
        if (m->rcpt_state[i] != SPOOL_RCPT_PENDING)
            t = append_state(s, m->id,
                             m->rcpt_state[i] == SPOOL_RCPT_DELIVERED ? SPOOL_OP_RCPT_DELIVERED
                                                                      : SPOOL_OP_RCPT_FAILED,
                             (int32_t)i, 0, 0, NULL, NULL, NULL);
    if (t)
        t = append_state(s, m->id, SPOOL_OP_RESTORE, (int32_t)m->attempts, m->next_attempt,
                         (uint8_t)m->state, m->last_reply, NULL, NULL);
    m->copying = true;
    m->copy_release = t;
    return t ? 0 : -ENOMEM;
}

void spool_compact(struct spool *s)
{
    uint64_t durable = s->durable;
    pthread_mutex_lock(&s->mu);
    size_t cur = s->cur;
    pthread_mutex_unlock(&s->mu);
    size_t active_segs = 0;
    for (size_t i = 0; i < s->n_segs; i++)
        active_segs += !s->segs[i].deleted;
    /* segments go in order, oldest first, so state records that later
     * segments hold for older messages are never orphaned by a crash */
    for (size_t i = 0; i < s->n_segs; i++) {
        struct segment *g = &s->segs[i];
        if (g->deleted)
            continue;
        if (i == cur)
            break;
        if (g->live > 0 && active_segs > 3) {
            /* the oldest segment pins the disk: move its messages on */
            for (size_t b = 0; b < s->n_buckets; b++)
                for (struct spool_msg *m = s->buckets[b]; m; m = m->hash_next)
                    if (m->committed && !m->copying && m->seg_index == i)
                        if (copy_forward(s, m) < 0)
                            return;
            g = &s->segs[i];
        }
        if (g->live > 0 || g->release_ticket > durable)
            break;
        char name[64];
        snprintf(name, sizeof name, "seg-%08" PRIx32 ".log", g->seq);
        if (unlinkat(s->dir_fd, name, 0) < 0)
            break;
        pthread_mutex_lock(&s->mu);
        g->deleted = true;
        close(g->fd);
        g->fd = -1;
        s->dir_dirty = true;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
        active_segs--;
    }
}

void spool_get_stats(struct spool *s, struct spool_stats *st)
{
    memset(st, 0, sizeof *st);
    st->oldest_received = 0;
    for (size_t b = 0; b < s->n_buckets; b++)
        for (struct spool_msg *m = s->buckets[b]; m; m = m->hash_next) {
            if (!m->committed)
                continue;
            st->messages++;
            if (m->state == SPOOL_MSG_ACTIVE)
                st->active++;
            else if (m->state == SPOOL_MSG_HELD)
                st->held++;
            else
                st->dead++;
            if (!st->oldest_received || m->received < st->oldest_received)
                st->oldest_received = m->received;
        }
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_segs; i++)
        if (!s->segs[i].deleted) {
            st->segments++;
            st->bytes += s->segs[i].size;
        }
    st->commits = s->commits;
    pthread_mutex_unlock(&s->mu);
    st->records = s->records;
}

/* ---- metadata ---- */

/* Calls fn for each "key=value" line; stops when fn returns non-zero. */
static int meta_each(const char *meta,
                     int (*fn)(void *arg, const char *k, size_t kl, const char *v, size_t vl),
                     void *arg)
{
    const char *p = meta;
    while (p && *p) {
        size_t n = strcspn(p, "\n");
        const char *eq = memchr(p, '=', n);
        if (eq && fn(arg, p, (size_t)(eq - p), eq + 1, n - (size_t)(eq - p) - 1))
            return 1;
        p += n + (p[n] ? 1 : 0);
    }
    return 0;
}

struct meta_find {
    const char *key;
    char *out;
    size_t outlen;
};

static int meta_find_one(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct meta_find *f = arg;
    if (strlen(f->key) != kl || memcmp(f->key, k, kl) != 0)
        return 0;
    if (vl >= f->outlen)
        vl = f->outlen - 1;
    memcpy(f->out, v, vl);
    f->out[vl] = 0;
    return 1;
}

int spool_meta_get(const char *meta, const char *key, char *out, size_t outlen)
{
    struct meta_find f = {key, out, outlen};
    if (outlen)
        out[0] = 0;
    return outlen && meta_each(meta, meta_find_one, &f) ? 0 : -1;
}

static int meta_json_one(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    char key[64];
    if (kl >= sizeof key)
        return 0;
    memcpy(key, k, kl);
    key[kl] = 0;
    json_object_set_new(arg, key, json_stringn(v, vl));
    return 0;
}

struct json_t *spool_meta_json(const char *meta)
{
    json_t *o = json_object();
    meta_each(meta, meta_json_one, o);
    return o;
}
