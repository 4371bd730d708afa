/* The spool's write side: record framing and CRC, segment files, the
 * writer thread that appends records and runs one fdatasync per commit
 * round (group commit), and the completions it hands back to the loop
 * thread, with the retry of records that could not be written. The
 * contract is in spool.h; docs/SPOOL.md describes the format. */
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

/* ---- record I/O ---- */

void sp_rec_header(unsigned char *h, uint8_t type, uint32_t len, uint64_t id)
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

void sp_pending_free(struct pending *p)
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

void *sp_writer_main(void *arg)
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
    sp_pending_free(p);
}

void sp_run_completions(struct spool *s)
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
bool sp_retry_unrecorded(struct spool *s)
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

void sp_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct spool *s = arg;
    (void)fd;
    (void)what;
    if (!s->r_head)
        return;
    if (!sp_retry_unrecorded(s))
        arm_retry(s, 20); /* the ones in flight come back within a commit */
    else
        arm_retry(s, SPOOL_RETRY_MS); /* in case they fail again */
}

size_t spool_unrecorded(const struct spool *s)
{
    return s->unrecorded;
}

void sp_on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct spool *s = arg;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    (void)what;
    sp_run_completions(s);
}
