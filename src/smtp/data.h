/* Decoder for the DATA stream (RFC 5321 4.1.1.4, 4.5.2): removes dot-stuffing
 * and finds the end of data. Only <CRLF>.<CRLF> ends data; a bare LF or bare
 * CR anywhere is recorded so the session can refuse the message (the SMTP
 * smuggling defence), but scanning goes on until the real end. Pure. */
#ifndef SLUICE_SMTP_DATA_H
#define SLUICE_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF. */
#define SMTP_TEXT_LINE_MAX 998

struct smtp_data_decoder {
    int state;           /* private */
    bool dot_mode;       /* true for DATA, false for BDAT (no dot handling) */
    bool bare_lf;        /* a LF not preceded by CR was seen */
    bool bare_cr;        /* a CR not followed by LF was seen */
    bool nul_byte;       /* a NUL octet was seen */
    bool eight_bit;      /* an octet >= 0x80 was seen */
    size_t line_len;     /* length of the current line so far */
    size_t longest_line; /* longest line seen, excluding CRLF */
};

void smtp_data_decoder_init(struct smtp_data_decoder *d, bool dot_mode);

/* Feeds `len` input bytes. Writes the unstuffed message content to `out`
 * (capacity >= len; `out` may be `in` for decoding in place) and sets
 * *out_len, which is never more than the bytes consumed. Returns how many
 * input bytes were consumed; in dot mode consumption stops right after the
 * terminating CRLF.CRLF, *done is set, and the final CRLF before the dot is
 * part of the content (the message ends with CRLF). Bytes after the
 * terminator stay unconsumed (pipelined commands). In dot mode one more case
 * leaves a byte unconsumed: input ending in a line's leading "." and a CR
 * keeps that CR back until the next byte shows whether it ends the data;
 * present it again with the following input.
 * In BDAT mode all input is consumed and *done is never set; call
 * smtp_data_decoder_finish at the LAST chunk. */
size_t smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t len, char *out,
                        size_t *out_len, bool *done);

/* BDAT LAST: flags a trailing lone CR as bare and counts the last line
 * (which may lack a CRLF) in longest_line. */
void smtp_data_decoder_finish(struct smtp_data_decoder *d);

#endif
