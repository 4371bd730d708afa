/* Delivery status notifications (RFC 3464 multipart/report, RFC 6522) sent to
 * the envelope sender when recipients fail permanently. */
#ifndef SLUICE_DELIVER_DSN_H
#define SLUICE_DELIVER_DSN_H

#include <stddef.h>
#include <stdint.h>

struct spool;
struct spool_msg;
struct deliver_result;

/* Builds the DSN for the recipients whose result is DELIVER_PERM. The
 * original's header block is included (text/rfc822-headers). Allocates *out.
 * Returns 0 or -1. */
int dsn_build(struct spool *sp, const struct spool_msg *m, const struct deliver_result *res,
              const char *why, const char *hostname, int64_t now, char **out, size_t *len);

#endif
