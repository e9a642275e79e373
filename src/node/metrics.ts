// The node's Prometheus metrics (prom-client), one registry per node so embedded nodes in one
// process do not mix. Gauges are read at scrape time from the parts that own the numbers.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Core, OpenDatabase } from '../core';
import type { LogObserver } from '../eventlog';

export interface NodeMetrics {
  registry: Registry;
  logObserver: LogObserver;
  /** Starts reading gauges from the database, once it exists. */
  watchDatabase(opened: OpenDatabase): void;
}

export function createMetrics(): NodeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'loom_' });
  let core: Core | undefined;
  let opened: OpenDatabase | undefined;

  const appendSeconds = new Histogram({
    name: 'loom_log_append_seconds',
    help: 'Time from an append being issued to it being durable (fsynced).',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const appendedEntries = new Counter({ name: 'loom_log_appended_entries_total', help: 'Entries appended durably to the log.', registers: [registry] });
  const fsyncs = new Counter({ name: 'loom_log_fsyncs_total', help: 'Group commits flushed to disk (one fsync each).', registers: [registry] });
  const gauge = (name: string, help: string, read: (c: Core) => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        if (core) this.set(read(core));
      },
    });
  };
  gauge('loom_log_last_index', 'Index of the last entry in the log.', (c) => c.status().lastIndex);
  gauge('loom_log_first_index', 'Index of the first entry still in the log (after compaction).', (c) => c.log.firstIndex());
  gauge('loom_commit_index', 'Highest log index known to be committed.', (c) => c.status().commitIndex);
  gauge('loom_applied_index', 'Highest log index applied on this node.', (c) => c.status().appliedIndex);
  new Gauge({
    name: 'loom_projection_lag_entries',
    help: 'Committed entries a projection has not applied yet (commit index minus its checkpoint).',
    labelNames: ['projection', 'state'],
    registers: [registry],
    collect() {
      if (!opened) return;
      this.reset();
      const commit = opened.core.status().commitIndex;
      for (const p of opened.projections()) this.set({ projection: p.name, state: p.state }, Math.max(0, commit - p.appliedIndex));
    },
  });

  return {
    registry,
    logObserver: {
      appended(entries, seconds) {
        appendSeconds.observe(seconds);
        appendedEntries.inc(entries);
      },
      synced() {
        fsyncs.inc();
      },
    },
    watchDatabase(o) {
      opened = o;
      core = o.core;
    },
  };
}
