// Structured logging for every part of loom (pino). Parts take a Logger and add their own
// bindings with `child`, so a line always says which component and node wrote it.

import pino from 'pino';

export type Logger = pino.Logger;

export interface LoggerOptions {
  level?: string;
  name?: string;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino({ level: options.level ?? process.env.LOOM_LOG_LEVEL ?? 'info', name: options.name ?? 'loom' });
}

/** A logger that drops everything: for tests and embedders that bring no logger. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
