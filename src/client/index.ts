// The TypeScript client SDK: `connect({servers})` to any loom node over NATS.

import { LoomClient, type ClientOptions } from './client';

export { LoomClient };
export type { ClientOptions, ClientWatch, EventRecord, KvValue, ObjectChangeInfo, ObjectInfo, ObjectSource, PutObjectOptions, ReadOptions, WatchChange } from './client';

export function connect(options: ClientOptions): Promise<LoomClient> {
  return LoomClient.connect(options);
}
