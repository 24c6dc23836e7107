// native/: the thin OS layer (koffi) used by both the main thread and the
// data-plane worker. Every failure is a SysError (errno, code, syscall).
export { SysError, errnoName, ERRNO } from './errors.js';
export { close, closeQuietly, fstat } from './fd.js';
export { listenUnix, connectUnix, socketPair, acceptConnection, checkListeningUnixSocket, recvMsg, sendMsg, peerCredentials, type SocketAccess } from './socket.js';
export { unixPathHasListener, listeningUnixFiles } from './sockdiag.js';
export { lookupUid, lookupGid } from './users.js';
export { mmapShared, munmap, memfdCreate, inspectGuestRamFd, WINDOW_BYTES, type GuestRamFile, type Mapping, type MappingWindow } from './memory.js';
export { eventfd, eventfdRead, eventfdWrite, adoptEventfd } from './eventfd.js';
export { pollFds } from './poll.js';
export { FdWatcher, type FdWatcherLog, EPOLLIN, EPOLLHUP, EPOLLERR } from './watcher.js';
export { EventfdSet } from './eventfd-set.js';
