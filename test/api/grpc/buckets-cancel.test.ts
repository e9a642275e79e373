// An upload a gRPC client cancels part-way leaves nothing behind, on a real `loom serve` process
// with a grpc-js client in this process. The uploads announce neither size nor sha256, so the node
// cannot tell a short object from a cut one by counting bytes, and grpc-js's cancel sends END_STREAM
// (which alone would mean "that was the whole object") before RST_STREAM: the node must commit none
// of the cancelled uploads, whatever it had received when the cancel came.

import * as grpc from '@grpc/grpc-js';
import { startServe, stopServe, type ServeProcess } from '../../support/cli';
import { grpcClient, unary, type GrpcClient } from '../../support/grpc-buckets';
import { makeTempDir, removeDir } from '../../support/tmp';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Uploads cancelled, each after a different number of pieces and gaps between them. */
const uploads = 30;

describe('Buckets over gRPC: an upload with no size or sha256 that the client cancels mid-way', () => {
  let dir: string;
  let serve: ServeProcess;
  let buckets: GrpcClient;

  beforeAll(async () => {
    dir = makeTempDir('loom-grpc-cancel-');
    serve = await startServe(dir);
    buckets = grpcClient('Buckets', serve.ports.grpc, { 'grpc-node.flow_control_window': 8 * 1024 * 1024 });
  });
  afterAll(async () => {
    buckets?.close();
    if (serve) await stopServe(serve);
    removeDir(dir);
  });

  it('commits none of 30 uploads the client cancels after a few 64 KiB pieces (it hears CANCELLED each time)', async () => {
    const bucket = 'cancelled';
    const codes: number[] = [];
    for (let i = 0; i < uploads; i++) {
      codes.push(
        await new Promise<number>((resolve) => {
          const call = buckets.Put((err: grpc.ServiceError | null) => resolve(err ? err.code : grpc.status.OK)) as grpc.ClientWritableStream<unknown>;
          call.write({ header: { bucket, name: `n${i}` } });
          void (async () => {
            // Pieces with small gaps, as a client reading a file or a socket sends them; it meant
            // to send more but cancels after 3-6 of them.
            for (let k = 0; k < 3 + (i % 4); k++) {
              call.write({ data: Buffer.alloc(64 * 1024, k) });
              await sleep(5 + (i % 7));
            }
            call.cancel();
          })();
        }),
      );
    }
    expect(codes.every((code) => code === grpc.status.CANCELLED)).toBe(true);
    await sleep(500);
    // Not one object, not even one holding the bytes sent before its cancel.
    const { res } = await unary<{ items: Array<{ name: string; size: number }> }>(buckets, 'List', { bucket, limit: 1000 });
    expect((res?.items ?? []).map((item) => `${item.name}:${item.size}`)).toEqual([]);
  }, 120_000);
});
