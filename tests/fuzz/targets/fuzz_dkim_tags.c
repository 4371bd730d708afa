/* Fuzzes the DKIM text parsers that see hostile input: the tag-list parser,
 * key records (as if from DNS) and DKIM-Signature values. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/dkim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dkim_taglist tl;
    static struct dkim_key_record kr;
    static struct dkim_signature sig;
    char err[160];
    /* exact-size copy so ASan sees any read past the end */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (dkim_tags_parse(buf, size, &tl) == 0) {
        for (size_t i = 0; i < tl.count; i++) {
            if (tl.tag[i].name < buf || tl.tag[i].value + tl.tag[i].value_len > buf + size)
                abort();
        }
    }
    dkim_key_record_parse(buf, size, &kr, err, sizeof(err));
    if (dkim_signature_parse(buf, size, &sig, err, sizeof(err)) == 0) {
        if (sig.header_count == 0 || sig.b_raw + sig.b_raw_len > buf + size)
            abort();
    } else if (strlen(err) >= sizeof(err)) {
        abort();
    }
    free(buf);
    return 0;
}
