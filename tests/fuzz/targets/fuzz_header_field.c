/* Header field builder and EHLO argument check: whatever octets a client
 * chooses, a built field is one logical line (every CR is followed by LF and
 * a fold, no LF without CR, no control octet, no line over 998 octets), and
 * an EHLO name that is accepted holds no octet outside RFC 5321 Domain or
 * address-literal syntax. */
#include "mail/address.h"
#include "mail/header_field.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char value[2048];
    size_t n = size < sizeof value - 1 ? size : sizeof value - 1;
    memcpy(value, data, n);
    value[n] = 0;

    char out[4096];
    int len = header_field(out, sizeof out, "X-Test", value);
    if (len >= 0) {
        size_t col = 0;
        if ((size_t)len != strlen(out) || len < 2 || memcmp(out + len - 2, "\r\n", 2) != 0)
            abort();
        for (int i = 0; i < len; i++) {
            unsigned char c = (unsigned char)out[i];
            if (c == '\r') {
                if (out[i + 1] != '\n')
                    abort();
                if (i + 2 < len && out[i + 2] != ' ' && out[i + 2] != '\t')
                    abort(); /* a break inside the field is always a fold */
                col = 0;
                i++;
                continue;
            }
            if ((c < 0x20 && c != '\t') || c == 0x7f || ++col > HEADER_LINE_HARD)
                abort();
        }
    }

    if (smtp_helo_valid((const char *)data, size)) {
        for (size_t i = 0; i < size; i++)
            if (data[i] <= 0x20 || data[i] >= 0x7f)
                abort();
    }
    return 0;
}
