/*
 * filereader: a clean page-cache workload for cleancache. Creates (or reuses)
 * a set of files totalling N MiB under DIR with deterministic content, then
 * for each pass: sync + drop caches, read every file, checksum and time it.
 * With cleancache the pages dropped after pass 1 are kept by the host and
 * pass 2 reads fewer blocks from disk (compare pgpgin / pgmajfault per pass).
 * Prints one JSON object; exit status 0 iff every pass saw the expected data.
 *
 *   filereader [--dir D] [--mib N] [--files F] [--passes K] [--no-drop] [--recreate]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long vmstat(const char *key)
{
	FILE *f = fopen("/proc/vmstat", "r");
	char k[128];
	long v;
	long r = -1;
	if (!f)
		return -1;
	while (fscanf(f, "%127s %ld", k, &v) == 2)
		if (!strcmp(k, key)) {
			r = v;
			break;
		}
	fclose(f);
	return r;
}

/*
 * Drop the page cache only ("1"): "3" also evicts the unused inodes, and
 * evicting an inode invalidates its whole cleancache object (5.10:
 * truncate_inode_pages_final -> cleancache_invalidate_inode), so nothing
 * dropped would be left in tmem for the next pass.
 */
static void drop_caches(void)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "1\n", 2) < 0)
			perror("drop_caches");
		close(fd);
	}
}

/* content of byte block b (8 bytes) of file f */
static inline uint64_t pattern(uint64_t f, uint64_t b)
{
	uint64_t x = (f + 1) * 0x9e3779b97f4a7c15ULL ^ b * 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 29);
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	/* FNV-1a over 64-bit words: fast enough under TCG, order-sensitive */
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < n / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

int main(int argc, char **argv)
{
	const char *dir = "/mnt/data/filereader";
	long mib = 256, nfiles = 8, passes = 2;
	int drop = 1, recreate = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = atol(argv[++i]);
		else if (!strcmp(argv[i], "--files") && i + 1 < argc)
			nfiles = atol(argv[++i]);
		else if (!strcmp(argv[i], "--passes") && i + 1 < argc)
			passes = atol(argv[++i]);
		else if (!strcmp(argv[i], "--no-drop"))
			drop = 0;
		else if (!strcmp(argv[i], "--recreate"))
			recreate = 1;
		else {
			fprintf(stderr, "usage: %s [--dir D] [--mib N] [--files F] [--passes K] [--no-drop] [--recreate]\n", argv[0]);
			return 2;
		}
	}
	if (nfiles < 1)
		nfiles = 1;
	if (passes < 1)
		passes = 1;
	size_t per_file = ((size_t)mib * CHUNK / nfiles) & ~(CHUNK - 1);
	if (per_file == 0)
		per_file = CHUNK;
	uint8_t *buf = aligned_alloc(4096, CHUNK);
	char path[4096];
	mkdir(dir, 0755);

	/* expected checksum and (re)creation */
	double tc0 = now();
	int created = 0;
	uint64_t expect = 0xcbf29ce484222325ULL;
	for (long f = 0; f < nfiles; f++) {
		snprintf(path, sizeof path, "%s/f%03ld", dir, f);
		struct stat st;
		int need = recreate || stat(path, &st) != 0 || (size_t)st.st_size != per_file;
		int fd = need ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
		if (need && fd < 0) {
			printf("{\"workload\":\"filereader\",\"error\":\"create %s: %s\"}\n", path, strerror(errno));
			return 1;
		}
		for (size_t off = 0; off < per_file; off += CHUNK) {
			uint64_t *w = (uint64_t *)buf;
			for (size_t i = 0; i < CHUNK / 8; i++)
				w[i] = pattern(f, (off + i * 8) / 8);
			expect = fnv(expect, buf, CHUNK);
			if (need && write(fd, buf, CHUNK) != (ssize_t)CHUNK) {
				printf("{\"workload\":\"filereader\",\"error\":\"write %s: %s\"}\n", path, strerror(errno));
				return 1;
			}
		}
		if (need) {
			fsync(fd);
			close(fd);
			created++;
		}
	}
	double tc1 = now();

	int ok = 1;
	printf("{\"workload\":\"filereader\",\"dir\":\"%s\",\"mib\":%zu,\"files\":%ld,\"created\":%d,"
	       "\"create_s\":%.3f,\"drop_caches\":%s,\"expected\":\"%016llx\",\"passes\":[",
	       dir, per_file * nfiles / CHUNK, nfiles, created, tc1 - tc0, drop ? "true" : "false",
	       (unsigned long long)expect);
	for (long pass = 0; pass < passes; pass++) {
		if (drop)
			drop_caches();
		long in0 = vmstat("pgpgin"), mf0 = vmstat("pgmajfault");
		double t0 = now();
		uint64_t h = 0xcbf29ce484222325ULL;
		size_t total = 0;
		for (long f = 0; f < nfiles; f++) {
			snprintf(path, sizeof path, "%s/f%03ld", dir, f);
			int fd = open(path, O_RDONLY);
			if (fd < 0) {
				ok = 0;
				continue;
			}
			ssize_t n;
			size_t got = 0;
			while ((n = read(fd, buf + got, CHUNK - got)) > 0) {
				got += n;
				if (got == CHUNK) {
					h = fnv(h, buf, CHUNK);
					total += CHUNK;
					got = 0;
				}
			}
			if (got) {
				h = fnv(h, buf, got);
				total += got;
			}
			close(fd);
		}
		double dt = now() - t0;
		long in1 = vmstat("pgpgin"), mf1 = vmstat("pgmajfault");
		int good = h == expect;
		ok &= good;
		printf("%s{\"pass\":%ld,\"seconds\":%.3f,\"mib_per_s\":%.1f,\"bytes\":%zu,\"checksum\":\"%016llx\","
		       "\"ok\":%s,\"pgpgin_kb\":%ld,\"pgmajfault\":%ld}",
		       pass ? "," : "", pass + 1, dt, dt > 0 ? total / (double)CHUNK / dt : 0.0, total,
		       (unsigned long long)h, good ? "true" : "false", in1 - in0, mf1 - mf0);
		fflush(stdout);
	}
	printf("],\"ok\":%s}\n", ok ? "true" : "false");
	return ok ? 0 : 1;
}
