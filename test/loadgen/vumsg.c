// SPDX-License-Identifier: GPL-2.0
/*
 * The front-end's end of a vhost-user socket, shared by tmem-loadgen and
 * blk-loadgen (vumsg.h). Every failure is one line through lg_die().
 */
#define _GNU_SOURCE
#include "vumsg.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct vu_region {
	uint64_t gpa, size, uaddr, mmap_offset;
};

struct vu_mem {
	uint32_t nregions, padding;
	struct vu_region r[8];
};

struct vu_addr {
	uint32_t index, flags;
	uint64_t desc, used, avail, log;
};

const char *vu_name(uint32_t req)
{
	static const char *const n[] = {
		[1] = "GET_FEATURES", [2] = "SET_FEATURES", [3] = "SET_OWNER", [5] = "SET_MEM_TABLE",
		[8] = "SET_VRING_NUM", [9] = "SET_VRING_ADDR", [10] = "SET_VRING_BASE", [11] = "GET_VRING_BASE",
		[12] = "SET_VRING_KICK", [13] = "SET_VRING_CALL", [14] = "SET_VRING_ERR", [15] = "GET_PROTOCOL_FEATURES",
		[16] = "SET_PROTOCOL_FEATURES", [17] = "GET_QUEUE_NUM", [18] = "SET_VRING_ENABLE", [24] = "GET_CONFIG",
	};

	return req < sizeof(n) / sizeof(n[0]) && n[req] ? n[req] : "?";
}

static void wait_fd(struct vu_conn *c, short ev, const char *what)
{
	struct pollfd p = { .fd = c->sock, .events = ev };

	for (;;) {
		int r = poll(&p, 1, c->timeout_ms);

		if (r > 0)
			return;
		if (r == 0)
			lg_die(EXIT_HANG, "no reply to %s from %s within %d ms", what, c->peer, c->timeout_ms);
		if (errno != EINTR)
			lg_die(EXIT_ERROR, "poll: %s", strerror(errno));
	}
}

void vu_connect(struct vu_conn *c, const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	uint64_t deadline = now_ns() + (uint64_t)c->timeout_ms * 1000000ull;

	if (strlen(path) >= sizeof(a.sun_path))
		lg_die(EXIT_ERROR, "--socket %s: path too long", path);
	strcpy(a.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int e;

		if (fd < 0)
			lg_die(EXIT_ERROR, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
			c->sock = fd;
			return;
		}
		e = errno;
		close(fd);
		if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || now_ns() > deadline)
			lg_die(EXIT_ERROR, "connecting to %s: %s", path, strerror(e));
		usleep(20000);
	}
}

void vu_send(struct vu_conn *c, uint32_t req, uint32_t flags, const void *pl, uint32_t size, const int *fds, int nfds)
{
	uint8_t buf[12 + sizeof(struct vu_mem)];
	uint32_t h[3] = { req, flags | VU_VERSION, size };
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} cbuf;
	size_t total = 12 + (size_t)size, done = 0;

	if (size > sizeof(buf) - 12 || nfds > 8)
		lg_die(EXIT_ERROR, "internal: message too large");
	memcpy(buf, h, 12);
	if (size)
		memcpy(buf + 12, pl, size);
	memset(&cbuf, 0, sizeof(cbuf));
	while (done < total) {
		struct iovec iov = { .iov_base = buf + done, .iov_len = total - done };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		/* the fds go with the first byte */
		if (nfds > 0 && done == 0) {
			struct cmsghdr *cm;

			mh.msg_control = cbuf.b;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
			memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
		}
		n = sendmsg(c->sock, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			lg_die(EXIT_ERROR, "sending %s: %s (%s closed the connection?)", vu_name(req), strerror(errno), c->peer);
		}
		done += (size_t)n;
	}
	if (c->verbose)
		fprintf(stderr, "loadgen: -> %s flags=0x%x size=%u fds=%d\n", vu_name(req), flags | VU_VERSION, size, nfds);
}

