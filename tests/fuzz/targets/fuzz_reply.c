/* libFuzzer target for the delivery client's reply parser: whole replies
 * from arbitrary bytes, line by line, and EHLO keyword lines. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "deliver/client_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct smtp_reply r;
    size_t pos = 0, used = 0;

    /* Consume replies the way the client does with a pipelined stream. */
    while (pos < size && smtp_reply_parse(buf + pos, size - pos, &r, &used) == 1) {
        if (used == 0 || used > size - pos || r.code < 200 || r.code > 599 ||
            strlen(r.text) != r.text_len || r.text_len >= SMTP_REPLY_TEXT_MAX)
            __builtin_trap();
        pos += used;
    }

    /* Every line as an EHLO keyword line and as a reply line. */
    struct smtp_ehlo ehlo;
    memset(&ehlo, 0, sizeof(ehlo));
    const char *p = buf, *end = buf + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        smtp_ehlo_keyword(p, len, &ehlo);
        struct smtp_reply_line line;
        if (smtp_reply_line_parse(p, len, &line) == 0 &&
            (line.text < p || line.text + line.text_len > p + len))
            __builtin_trap();
        char enhanced[SMTP_ENHANCED_MAX];
        size_t consumed;
        if (smtp_reply_enhanced_parse(p, len, enhanced, &consumed) == 0 &&
            (consumed > len || strlen(enhanced) >= SMTP_ENHANCED_MAX))
            __builtin_trap();
        p += len + 1;
    }
    return 0;
}
