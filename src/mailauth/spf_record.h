/* SPF record syntax (RFC 7208 §4.5, §5, §6, §7.1, §12): a pure parser from
 * the TXT text of one "v=spf1" record to a list of terms, with every syntax
 * rule checked up front so that the evaluator can return permerror before
 * any DNS lookup (§4.6: errors anywhere in the record count). The parsed
 * record points into the caller's text; nothing is allocated but the term array. */
#ifndef SLUICE_MAILAUTH_SPF_RECORD_H
#define SLUICE_MAILAUTH_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 7208 §4.5: a record starts with "v=spf1" followed by SP or its end. */
#define SPF_VERSION_TAG "v=spf1"

enum spf_qualifier {
    SPF_Q_PASS = '+',
    SPF_Q_FAIL = '-',
    SPF_Q_SOFTFAIL = '~',
    SPF_Q_NEUTRAL = '?',
};

enum spf_mech {
    SPF_MECH_ALL,
    SPF_MECH_INCLUDE,
    SPF_MECH_A,
    SPF_MECH_MX,
    SPF_MECH_PTR,
    SPF_MECH_IP4,
    SPF_MECH_IP6,
    SPF_MECH_EXISTS,
};

/* A (pointer, length) view into the record text. */
struct spf_span {
    const char *ptr;
    size_t len;
};

struct spf_term {
    enum spf_mech mech;
    enum spf_qualifier qualifier;
    struct spf_span text;        /* whole term, for reporting the match */
    struct spf_span domain_spec; /* len 0: none given (a, mx, ptr default to <domain>) */
    int cidr4;                   /* -1: not given (means /32) */
    int cidr6;                   /* -1: not given (means /128) */
    unsigned char addr[16];      /* ip4 (4 bytes) / ip6 (16 bytes) network */
};

struct spf_record {
    struct spf_term *terms; /* mechanisms in order; owned, spf_record_clear frees */
    size_t nterms;
    struct spf_span redirect; /* redirect= domain-spec, len 0 when absent */
    struct spf_span exp;      /* exp= domain-spec, len 0 when absent */
    bool has_redirect, has_exp;
};

/* Parse failure: where (offset into the text) and why. */
struct spf_parse_error {
    size_t offset;
    char message[96];
};

/* true when txt is an SPF record ("v=spf1" then SP or end, case-insensitive). */
bool spf_record_is_spf(const char *txt, size_t len);

/* Parse one SPF record. Returns 0, -EINVAL on a syntax error (permerror;
 * *err says where and why), -ENOMEM. *out is always initialised. */
int spf_record_parse(const char *txt, size_t len, struct spf_record *out,
                     struct spf_parse_error *err);
void spf_record_clear(struct spf_record *rec);

/* Check a macro-string (§7.1). exp_context allows the c, r and t letters
 * and spaces (explain-string). Returns 0 or -EINVAL. */
int spf_macro_check(const char *s, size_t len, bool exp_context, struct spf_parse_error *err);

#endif
