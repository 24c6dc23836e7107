/* SPDX-License-Identifier: GPL-2.0 */
#include "lg.h"

#include <stdlib.h>
#include <string.h>
#include <signal.h>

struct cfg G = {
	.socket = NULL,
	.ram = 64ull << 20,
	.queues = 4,
	.depth = 16,
	.ops = 1000000,
	.seed = 1,
	.qsize = 256,
	.timeout_ms = 5000,
	.objects = 16,
	.indexes = 32,
	.bench_pages = 16384,
	.lat_ops = 20000,
	.maxmem_pages = -1,
	.shared_expect = "denied",
	.noise = "long",
	.nap_us = 200,
	.rate = 20000,
};

static const struct {
	const char *name;
	int (*run)(void);
} modes[] = {
	{ "verify", mode_verify }, { "rules", mode_rules }, { "malformed", mode_malformed }, { "bench", mode_bench },
	{ "latency", mode_latency }, { "noisy", mode_noisy }, { "paced", mode_paced },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tmem-loadgen MODE --socket PATH [options]\n"
		"modes: verify | rules | malformed | bench | latency | noisy | paced (results as JSON on the last line)\n"
		"  latency: PUT then GET at depth 1 on queue 0, --lat-ops of each: p50/p99/max\n"
		"  noisy: keeps every avail ring of --queues queues full of one chain (a hostile\n"
		"    or heavy guest) until SIGTERM or SIGINT; prints 'loadgen: noisy: flooding' on\n"
		"    stderr once the rings are full, then the chains the daemon completed\n"
		"  paced: --ops PUTs and GETs alternately at --rate per second, depth 1, on queue 0;\n"
		"    the daemon's CPU per request (--cpu-pid PID, from /proc), beside a C probe's\n"
		"    CPU per eventfd wake-up at the same rate\n"
		"  --socket PATH        the daemon's vhost-user socket (required)\n"
		"  --ram SIZE           guest RAM (memfd), default 64M\n"
		"  --two-regions        SET_MEM_TABLE with two regions and a hole\n"
		"  --queues N           queues to drive (default 4; rules/malformed use them too)\n"
		"  --depth D            requests in flight per queue (default 16)\n"
		"  --qsize N            queue size, power of two (default 256)\n"
		"  --ops N              verify: total operations (default 1000000)\n"
		"  --seed S             random seed (default 1)\n"
		"  --indirect           negotiate INDIRECT_DESC and send every request as one indirect descriptor\n"
		"  --event-idx          negotiate EVENT_IDX\n"
		"  --shared             negotiate TMEM_F_SHARED\n"
		"  --one-thread         one thread drives all queues (default: one per queue)\n"
		"  --objects N --indexes N   verify: handles per pool per queue (default 16 x 32)\n"
		"  --bench-pages N      bench: pages in the store working set (default 16384)\n"
		"  --lat-ops N          bench: requests timed one by one (default 20000)\n"
		"  --maxmem-pages N     rules: expected INFO persistent_limit_pages (NOSPACE checked at it)\n"
		"  --shared-expect denied|allowed   rules: shared pools of this VM (default denied)\n"
		"  --timeout-ms N       a request or reply later than this is a hang (default 5000)\n"
		"  --no-reply-ack       do not negotiate REPLY_ACK\n"
		"  --unsealed           guest RAM memfd without F_SEAL_SHRINK|GROW|SEAL (QEMU seals it)\n"
		"  --noise long|split|valid   noisy: a chain of the whole queue size of 4-byte\n"
		"                       readable descriptors (refused: no response room), a valid\n"
		"                       PUT with its page split over 1021 descriptors, or a plain\n"
		"                       3-descriptor PUT (default long)\n"
		"  --nap-us N           noisy: microseconds between refills (default 200)\n"
		"  --rate N             paced: requests per second (default 20000)\n"
		"  --cpu-pid PID        paced: the daemon's process id (required)\n"
		"  --json               human-readable lines go to stderr; stdout has the JSON only\n"
		"  --verbose            log every vhost-user message\n");
}

