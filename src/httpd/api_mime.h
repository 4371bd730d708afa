/* The message the API builds from a struct api_message: an RFC 5322 header
 * (From, To, Cc, Reply-To, Subject with RFC 2047 encoded words where the
 * text is not ASCII, the client's extra fields) and a MIME body (RFC 2045-
 * 2046): text and html as multipart/alternative, inline parts with a
 * Content-ID under multipart/related, attachments under multipart/mixed.
 * Bcc never appears in the header. Pure apart from the random boundary. */
#ifndef SLUICE_HTTPD_API_MIME_H
#define SLUICE_HTTPD_API_MIME_H

#include <stddef.h>

struct api_message;

/* Builds the message with CRLF line ends; *out is allocated (free). Returns
 * 0, or -1 with err set (out of memory). */
int api_mime_build(const struct api_message *m, char **out, size_t *outlen, char *err,
                   size_t errlen);

#endif
