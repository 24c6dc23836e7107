/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The front-end's end of a vhost-user socket (docs/interop/vhost-user.rst),
 * as QEMU drives it: connect, send a request with its fds, read and check a
 * reply, set up guest RAM and a ring. One copy for both load generators:
 * tmem-loadgen (vu.c) and blk-loadgen (blk.c). Errors go through lg_die()
 * (common.h).
 */
#ifndef VUMSG_H
#define VUMSG_H

#include <stdint.h>

#include "common.h"

/* vhost-user requests */
enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_SET_MEM_TABLE = 5,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_GET_CONFIG = 24,
};
#define VU_VERSION 0x1
#define VU_REPLY 0x4
#define VU_NEED_REPLY 0x8
#define VU_F_PROTOCOL_FEATURES 30
#define VU_PROTO_MQ 0
#define VU_PROTO_REPLY_ACK 3
#define VU_PROTO_CONFIG 9
#define VU_VRING_NOFD 0x100

struct vu_state {
	uint32_t index, num;
};

/* one region of guest RAM: gpa..gpa+size at offset off of the memfd and of its mapping */
struct region {
	uint64_t gpa;
	uint64_t size;
	uint64_t off;
};

struct vu_conn {
	int sock;
	int timeout_ms;   /* to connect, and for each reply */
	int reply_ack;    /* REPLY_ACK negotiated: vu_set() asks for an ack and checks it */
	int verbose;      /* every message on stderr */
	const char *peer; /* "the daemon", "the backend": for error messages */
};

const char *vu_name(uint32_t req);
/* Connects to path, retrying while it is not there yet (c->timeout_ms); sets c->sock. */
void vu_connect(struct vu_conn *c, const char *path);
void vu_send(struct vu_conn *c, uint32_t req, uint32_t flags, const void *pl, uint32_t size, const int *fds, int nfds);
/* Reads the reply to req: flags exactly VERSION | REPLY (as QEMU checks) and size bytes of payload. */
void vu_recv(struct vu_conn *c, uint32_t req, void *pl, uint32_t size);
uint64_t vu_get_u64(struct vu_conn *c, uint32_t req);
/* A message without a reply of its own (the ack checked when REPLY_ACK was negotiated). */
void vu_set(struct vu_conn *c, uint32_t req, const void *pl, uint32_t size, const int *fds, int nfds);
void vu_set_u64(struct vu_conn *c, uint32_t req, uint64_t v, const int *fds, int nfds);
void vu_state(struct vu_conn *c, uint32_t req, uint32_t index, uint32_t num);
/* SET_MEM_TABLE: n regions of one memfd mapped at ram, one fd per region as QEMU sends them. */
void vu_set_mem_table(struct vu_conn *c, int memfd, uint8_t *ram, const struct region *reg, int n);
/*
 * A ring: SET_VRING_NUM, SET_VRING_BASE 0, SET_VRING_ADDR (front-end virtual
 * addresses, translated through the regions' uaddr), SET_VRING_KICK and
 * SET_VRING_CALL.
 */
void vu_set_vring(struct vu_conn *c, int index, uint16_t num, const void *desc, const void *avail, const void *used, int kickfd,
		  int callfd);
/* A non-blocking eventfd for a kick or a call. */
int vu_eventfd(void);

#endif
