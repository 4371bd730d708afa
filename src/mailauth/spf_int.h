/* The evaluation state spf.c and spf_macro.c share. Included only by
 * src/mailauth/spf*.c. */
#ifndef SLUICE_MAILAUTH_SPF_INT_H
#define SLUICE_MAILAUTH_SPF_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "mailauth/spf.h"

struct spf_eval {
    struct dns_resolver *dns;
    const struct spf_request *req;
    int family;
    unsigned char addr[16];
    unsigned lookups;
    unsigned voids;
    char *problem;
    char *mechanism;
    char *p_value; /* %{p}, computed once */
};

const char *spf_compute_p(struct spf_eval *ev, const char *domain);
int spf_expand(struct spf_eval *ev, const char *sender, const char *domain, const char *s,
               size_t len, bool exp_context, char **out);

#endif
