/* DATA / BDAT body decoder: every message octet received over SMTP passes
 * through here on its way to the spool. Only <CRLF>.<CRLF> ends DATA, and
 * every bare CR or LF is recorded, so that a message can never be ended (or
 * a second one started) by a line ending that a downstream MTA would read
 * differently: the SMTP smuggling defence. Plain text is scanned a word at a
 * time; only line ends and the first octet of each line are looked at alone. */
#include "smtp/data.h"

#include <stdint.h>
#include <string.h>

enum data_state {
    DATA_BOL = 0, /* at the start of a line: after CRLF, or at the very start */
    DATA_TEXT,    /* inside a line */
    DATA_CR,      /* a CR was copied; a LF next makes it a line end */
    DATA_DOT,     /* a "." began the line and was dropped (dot mode only) */
    DATA_DONE,    /* CRLF.CRLF seen */
};

/* Word-at-a-time detection of an octet value (the classic "has zero byte"
 * test applied to x ^ pattern); exact as a yes/no answer. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t has_zero_byte(uint64_t x)
{
    return (x - ONES) & ~x & HIGHS;
}

/* Length of the leading run of [p, p+n) free of CR, LF and NUL, the only
 * octets that need a closer look. ORs the run into *acc so the caller can
 * see whether any octet had its high bit set. */
static size_t plain_run(const unsigned char *p, size_t n, uint64_t *acc)
{
    const uint64_t cr = ONES * '\r', lf = ONES * '\n';
    uint64_t bits = 0;
    size_t i = 0;

    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (has_zero_byte(w) | has_zero_byte(w ^ cr) | has_zero_byte(w ^ lf))
            break;
        bits |= w;
        i += 8;
    }
    while (i < n && p[i] != '\r' && p[i] != '\n' && p[i] != '\0') {
        bits |= p[i];
        i++;
    }
    *acc |= bits;
    return i;
}

static void end_line(struct smtp_data_decoder *d)
{
    if (d->line_len > d->longest_line)
        d->longest_line = d->line_len;
    d->line_len = 0;
}

void smtp_data_decoder_init(struct smtp_data_decoder *d, bool dot_mode)
{
    memset(d, 0, sizeof(*d));
    d->state = DATA_BOL;
    d->dot_mode = dot_mode;
}

size_t smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t len, char *out,
                        size_t *out_len, bool *done)
{
    const unsigned char *p = (const unsigned char *)in, *end = p + len;
    char *o = out;
    uint64_t acc = 0;

    *done = d->state == DATA_DONE;
    while (p < end && d->state != DATA_DONE) {
        switch (d->state) {
        case DATA_BOL:
            if (d->dot_mode && *p == '.') {
                /* RFC 5321 4.5.2: a leading dot is dropped; whether it was
                 * stuffing or the terminator shows in the next octets. */
                d->state = DATA_DOT;
                d->line_len = 1;
                p++;
            } else {
                d->state = DATA_TEXT;
            }
            break;

        case DATA_DOT:
            if (*p != '\r') {
                d->state = DATA_TEXT;
                break;
            }
            if (end - p < 2) {
                /* ".\r" at the end of the input: leave the CR unconsumed
                 * until the next octet says whether this is the end. */
                goto out;
            }
            if (p[1] == '\n') {
                /* CRLF "." CRLF: the preceding CRLF stays in the content. */
                p += 2;
                d->line_len = 0;
                d->state = DATA_DONE;
                *done = true;
                goto out;
            }
            /* ".\r" then something else: the dot was stuffing, the CR bare. */
            *o++ = '\r';
            d->bare_cr = true;
            d->line_len++;
            d->state = DATA_TEXT;
            p++;
            break;

        case DATA_CR:
            if (*p == '\n') {
                *o++ = '\n';
                p++;
                end_line(d);
                d->state = d->dot_mode ? DATA_BOL : DATA_TEXT;
            } else {
                d->bare_cr = true;
                d->line_len++;
                d->state = DATA_TEXT;
            }
            break;

        case DATA_TEXT: {
            size_t run = plain_run(p, (size_t)(end - p), &acc);
            memmove(o, p, run);
            o += run;
            p += run;
            d->line_len += run;
            if (p == end)
                break;
            unsigned char c = *p++;
            *o++ = (char)c;
            if (c == '\r') {
                d->state = DATA_CR;
            } else if (c == '\n') {
                /* Not after CR: a bare LF. It ends the line for length
                 * counting, but a "." after it is never a terminator. */
                d->bare_lf = true;
                end_line(d);
            } else {
                d->nul_byte = true;
                d->line_len++;
            }
            break;
        }

        default: /* DATA_DONE */
            break;
        }
    }
out:
    if (acc & HIGHS)
        d->eight_bit = true;
    *out_len = (size_t)(o - out);
    return (size_t)(p - (const unsigned char *)in);
}

void smtp_data_decoder_finish(struct smtp_data_decoder *d)
{
    if (d->state == DATA_CR) {
        d->bare_cr = true;
        d->line_len++;
        d->state = DATA_TEXT;
    }
    end_line(d);
}
