/* Compaction: deletes segments nothing live depends on, oldest first, and
 * copies live messages forward out of an old segment when that frees space. */
#include "spool/spool_int.h"

#include "core/crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- compaction ---- */

/* Copying forward pays only when at least this share (in percent) of the
 * bytes it frees is dead: live mail that fills many segments by itself then
 * stays where it is instead of being rewritten again and again. */
#define COMPACT_MIN_DEAD_PERCENT 50
/* Bytes copied per turn at most, as a fraction of the segment size, so that
 * a large clean-up is spread over many timer turns. */
#define COMPACT_TURN_DIVISOR 4
#define COMPACT_TURN_MIN (64u << 10)

/* What copying m forward writes: its record, a state record per finished
 * recipient and the restore record. */
static uint64_t copy_cost(const struct spool_msg *m)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        n += m->rcpt_state[i] != SPOOL_RCPT_PENDING;
    return m->rec_len + n * (REC_HDR_LEN + STATE_FIXED_LEN) +
           (m->last_reply ? strlen(m->last_reply) : 0);
}

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
    ssize_t r = pread(sp_seg_fd(s, m->seg_index), rec, m->rec_len, (off_t)m->rec_off);
    if (r != (ssize_t)m->rec_len || get32(rec) != REC_MAGIC) {
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
    sp_enqueue(s, p);
    uint64_t t = p->ticket;
    s->pin_next = m->seg_index + 1;
    for (uint32_t i = 0; i < m->n_rcpts && t; i++)
        if (m->rcpt_state[i] != SPOOL_RCPT_PENDING)
            t = sp_append_state(s, m->id,
                                m->rcpt_state[i] == SPOOL_RCPT_DELIVERED ? SPOOL_OP_RCPT_DELIVERED
                                                                         : SPOOL_OP_RCPT_FAILED,
                                (int32_t)i, 0, 0, NULL, NULL, NULL);
    if (t)
        t = sp_append_state(s, m->id, SPOOL_OP_RESTORE, (int32_t)m->attempts, m->next_attempt,
                            (uint8_t)m->state, m->last_reply, NULL, NULL);
    s->pin_next = 0;
    m->copying = true;
    m->copy_release = t;
    return t ? 0 : -ENOMEM;
}

static bool seg_deletable(const struct spool *s, size_t i, uint64_t durable)
{
    const struct segment *g = &s->segs[i];
    return g->live == 0 && g->pinned == 0 && g->release_ticket <= durable;
}

static int seg_delete(struct spool *s, size_t i)
{
    struct segment *g = &s->segs[i];
    char name[64];
    snprintf(name, sizeof name, "seg-%08" PRIx32 ".log", g->seq);
    if (unlinkat(s->dir_fd, name, 0) < 0)
        return -errno;
    pthread_mutex_lock(&s->mu);
    g->deleted = true;
    close(g->fd);
    g->fd = -1;
    s->dir_dirty = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void spool_compact(struct spool *s)
{
    s->compact_turns++;
    uint64_t durable = s->durable;
    pthread_mutex_lock(&s->mu);
    size_t cur = s->cur;
    uint64_t budget = s->seg_target / COMPACT_TURN_DIVISOR;
    pthread_mutex_unlock(&s->mu);
    if (budget < COMPACT_TURN_MIN)
        budget = COMPACT_TURN_MIN;
    /* segments go in order, oldest first, so state records that later
     * segments hold for older messages are never orphaned by a crash; an
     * unreadable segment stays for the operator and is stepped over */
    size_t i = 0;
    for (; i < cur; i++) {
        struct segment *g = &s->segs[i];
        if (g->deleted || g->unreadable)
            continue;
        if (!seg_deletable(s, i, durable) || seg_delete(s, i) < 0)
            break;
    }
    /* a segment whose messages are all finished may go even while state
     * records wait to be appended (a full disk): its deletion records that
     * they are finished, and is what frees the disk. A copy waits: it
     * would only add records to a disk that has no room for them */
    if (i >= cur || s->segs[i].live == 0 || s->unrecorded)
        return;
    /* moving the oldest live segment's messages frees it and the run of
     * segments after it that hold nothing live */
    uint64_t freed = s->segs[i].size;
    for (size_t j = i + 1; j < cur; j++) {
        const struct segment *g = &s->segs[j];
        if (g->deleted || g->unreadable)
            continue;
        if (g->live > 0)
            break;
        freed += g->size;
    }
    uint64_t live = s->segs[i].live_bytes;
    if (live * 100 > freed * (100 - COMPACT_MIN_DEAD_PERCENT))
        return;
    uint64_t copied = 0;
    for (size_t b = 0; b < s->n_buckets && copied < budget; b++)
        for (struct spool_msg *m = s->buckets[b]; m && copied < budget; m = m->hash_next)
            if (m->committed && !m->copying && m->seg_index == i) {
                uint64_t cost = copy_cost(m);
                int r = copy_forward(s, m);
                if (r == -ENOMEM)
                    goto out;
                if (r == 0)
                    copied += cost;
            }
out:
    s->compact_bytes += copied;
}
