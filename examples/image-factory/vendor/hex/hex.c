#include "hex.h"

int hex_encode(struct strbuf *out, const unsigned char *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++)
		if (sb_putc(out, digits[in[i] >> 4]) || sb_putc(out, digits[in[i] & 15]))
			return -1;
	return 0;
}
