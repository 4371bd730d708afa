/* The grammar pieces address.c and address_param.c share. Included only by
 * src/mail/address*.c. */
#ifndef SLUICE_MAIL_ADDRESS_INT_H
#define SLUICE_MAIL_ADDRESS_INT_H

#include <stdbool.h>

#include "mail/address.h"

typedef enum smtp_addr_error addr_err;

bool addr_is_alpha(unsigned char c);
bool addr_is_digit(unsigned char c);
bool addr_is_hex(unsigned char c);
bool addr_is_atext(unsigned char c);
void addr_path_reset(struct smtp_path *path);
addr_err addr_parse_path(const unsigned char **pp, const unsigned char *end, bool is_mail,
                         bool allow_utf8, struct smtp_path *path);
addr_err addr_parse_prefix(const unsigned char **pp, const unsigned char *end, const char *prefix);

#endif
