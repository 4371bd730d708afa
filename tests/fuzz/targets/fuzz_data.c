/* Fuzz target for the DATA/BDAT decoder (smtp/data.c). The first input
 * byte picks the mode and the chunk pattern; the rest is the stream. Checks:
 * output never exceeds what was consumed, feeding in chunks (and in place)
 * gives exactly the result of feeding everything at once, and nothing is
 * consumed after the terminator. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/data.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

struct outcome {
    char *out;
    size_t out_len, consumed;
    bool done;
    struct smtp_data_decoder d;
};

/* Feeds data in chunks of the given sizes (cycled), re-presenting the bytes
 * each call leaves unconsumed, as a session keeping an input buffer does. */
static void run(const char *in, size_t len, bool dot_mode, const uint8_t *sizes, size_t nsizes,
                bool in_place, struct outcome *o)
{
    char *work = malloc(len + 1);
    CHECK(work != NULL);
    smtp_data_decoder_init(&o->d, dot_mode);
    o->out_len = o->consumed = 0;
    o->done = false;
    size_t arrived = 0, k = 0;
    while (!o->done && arrived < len) {
        size_t step = nsizes ? (size_t)sizes[k++ % nsizes] % 17 + 1 : len;
        arrived = arrived + step > len ? len : arrived + step;
        size_t avail = arrived - o->consumed, out_len = 0;
        bool done = false;
        const char *src = in + o->consumed;
        char *dst = o->out + o->out_len;
        if (in_place) {
            memcpy(work, src, avail);
            src = work;
            dst = work;
        }
        size_t n = smtp_data_decode(&o->d, src, avail, dst, &out_len, &done);
        CHECK(n <= avail);
        CHECK(out_len <= n);
        if (!dot_mode)
            CHECK(n == avail && !done);
        if (!done)
            CHECK(n + 1 >= avail);
        if (in_place)
            memcpy(o->out + o->out_len, work, out_len);
        o->out_len += out_len;
        o->consumed += n;
        o->done = done;
    }
    free(work);
}

static void same(const struct outcome *a, const struct outcome *b)
{
    CHECK(a->out_len == b->out_len);
    CHECK(memcmp(a->out, b->out, a->out_len) == 0);
    CHECK(a->consumed == b->consumed);
    CHECK(a->done == b->done);
    CHECK(a->d.bare_lf == b->d.bare_lf && a->d.bare_cr == b->d.bare_cr);
    CHECK(a->d.nul_byte == b->d.nul_byte && a->d.eight_bit == b->d.eight_bit);
    CHECK(a->d.longest_line == b->d.longest_line && a->d.line_len == b->d.line_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool dot_mode = (data[0] & 1) == 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct outcome whole, split, bytes, inplace;

    whole.out = malloc(len + 1);
    split.out = malloc(len + 1);
    bytes.out = malloc(len + 1);
    inplace.out = malloc(len + 1);
    CHECK(whole.out && split.out && bytes.out && inplace.out);

    run(in, len, dot_mode, NULL, 0, false, &whole);
    uint8_t one = 0;
    run(in, len, dot_mode, data, size < 8 ? size : 8, false, &split);
    run(in, len, dot_mode, &one, 1, false, &bytes);
    run(in, len, dot_mode, data, size < 5 ? size : 5, true, &inplace);
    same(&whole, &split);
    same(&whole, &bytes);
    same(&whole, &inplace);

    if (whole.done) {
        /* The terminator is CRLF "." CRLF (or "." CRLF at the very start)
         * and it is the last thing consumed. */
        CHECK(whole.consumed >= 3);
        CHECK(memcmp(in + whole.consumed - 3, ".\r\n", 3) == 0);
        CHECK(whole.consumed == 3 ||
              (whole.consumed >= 5 && memcmp(in + whole.consumed - 5, "\r\n", 2) == 0));
        CHECK(whole.out_len == 0 ||
              (whole.out_len >= 2 && memcmp(whole.out + whole.out_len - 2, "\r\n", 2) == 0));
    } else if (dot_mode) {
        CHECK(whole.consumed + 1 >= len);
    } else {
        CHECK(whole.consumed == len && whole.out_len == len && memcmp(whole.out, in, len) == 0);
    }
    if (!whole.d.bare_lf && !whole.d.bare_cr && !whole.d.nul_byte)
        CHECK(memchr(whole.out, '\0', whole.out_len) == NULL);

    free(whole.out);
    free(split.out);
    free(bytes.out);
    free(inplace.out);
    return 0;
}
