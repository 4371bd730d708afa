/* From an SMTP refusal to an HTTP answer: the submission rules live in the
 * intake and answer in SMTP reply lines; the API door turns each into a
 * status, a stable error code, the rule that refused and, for temporary
 * refusals, a Retry-After. Pure. */
#ifndef SLUICE_HTTPD_API_STATUS_H
#define SLUICE_HTTPD_API_STATUS_H

#include "policy/authz.h"

struct api_status {
    int status;       /* 403, 413, 422, 429, 503 */
    const char *code; /* "sender_not_allowed", "rate_limited", ... */
    const char *rule; /* the rule that refused: "allow_from", "rate", ... */
    int retry_after;  /* seconds, 0 = no Retry-After */
};

void api_status_from_refusal(const struct authz_refusal *ref, struct api_status *out);

/* The reason phrase of the statuses the API sends. */
const char *api_status_phrase(int status);

#endif