static long long num_arg(const char *v, const char *what, long long min, long long max)
{
	char *end;
	long long x = strtoll(v, &end, 0);
	if (!*v || *end || x < min || x > max)
		lg_die(EXIT_ERROR, "%s: '%s' is not a number in %lld..%lld", what, v, min, max);
	return x;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_ERROR : 0;
	}
	G.mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL()                                                             \
	do {                                                              \
		if (!v)                                                   \
			lg_die(EXIT_ERROR, "%s needs a value", a);        \
		i++;                                                      \
	} while (0)
		if (!strcmp(a, "--socket")) { VAL(); G.socket = v; }
		else if (!strcmp(a, "--ram")) { VAL(); G.ram = parse_size(v, a); }
		else if (!strcmp(a, "--queues")) { VAL(); G.queues = (int)num_arg(v, a, 1, 256); }
		else if (!strcmp(a, "--depth")) { VAL(); G.depth = (int)num_arg(v, a, 1, 32768); }
		else if (!strcmp(a, "--qsize")) { VAL(); G.qsize = (int)num_arg(v, a, 4, 32768); }
		else if (!strcmp(a, "--ops")) { VAL(); G.ops = (uint64_t)num_arg(v, a, 1, 1ll << 40); }
		else if (!strcmp(a, "--seed")) { VAL(); G.seed = (uint64_t)num_arg(v, a, 0, 1ll << 62); }
		else if (!strcmp(a, "--objects")) { VAL(); G.objects = (int)num_arg(v, a, 1, 1 << 16); }
		else if (!strcmp(a, "--indexes")) { VAL(); G.indexes = (int)num_arg(v, a, 1, 1 << 16); }
		else if (!strcmp(a, "--bench-pages")) { VAL(); G.bench_pages = (uint64_t)num_arg(v, a, 16, 1ll << 28); }
		else if (!strcmp(a, "--lat-ops")) { VAL(); G.lat_ops = (uint64_t)num_arg(v, a, 10, 1ll << 30); }
		else if (!strcmp(a, "--maxmem-pages")) { VAL(); G.maxmem_pages = num_arg(v, a, 0, 1ll << 50); }
		else if (!strcmp(a, "--timeout-ms")) { VAL(); G.timeout_ms = (int)num_arg(v, a, 10, 3600000); }
		else if (!strcmp(a, "--nap-us")) { VAL(); G.nap_us = (int)num_arg(v, a, 0, 1000000); }
		else if (!strcmp(a, "--rate")) { VAL(); G.rate = (int)num_arg(v, a, 1, 10000000); }
		else if (!strcmp(a, "--cpu-pid")) { VAL(); G.cpu_pid = (int)num_arg(v, a, 1, 1 << 30); }
		else if (!strcmp(a, "--noise")) {
			VAL();
			if (strcmp(v, "long") && strcmp(v, "split") && strcmp(v, "valid"))
				lg_die(EXIT_ERROR, "--noise: long, split or valid");
			G.noise = v;
		}
		else if (!strcmp(a, "--shared-expect")) {
			VAL();
			if (strcmp(v, "denied") && strcmp(v, "allowed"))
				lg_die(EXIT_ERROR, "--shared-expect: denied or allowed");
			G.shared_expect = v;
		}
		else if (!strcmp(a, "--json")) G.json = 1;
		else if (!strcmp(a, "--indirect")) G.indirect = 1;
		else if (!strcmp(a, "--event-idx")) G.event_idx = 1;
		else if (!strcmp(a, "--shared")) G.shared = 1;
		else if (!strcmp(a, "--two-regions")) G.two_regions = 1;
		else if (!strcmp(a, "--one-thread")) G.one_thread = 1;
		else if (!strcmp(a, "--no-reply-ack")) G.no_reply_ack = 1;
		else if (!strcmp(a, "--unsealed")) G.unsealed = 1;
		else if (!strcmp(a, "--verbose")) G.verbose = 1;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
		else lg_die(EXIT_ERROR, "unknown option '%s' (see --help)", a);
#undef VAL
	}
	if (!G.socket)
		lg_die(EXIT_ERROR, "--socket PATH is required");
	if (G.qsize & (G.qsize - 1))
		lg_die(EXIT_ERROR, "--qsize must be a power of two");
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(G.mode, modes[i].name))
			return modes[i].run();
	lg_die(EXIT_ERROR, "unknown mode '%s' (verify, rules, malformed, bench, latency, noisy, paced)", G.mode);
}
