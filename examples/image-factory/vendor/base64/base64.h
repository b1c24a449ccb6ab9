/* base64: RFC 4648 encoding into a strbuf. */
#ifndef BASE64_H
#define BASE64_H

#include <stddef.h>

#include "strbuf.h"

/* Appends the encoding of `in`, a line break every `wrap` characters
 * (0: none). Returns 0, or -1 when memory runs out. */
int b64_encode(struct strbuf *out, const unsigned char *in, size_t n, size_t wrap);
/* Appends the decoding of `in`, skipping line breaks. Returns 0, or -1 on
 * a character outside the alphabet or misplaced padding. */
int b64_decode(struct strbuf *out, const char *in, size_t n);

#endif