static void read_full(struct vu_conn *c, void *p, size_t n, const char *what)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r;

		wait_fd(c, POLLIN, what);
		r = recv(c->sock, (uint8_t *)p + got, n - got, 0);
		if (r == 0)
			lg_die(EXIT_ERROR, "%s closed the connection while we waited for the reply to %s", c->peer, what);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			lg_die(EXIT_ERROR, "reading the reply to %s: %s", what, strerror(errno));
		}
		got += (size_t)r;
	}
}

void vu_recv(struct vu_conn *c, uint32_t req, void *pl, uint32_t size)
{
	uint32_t h[3];

	read_full(c, h, 12, vu_name(req));
	if (h[0] != req)
		lg_die(EXIT_ERROR, "reply to %s carries request %u (%s)", vu_name(req), h[0], vu_name(h[0]));
	if (h[1] != (VU_VERSION | VU_REPLY))
		lg_die(EXIT_ERROR, "reply to %s has flags 0x%x; QEMU accepts exactly 0x5", vu_name(req), h[1]);
	if (h[2] != size)
		lg_die(EXIT_ERROR, "reply to %s has size %u, expected %u", vu_name(req), h[2], size);
	read_full(c, pl, size, vu_name(req));
	if (c->verbose)
		fprintf(stderr, "loadgen: <- %s size=%u\n", vu_name(req), size);
}

uint64_t vu_get_u64(struct vu_conn *c, uint32_t req)
{
	uint64_t v;

	vu_send(c, req, 0, NULL, 0, NULL, 0);
	vu_recv(c, req, &v, 8);
	return v;
}

void vu_set(struct vu_conn *c, uint32_t req, const void *pl, uint32_t size, const int *fds, int nfds)
{
	int ack = c->reply_ack;

	vu_send(c, req, ack ? VU_NEED_REPLY : 0, pl, size, fds, nfds);
	if (ack) {
		uint64_t v;

		vu_recv(c, req, &v, 8);
		if (v != 0)
			lg_die(EXIT_ERROR, "%s refused %s (REPLY_ACK %llu)", c->peer, vu_name(req), (unsigned long long)v);
	}
}

void vu_set_u64(struct vu_conn *c, uint32_t req, uint64_t v, const int *fds, int nfds)
{
	vu_set(c, req, &v, 8, fds, nfds);
}

void vu_state(struct vu_conn *c, uint32_t req, uint32_t index, uint32_t num)
{
	struct vu_state s = { index, num };

	vu_set(c, req, &s, sizeof(s), NULL, 0);
}

void vu_set_mem_table(struct vu_conn *c, int memfd, uint8_t *ram, const struct region *reg, int n)
{
	struct vu_mem m = { .nregions = (uint32_t)n };
	int fds[8];

	if (n < 1 || n > 8)
		lg_die(EXIT_ERROR, "internal: %d memory regions", n);
	for (int i = 0; i < n; i++) {
		m.r[i].gpa = reg[i].gpa;
		m.r[i].size = reg[i].size;
		m.r[i].uaddr = (uint64_t)(uintptr_t)(ram + reg[i].off);
		m.r[i].mmap_offset = reg[i].off;
		fds[i] = memfd;
	}
	vu_set(c, VU_SET_MEM_TABLE, &m, (uint32_t)(8 + sizeof(struct vu_region) * (size_t)n), fds, n);
}

void vu_set_vring(struct vu_conn *c, int index, uint16_t num, const void *desc, const void *avail, const void *used, int kickfd,
		  int callfd)
{
	struct vu_addr a = {
		.index = (uint32_t)index,
		.desc = (uint64_t)(uintptr_t)desc,
		.used = (uint64_t)(uintptr_t)used,
		.avail = (uint64_t)(uintptr_t)avail,
	};

	vu_state(c, VU_SET_VRING_NUM, (uint32_t)index, num);
	vu_state(c, VU_SET_VRING_BASE, (uint32_t)index, 0);
	vu_set(c, VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
	vu_set_u64(c, VU_SET_VRING_KICK, (uint64_t)index, &kickfd, 1);
	vu_set_u64(c, VU_SET_VRING_CALL, (uint64_t)index, &callfd, 1);
}

int vu_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (fd < 0)
		lg_die(EXIT_ERROR, "eventfd: %s", strerror(errno));
	return fd;
}
