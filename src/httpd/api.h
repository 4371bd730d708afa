/* The HTTPS submission API (docs/API.md): a second front door beside SMTP
 * that hands messages to the same intake (intake/submit.h), so the sender
 * rules, rates, quotas and content policy are the same. Listens on
 * [api] listen with the TLS context of the SMTP listeners (r->tls). */
#ifndef SLUICE_HTTPD_API_H
#define SLUICE_HTTPD_API_H

#include <stddef.h>

struct relay;

/* Starts the API on r->base when [api] listen is set (r->api; NULL when it
 * is empty). Returns 0, or -1 with err set. */
int api_start(struct relay *r, char *err, size_t errlen);

/* The port actually bound (0 when off). */
int api_port(const struct relay *r);

/* Closes the listener and every connection. */
void api_stop(struct relay *r);

#endif
