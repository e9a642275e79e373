// The NATS request/reply door on the embedded bus.

export { NatsApi, apiQueueGroup, apiSubjectPrefix } from './handlers';
export type { NatsApiOptions } from './handlers';
