/* SPDX-License-Identifier: GPL-2.0 */
#include "lg.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <ctype.h>

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

void lg_die(int code, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&out_lock);
	fflush(stdout);
	fprintf(stderr, "loadgen: %s: ", code == EXIT_HANG ? "HANG" : code == EXIT_MISMATCH ? "FAIL" : "error");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	/* the last line is always JSON, also on failure */
	printf("{\"mode\":\"%s\",\"ok\":false,\"exit\":%d}\n", G.mode ? G.mode : "none", code);
	fflush(stdout);
	fflush(stderr);
	_exit(code);
}

void lg_info(const char *fmt, ...)
{
	va_list ap;
	FILE *f = G.json ? stderr : stdout;
	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fflush(f);
	pthread_mutex_unlock(&out_lock);
}

void json_out(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

uint64_t parse_size(const char *s, const char *what)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*s))
		lg_die(EXIT_ERROR, "%s: '%s' is not a size", what, s);
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		lg_die(EXIT_ERROR, "%s: '%s' is not a size", what, s);
	unsigned shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 0: break;
	case 'K': shift = 10; end++; break;
	case 'M': shift = 20; end++; break;
	case 'G': shift = 30; end++; break;
	case 'T': shift = 40; end++; break;
	default: lg_die(EXIT_ERROR, "%s: '%s' has an unknown unit (K, M, G, T)", what, s);
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		lg_die(EXIT_ERROR, "%s: '%s' is not a size", what, s);
	if (shift && v > (UINT64_MAX >> shift))
		lg_die(EXIT_ERROR, "%s: '%s' is too large", what, s);
	return (uint64_t)v << shift;
}

static uint64_t page_seed(uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t ver)
{
	return mix64(pool ^ mix64(oid[0] ^ mix64(oid[1] ^ mix64(oid[2] ^ mix64(index ^ mix64(ver))))));
}

/* Page content is a function of (pool, oid, index, version); words 0..2 name it. */
void fill_page(uint8_t *p, uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t ver)
{
	uint64_t *w = (uint64_t *)(void *)p;
	uint64_t s = page_seed(pool, oid, index, ver);
	w[0] = ((uint64_t)pool << 32) | index;
	w[1] = oid[0];
	w[2] = ver;
	for (int i = 3; i < TMEM_PAGE_SIZE / 8; i++) {
		s += 0x9e3779b97f4a7c15ull;
		w[i] = mix64(s);
	}
}

int check_page(const uint8_t *p, uint32_t pool, const uint64_t oid[3], uint32_t index, uint64_t ver)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t s = page_seed(pool, oid, index, ver);
	if (w[0] != (((uint64_t)pool << 32) | index))
		return 0;
	if (w[1] != oid[0])
		return 1;
	if (w[2] != ver)
		return 2;
	for (int i = 3; i < TMEM_PAGE_SIZE / 8; i++) {
		s += 0x9e3779b97f4a7c15ull;
		if (w[i] != mix64(s))
			return i;
	}
	return -1;
}
