// The bus: in-process pub/sub over NATS subjects, and the NATS wire-protocol server that lets any
// official NATS client share the same subject space. Other folders import only from here.

export { Bus, Msg, Subscription, BUS_DEFAULTS, isValidQueueName } from './bus';
export type { BusOptions, PublishOptions, SubscribeOptions, RequestOptions, Payload } from './bus';
export { MsgHeaders, STATUS_NO_RESPONDERS } from './headers';
export { NatsServer, SERVER_DEFAULTS, NATS_COMPATIBLE_VERSION } from './server';
export type { NatsServerOptions } from './server';
export { isValidSubject, isValidLiteralSubject, subjectMatchesFilter } from './subject';
export { PROTOCOL_ERRORS } from './parser';
