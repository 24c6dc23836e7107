// SPDX-License-Identifier: GPL-2.0
/* What tmem-loadgen and blk-loadgen share beside the socket (common.h). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096u

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t rng_next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return mix64(*s);
}

double memcpy_pages_per_sec(uint64_t pages)
{
	size_t sz = (size_t)pages * PAGE;
	uint8_t *src = malloc(sz), *dst = malloc(sz);
	uint64_t done = 0, t0, t;
	unsigned int sink = 0;
	double r;

	if (!src || !dst)
		lg_die(EXIT_ERROR, "out of memory for the memcpy baseline (%zu bytes)", sz);
	memset(src, 0x5c, sz);
	memset(dst, 0xc5, sz);
	for (uint64_t i = 0; i < pages; i++)
		memcpy(dst + i * PAGE, src + i * PAGE, PAGE);
	t0 = now_ns();
	do {
		for (uint64_t i = 0; i < pages; i++)
			memcpy(dst + i * PAGE, src + i * PAGE, PAGE);
		/* the copies are used: the compiler may not drop them */
		__asm__ __volatile__("" : : "r"(dst) : "memory");
		sink += dst[done % sz];
		done += pages;
		t = now_ns();
	} while (t - t0 < 500000000ull);
	r = (double)done / ((double)(t - t0) / 1e9);
	if (sink == 0xffffffffu)
		fputs("(sink)\n", stderr);
	free(src);
	free(dst);
	return r;
}
