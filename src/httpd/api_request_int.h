/* Helpers shared by the request parsers (api_request.c, api_raw.c). */
#ifndef SLUICE_HTTPD_API_REQUEST_INT_H
#define SLUICE_HTTPD_API_REQUEST_INT_H

#include "httpd/api_request.h"

#include <jansson.h>
#include <stddef.h>

/* Fills e and returns -1. */
__attribute__((format(printf, 5, 6))) int api_req_fail(struct api_req_error *e, int status,
                                                       const char *code, const char *field,
                                                       const char *fmt, ...);
/* A copy of s[0..n) without surrounding white space (allocates). */
char *api_trim_dup(const char *s, size_t n);
void api_addr_clear(struct api_addr *a);
/* Parses a JSON text (duplicate keys refused); NULL with e filled (400). */
json_t *api_json_load(const char *body, size_t len, struct api_req_error *e);

#endif
