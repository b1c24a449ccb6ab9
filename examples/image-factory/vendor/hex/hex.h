/* hex: lower-case hexadecimal dumps into a strbuf. */
#ifndef HEX_H
#define HEX_H

#include <stddef.h>

#include "strbuf.h"

/* Appends two hex digits per byte. Returns 0, or -1 when memory runs out. */
int hex_encode(struct strbuf *out, const unsigned char *in, size_t n);

#endif
