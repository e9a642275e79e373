// A real `loom serve` takes a 1 GiB object over gRPC (Buckets.Put, 1 MiB messages from a grpc-js
// client) and gives it back (Buckets.Get): its RSS stays under 100 MiB above where it started, at
// the peak and once quiet. Before the lean Put path (lean-upload.ts), grpc-js gathered each 1 MiB
// message into a buffer of its own and the upload peaked 136-154 MiB above the start.

import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { loadLoomProto } from '../../../src/api/grpc';
import { startServe, stopServe } from '../../support/cli';
import { describeRss, rssAround } from '../../support/rss';
import { makeTempDir, removeDir } from '../../support/tmp';

const objectBytes = 1024 ** 3;
const messageBytes = 1024 * 1024;
const growthBytesMax = 100 * 1024 * 1024;

type BucketsClient = grpc.Client & {
  Put(callback: (err: grpc.ServiceError | null, info: { sha256: string }) => void): grpc.ClientWritableStream<unknown>;
  Get(request: object): grpc.ClientReadableStream<{ data: Buffer }>;
};

/** Uploads `messages` MiB, no two chunks alike, waiting for `drain` as a client streaming a file does. */
function upload(client: BucketsClient, name: string, messages: number): Promise<{ sha256: string }> {
  return new Promise((resolve, reject) => {
    const call = client.Put((err, info) => (err ? reject(err) : resolve(info)));
    void (async () => {
      call.write({ header: { bucket: 'mem', name, size: messages * messageBytes } });
      const piece = Buffer.alloc(messageBytes, 7);
      for (let i = 0; i < messages; i++) {
        for (let at = 0; at < messageBytes; at += 64 * 1024) piece.writeUInt32BE(i, at);
        if (!call.write({ data: Buffer.from(piece) })) await new Promise((drained) => call.once('drain', drained));
      }
      call.end();
    })();
  });
}

async function download(client: BucketsClient, name: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const message of client.Get({ bucket: 'mem', name })) {
    hash.update(message.data);
    size += message.data.length;
  }
  return { size, sha256: hash.digest('hex') };
}

const onLinux = process.platform === 'linux' ? describe : describe.skip;

onLinux('a loom serve process and a 1 GiB object over gRPC', () => {
  it('uploads and downloads it with RSS less than 100 MiB above where it started, at its peak and once quiet', async () => {
    const dir = makeTempDir();
    const serve = await startServe(dir);
    const pid = serve.child.pid as number;
    const loaded = grpc.loadPackageDefinition(loadLoomProto()) as unknown as { loom: { v1: Record<string, new (a: string, c: grpc.ChannelCredentials) => grpc.Client> } };
    const client = new loaded.loom.v1.Buckets(`127.0.0.1:${serve.ports.grpc}`, grpc.credentials.createInsecure()) as BucketsClient;
    try {
      const rss = await rssAround(pid, async (uploaded) => {
        const put = await upload(client, 'gig', objectBytes / messageBytes);
        uploaded();
        expect(await download(client, 'gig')).toEqual({ size: objectBytes, sha256: put.sha256 });
      });
      process.stdout.write(describeRss('1 GiB up+down over gRPC', rss));
      expect(rss.peakBytes - rss.startedBytes).toBeLessThan(growthBytesMax);
      expect(rss.quietBytes - rss.startedBytes).toBeLessThan(growthBytesMax);
    } finally {
      client.close();
      await stopServe(serve);
      removeDir(dir);
    }
  }, 180_000);
});
