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
    sp_rec_header(h, REC_STATE, (uint32_t)(STATE_FIXED_LEN + rl), id);
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
    sp_rec_header((unsigned char *)buf, REC_MSG, (uint32_t)(4 + elen + dlen), id);
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
        s->wake_ev = event_new(base, s->efd, EV_READ | EV_PERSIST, sp_on_wake, s);
        s->retry_ev = evtimer_new(base, sp_on_retry, s);
        event_add(s->wake_ev, NULL);
    }
    if (pthread_create(&s->thread, NULL, sp_writer_main, s) != 0) {
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
        sp_run_completions(s);
        if (s->inflight == 0 && s->r_head && !retried)
            retried = sp_retry_unrecorded(s); /* a last chance for what could not be appended */
        if (s->inflight > 0)
            usleep(1000);
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    sp_run_completions(s);
    if (s->r_head) {
        /* lost: after the restart these deliveries are repeated and these
         * bounces made again, so nothing is lost for the senders */
        log_event(LOG_ERROR, "spool.unrecorded_at_exit", "records", "#%zu", s->unrecorded, NULL);
        while (s->r_head) {
            struct pending *p = s->r_head;
            s->r_head = p->next;
            if (p->cb)
                p->cb(p->arg, p->err, p->id);
            sp_pending_free(p);
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
