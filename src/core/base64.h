/* Base64 (RFC 4648 section 4) encoding and strict decoding. */
#ifndef SLUICE_CORE_BASE64_H
#define SLUICE_CORE_BASE64_H

#include <stddef.h>

/* Bytes needed to encode n bytes, plus the NUL. */
#define BASE64_ENCODED_SIZE(n) ((((n) + 2) / 3) * 4 + 1)

/* Encodes; out must hold BASE64_ENCODED_SIZE(len). Returns encoded length. */
size_t base64_encode(const void *in, size_t len, char *out);

/* Decodes strictly (padding required, no whitespace unless allow_space).
 * out must hold len/4*3 bytes. Returns decoded length or -1. */
long base64_decode(const char *in, size_t len, unsigned char *out, int allow_space);

#endif
