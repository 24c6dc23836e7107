/*
 * swapstress: allocate N MiB of anonymous memory (more than guest RAM, so it
 * must go through swap / frontswap), fill every 4 KiB page with a pattern
 * derived from (page index, seed), then read everything back and verify.
 * Prints one JSON object on stdout; exit status 0 iff no mismatches.
 *
 *   swapstress [--mib N | --ram-pct P] [--seed S] [--passes K] [--huge] [--hold FIFO]
 *     --mib N       MiB to allocate (default: --ram-pct 150 of MemTotal)
 *     --passes K    verification passes (default 2; pass 2 walks backwards)
 *     --huge        a 2 MiB-aligned mapping with madvise(MADV_HUGEPAGE), so
 *                   that the fill (in order, 2 MiB at a time) faults in
 *                   transparent huge pages; the peak of AnonHugePages in
 *                   /proc/meminfo during the fill is reported
 *     --hold FIFO   between the fill and the verification: write "filled
 *                   PAGES" to FIFO, then wait until a line can be read from it
 *                   (the e2e scripts suspend the guest, unbind the driver,
 *                   stall the host... while the pages sit in swap)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define WORDS (PAGE / 8)
#define HUGE (2UL << 20)

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

/* "filled PAGES" into the FIFO, then block until the other side writes a line. */
static int hold(const char *fifo, size_t pages)
{
	char buf[64];
	int fd = open(fifo, O_WRONLY);
	int n;

	if (fd < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "filled %zu\n", pages);
	if (write(fd, buf, n) != n) {
		close(fd);
		return -1;
	}
	close(fd);
	fd = open(fifo, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return n > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	long mib = 0, pct = 150, passes = 2, huge = 0;
	long anon_huge_peak_kb = -1;
	const char *fifo = NULL;
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
		else if (!strcmp(argv[i], "--huge"))
			huge = 1;
		else if (!strcmp(argv[i], "--hold") && i + 1 < argc)
			fifo = argv[++i];
		else {
			fprintf(stderr, "usage: %s [--mib N | --ram-pct P] [--seed S] [--passes K] [--huge] [--hold FIFO]\n", argv[0]);
			return 2;
		}
	}
	long memtotal_kb = meminfo_kb("MemTotal");
	if (mib <= 0)
		mib = memtotal_kb / 1024 * pct / 100;
	if (passes < 1)
		passes = 1;
	if (huge)
		mib = (mib + 1) & ~1L; /* whole huge pages */
	size_t pages = (size_t)mib * 256;
	size_t len = pages * PAGE;
	/* --huge: map one huge page more and start at the first 2 MiB boundary */
	size_t maplen = huge ? len + HUGE : len;
	double t0 = now();
	uint8_t *map = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		printf("{\"workload\":\"swapstress\",\"error\":\"mmap of %ld MiB failed\"}\n", mib);
		return 1;
	}
	uint8_t *mem = map;
	if (huge) {
		mem = (uint8_t *)(((uintptr_t)map + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
		if (madvise(mem, len, MADV_HUGEPAGE)) {
			printf("{\"workload\":\"swapstress\",\"error\":\"madvise(MADV_HUGEPAGE) failed\"}\n");
			return 1;
		}
		anon_huge_peak_kb = 0;
	}
	for (size_t p = 0; p < pages; p++) {
		uint64_t *w = (uint64_t *)(mem + p * PAGE);
		uint64_t base = mix(seed * 0x100000001b3ULL + p);
		for (uint64_t i = 0; i < WORDS; i++)
			w[i] = word(base, i);
		/* after each huge page: how much of the memory is in huge pages */
		if (huge && (p + 1) % (HUGE / PAGE) == 0) {
			long kb = meminfo_kb("AnonHugePages");

			if (kb > anon_huge_peak_kb)
				anon_huge_peak_kb = kb;
		}
	}
	double t1 = now();
	if (fifo && hold(fifo, pages)) {
		printf("{\"workload\":\"swapstress\",\"error\":\"--hold %s failed\"}\n", fifo);
		return 1;
	}
	double th = now();
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
	       "\"huge\":%s,\"anon_huge_peak_kb\":%ld,\"held_s\":%.3f,"
	       "\"fill_s\":%.3f,\"verify_s\":%.3f,\"verify_pass_s\":[",
	       mib, pages, (unsigned long long)seed, passes, memtotal_kb,
	       (unsigned long long)checked, (unsigned long long)bad_pages,
	       first_bad == UINT64_MAX ? -1LL : (long long)first_bad,
	       huge ? "true" : "false", anon_huge_peak_kb, fifo ? th - t1 : 0.0,
	       t1 - t0, t2 - th);
	for (long pass = 0; pass < passes && pass < 16; pass++)
		printf("%s%.3f", pass ? "," : "", tv[pass]);
	printf("],\"ok\":%s}\n", bad_pages ? "false" : "true");
	munmap(map, maplen);
	return bad_pages ? 1 : 0;
}
