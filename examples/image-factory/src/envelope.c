/*
 * envelope: seals a payload into a self-checking text envelope, and opens
 * one again.
 *
 *   envelope seal < file > file.env     base64 body, size and CRC-32 header
 *   envelope open < file.env > file     checks size and CRC-32, exit 1 if bad
 *
 * Built against the libraries resolved from deps.txt (libdeps.a).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "crc32.h"
#include "strbuf.h"

#define ENVELOPE_VERSION "1.0.0"
#define WRAP 76

static int fail(const char *what)
{
	fprintf(stderr, "envelope: %s\n", what);
	return 1;
}

static int seal(const struct strbuf *in)
{
	struct strbuf body = STRBUF_INIT;
	uint32_t crc = crc32_update(0, in->buf, in->len);

	if (b64_encode(&body, (const unsigned char *)in->buf, in->len, WRAP))
		return fail("out of memory");
	printf("envelope %s\nsize %zu\ncrc32 %08x\n\n%s\n", ENVELOPE_VERSION, in->len,
	       (unsigned)crc, body.buf ? body.buf : "");
	sb_release(&body);
	return 0;
}

static int open_envelope(const struct strbuf *in)
{
	struct strbuf payload = STRBUF_INIT;
	char version[32];
	size_t size;
	unsigned crc;
	int used = 0;
	const char *body;

	if (!in->buf || sscanf(in->buf, "envelope %31s\nsize %zu\ncrc32 %8x\n%n", version,
			       &size, &crc, &used) != 3 || !used)
		return fail("not an envelope");
	body = in->buf + used;
	if (b64_decode(&payload, body, in->len - (size_t)used))
		return fail("corrupt body");
	if (payload.len != size)
		return fail("size mismatch");
	if (crc32_update(0, payload.buf, payload.len) != crc)
		return fail("CRC-32 mismatch");
	if (payload.len)
		fwrite(payload.buf, 1, payload.len, stdout);
	sb_release(&payload);
	return 0;
}

int main(int argc, char **argv)
{
	struct strbuf in = STRBUF_INIT;
	int status;

	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("envelope %s\n", ENVELOPE_VERSION);
		return 0;
	}
	if (argc != 2 || (strcmp(argv[1], "seal") && strcmp(argv[1], "open"))) {
		fprintf(stderr, "usage: envelope seal|open < input > output\n");
		return 2;
	}
	if (sb_read_all(&in, stdin))
		return fail("cannot read standard input");
	status = strcmp(argv[1], "seal") == 0 ? seal(&in) : open_envelope(&in);
	sb_release(&in);
	if (fflush(stdout) || ferror(stdout))
		return fail("cannot write standard output");
	return status;
}
