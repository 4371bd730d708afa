/* libFuzzer target for the SPF record parser and macro-string checker:
 * any byte string must parse or fail cleanly, and a parsed record's spans
 * must stay inside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mailauth/spf_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *txt = (const char *)data;
    struct spf_record rec;
    struct spf_parse_error err;
    if (spf_record_parse(txt, size, &rec, &err) == 0) {
        for (size_t i = 0; i < rec.nterms; i++) {
            const struct spf_term *t = &rec.terms[i];
            if (t->text.ptr < txt || t->text.ptr + t->text.len > txt + size)
                abort();
            if (t->domain_spec.len &&
                (t->domain_spec.ptr < txt || t->domain_spec.ptr + t->domain_spec.len > txt + size))
                abort();
            if (t->cidr4 > 32 || t->cidr6 > 128)
                abort();
        }
        spf_record_clear(&rec);
    } else if (err.offset > size) {
        abort();
    }
    spf_macro_check(txt, size, size & 1, NULL);
    return 0;
}
