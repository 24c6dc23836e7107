/*
 * swapstress: allocate N MiB of anonymous memory (more than guest RAM, so it
 * must go through swap / frontswap), fill every 4 KiB page with a pattern
 * derived from (page index, seed), then read everything back and verify.
 * Prints one JSON object on stdout; exit status 0 iff no mismatches.
 *
 *   swapstress [--mib N | --ram-pct P] [--seed S] [--passes K]
 *     --mib N       MiB to allocate (default: --ram-pct 150 of MemTotal)
 *     --passes K    verification passes (default 2; pass 2 walks backwards)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define WORDS (PAGE / 8)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t mix(uint64_t x)
{ /* splitmix64 finaliser */
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static inline uint64_t word(uint64_t base, uint64_t i)
{
	return base ^ (i * 0x9e3779b97f4a7c15ULL);
}

static long meminfo_kb(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(key);
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, n) && line[n] == ':') {
			v = atol(line + n + 1);
			break;
		}
	fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	long mib = 0, pct = 150, passes = 2;
	uint64_t seed = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = atol(argv[++i]);
		else if (!strcmp(argv[i], "--ram-pct") && i + 1 < argc)
			pct = atol(argv[++i]);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--passes") && i + 1 < argc)
			passes = atol(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--mib N | --ram-pct P] [--seed S] [--passes K]\n", argv[0]);
			return 2;
		}
	}
	long memtotal_kb = meminfo_kb("MemTotal");
	if (mib <= 0)
		mib = memtotal_kb / 1024 * pct / 100;
	if (passes < 1)
		passes = 1;
	size_t pages = (size_t)mib * 256;
	size_t len = pages * PAGE;
	double t0 = now();
	uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		printf("{\"workload\":\"swapstress\",\"error\":\"mmap of %ld MiB failed\"}\n", mib);
		return 1;
	}
	for (size_t p = 0; p < pages; p++) {
		uint64_t *w = (uint64_t *)(mem + p * PAGE);
		uint64_t base = mix(seed * 0x100000001b3ULL + p);
		for (uint64_t i = 0; i < WORDS; i++)
			w[i] = word(base, i);
	}
	double t1 = now();
	uint64_t checked = 0, bad_pages = 0, first_bad = UINT64_MAX;
	double tv[16] = {0};
	for (long pass = 0; pass < passes; pass++) {
		double ts = now();
		for (size_t k = 0; k < pages; k++) {
			size_t p = (pass & 1) ? pages - 1 - k : k;
			const uint64_t *w = (const uint64_t *)(mem + p * PAGE);
			uint64_t base = mix(seed * 0x100000001b3ULL + p);
			int bad = 0;
			for (uint64_t i = 0; i < WORDS; i++)
				bad |= w[i] != word(base, i);
			checked++;
			if (bad) {
				bad_pages++;
				if (p < first_bad)
					first_bad = p;
			}
		}
		if (pass < 16)
			tv[pass] = now() - ts;
	}
	double t2 = now();
	printf("{\"workload\":\"swapstress\",\"mib\":%ld,\"pages\":%zu,\"seed\":%llu,\"passes\":%ld,"
	       "\"memtotal_kb\":%ld,\"pages_checked\":%llu,\"mismatches\":%llu,\"first_bad_page\":%lld,"
	       "\"fill_s\":%.3f,\"verify_s\":%.3f,\"verify_pass_s\":[",
	       mib, pages, (unsigned long long)seed, passes, memtotal_kb,
	       (unsigned long long)checked, (unsigned long long)bad_pages,
	       first_bad == UINT64_MAX ? -1LL : (long long)first_bad, t1 - t0, t2 - t1);
	for (long pass = 0; pass < passes && pass < 16; pass++)
		printf("%s%.3f", pass ? "," : "", tv[pass]);
	printf("],\"ok\":%s}\n", bad_pages ? "false" : "true");
	munmap(mem, len);
	return bad_pages ? 1 : 0;
}
