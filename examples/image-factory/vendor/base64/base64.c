#include "base64.h"

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int emit(struct strbuf *out, char c, size_t *col, size_t wrap)
{
	if (wrap && *col == wrap) {
		if (sb_putc(out, '\n'))
			return -1;
		*col = 0;
	}
	(*col)++;
	return sb_putc(out, c);
}

int b64_encode(struct strbuf *out, const unsigned char *in, size_t n, size_t wrap)
{
	size_t i, col = 0;

	for (i = 0; i < n; i += 3) {
		unsigned long v = (unsigned long)in[i] << 16;
		size_t left = n - i;

		if (left > 1)
			v |= (unsigned long)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		if (emit(out, alphabet[(v >> 18) & 63], &col, wrap) ||
		    emit(out, alphabet[(v >> 12) & 63], &col, wrap) ||
		    emit(out, left > 1 ? alphabet[(v >> 6) & 63] : '=', &col, wrap) ||
		    emit(out, left > 2 ? alphabet[v & 63] : '=', &col, wrap))
			return -1;
	}
	return 0;
}

static int value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int b64_decode(struct strbuf *out, const char *in, size_t n)
{
	unsigned long v = 0;
	int bits = 0, pad = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		int d;

		if (in[i] == '\n' || in[i] == '\r')
			continue;
		if (in[i] == '=') {
			pad++;
			continue;
		}
		d = value(in[i]);
		if (d < 0 || pad)
			return -1;
		v = (v << 6) | (unsigned long)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (sb_putc(out, (char)((v >> bits) & 0xff)))
				return -1;
		}
	}
	return pad > 2 ? -1 : 0;
}
