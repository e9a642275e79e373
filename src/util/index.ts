// Small helpers shared by every part of loom: errors, assertions, logging, checksums.

export { LoomError, errorCodes, isLoomError } from './errors';
export type { ErrorCode, ErrorDetails } from './errors';
export { assert } from './assert';
export { abortedCommitRetriesMax, isAbortedCommit, mdbBadTxn, retryAbortedCommit } from './aborted-commit';
export { createLogger, silentLogger } from './logger';
export type { Logger, LoggerOptions } from './logger';
export { dirLockHolder, lockDir } from './dir-lock';
export type { DirLock } from './dir-lock';
export * as names from './names';
export { loadLibc } from './libc';
export type { Libc, LibcAvailability } from './libc';
export { noteMappedBytes, releaseMappedPages, watchMappedFile } from './mapped-memory';
export { collectGarbageOnRelease, noteTransferEnded, noteTransferred, onTransferMemoryRelease, releaseTransferMemory } from './transfer-memory';
export type { TransferMemoryHolder } from './transfer-memory';
