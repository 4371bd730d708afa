/* Intake: the header work done on every accepted message before it is
 * spooled: a Received trace field (RFC 5321 4.4, with TLS and AUTH details,
 * RFC 3848 protocol names) and Message-ID / Date when the client left them
 * out (RFC 5322 3.6). Pure: no I/O besides the arguments. */
#ifndef SLUICE_MAIL_INTAKE_H
#define SLUICE_MAIL_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct intake_info {
    const char *hostname; /* our name */
    const char *helo;     /* client's EHLO/HELO argument */
    const char *client_ip;
    const char *auth_user; /* NULL when unauthenticated */
    const char *tls_desc;  /* "TLSv1.3 TLS_AES_256_GCM_SHA384", NULL without TLS */
    const char *queue_id;
    bool esmtp, smtputf8;
    time_t now;
};

struct intake_result {
    char prepend[1024]; /* the Received field, CRLF-terminated */
    size_t prepend_len;
    size_t header_end; /* offset in the message where the header block ends */
    char append[512];  /* Message-ID / Date fields to add there, or "" */
    size_t append_len;
    char message_id[256]; /* the message's Message-ID (given or made), without <> */
    bool has_from;
};

/* Examines msg (CRLF lines) and fills out. Never fails. */
void intake_build(const char *msg, size_t len, const struct intake_info *info,
                  struct intake_result *out);

/* RFC 5322 date-time for t in UTC, e.g. "Thu, 26 Nov 2026 08:45:51 +0000". */
void intake_date(time_t t, char *buf, size_t len);

#endif
