import * as http2 from 'node:http2';
import { once } from 'node:events';
import { openNode, type EmbeddedNode } from '../../../src';
import { connectionWindowBytes, streamWindowBytes } from '../../../src/api/grpc/windows';
import { makeTempDir, removeDir } from '../../support/tmp';

describe('gRPC receive windows', () => {
  let dir: string;
  let node: EmbeddedNode;
  beforeAll(async () => {
    dir = makeTempDir();
    node = await openNode({ data: dir, doors: true, sync: 'none' });
  });
  afterAll(async () => {
    await node.close();
    removeDir(dir);
  });

  it('lets a client send a call 1 MiB and a connection 4 MiB before the server has read them, not 64 KiB', async () => {
    const session = http2.connect(`http://127.0.0.1:${node.ports.grpc as number}`);
    try {
      // Given a connection, when the server's SETTINGS and WINDOW_UPDATE have arrived (waited for
      // by state, not by time: at most 500 turns of 10 ms),
      await once(session, 'remoteSettings');
      for (let turn = 0; turn < 500; turn++) {
        if (session.remoteSettings.initialWindowSize === streamWindowBytes && session.state.remoteWindowSize === connectionWindowBytes) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      // then its stream window is the widened one, and so is the connection's.
      expect(session.remoteSettings.initialWindowSize).toBe(streamWindowBytes);
      expect(session.state.remoteWindowSize).toBe(connectionWindowBytes);
    } finally {
      session.destroy();
    }
  });
});
