/* The durable spool. Records are appended to segment files by the event-loop
 * thread; a dedicated commit thread calls fdatasync once for everything
 * appended since its last round (group commit) and then wakes the loop, which
 * runs the completions in append order. Recovery (spool_recover.c) replays
 * every segment; compaction (spool_compact.c) reclaims space. */
#include "spool/spool_int.h"

#include "core/crc32c.h"
#include "core/log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

struct spool_msg *sp_index_find(const struct spool *s, uint64_t id)
{
    for (struct spool_msg *m = s->buckets[bucket_of(s, id)]; m; m = m->hash_next)
        if (m->id == id)
            return m;
    return NULL;
}

int sp_index_add(struct spool *s, struct spool_msg *m)
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

void sp_index_remove(struct spool *s, struct spool_msg *m)
{
    struct spool_msg **pp = &s->buckets[bucket_of(s, m->id)];
    while (*pp && *pp != m)
        pp = &(*pp)->hash_next;
    if (*pp) {
        *pp = m->hash_next;
        s->n_msgs--;
    }
    if (m->committed)
        seg_drop(s, m->seg_index, m);
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
struct spool_msg *sp_envelope_parse(uint64_t id, const char *env, size_t len)
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

int sp_seg_open(struct spool *s, uint32_t seq, bool create, int *fd_out)
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
int sp_seg_add(struct spool *s, uint32_t seq, int fd, uint64_t size)
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
int sp_seg_fd(struct spool *s, uint32_t i)
{
    pthread_mutex_lock(&s->mu);
    int fd = s->segs[i].fd;
    pthread_mutex_unlock(&s->mu);
    return fd;
}

/* Hands a record to the writer. Takes ownership of p. */
void sp_enqueue(struct spool *s, struct pending *p)
{
    unsigned char *h = p->iov[0].iov_base;
    put32(h + 4, iov_crc(p->iov, p->n));
    p->total = 0;
    for (int i = 0; i < p->n; i++)
        p->total += p->iov[i].iov_len;
    p->ticket = ++s->appended;
    s->inflight++;
    s->records++;
    if (p->ordered)
        s->ordered_inflight++;
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
    if ((s->segs[s->cur].size + p->total > s->seg_target || s->rotate_next) &&
        s->segs[s->cur].size > 0) {
        s->rotate_next = false;
        uint32_t seq = s->segs[s->cur].seq + 1;
        int fd = -1;
        int r = sp_seg_open(s, seq, true, &fd);
        if (r == 0 && (r = sp_seg_add(s, seq, fd, 0)) < 0)
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
        bool halted = s->ordered_halt, halt_now = false, any_ordered = false;
        pthread_mutex_unlock(&s->mu);

        /* write everything that queued up, then one sync for all of it; once
         * an ordered record fails, later ordered ones are not written, so a
         * retried state change never lands after one made after it */
        bool rotated = false;
        for (struct pending *p = batch; p; p = p->next) {
            any_ordered |= p->ordered;
            if (p->ordered && (halted || halt_now)) {
                p->err = -EAGAIN;
                continue;
            }
            p->err = write_record(s, p, &rotated);
            if (p->err && p->ordered)
                halt_now = true;
        }

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
        if (halt_now)
            s->ordered_halt = true;
        if (err) {
            /* Linux may drop dirty pages after a failed fsync: nothing in
             * this round can be trusted */
            for (struct pending *p = batch; p; p = p->next)
                if (!p->err)
                    p->err = err;
            halt_now |= any_ordered;
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

static void arm_retry(struct spool *s, int ms)
{
    if (s->retry_ev) {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        event_add(s->retry_ev, &tv);
    }
}

/* An ordered record that did not become durable waits, in order, to be
 * appended again: the in-memory state already says it happened, so losing
 * it would repeat a delivery after a restart or lose a bounce. */
static void hold_unrecorded(struct spool *s, struct pending *p)
{
    if (p->err != -EAGAIN)
        s->append_failures++;
    if (!p->waiting) {
        p->waiting = true;
        if (p->pin_seg)
            s->segs[p->pin_seg - 1].pinned++; /* the old copy is all there is */
        if (s->unrecorded++ == 0) {
            log_event(LOG_ERROR, "spool.unrecorded", "error", "%s", strerror(-p->err), "retry_in",
                      "#%d", SPOOL_RETRY_MS / 1000, NULL);
            arm_retry(s, SPOOL_RETRY_MS);
        }
    }
    p->next = NULL;
    if (s->r_tail)
        s->r_tail->next = p;
    else
        s->r_head = p;
    s->r_tail = p;
}

static void finish(struct spool *s, struct pending *p)
{
    if (p->ordered)
        s->ordered_inflight--;
    if (p->ordered && p->err) {
        s->durable = p->ticket;
        s->inflight--;
        hold_unrecorded(s, p);
        return;
    }
    if (p->waiting && p->pin_seg)
        s->segs[p->pin_seg - 1].pinned--;
    if (p->waiting && --s->unrecorded == 0)
        log_event(LOG_INFO, "spool.recorded", "failures", "#%llu",
                  (unsigned long long)s->append_failures, NULL);
    struct spool_msg *m = sp_index_find(s, p->id);
    if (p->kind == PENDING_MSG && m && !m->committed) {
        if (p->err) {
            sp_index_remove(s, m);
        } else {
            m->seg_index = p->seg;
            m->rec_off = p->off;
            m->data_off = p->off + p->data_skip;
            m->committed = true;
            seg_hold(s, p->seg, m);
        }
    } else if (p->kind == PENDING_COPY && m && m->copying) {
        m->copying = false;
        if (!p->err) {
            struct segment *old = &s->segs[m->seg_index];
            if (old->release_ticket < m->copy_release)
                old->release_ticket = m->copy_release;
            seg_drop(s, m->seg_index, m);
            m->seg_index = p->seg;
            m->rec_off = p->off;
            m->data_off = p->off + p->data_skip;
            seg_hold(s, p->seg, m);
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

/* Hands the waiting ordered records back to the writer, oldest first. Only
 * when none is in flight: one in flight was appended after them. */
static bool retry_unrecorded(struct spool *s)
{
    if (s->ordered_inflight > 0)
        return false;
    struct pending *p = s->r_head;
    s->r_head = s->r_tail = NULL;
    pthread_mutex_lock(&s->mu);
    s->ordered_halt = false;
    pthread_mutex_unlock(&s->mu);
    while (p) {
        struct pending *next = p->next;
        p->next = NULL;
        p->err = 0;
        s->records--; /* counted once, when first appended */
        sp_enqueue(s, p);
        p = next;
    }
    return true;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct spool *s = arg;
    (void)fd;
    (void)what;
    if (!s->r_head)
        return;
    if (!retry_unrecorded(s))
        arm_retry(s, 20); /* the ones in flight come back within a commit */
    else
        arm_retry(s, SPOOL_RETRY_MS); /* in case they fail again */
}

size_t spool_unrecorded(const struct spool *s)
{
    return s->unrecorded;
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
bool sp_apply_state(struct spool_msg *m, int op, int32_t rcpt, int64_t when, uint8_t extra,
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
uint64_t sp_append_state(struct spool *s, uint64_t id, int op, int32_t rcpt, int64_t when,
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
    p->ordered = true;
    p->pin_seg = s->pin_next;
    p->cb = cb;
    p->arg = arg;
    sp_enqueue(s, p);
    return p->ticket;
}

int spool_mark(struct spool *s, uint64_t id, enum spool_op op, int rcpt, int64_t when,
               const char *reply, spool_done_fn cb, void *arg)
{
    struct spool_msg *m = sp_index_find(s, id);
    if (!m || !m->committed)
        return -ENOENT;
    uint64_t t = sp_append_state(s, id, op, rcpt, when, 0, reply, cb, arg);
    if (!t)
        return -ENOMEM;
    struct segment *home = &s->segs[m->seg_index];
    if (home->release_ticket < t)
        home->release_ticket = t;
    if (sp_apply_state(m, op, rcpt, when, 0, reply, reply ? strlen(reply) : 0))
        sp_index_remove(s, m);
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
    struct spool_msg *m = sp_envelope_parse(id, envbuf, elen);
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
    p->ordered = (env->flags & SPOOL_F_BOUNCE) != 0; /* a bounce is never dropped */
    p->data_skip = REC_HDR_LEN + 4 + elen;
    p->cb = cb;
    p->arg = arg;
    m->rec_len = (uint32_t)(REC_HDR_LEN + 4 + elen + dlen);
    m->data_len = (uint32_t)dlen;
    m->next_attempt = m->received;
    sp_index_add(s, m);
    sp_enqueue(s, p);
    return 0;
}

/* ---- reading ---- */

const struct spool_msg *spool_get(struct spool *s, uint64_t id)
{
    struct spool_msg *m = sp_index_find(s, id);
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
    struct spool_msg *m = sp_index_find(s, id);
    if (!m)
        return -ENOENT;
    if (!m->committed)
        return -EAGAIN;
    char *buf = malloc(m->data_len + 1);
    if (!buf)
        return -ENOMEM;
    int fd = sp_seg_fd(s, m->seg_index);
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
    s->seg_target = SEG_TARGET_SIZE;
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
    if (sp_recover(s, err, errlen) < 0)
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
    int r = sp_seg_open(s, seq, true, &fd);
    if (r < 0) {
        snprintf(err, errlen, "cannot create spool segment in %s: %s", dir, strerror(-r));
        goto fail;
    }
    sp_seg_add(s, seq, fd, 0);
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
        s->retry_ev = evtimer_new(base, on_retry, s);
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
    if (s->retry_ev)
        event_free(s->retry_ev);
    if (s->efd >= 0)
        close(s->efd);
    for (size_t i = 0; i < s->n_segs; i++)
        if (s->segs[i].fd >= 0)
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
    bool retried = false;
    for (int i = 0; i < 10000 && (s->inflight > 0 || (s->r_head && !retried)); i++) {
        run_completions(s);
        if (s->inflight == 0 && s->r_head && !retried)
            retried = retry_unrecorded(s); /* a last chance for what could not be appended */
        if (s->inflight > 0)
            usleep(1000);
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    run_completions(s);
    if (s->r_head) {
        /* lost: after the restart these deliveries are repeated and these
         * bounces made again, so nothing is lost for the senders */
        log_event(LOG_ERROR, "spool.unrecorded_at_exit", "records", "#%zu", s->unrecorded, NULL);
        while (s->r_head) {
            struct pending *p = s->r_head;
            s->r_head = p->next;
            if (p->cb)
                p->cb(p->arg, p->err, p->id);
            pending_free(p);
        }
        s->r_tail = NULL;
    }
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->retry_ev)
        event_free(s->retry_ev);
    close(s->efd);
    for (size_t i = 0; i < s->n_buckets; i++)
        for (struct spool_msg *m = s->buckets[i]; m;) {
            struct spool_msg *next = m->hash_next;
            msg_free(m);
            m = next;
        }
    for (size_t i = 0; i < s->n_segs; i++)
        if (!s->segs[i].deleted && s->segs[i].fd >= 0)
            close(s->segs[i].fd);
    close(s->dir_fd);
    free(s->buckets);
    free(s->segs);
    free(s->dir);
    free(s);
}

void spool_set_segment_size(struct spool *s, uint64_t bytes)
{
    pthread_mutex_lock(&s->mu);
    s->seg_target = bytes;
    pthread_mutex_unlock(&s->mu);
}

uint64_t spool_new_id(struct spool *s)
{
    return s->next_id++;
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
    st->damaged_ranges = s->damaged_ranges;
    st->damaged_bytes = s->damaged_bytes;
    st->compact_bytes = s->compact_bytes;
    st->compact_turns = s->compact_turns;
    st->unrecorded = s->unrecorded;
    st->append_failures = s->append_failures;
}
