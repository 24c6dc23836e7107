/* SPDX-License-Identifier: GPL-2.0 */
/*
 * paced: requests at a fixed rate (--rate per second), depth 1, on queue 0:
 * what a guest's cleancache and frontswap traffic looks like, not a flood.
 * It measures what one request costs the daemon in CPU: --cpu-pid PID names
 * the daemon, whose CPU is read right before the first paced request and
 * right after the last (utime + stime of /proc/PID/stat, every thread, and
 * the scheduler's run time of each thread from /proc/PID/task/TID/schedstat,
 * in nanoseconds). The guest side waits for each answer by polling the used
 * ring, as the guest driver does (no interrupts asked for), and spins the
 * last stretch before each request (wait_until): requests are evenly
 * spaced, and "late" counts those that could not be.
 *
 * Context from the same run, so the figure reads the same on a busy machine:
 * - probe: the same rate and count against a thread of our own that sleeps
 *   in poll(2) on an eventfd, reads it and answers through memory: the floor
 *   any eventfd-woken backend pays per request here (a wake-up, two syscalls);
 * - the daemon's CPU per second with the guest connected and idle;
 * - this process's own CPU per request.
 */
#define _GNU_SOURCE
#include "lg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* <sys/prctl.h> pulls in <linux/types.h>, whose __le64 clashes with tmem_abi.h's */
int prctl(int option, ...);
#define PR_SET_TIMERSLACK 29

#define MAX_THREADS 64

struct thread_cpu {
	int tid;
	char comm[32];
	uint64_t run_ns;
	uint64_t slices; /* times it was switched in (schedstat's third field) */
};

struct proc_cpu {
	uint64_t ticks; /* utime + stime of the whole process */
	uint64_t uticks; /* utime alone: user space (JS, koffi), the rest is the kernel's */
	int n;
	struct thread_cpu t[MAX_THREADS];
};

static int read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

static void read_proc_cpu(int pid, struct proc_cpu *out)
{
	char path[96], buf[1024];
	memset(out, 0, sizeof(*out));
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (read_file(path, buf, sizeof(buf)))
		lg_die(EXIT_ERROR, "--cpu-pid %d: cannot read %s: %s", pid, path, strerror(errno));
	/* fields after the command name (which may hold spaces): 3 state ... 14 utime 15 stime */
	char *p = strrchr(buf, ')');
	unsigned long long ut = 0, st = 0;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		lg_die(EXIT_ERROR, "--cpu-pid %d: cannot parse %s", pid, path);
	out->ticks = ut + st;
	out->uticks = ut;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		lg_die(EXIT_ERROR, "--cpu-pid %d: cannot list %s: %s", pid, path, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d)) && out->n < MAX_THREADS) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		struct thread_cpu *t = &out->t[out->n];
		t->tid = atoi(e->d_name);
		snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", pid, t->tid);
		unsigned long long ns, slices;
		if (read_file(path, buf, sizeof(buf)) || sscanf(buf, "%llu %*u %llu", &ns, &slices) != 2)
			continue; /* the thread ended meanwhile */
		t->run_ns = ns;
		t->slices = slices;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", pid, t->tid);
		if (read_file(path, t->comm, sizeof(t->comm)))
			strcpy(t->comm, "?");
		t->comm[strcspn(t->comm, "\n")] = 0;
		out->n++;
	}
	closedir(d);
}

static uint64_t run_ns_total(const struct proc_cpu *c)
{
	uint64_t s = 0;
	for (int i = 0; i < c->n; i++)
		s += c->t[i].run_ns;
	return s;
}

