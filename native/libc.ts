// The koffi declarations of every libc call native/ makes, and the Linux
// x86_64 constants they need. Nothing here checks errors: the wrappers in the
// sibling modules do, through errors.ts.
//
// Every module instance (main thread, each worker_threads Worker) loads its
// own copy; koffi is a context-aware N-API addon, so that is safe.
//
// Pointers are BigInt in koffi 3. Arguments typed `void *` receive either a
// BigInt address (native memory from scratch.ts) or null. Sizes are passed as
// numbers or BigInt; ssize_t results are declared intptr_t (koffi knows no
// ssize_t) and come back as numbers.
import koffi from 'koffi';

export const lib = koffi.load('libc.so.6');

/* eslint-disable @typescript-eslint/no-explicit-any */
type Fn = (...args: any[]) => any;
type AsyncFn = Fn & { async: (...args: any[]) => void };
const fn = (decl: string): AsyncFn => lib.func(decl) as AsyncFn;

export const c = {
  close: fn('int close(int fd)'),
  read: fn('intptr_t read(int fd, void *buf, size_t count)'),
  write: fn('intptr_t write(int fd, void *buf, size_t count)'),
  fcntl: fn('int fcntl(int fd, int cmd, int arg)'),
  fstat: fn('int fstat(int fd, void *statbuf)'),
  socket: fn('int socket(int domain, int type, int protocol)'),
  socketpair: fn('int socketpair(int domain, int type, int protocol, void *sv)'),
  bind: fn('int bind(int fd, void *addr, uint32_t addrlen)'),
  listen: fn('int listen(int fd, int backlog)'),
  connect: fn('int connect(int fd, void *addr, uint32_t addrlen)'),
  accept4: fn('int accept4(int fd, void *addr, void *addrlen, int flags)'),
  getsockopt: fn('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)'),
  recvmsg: fn('intptr_t recvmsg(int fd, void *msg, int flags)'),
  sendmsg: fn('intptr_t sendmsg(int fd, void *msg, int flags)'),
  mmap: fn('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: fn('int munmap(void *addr, size_t length)'),
  memfd_create: fn('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: fn('int ftruncate(int fd, int64_t length)'),
  eventfd: fn('int eventfd(unsigned int initval, int flags)'),
  poll: fn('int poll(void *fds, unsigned long nfds, int timeout)'),
  epoll_create1: fn('int epoll_create1(int flags)'),
  epoll_ctl: fn('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epoll_wait: fn('int epoll_wait(int epfd, void *events, int maxevents, int timeout)'),
  // Socket modes, owners and peers (native/socket.ts, native/sockdiag.ts, native/users.ts).
  fchmod: fn('int fchmod(int fd, uint32_t mode)'),
  send: fn('intptr_t send(int fd, void *buf, size_t len, int flags)'),
  recv: fn('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  getpwnam: fn('void *getpwnam(const char *name)'),
  getgrnam: fn('void *getgrnam(const char *name)'),
  // Guest RAM checks (native/memory.ts): the file system of an fd, and its seals (fcntl above).
  fstatfs: fn('int fstatfs(int fd, void *buf)'),
};

/** errno of the last call made on this thread (or of the async call whose callback is running). */
export const errno = (): number => koffi.errno();

// Linux x86_64 values (asm-generic / x86 headers).
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const FD_CLOEXEC = 1;

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const SOL_SOCKET = 1;
export const SO_TYPE = 3;
export const SO_ACCEPTCONN = 30;
export const SO_DOMAIN = 39;
export const SCM_RIGHTS = 1;
export const MSG_CTRUNC = 0x8;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** The kernel's per-message limit on passed fds (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;

// Socket modes, owners and peers (native/socket.ts, native/sockdiag.ts, native/users.ts).
export const SO_PEERCRED = 17;
/** struct ucred: pid@0 uid@4 gid@8. */
export const UCRED_SIZE = 12;
/** struct passwd (x86_64): pw_uid@16 pw_gid@20; struct group: gr_gid@16. */
export const PASSWD_UID_OFFSET = 16;
export const PASSWD_GID_OFFSET = 20;
export const GROUP_GID_OFFSET = 16;
export const AF_NETLINK = 16;
export const SOCK_DGRAM = 2;
export const NETLINK_SOCK_DIAG = 4;
export const SOCK_DIAG_BY_FAMILY = 20;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_DUMP = 0x300;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
/** struct nlmsghdr: len@0 (u32) type@4 (u16) flags@6 (u16) seq@8 pid@12; 16 bytes. */
export const NLMSGHDR_SIZE = 16;
/** struct unix_diag_req: family@0 (u8) protocol@1 pad@2 states@4 ino@8 show@12 cookie@16 (2 x u32); 24 bytes. */
export const UNIX_DIAG_REQ_SIZE = 24;
/** struct unix_diag_msg: family@0 type@1 state@2 pad@3 ino@4 cookie@8; 16 bytes, then rtattrs. */
export const UNIX_DIAG_MSG_SIZE = 16;
export const UDIAG_SHOW_VFS = 0x2;
/** rtattr type carrying struct unix_diag_vfs { u32 ino; u32 dev; } (dev in the kernel's encoding). */
export const UNIX_DIAG_VFS = 1;
/** The TCP_LISTEN state number, which AF_UNIX sockets use too. */
export const TCP_LISTEN = 10;

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
/** (void *)-1 as koffi returns it. */
export const MAP_FAILED = 0xffffffffffffffffn;
export const MFD_CLOEXEC = 1;

// Guest RAM checks (native/memory.ts): memfd seals and file system magics.
export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
/** f_type of tmpfs and shmem (memfd) files, and of hugetlbfs (memfd with MFD_HUGETLB too). */
export const TMPFS_MAGIC = 0x01021994;
export const HUGETLBFS_MAGIC = 0x958458f6;
/** struct statfs (x86_64): f_type@0 (long), ...; 120 bytes. */
export const STATFS_SIZE = 120;

export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;

export const POLLIN = 0x1;

export const EPOLL_CLOEXEC = O_CLOEXEC;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x1;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
export const EPOLLRDHUP = 0x2000;
export const EPOLLONESHOT = 0x40000000;
export const EPOLLET = 0x80000000;

// Struct layouts (x86_64 LP64), built by hand in scratch memory.
/** struct msghdr: name@0 namelen@8 iov@16 iovlen@24 control@32 controllen@40 flags@48. */
export const MSGHDR_SIZE = 56;
/** struct iovec: base@0 len@8. */
export const IOVEC_SIZE = 16;
/** struct cmsghdr: len@0 (size_t) level@8 type@12, data from 16 (CMSG_ALIGN'd to 8). */
export const CMSGHDR_SIZE = 16;
/** struct sockaddr_un: family@0 (u16), path@2 (108 bytes). */
export const SOCKADDR_UN_SIZE = 110;
export const SUN_PATH_MAX = 108;
/** struct pollfd: fd@0 (i32) events@4 (i16) revents@6 (i16). */
export const POLLFD_SIZE = 8;
/** struct epoll_event is packed on x86_64: events@0 (u32) data@4 (u64). */
export const EPOLL_EVENT_SIZE = 12;
/** struct stat (x86_64): st_dev@0 st_ino@8 ... st_size@48; 144 bytes. */
export const STAT_SIZE = 144;