static uint64_t slices_total(const struct proc_cpu *c)
{
	uint64_t s = 0;
	for (int i = 0; i < c->n; i++)
		s += c->t[i].slices;
	return s;
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The last stretch before a request is spun, not slept: a guest vCPU that
 * issues its next store is running (reclaiming, reading ahead), not halted.
 * Sleeping instead made the pace the wake-up latency of an idle vCPU here:
 * tens of microseconds late, so most requests went back to back.
 */
#define PACE_SPIN_NS 200000ull

static void wait_until(uint64_t t)
{
	if (t > PACE_SPIN_NS && now_ns() < t - PACE_SPIN_NS) {
		uint64_t s = t - PACE_SPIN_NS;
		struct timespec ts = { .tv_sec = (time_t)(s / 1000000000ull), .tv_nsec = (long)(s % 1000000000ull) };

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	}
	while (now_ns() < t)
		cpu_relax();
}

/* ---- the probe: a minimal eventfd-woken backend in C ---- */

struct probe {
	int efd;
	volatile uint32_t answered; /* the "used idx" */
	volatile int stop;
	volatile int tid;
	uint64_t wakes;
};

/* A thread's times switched in so far (schedstat's third field). */
static uint64_t thread_slices(int tid)
{
	char path[96], buf[256];
	unsigned long long sl = 0;
	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", tid);
	if (read_file(path, buf, sizeof(buf)) || sscanf(buf, "%*u %*u %llu", &sl) != 1)
		lg_die(EXIT_ERROR, "cannot read %s", path);
	return sl;
}

static void *probe_thread(void *arg)
{
	struct probe *p = arg;
	struct pollfd pf = { .fd = p->efd, .events = POLLIN };
	uint64_t v;
	p->tid = gettid();
	for (;;) {
		if (poll(&pf, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			lg_die(EXIT_ERROR, "probe poll: %s", strerror(errno));
		}
		if (read(p->efd, &v, 8) != 8)
			continue;
		p->wakes++;
		if (p->stop)
			return NULL;
		__atomic_store_n(&p->answered, p->answered + (uint32_t)v, __ATOMIC_RELEASE);
	}
}

static double probe_cpu_per_wake_us(double rate, uint64_t n, double *switch_ins)
{
	struct probe p = { .efd = eventfd(0, EFD_CLOEXEC) };
	pthread_t tid;
	clockid_t cid;
	if (p.efd < 0)
		lg_die(EXIT_ERROR, "eventfd: %s", strerror(errno));
	if (pthread_create(&tid, NULL, probe_thread, &p) || pthread_getcpuclockid(tid, &cid))
		lg_die(EXIT_ERROR, "probe thread: cannot start it");
	uint64_t one = 1, period = (uint64_t)(1e9 / rate);
	/* one round trip first, so the thread is parked in poll(2) when timing starts */
	if (write(p.efd, &one, 8) != 8)
		lg_die(EXIT_ERROR, "probe eventfd write: %s", strerror(errno));
	while (__atomic_load_n(&p.answered, __ATOMIC_ACQUIRE) != 1)
		cpu_relax();
	uint64_t sl0 = thread_slices(p.tid), c0 = clock_ns(cid), t = now_ns();
	for (uint64_t i = 0; i < n; i++) {
		t += period;
		wait_until(t);
		if (write(p.efd, &one, 8) != 8)
			lg_die(EXIT_ERROR, "probe eventfd write: %s", strerror(errno));
		uint64_t spins = 0;
		while (__atomic_load_n(&p.answered, __ATOMIC_ACQUIRE) != (uint32_t)(i + 2))
			if (++spins > 4096)
				sched_yield();
			else
				cpu_relax();
	}
	uint64_t c1 = clock_ns(cid);
	*switch_ins = (double)(thread_slices(p.tid) - sl0) / (double)n;
	p.stop = 1;
	if (write(p.efd, &one, 8) != 8)
		lg_die(EXIT_ERROR, "probe eventfd write: %s", strerror(errno));
	pthread_join(tid, NULL);
	close(p.efd);
	return (double)(c1 - c0) / 1000.0 / (double)n;
}

/* ---- requests ---- */

static uint32_t pool_new(struct lgdev *d)
{
	struct tmem_new_pool np = { .flags = TMEM_POOL_PERSIST, .page_size = TMEM_PAGE_SIZE };
	struct res r = req_sync(d, 0, TMEM_OP_NEW_POOL, 0, 0, NULL, 0, &np, sizeof(np), NULL, 0);
	if (r.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "NEW_POOL: status %d", r.status);
	return (uint32_t)r.value;
}

/* Request i: PUT of page i/2 (mod pages), then, for odd i, GET of it back. */
static uint64_t one_request(struct lgdev *d, uint32_t pool, uint64_t i, uint64_t pages)
{
	struct vq *q = &d->vq[0];
	struct slot *s = &q->slots[0];
	uint32_t idx = (uint32_t)((i / 2) % pages), id, len;
	uint64_t oid[3] = { 0x9ace, 0, 0 };
	int get = (int)(i & 1);
	uint64_t *w = (uint64_t *)(void *)s->page;
	struct seg segs[3];
	if (get) {
		w[0] = w[1] = 0;
	} else {
		w[0] = ((uint64_t)pool << 32) | idx;
		w[1] = i;
	}
	put_hdr(s->hdr, get ? TMEM_OP_GET_PAGE : TMEM_OP_PUT_PAGE, 0, pool, oid, idx, i);
	segs[0] = (struct seg){ gpa_of(d, s->hdr), TMEM_REQ_SIZE, 0 };
	segs[1] = (struct seg){ gpa_of(d, s->page), TMEM_PAGE_SIZE, (uint16_t)get };
	segs[2] = (struct seg){ gpa_of(d, s->resp), TMEM_RESP_SIZE, 1 };
	uint64_t t0 = now_ns();
	vq_post_chain(d, q, s->head, d->indirect ? s->itab : NULL, segs, 3);
	vq_publish(q, s->head);
	vq_notify(d, q);
	vq_wait(d, q, &id, &len, "a paced request");
	uint64_t t1 = now_ns();
	struct tmem_resp r;
	memcpy(&r, s->resp, sizeof(r));
	if (id != s->head || (int32_t)r.status != TMEM_S_OK || len != (get ? 4112u : 16u))
		lg_die(EXIT_MISMATCH, "paced request %llu (%s index %u): id %u status %d len %u", (unsigned long long)i, get ? "GET" : "PUT", idx, id,
		       (int32_t)r.status, len);
	if (get && (w[0] != (((uint64_t)pool << 32) | idx) || w[1] != i - 1))
		lg_die(EXIT_MISMATCH, "paced GET %llu of index %u returned another page", (unsigned long long)i, idx);
	return t1 - t0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int mode_paced(void)
{
	if (G.cpu_pid <= 0)
		lg_die(EXIT_ERROR, "paced: --cpu-pid PID (the daemon's process) is required");
	double rate = (double)G.rate;
	uint64_t n = G.ops, pages = G.bench_pages, period = (uint64_t)(1e9 / rate);
	struct proc_cpu chk;
	read_proc_cpu(G.cpu_pid, &chk); /* a pid we cannot read fails now, not after the probe */
	/* the sleep before a spin must not be rounded up by 50 us of timer slack */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	double probe_sw;
	double probe = probe_cpu_per_wake_us(rate, n < 20000 ? n : 20000, &probe_sw);
	lg_info("probe (poll(2) + read(2) on an eventfd, in C, at %.0f/s): %.2f us of CPU per wake-up, %.2f switch-ins", rate, probe, probe_sw);

	struct lgdev d;
	G.depth = 1;
	dev_open(&d, 1);
	struct res r0 = req_sync(&d, 0, TMEM_OP_RESET, 0, 0, NULL, 0, NULL, 0, NULL, 0);
	if (r0.status != TMEM_S_OK)
		lg_die(EXIT_MISMATCH, "RESET: status %d", r0.status);
	uint32_t pool = pool_new(&d);
	/* warm-up at the same pace (the daemon's JIT, its store's frames), not measured */
	uint64_t warm = n / 10 < 2000 ? 2000 : n / 10, t = now_ns();
	for (uint64_t i = 0; i < warm; i++) {
		t += period;
		wait_until(t);
		one_request(&d, pool, i, pages);
	}
	/* the daemon idle, guest connected */
	struct proc_cpu i0, i1;
	read_proc_cpu(G.cpu_pid, &i0);
	uint64_t w0 = now_ns();
	usleep(1000000);
	read_proc_cpu(G.cpu_pid, &i1);
	double idle_us_per_s = (double)(run_ns_total(&i1) - run_ns_total(&i0)) / 1000.0 / ((double)(now_ns() - w0) / 1e9);

	uint64_t *ns = calloc(n, sizeof(uint64_t));
	static struct proc_cpu c0, c1;
	if (!ns)
		lg_die(EXIT_ERROR, "out of memory");
	uint64_t late = 0;
	read_proc_cpu(G.cpu_pid, &c0);
	uint64_t self0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID), t0 = now_ns();
	t = t0;
	for (uint64_t i = 0; i < n; i++) {
		t += period;
		if (now_ns() > t)
			late++;
		else
			wait_until(t);
		ns[i] = one_request(&d, pool, warm + (warm & 1) + i, pages);
	}
	uint64_t t1 = now_ns(), self1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	read_proc_cpu(G.cpu_pid, &c1);
	dev_close(&d);

	long hz = sysconf(_SC_CLK_TCK);
	double wall = (double)(t1 - t0) / 1e9;
	double ticks = (double)(c1.ticks - c0.ticks);
	double per_req = ticks / (double)hz * 1e6 / (double)n;
	double user_per_req = (double)(c1.uticks - c0.uticks) / (double)hz * 1e6 / (double)n;
	double sched_per_req = (double)(run_ns_total(&c1) - run_ns_total(&c0)) / 1000.0 / (double)n;
	double self_per_req = (double)(self1 - self0) / 1000.0 / (double)n;
	double switches = (double)(slices_total(&c1) - slices_total(&c0)) / (double)n;
	qsort(ns, n, sizeof(uint64_t), cmp_u64);
	double p50 = (double)ns[n / 2] / 1000.0, p99 = (double)ns[(uint64_t)(0.99 * (double)(n - 1))] / 1000.0, mx = (double)ns[n - 1] / 1000.0;
	free(ns);
	lg_info("paced: %llu requests (PUT, GET alternately) at %.0f/s asked, %.0f/s done, %llu late", (unsigned long long)n, rate,
		(double)n / wall, (unsigned long long)late);
	lg_info("daemon CPU per request: %.2f us (/proc/%d/stat, %.0f ticks of 1/%ld s; user %.2f us), %.2f us (schedstat), %.2f switch-ins; idle %.0f us/s; loadgen %.2f us",
		per_req, G.cpu_pid, ticks, hz, user_per_req, sched_per_req, switches, idle_us_per_s, self_per_req);

	char th[4096];
	size_t l = 0;
	for (int i = 0; i < c1.n && l < sizeof(th) - 128; i++) {
		uint64_t before = 0, sl = 0;
		for (int k = 0; k < c0.n; k++)
			if (c0.t[k].tid == c1.t[i].tid) {
				before = c0.t[k].run_ns;
				sl = c0.t[k].slices;
			}
		double us = (double)(c1.t[i].run_ns - before) / 1000.0 / (double)n;
		double sw = (double)(c1.t[i].slices - sl) / (double)n;
		if (us < 0.005)
			continue;
		char comm[32];
		size_t m = 0;
		for (const char *s = c1.t[i].comm; *s && m < sizeof(comm) - 1; s++)
			comm[m++] = (*s == '"' || *s == '\\' || (unsigned char)*s < 32) ? '_' : *s;
		comm[m] = 0;
		l += (size_t)snprintf(th + l, sizeof(th) - l, "%s{\"tid\":%d,\"comm\":\"%s\",\"cpuPerRequestUs\":%.3f,\"switchInsPerRequest\":%.3f}", l ? "," : "", c1.t[i].tid, comm, us, sw);
	}
	th[l] = 0;
	json_out("{\"mode\":\"paced\",\"ok\":true,\"rate\":%.0f,\"ops\":%llu,\"achievedRate\":%.0f,\"late\":%llu,\"wallS\":%.3f,"
		 "\"daemonCpuTicks\":%.0f,\"clockTicksPerSec\":%ld,\"daemonCpuPerRequestUs\":%.3f,\"daemonUserCpuPerRequestUs\":%.3f,\"daemonSchedCpuPerRequestUs\":%.3f,"
		 "\"daemonIdleCpuUsPerSec\":%.1f,\"daemonSwitchInsPerRequest\":%.3f,\"loadgenCpuPerRequestUs\":%.3f,\"probeCpuPerWakeUs\":%.3f,\"probeSwitchInsPerWake\":%.3f,"
		 "\"latency\":{\"p50us\":%.2f,\"p99us\":%.2f,\"maxUs\":%.2f},\"daemonThreads\":[%s]}",
		 rate, (unsigned long long)n, (double)n / wall, (unsigned long long)late, wall, ticks, hz, per_req, user_per_req, sched_per_req, idle_us_per_s,
		 switches, self_per_req, probe, probe_sw, p50, p99, mx, th);
	return 0;
}
